"""Bad input through the real entry points: every case must end with a non-zero exit, a message naming the file
(and the field or record where there is one), no traceback, no hang, and nothing changed outside its outputs.

The entry points are the ``pose`` script (``pose.cli.main``) and ``python -m flows.<name>``. The cases run through
``tests/entry_runner.py``: one process imports torch, cv2, prefect, ... once and forks a child per case, which runs
the entry point exactly as a fresh process does (own cwd, env, argv, stdout/stderr, exit status; the project's
modules are imported in the child). ``test_forked_case_matches_a_real_process`` checks that equivalence on real
``subprocess`` launches. Flows talk to the session's Prefect test server (127.0.0.1).

All cases share one workspace (a tiny sample, tiny models, prepared data); each case's bad files live in
``cases/<id>/`` and its outputs in ``out/<id>/``. The workspace is fingerprinted before and after the run.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from tests.conftest import VENV_BIN, prefect_test_env

REPO = Path(__file__).resolve().parent.parent
RUNNER = REPO / "tests" / "entry_runner.py"
HG_ARCH = {"family": "hourglass", "num_stacks": 1, "num_blocks": 1, "mobile": True}
OP_ARCH = {"family": "openpose", "num_refinement_stages": 0}


# ================================================================================================= the cases
@dataclass
class Case:
    id: str
    kind: str                    # "pose" | "flow"
    args: list[str]              # pose: argv; flow: [module, *argv]
    expect: list[str]            # substrings stderr must contain (the file; the field / record / option)
    setup: Callable[[Path, Path], None] | None = None   # (workspace, case dir) → writes the bad input
    params: Callable[[dict], Any] | None = None          # edits a copy of the workspace params (flow cases)
    params_text: Callable[[str], bytes] | None = None    # or: the params file's bytes from the good text
    timeout: float = 60.0

    def env(self, ws: Path) -> dict[str, str]:
        own = ws / "cases" / self.id / "params.yaml"
        return {"POSEPIPE_PARAMS": str(own if os.path.lexists(own) else ws / "params.yaml")}


CASES: list[Case] = []


def case(*a, **k) -> Case:
    c = Case(*a, **k)
    assert c.id not in {x.id for x in CASES}, c.id
    CASES.append(c)
    return c


def write(rel: str, data: bytes | str) -> Callable[[Path, Path], None]:
    """Setup: write ``data`` at ``cases/<id>/<rel>``."""
    def setup(ws: Path, d: Path) -> None:
        p = d / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return setup


def make_dir(rel: str) -> Callable[[Path, Path], None]:
    def setup(ws: Path, d: Path) -> None:
        (d / rel).mkdir(parents=True)
    return setup


def make_fifo(rel: str) -> Callable[[Path, Path], None]:
    def setup(ws: Path, d: Path) -> None:
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(d / rel)
    return setup


def derived(src: str, rel: str, transform: Callable[[bytes], bytes]) -> Callable[[Path, Path], None]:
    """Setup: ``cases/<id>/<rel>`` = ``transform(bytes of workspace file src)``."""
    def setup(ws: Path, d: Path) -> None:
        p = d / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(transform((ws / src).read_bytes()))
    return setup


def json_edit(src: str, rel: str, edit: Callable[[Any], Any]) -> Callable[[Path, Path], None]:
    def transform(data: bytes) -> bytes:
        obj = json.loads(data)
        edit(obj)   # edits change obj in place
        return json.dumps(obj).encode()
    return derived(src, rel, transform)


def both(*setups: Callable[[Path, Path], None]) -> Callable[[Path, Path], None]:
    def setup(ws: Path, d: Path) -> None:
        for s in setups:
            s(ws, d)
    return setup


# --- bad files of every kind --------------------------------------------------------------------------------
def png_header(width: int, height: int) -> bytes:
    """A tiny valid-looking PNG whose header claims ``width``×``height`` (its data is one empty deflate block)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + \
        chunk(b"IEND", b"")


BAD_JSON: dict[str, Callable[[str], Callable[[Path, Path], None]]] = {
    "binary": lambda rel: write(rel, bytes(range(256)) * 8),
    "utf16": lambda rel: write(rel, '{"images": [], "annotations": []}'.encode("utf-16")),
    "nested": lambda rel: write(rel, "[" * 200_000 + "]" * 200_000),
    "truncated": lambda rel: write(rel, '[{"img_paths": "a.jpg", "joint_self": [[1, 2'),
    "empty": lambda rel: write(rel, b""),
    "dir": lambda rel: make_dir(rel),
    "fifo": lambda rel: make_fifo(rel),
    "scalar": lambda rel: write(rel, '"just a string"'),
}

BAD_IMAGES: dict[str, Callable[[str], Callable[[Path, Path], None]]] = {
    "zero_byte": lambda rel: write(rel, b""),
    "truncated": lambda rel: derived("images/person.jpg", rel, lambda b: b[: len(b) // 3]),
    "not_an_image": lambda rel: write(rel, "this is a text file with an image name\n" * 20),
    "huge_strip": lambda rel: write(rel, png_header(2, 20000)),
    "huge_square": lambda rel: write(rel, png_header(70000, 70000)),
    "dir": lambda rel: make_dir(rel),
    "fifo": lambda rel: make_fifo(rel),
}


# ----------------------------------------------------------------------------------------- JSON through readers
# (reader, entry point, where the bad file goes, what the message must name)
for kind, bad in BAD_JSON.items():
    target = "mpii_annotations.json"
    case(f"json_{kind}_mpii_prep", "flow", ["flows.mpii_prep"], [target],
         setup=bad(target), params=lambda p, t=target, k=kind: p["mpii"].update(
             annotations=f"cases/json_{k}_mpii_prep/{t}"), timeout=30)
    target = "train.json"
    case(f"json_{kind}_coco_labels", "flow", ["flows.coco_labels"], [target],
         setup=bad(target), params=lambda p, t=target, k=kind: p["coco"].update(
             train_annotations=f"cases/json_{k}_coco_labels/{t}"), timeout=30)
    target = "val.json"
    case(f"json_{kind}_coco_val_subset", "flow", ["flows.coco_val_subset"], [target],
         setup=bad(target), params=lambda p, t=target, k=kind: p["coco"].update(
             val_annotations=f"cases/json_{k}_coco_val_subset/{t}"), timeout=30)
    target = "records.json"
    case(f"json_{kind}_pose_eval_mpii", "pose",
         ["eval", "models/hg.pt", "--dataset", f"cases/json_{kind}_pose_eval_mpii/{target}", "--images",
          "data/mpii/images", "--gt", "data/prepared/mpii/gt_val.mat", "--quiet"], [target],
         setup=bad(target), timeout=30)
    case(f"json_{kind}_pose_eval_coco", "pose",
         ["eval", "models/op.pt", "--dataset", f"cases/json_{kind}_pose_eval_coco/{target}", "--images",
          "data/sample/coco/val2017", "--quiet"], [target], setup=bad(target), timeout=30)
    case(f"json_{kind}_mpii_manifest", "pose",
         ["eval", "models/hg.pt", "--dataset", f"cases/json_{kind}_mpii_manifest/prep/val.json", "--quiet"],
         ["dataset.json"], setup=both(derived("data/prepared/mpii/val.json", "prep/val.json", lambda b: b),
                                      derived("data/prepared/mpii/gt_val.mat", "prep/gt_val.mat", lambda b: b),
                                      bad("prep/dataset.json")), timeout=30)

# the params file itself
for kind, text in {"binary": lambda t: bytes(range(256)) * 8, "utf16": lambda t: t.encode("utf-16"),
                   "nested": lambda t: ("[" * 100_000).encode(), "truncated": lambda t: (t + "retrain: {targets: [make_sample, mpii").encode(),
                   "tabs": lambda t: t.replace("  seed: 0", "\tseed: 0", 1).encode(),
                   "scalar": lambda t: b"42\n", "empty": lambda t: b""}.items():
    case(f"params_{kind}", "flow", ["flows.make_sample"], ["params.yaml"], params_text=text, timeout=30)
case("params_dir", "flow", ["flows.make_sample"], ["params.yaml"], setup=make_dir("params.yaml"), timeout=30)
case("params_fifo", "flow", ["flows.make_sample"], ["params.yaml"], setup=make_fifo("params.yaml"), timeout=30)

# ----------------------------------------------------------------------------------------------- images
for kind, bad in BAD_IMAGES.items():
    case(f"image_{kind}_predict_file", "pose",
         ["predict", f"cases/image_{kind}_predict_file/photo.jpg", "--model", "models/hg.pt", "--out",
          f"out/image_{kind}_predict_file", "--quiet"], ["photo.jpg"], setup=bad("photo.jpg"), timeout=30)
    case(f"image_{kind}_predict_folder", "pose",
         ["predict", f"cases/image_{kind}_predict_folder/imgs", "--model", "models/op.pt", "--out",
          f"out/image_{kind}_predict_folder", "--quiet"], ["b_photo.png"],
         setup=both(derived("images/person.jpg", "imgs/a_photo.jpg", lambda b: b), bad("imgs/b_photo.png")),
         timeout=30)
    case(f"image_{kind}_eval_coco", "pose",
         ["eval", "models/op.pt", "--dataset", f"cases/image_{kind}_eval_coco/val.json", "--images",
          f"cases/image_{kind}_eval_coco/imgs", "--quiet"], ["000000000001.jpg"],
         setup=both(derived("coco_one.json", "val.json", lambda b: b), bad("imgs/000000000001.jpg")), timeout=30)
    case(f"image_{kind}_eval_mpii", "pose",
         ["eval", "models/hg.pt", "--dataset", "data/prepared/mpii/val.json", "--images",
          f"cases/image_{kind}_eval_mpii/imgs", "--gt", "data/prepared/mpii/gt_val.mat", "--quiet"],
         [f"image_{kind}_eval_mpii/imgs/"], setup=lambda ws, d, b=bad: _mpii_images_with_one_bad(ws, d, b),
         timeout=30)


def _mpii_images_with_one_bad(ws: Path, d: Path, bad: Callable) -> None:
    """A folder of links to the val images where the first val record's image is a bad file."""
    val = json.loads((ws / "data/prepared/mpii/val.json").read_text())
    src = ws / "data/mpii/images"
    (d / "imgs").mkdir(parents=True)
    for name in {r["img_paths"] for r in val}:
        os.symlink((src / name).resolve(), d / "imgs" / name)
    first = val[0]["img_paths"]
    (d / "imgs" / first).unlink()
    bad(f"imgs/{first}")(ws, d)


# ----------------------------------------------------------------------------------------------- videos
for kind, setup in {"zero_byte": write("clip.mp4", b""),
                    "garbage": write("clip.mp4", bytes(range(256)) * 64),
                    "truncated": derived("clip.avi", "clip.avi", lambda b: b[: len(b) * 2 // 3])}.items():
    name = "clip.avi" if kind == "truncated" else "clip.mp4"
    case(f"video_{kind}", "pose", ["predict", f"cases/video_{kind}/{name}", "--model", "models/op.pt", "--out",
                                   f"out/video_{kind}", "--quiet"], [name], setup=setup, timeout=60)


# ----------------------------------------------------------------------------------------------- annotations
def coco_ann(edit: Callable[[dict], Any], index: int = 0) -> Callable[[dict], None]:
    def apply(data: dict) -> None:
        edit(data["annotations"][index])
    return apply


def crowd(seg: Any) -> Callable[[dict], None]:
    def apply(data: dict) -> None:
        a = data["annotations"][0]
        a.update(iscrowd=1, segmentation=seg, num_keypoints=0, keypoints=[0] * 51)
    return apply


def set_kp(i: int, values: list) -> Callable[[dict], None]:
    def apply(a: dict) -> None:
        a["keypoints"][3 * i:3 * i + 3] = values
    return apply


COCO_BAD = {
    "crowd_seg_string": (crowd("not a segmentation"), "segmentation"),
    "crowd_polygon_odd": (crowd([[1.0, 2.0, 3.0, 4.0, 5.0]]), "segmentation"),
    "crowd_polygon_short": (crowd([[1.0, 2.0, 3.0, 4.0]]), "segmentation"),
    "crowd_polygon_nan": (crowd([[1.0, 2.0, float("nan"), 4.0, 5.0, 6.0]]), "segmentation"),
    "crowd_rle_bad_size": (crowd({"size": [5, 5], "counts": [10, 15]}), "segmentation"),
    "crowd_rle_size_string": (crowd({"size": "big", "counts": [1]}), "segmentation"),
    "crowd_rle_counts_int": (crowd({"size": [192, 256], "counts": 7}), "segmentation"),
    "crowd_rle_counts_garbage": (crowd({"size": [192, 256], "counts": "\u00ff\u00fe"}), "segmentation"),
    "crowd_seg_list_of_ints": (crowd([1, 2, 3, 4, 5, 6]), "segmentation"),
    "kp_nan": (coco_ann(set_kp(0, [float("nan"), 10, 2])), "keypoints"),
    "kp_negative": (coco_ann(set_kp(0, [-40, 10, 2])), "keypoints"),
    "kp_outside": (coco_ann(set_kp(0, [5000, 10, 2])), "keypoints"),
    "kp_vis_3": (coco_ann(set_kp(0, [10, 10, 3])), "keypoints"),
    "kp_short": (coco_ann(lambda a: a.update(keypoints=a["keypoints"][:50])), "keypoints"),
    "kp_string": (coco_ann(set_kp(0, ["10", 10, 2])), "keypoints"),
    "bbox_negative": (coco_ann(lambda a: a.update(bbox=[1, 1, -5, 10])), "bbox"),
    "bbox_nan": (coco_ann(lambda a: a.update(bbox=[1, 1, float("nan"), 10])), "bbox"),
    "bbox_outside": (coco_ann(lambda a: a.update(bbox=[9000, 1, 5, 10])), "bbox"),
    "unknown_image": (coco_ann(lambda a: a.update(image_id=987654)), "image_id"),
    "missing_keypoints": (coco_ann(lambda a: a.pop("keypoints")), "keypoints"),
    "image_width_zero": (lambda d: d["images"][0].update(width=0), "width"),
    "image_file_name_int": (lambda d: d["images"][0].update(file_name=5), "file_name"),
    "no_annotations_key": (lambda d: d.pop("annotations"), "annotations"),
}
for name, (edit, fld) in COCO_BAD.items():
    case(f"coco_{name}_labels", "flow", ["flows.coco_labels"], ["train.json", fld],
         setup=json_edit("coco_train_one.json", "train.json", edit),
         params=lambda p, n=name: p["coco"].update(train_annotations=f"cases/coco_{n}_labels/train.json",
                                                   labels_out=f"out/coco_{n}_labels/labels.json"), timeout=30)
for name in ("crowd_polygon_odd", "crowd_rle_bad_size", "kp_nan", "kp_outside", "bbox_negative", "unknown_image"):
    edit, fld = COCO_BAD[name]
    case(f"coco_{name}_eval", "pose",
         ["eval", "models/op.pt", "--dataset", f"cases/coco_{name}_eval/val.json", "--images",
          "data/sample/coco/val2017", "--quiet"], ["val.json", fld],
         setup=json_edit("coco_val_one.json", "val.json", edit), timeout=30)
    case(f"coco_{name}_val_subset", "flow", ["flows.coco_val_subset"], ["val.json", fld],
         setup=json_edit("coco_val_one.json", "val.json", edit),
         params=lambda p, n=name: p["coco"].update(val_annotations=f"cases/coco_{n}_val_subset/val.json",
                                                   val_subset_out=f"out/coco_{n}_val_subset/subset.json"),
         timeout=30)


def mpii_rec(edit: Callable[[dict], Any]) -> Callable[[list], None]:
    def apply(records: list) -> None:
        edit(records[1])
    return apply


def set_joint(j: int, values: list) -> Callable[[dict], None]:
    def apply(r: dict) -> None:
        r["joint_self"][j] = values
    return apply


MPII_BAD = {
    "joint_nan": (mpii_rec(set_joint(3, [float("nan"), 5.0, 1.0])), "joint_self"),
    "joint_negative": (mpii_rec(set_joint(3, [-50.0, 5.0, 1.0])), "joint_self"),
    "joint_outside": (mpii_rec(set_joint(3, [5000.0, 5.0, 1.0])), "joint_self"),
    "joint_vis_7": (mpii_rec(set_joint(3, [5.0, 5.0, 7.0])), "joint_self"),
    "joints_15": (mpii_rec(lambda r: r["joint_self"].pop()), "joint_self"),
    "objpos_nan": (mpii_rec(lambda r: r.update(objpos=[float("nan"), 3.0])), "objpos"),
    "objpos_outside": (mpii_rec(lambda r: r.update(objpos=[-900.0, 3.0])), "objpos"),
    "scale_zero": (mpii_rec(lambda r: r.update(scale_provided=0)), "scale_provided"),
    "scale_string": (mpii_rec(lambda r: r.update(scale_provided="1.2")), "scale_provided"),
    "width_negative": (mpii_rec(lambda r: r.update(img_width=-256)), "img_width"),
    "img_paths_empty": (mpii_rec(lambda r: r.update(img_paths="")), "img_paths"),
    "img_paths_escape": (mpii_rec(lambda r: r.update(img_paths="../../../../etc/passwd")), "img_paths"),
    "is_validation_2": (mpii_rec(lambda r: r.update(isValidation=2)), "isValidation"),
    "record_not_object": (lambda recs: recs.__setitem__(1, [1, 2, 3]), "record 1"),
    "empty_list": (lambda recs: recs.clear(), "no person records"),
    "missing_joint_self": (mpii_rec(lambda r: r.pop("joint_self")), "joint_self"),
}
for name, (edit, fld) in MPII_BAD.items():
    case(f"mpii_{name}_prep", "flow", ["flows.mpii_prep"], ["mpii_annotations.json", fld],
         setup=json_edit("data/sample/mpii/mpii_annotations.json", "mpii_annotations.json", edit),
         params=lambda p, n=name: p["mpii"].update(annotations=f"cases/mpii_{n}_prep/mpii_annotations.json",
                                                   prepared=f"out/mpii_{n}_prep/prepared",
                                                   link=f"out/mpii_{n}_prep/link"), timeout=30)
for name in ("joint_nan", "joint_outside", "scale_zero", "img_paths_escape", "record_not_object"):
    edit, fld = MPII_BAD[name]
    case(f"mpii_{name}_eval", "pose",
         ["eval", "models/hg.pt", "--dataset", f"cases/mpii_{name}_eval/val.json", "--images",
          "data/mpii/images", "--gt", "data/prepared/mpii/gt_val.mat", "--quiet"], ["val.json", fld],
         setup=json_edit("data/prepared/mpii/val.json", "val.json", edit), timeout=30)


# ----------------------------------------------------------------------------------------------- params
def setp(path: str, value: Any) -> Callable[[dict], None]:
    """Params edit: set the dotted ``path`` (missing levels are created)."""
    def apply(p: dict) -> None:
        *parents, last = path.split(".")
        node = p
        for k in parents:
            node = node.setdefault(k, {})
        node[last] = value
    return apply


def delp(path: str) -> Callable[[dict], None]:
    def apply(p: dict) -> None:
        *parents, last = path.split(".")
        node = p
        for k in parents:
            node = node[k]
        del node[last]
    return apply


PARAMS_BAD = [  # (id, flow args, dotted key, value or delp, expected field text)
    ("sample_images_abc", ["flows.make_sample"], "sample.coco_train_images", "abc", "sample.coco_train_images"),
    ("sample_images_negative", ["flows.make_sample"], "sample.mpii_train_people", -3, "sample.mpii_train_people"),
    ("sample_size_zero", ["flows.make_sample"], "sample.coco_image_size", [0, 10], "sample.coco_image_size"),
    ("sample_size_huge", ["flows.make_sample"], "sample.mpii_image_size", [100000, 100000], "sample.mpii_image_size"),
    ("sample_people_quoted", ["flows.make_sample"], "sample.max_people", "2", "sample.max_people"),
    ("sample_crowd_fraction", ["flows.make_sample"], "sample.crowd_fraction", 2.5, "sample.crowd_fraction"),
    ("sample_out_number", ["flows.make_sample"], "sample.out", 5, "sample.out"),
    ("sample_unknown_key", ["flows.make_sample"], "sample.colour", "red", "sample.colour"),
    ("sample_section_list", ["flows.make_sample"], "sample", [1, 2], "sample"),
    ("coco_net_input_zero", ["flows.coco_labels"], "coco.label_net_input", 0, "coco.label_net_input"),
    ("coco_net_input_negative", ["flows.coco_labels"], "coco.label_net_input", -368, "coco.label_net_input"),
    ("coco_net_input_abc", ["flows.coco_labels"], "coco.label_net_input", "abc", "coco.label_net_input"),
    ("coco_skip_quoted", ["flows.coco_labels"], "coco.skip_unreadable_images", "false",
     "coco.skip_unreadable_images"),
    ("coco_labels_out_number", ["flows.coco_labels"], "coco.labels_out", 7, "coco.labels_out"),
    ("coco_train_annotations_missing", ["flows.coco_labels"], "coco.train_annotations", delp, "coco.train_annotations"),
    ("coco_train_images_missing_dir", ["flows.coco_labels"], "coco.train_images", "cases/nowhere", "train_images"),
    ("coco_subset_size_abc", ["flows.coco_val_subset"], "coco.val_subset_size", "abc", "coco.val_subset_size"),
    ("coco_subset_size_zero", ["flows.coco_val_subset"], "coco.val_subset_size", 0, "coco.val_subset_size"),
    ("coco_subset_size_negative", ["flows.coco_val_subset"], "coco.val_subset_size", -4, "coco.val_subset_size"),
    ("coco_subset_seed_float", ["flows.coco_val_subset"], "coco.val_subset_seed", 1.5, "coco.val_subset_seed"),
    ("coco_val_images_missing", ["flows.coco_val_subset"], "coco.val_images", delp, "coco.val_images"),
    ("mpii_images_number", ["flows.mpii_prep"], "mpii.images", 3, "mpii.images"),
    ("mpii_link_missing", ["flows.mpii_prep"], "mpii.link", delp, "mpii.link"),
    ("mpii_images_missing_dir", ["flows.mpii_prep"], "mpii.images", "cases/nowhere", "images"),
    ("fpd_profile_unknown", ["flows.train_hourglass", "student"], "fpd.profile", "huge", "fpd.profile"),
    ("fpd_epochs_zero", ["flows.train_hourglass", "student"], "fpd.profiles.sample.train.epochs", 0, "epochs"),
    ("fpd_batch_negative", ["flows.train_hourglass", "student"], "fpd.profiles.sample.train.batch_size", -3,
     "batch_size"),
    ("fpd_lr_string", ["flows.train_hourglass", "student"], "fpd.profiles.sample.train.optimizer.lr", "fast", "lr"),
    ("fpd_amp_unknown", ["flows.train_hourglass", "student"], "fpd.profiles.sample.train.amp", "fp8", "amp"),
    ("fpd_input_res_zero", ["flows.train_hourglass", "student"], "fpd.profiles.sample.input_res", 0, "input_res"),
    ("fpd_decode_unknown", ["flows.train_hourglass", "student"], "fpd.profiles.sample.decode", "magic", "decode"),
    ("fpd_alpha_two", ["flows.train_hourglass", "student_fpd"], "fpd.profiles.sample.distill.alpha", 2.0,
     "fpd.profiles.sample.distill.alpha"),
    ("fpd_sigma_negative", ["flows.train_hourglass", "student"], "fpd.target.sigma", -1.0, "sigma"),
    ("fpd_flip_quoted", ["flows.train_hourglass", "student"], "fpd.profiles.sample.flip_test", "false", "flip_test"),
    ("fpd_stacks_zero", ["flows.train_hourglass", "student"], "fpd.models.student.num_stacks", 0, "num_stacks"),
    ("op_input_size_zero", ["flows.train_openpose", "step1"], "openpose.profiles.sample.data.input_size", 0,
     "input_size"),
    ("op_stride_zero", ["flows.train_openpose", "step1"], "openpose.profiles.sample.data.stride", 0, "stride"),
    ("op_epochs_negative", ["flows.train_openpose", "step1"], "openpose.profiles.sample.steps.step1.epochs", -1,
     "epochs"),
    ("op_refinement_negative", ["flows.train_openpose", "step1"],
     "openpose.profiles.sample.steps.step1.num_refinement_stages", -1, "num_refinement_stages"),
    ("op_sigma_zero", ["flows.train_openpose", "step1"], "openpose.profiles.sample.data.sigma", 0, "sigma"),
    ("op_imagenet_missing_file", ["flows.train_openpose", "step1"], "openpose.imagenet_weights",
     "cases/no_such_weights.pth", "no_such_weights.pth"),
    ("op_eval_height_zero", ["flows.eval_coco"], "openpose.profiles.sample.eval.base_height", 0, "base_height"),
    ("op_eval_scales_empty", ["flows.eval_coco"], "openpose.profiles.sample.eval.scales", [], "scales"),
    ("op_export_shape_zero", ["flows.export_openpose"], "openpose.export.input_shape", [1, 3, 0, 0], "input_shape"),
    ("op_export_runs_negative", ["flows.export_openpose"], "openpose.export.latency_runs", -1, "latency_runs"),
    ("fpd_export_atol_negative", ["flows.export_student"], "fpd.export.atol", -1.0, "atol"),
    ("fpd_export_verify_zero", ["flows.export_student"], "fpd.export.verify_inputs", 0, "verify_inputs"),
    ("fpd_export_drop_negative", ["flows.export_student"], "fpd.export.max_accuracy_drop", -0.5,
     "max_accuracy_drop"),
    ("fpd_eval_grid_negative", ["flows.eval_mpii"], "fpd.eval.grid_images", -2, "grid_images"),
    ("paths_models_number", ["flows.eval_mpii"], "paths.models", 5, "paths.models"),
    ("plots_stages_string", ["flows.render_plots"], "render_plots.stages", "train_teacher", "render_plots.stages"),
    ("plots_stage_unknown", ["flows.render_plots"], "render_plots.stages", ["train_nobody"], "train_nobody"),
    ("launch_nproc_zero", ["flows.train_hourglass", "student"], "launch.nproc_per_node", 0, "launch.nproc_per_node"),
    ("launch_endpoint_no_port", ["flows.train_openpose", "step1"], "launch.rdzv_endpoint", "node0",
     "launch.rdzv_endpoint"),
]
for cid, args, key, value, fld in PARAMS_BAD:
    edit = value(key) if value is delp else setp(key, value)
    # a path that does not exist is named itself (the file the user must fix), with the key
    named = ["nowhere", fld] if value == "cases/nowhere" else ["params.yaml", fld]
    case(f"param_{cid}", "flow", args, named, params=edit, timeout=60)


# ----------------------------------------------------------------------------------------------- CLI arguments
PRED = ["predict", "images/person.jpg", "--quiet"]
EVAL_HG = ["eval", "models/hg.pt", "--dataset", "data/prepared/mpii/val.json", "--quiet"]
EVAL_OP = ["eval", "models/op.pt", "--dataset", "coco_val_one.json", "--images", "data/sample/coco/val2017", "--quiet"]
CLI_BAD = [  # (id, argv (the out folder is appended for predict), expected text)
    ("eval_batch_negative", EVAL_HG + ["--batch-size", "-3"], "--batch-size"),
    ("eval_batch_zero", EVAL_HG + ["--batch-size", "0"], "--batch-size"),
    ("eval_input_res_zero", EVAL_HG + ["--input-res", "0"], "--input-res"),
    ("eval_input_res_huge", EVAL_HG + ["--input-res", "100000"], "--input-res"),
    ("eval_threads_zero", EVAL_HG + ["--threads", "0"], "--threads"),
    ("eval_height_zero", EVAL_OP + ["--height", "0"], "--height"),
    ("eval_height_huge", EVAL_OP + ["--height", "50000"], "--height"),
    ("eval_json_is_dir", EVAL_HG + ["--json", "images"], "images"),
    ("eval_gt_missing", EVAL_HG + ["--gt", "cases/nothing.mat"], "nothing.mat"),
    ("eval_gt_not_mat", EVAL_HG + ["--gt", "params.yaml"], "params.yaml"),
    ("eval_images_missing", EVAL_HG + ["--images", "cases/no_images"], "no_images"),
    ("eval_device_bogus", EVAL_HG + ["--device", "quantum"], "--device"),
    ("eval_device_cuda", EVAL_HG + ["--device", "cuda:3"], "cuda"),
    ("predict_hg_input_res_zero", PRED + ["--model", "models/hg.pt", "--input-res", "0"], "--input-res"),
    ("predict_hg_input_res_huge", PRED + ["--model", "models/hg.pt", "--input-res", "100000"], "--input-res"),
    ("predict_threads_zero", PRED + ["--model", "models/hg.pt", "--threads", "0"], "--threads"),
    ("predict_threads_negative", PRED + ["--model", "models/hg.pt", "--threads", "-2"], "--threads"),
    ("predict_smooth_freq_zero", PRED + ["--model", "models/hg.pt", "--smooth-freq", "0"], "--smooth-freq"),
    ("predict_smooth_cutoff_negative", PRED + ["--model", "models/hg.pt", "--smooth-mincutoff", "-1"],
     "--smooth-mincutoff"),
    ("predict_smooth_beta_nan", PRED + ["--model", "models/hg.pt", "--smooth-beta", "nan"], "--smooth-beta"),
    ("predict_scale_nan", PRED + ["--model", "models/hg.pt", "--scale", "nan"], "--scale"),
    ("predict_scale_negative", PRED + ["--model", "models/hg.pt", "--scale", "-1"], "--scale"),
    ("predict_scale_inf", PRED + ["--model", "models/hg.pt", "--scale", "inf"], "--scale"),
    ("predict_center_nan", PRED + ["--model", "models/hg.pt", "--center", "nan", "3"], "--center"),
    ("predict_min_confidence_nan", PRED + ["--model", "models/op.pt", "--min-confidence", "nan"],
     "--min-confidence"),
    ("predict_min_confidence_two", PRED + ["--model", "models/op.pt", "--min-confidence", "2"], "--min-confidence"),
    ("predict_max_people_negative", PRED + ["--model", "models/op.pt", "--max-people", "-1"], "--max-people"),
    ("predict_draw_threshold_nan", PRED + ["--model", "models/op.pt", "--draw-threshold", "nan"],
     "--draw-threshold"),
    ("predict_height_negative", PRED + ["--model", "models/op.pt", "--height", "-256"], "--height"),
    ("predict_out_is_file", ["predict", "images/person.jpg", "--quiet", "--model", "models/hg.pt", "--out",
                             "params.yaml"], "params.yaml"),
    ("predict_json_is_dir", PRED + ["--model", "models/hg.pt", "--json", "images"], "images"),
    ("predict_source_missing", ["predict", "cases/no_such.jpg", "--model", "models/hg.pt", "--quiet"],
     "no_such.jpg"),
    ("predict_source_empty_dir", ["predict", "data/prepared", "--model", "models/hg.pt", "--quiet"],
     "data/prepared"),
    ("predict_source_unknown_suffix", ["predict", "params.yaml", "--model", "models/hg.pt", "--quiet"],
     "params.yaml"),
    ("bench_runs_zero", ["bench", "models/hg.pt", "--backends", "torch", "--runs", "0"], "--runs"),
    ("bench_warmup_negative", ["bench", "models/hg.pt", "--backends", "torch", "--warmup", "-1"], "--warmup"),
    ("bench_backend_unknown", ["bench", "models/hg.pt", "--backends", "torch,tpu"], "tpu"),
    ("bench_shape_zero", ["bench", "models/hg.pt", "--backends", "torch", "--input-shape", "1,3,0,0"],
     "--input-shape"),
    ("bench_shape_huge", ["bench", "models/hg.pt", "--backends", "torch", "--input-shape", "64,3,8192,8192"],
     "--input-shape"),
    ("bench_json_is_dir", ["bench", "models/hg.pt", "--backends", "torch", "--runs", "1", "--warmup", "0",
                           "--json", "images"], "images"),
    ("export_atol_negative", ["export", "models/hg.pt", "--out", "out/export_atol_negative", "--atol", "-1"],
     "--atol"),
    ("export_atol_nan", ["export", "models/hg.pt", "--out", "out/export_atol_nan", "--atol", "nan"], "--atol"),
    ("export_latency_negative", ["export", "models/hg.pt", "--out", "out/export_latency_negative",
                                 "--latency-runs", "-1"], "--latency-runs"),
    ("export_shape_channels", ["export", "models/hg.pt", "--out", "out/export_shape_channels", "--input-shape",
                               "1,4,64,64"], "--input-shape"),
    ("export_out_is_file", ["export", "models/hg.pt", "--out", "params.yaml"], "params.yaml"),
    ("export_checkpoint_is_onnx", ["export", "models/hg.onnx", "--out", "out/export_checkpoint_is_onnx"],
     "hg.onnx"),
]
for cid, argv, text in CLI_BAD:
    if argv[0] == "predict" and "--out" not in argv:
        argv = argv + ["--out", f"out/cli_{cid}"]
    case(f"cli_{cid}", "pose", argv, [text], timeout=60)


# ----------------------------------------------------------------------------------------------- model files
MODEL_BAD = {
    "pt_truncated": (derived("models/hg.pt", "model.pt", lambda b: b[: len(b) // 2]), "model.pt"),
    "pt_text": (write("model.pt", "not a checkpoint\n"), "model.pt"),
    "pt_empty": (write("model.pt", b""), "model.pt"),
    "pt_dir": (make_dir("model.pt"), "model.pt"),
    "pt_fifo": (make_fifo("model.pt"), "model.pt"),
    "pt_nan_weights": (lambda ws, d: shutil.copy(ws / "models/hg_nan.pt", d / "model.pt"), "model.pt"),
    "onnx_garbage": (write("model.onnx", bytes(range(256)) * 16), "model.onnx"),
    "onnx_truncated": (derived("models/hg.onnx", "model.onnx", lambda b: b[: len(b) // 2]), "model.onnx"),
    "xml_garbage": (both(write("model.xml", "<net><broken"), derived("models/hg.bin", "model.bin", lambda b: b)),
                    "model.xml"),
    "xml_no_bin": (derived("models/hg.xml", "model.xml", lambda b: b), "model"),
    "unknown_suffix": (write("model.h5", b"\x89HDF\r\n"), "model.h5"),
}
for name, (setup, text) in MODEL_BAD.items():
    model = f"cases/model_{name}_predict/" + ("model.h5" if name == "unknown_suffix" else
                                             "model.onnx" if name.startswith("onnx") else
                                             "model.xml" if name.startswith("xml") else "model.pt")
    case(f"model_{name}_predict", "pose", ["predict", "images/person.jpg", "--model", model, "--out",
                                           f"out/model_{name}_predict", "--quiet"], [text], setup=setup, timeout=60)
for cmd in ("eval", "export", "bench"):
    model = f"cases/model_nan_{cmd}/model.pt"
    argv = {"eval": ["eval", model, "--dataset", "data/prepared/mpii/val.json", "--quiet"],
            "export": ["export", model, "--out", f"out/model_nan_{cmd}"],
            "bench": ["bench", model, "--backends", "torch", "--runs", "1", "--warmup", "0"]}[cmd]
    case(f"model_nan_{cmd}", "pose", argv, ["model.pt", "finite"],
         setup=lambda ws, d: shutil.copy(ws / "models/hg_nan.pt", d / "model.pt"), timeout=60)
    case(f"model_truncated_{cmd}", "pose", [a.replace("model_nan_", "model_truncated_") for a in argv], ["model.pt"],
         setup=derived("models/hg.pt", "model.pt", lambda b: b[: len(b) // 2]), timeout=60)


# a pickle that runs a command when unpickled: no loader may execute it (the workspace fingerprint would show
# the file it creates; every loader uses weights_only loading)
class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_CHECKPOINT",))


def _malicious(ws: Path, d: Path) -> None:
    import pickle

    d.mkdir(parents=True, exist_ok=True)
    (d / "model.pt").write_bytes(pickle.dumps({"arch": HG_ARCH, "state_dict": _Exploit()}))


for cmd, argv in {"predict": ["predict", "images/person.jpg", "--quiet"],
                  "eval": ["eval", "--dataset", "data/prepared/mpii/val.json", "--quiet"],
                  "export": ["export", "--out", "out/model_malicious_export"],
                  "bench": ["bench", "--backends", "torch", "--runs", "1"]}.items():
    model = f"cases/model_malicious_{cmd}/model.pt"
    argv = argv[:1] + ([model] if cmd != "predict" else []) + argv[1:] + \
        (["--model", model, "--out", f"out/model_malicious_{cmd}"] if cmd == "predict" else [])
    case(f"model_malicious_{cmd}", "pose", argv, ["model.pt", "nothing was executed"], setup=_malicious)
case("model_malicious_teacher", "flow", ["flows.train_hourglass", "student_fpd"], ["model.pt"],
     setup=lambda ws, d: _malicious(ws, d / "models" / "train_teacher"),
     params=lambda p: p.setdefault("paths", {}).update(models="cases/model_malicious_teacher/models"))


# ================================================================================================= workspace
def _tiny_params() -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["sample"].update(coco_train_images=4, coco_val_images=2, mpii_train_people=4, mpii_val_people=4,
                            unlabeled_images=2, coco_image_size=[128, 96], mpii_image_size=[96, 96],
                            unlabeled_image_size=[64, 64], contact_sheet=None)
    params["coco"]["val_subset_size"] = 2
    # trainings that fit the tiny data, should a bad value ever get through (it would then train, and the case fail)
    params["fpd"]["profiles"]["sample"]["train"].update(epochs=1, batch_size=2)
    params["fpd"]["profiles"]["sample"]["roles"] = {}
    params["openpose"]["profiles"]["sample"]["train"]["batch_size"] = 2
    return params


def _build_workspace(ws: Path) -> None:
    import cv2
    import torch

    from pose.checkpoint import save_model
    from pose.data import coco, mpii, synthetic
    from pose.export import export_onnx, export_openvino, io_names
    from pose.families import build_model

    ws.mkdir(parents=True)
    params = _tiny_params()
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    synthetic.generate_sample(ws / params["sample"]["out"],
                              synthetic.SampleConfig.from_params(params["sample"], source="test"))
    m = params["mpii"]
    mpii.prepare_mpii(ws / m["images"], ws / m["annotations"], ws / m["gt_val_mat"], ws / m["link"],
                      ws / m["prepared"])
    c = params["coco"]
    coco.prepare_train_labels(ws / c["train_annotations"], ws / c["train_images"], ws / c["labels_out"])
    coco.make_val_subset(ws / c["val_annotations"], 2, 0, ws / c["val_subset_out"], ws / c["val_images"])
    # one-image COCO files (an annotation with keypoints first) for the annotation cases
    for split, name in (("train", "coco_train_one.json"), ("val", "coco_val_one.json")):
        data = json.loads((ws / c[f"{split}_annotations"]).read_text())
        ann = next(a for a in data["annotations"] if not a["iscrowd"] and a["num_keypoints"] > 5)
        image = next(im for im in data["images"] if im["id"] == ann["image_id"])
        data.update(images=[image], annotations=[ann])
        (ws / name).write_text(json.dumps(data))
    one = json.loads((ws / "coco_val_one.json").read_text())
    one["images"][0]["file_name"] = "000000000001.jpg"
    one["images"][0]["id"] = one["annotations"][0]["image_id"] = 1
    (ws / "coco_one.json").write_text(json.dumps(one))
    (ws / "images").mkdir()
    shutil.copy(ws / c["val_images"] / json.loads((ws / "coco_val_one.json").read_text())["images"][0]["file_name"],
                ws / "images" / "person.jpg")
    frames = [cv2.imread(str(ws / "images" / "person.jpg"))] * 12
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(ws / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (w, h))
    for f in frames:
        writer.write(f)
    writer.release()
    # tiny models with random weights; one with NaN weights
    torch.manual_seed(0)
    models = ws / "models"
    hg = build_model(HG_ARCH)
    save_model(models / "hg.pt", hg, HG_ARCH)
    save_model(models / "op.pt", build_model(OP_ARCH), OP_ARCH)
    with torch.no_grad():
        next(hg.parameters()).fill_(float("nan"))
    save_model(models / "hg_nan.pt", hg, HG_ARCH)
    hg = build_model(HG_ARCH).eval()
    name, outs = io_names("hourglass", 1)
    export_onnx(hg, models / "hg.onnx", (1, 3, 64, 64), name, outs)
    export_openvino(models / "hg.onnx", models / "hg.xml")


def fingerprint(root: Path, skip: tuple[str, ...] = ("out", "cases", "__pycache__")) -> dict[str, str]:
    """Every path under ``root`` (but the skipped top-level folders) → its kind and content hash."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        if rel_dir.parts and rel_dir.parts[0] in skip:
            dirnames[:] = []
            continue
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            rel = str(rel_dir / n)
            if p.is_symlink():
                found[rel] = "link:" + os.readlink(p)
            elif p.is_file():
                found[rel] = hashlib.sha1(p.read_bytes()).hexdigest()
            elif p.is_dir():
                found[rel] = "dir"
            else:
                found[rel] = "other"
    return found


def _prepare_cases(ws: Path, cases: list[Case]) -> None:
    base = (ws / "params.yaml").read_text()
    for c in cases:
        d = ws / "cases" / c.id
        d.mkdir(parents=True, exist_ok=True)
        (ws / "out" / c.id).parent.mkdir(parents=True, exist_ok=True)
        if c.params_text is not None:
            (d / "params.yaml").write_bytes(c.params_text(base))
        elif c.params is not None:
            p = copy.deepcopy(yaml.safe_load(base))
            c.params(p)
            (d / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
        if c.setup is not None:
            c.setup(ws, d)


def _runner_env(prefect_server: str, home: Path) -> dict[str, str]:
    env = prefect_test_env(home)
    env.update(PREFECT_API_URL=prefect_server, PATH=f"{VENV_BIN}:{env.get('PATH', '')}",
               PYTHONPATH=str(REPO), POSEPIPE_PREFECT_PROBE="0", TQDM_DISABLE="1")
    return env


def run_cases(ws: Path, cases: list[Case], env: dict[str, str]) -> dict[str, dict]:
    spec = [{"id": c.id, "kind": c.kind, "args": c.args, "cwd": str(ws), "env": c.env(ws), "timeout": c.timeout}
            for c in cases]
    (ws.parent / "cases.json").write_text(json.dumps(spec))
    results = ws.parent / "results.json"
    subprocess.run([sys.executable, str(RUNNER), str(ws.parent / "cases.json"), str(results)], env=env,
                   check=True, timeout=1500)
    return {r["id"]: r for r in json.loads(results.read_text())}


@pytest.fixture(scope="module")
def bad_input_run(request, tmp_path_factory, prefect_server):
    """Build the workspace, run every selected case once (one runner process); yields (workspace, results by id,
    changed paths, the runner's environment)."""
    wanted = {item.callspec.params.get("c").id for item in request.session.items
              if item.fspath == request.fspath and hasattr(item, "callspec") and "c" in item.callspec.params}
    wanted |= {item.callspec.params["cid"] for item in request.session.items
               if hasattr(item, "callspec") and "cid" in item.callspec.params}
    cases = [c for c in CASES if c.id in wanted] or CASES
    root = tmp_path_factory.mktemp("bad_input")
    ws = root / "ws"
    _build_workspace(ws)
    _prepare_cases(ws, cases)
    before = fingerprint(ws)
    env = _runner_env(prefect_server, root / "prefect_home")
    results = run_cases(ws, cases, env)
    after = fingerprint(ws)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    yield ws, results, changed, env


def test_there_are_at_least_150_cases():
    assert len(CASES) >= 150, len(CASES)


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_a_clear_error(bad_input_run, c: Case):
    ws, results, _, _ = bad_input_run
    r = results[c.id]
    err = r["stderr"]
    assert not r["hung"], f"hung (killed after {c.timeout} s); stderr:\n{err[-2000:]}"
    assert r["returncode"] not in (0, None), f"exit 0; stdout:\n{r['stdout'][-1500:]}\nstderr:\n{err[-1500:]}"
    assert "Traceback" not in err, err[-3000:]
    missing = [t for t in c.expect if t not in err]
    assert not missing, f"stderr does not name {missing}:\n{err[-2000:]}"
    if r["returncode"] != 2:   # argparse's usage errors print the usage first (status 2), then the one line
        assert len(err.strip().splitlines()) <= 12, f"a clear error is short; got:\n{err[-3000:]}"
    else:
        assert err.strip().splitlines()[-1].startswith(f"pose {c.args[0]}: error: argument "), err[-500:]


def test_nothing_outside_the_outputs_changed(bad_input_run):
    _, _, changed, _ = bad_input_run
    assert changed == []


@pytest.mark.parametrize("cid", ["cli_eval_batch_negative", "image_huge_strip_predict_file",
                                 "param_coco_net_input_zero", "json_fifo_mpii_prep"])
def test_forked_case_matches_a_real_process(bad_input_run, cid):
    """The runner's forked child prints what a real ``pose`` / ``python -m flows.x`` process prints."""
    ws, results, _, env = bad_input_run
    c = next(x for x in CASES if x.id == cid)
    cmd = [str(VENV_BIN / "pose"), *c.args] if c.kind == "pose" else [sys.executable, "-m", *c.args]
    proc = subprocess.run(cmd, cwd=ws, env={**env, **c.env(ws)}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == results[cid]["returncode"]
    assert proc.stderr.strip().splitlines()[-1] == results[cid]["stderr"].strip().splitlines()[-1]
