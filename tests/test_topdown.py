"""Top-down COCO records (pose.data.topdown), the prepared folder and its gt_val.json, and the center_box crop."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from pose.data.mpii import (BOX_PER_SCALE, CENTRE_SHIFT, MANIFEST, SCALE_PAD, crop_center_scale, prepared_images,
                            record_joints)
from pose.data.topdown import PAD, person_records, prepare_topdown, val_ground_truth
from pose.evaluation.pck import TopDownGT, load_val_gt, read_topdown_gt
from pose.io import PoseDataError, write_image
from pose.skeletons import COCO17, MPII16, skeleton_from_dict

COCO_NAMES = [("left_" + n[2:]) if n.startswith("l_") else ("right_" + n[2:]) if n.startswith("r_") else n
              for n in COCO17.keypoints]
TORSO5 = skeleton_from_dict("torso5", {"keypoints": ["head", "l_sho", "r_sho", "l_hip", "r_hip"],
                                       "flip_pairs": [["l_sho", "r_sho"], ["l_hip", "r_hip"]],
                                       "pck": {"normalize": "torso", "torso": ["l_sho", "r_hip"]}})


def kps(points: dict[int, tuple[float, float, int]], k: int = 17) -> list[float]:
    out = [0.0] * (3 * k)
    for j, (x, y, v) in points.items():
        out[3 * j:3 * j + 3] = [x, y, v]
    return out


def ann(aid, image_id, bbox, points, k=17, crowd=0, num=None):
    a = {"id": aid, "image_id": image_id, "iscrowd": crowd, "bbox": bbox, "area": bbox[2] * bbox[3],
         "keypoints": kps(points, k), "num_keypoints": sum(v > 0 for _, _, v in points.values()) if num is None
         else num, "category_id": 1}
    if crowd:
        a["segmentation"] = {"size": [80, 100], "counts": [8000]}
    return a


def coco_json(path, annotations, names=COCO_NAMES, images=None):
    images = images or [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80},
                        {"id": 2, "file_name": "b.jpg", "width": 120, "height": 90}]
    cats = [{"id": 1, "name": "person", "supercategory": "person", "keypoints": names, "skeleton": []}]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": cats}))
    return path


def two_image_annotations(k=17):
    return [
        ann(10, 1, [10.0, 20.0, 30.0, 40.0], {0: (15.0, 25.0, 2), 5: (20.5, 30.0, 1), 16: (0.0, 0.0, 2)}, k),
        ann(11, 1, [0.0, 0.0, 50.0, 50.0], {0: (5.0, 5.0, 2)}, k, crowd=1),           # crowd: skipped
        ann(12, 2, [5.0, 5.0, 20.0, 20.0], {}, k),                                   # no keypoints: skipped
        ann(13, 2, [4.0, 6.0, 50.0, 20.0], {1: (30.0, 10.0, 2), 2: (31.0, 11.0, 0)}, k),
        ann(14, 2, [5.0, 5.0, 0.0, 20.0], {1: (6.0, 10.0, 2)}, k),                    # zero width: skipped
    ]


def test_person_records_mapping_is_exact(tmp_path):
    path = coco_json(tmp_path / "ann" / "train.json", two_image_annotations())
    records = person_records(path, COCO17, tmp_path / "imgs" / "train", tmp_path / "imgs")
    assert [r["annotation_id"] for r in records] == [10, 13]
    a, b = records
    assert a["img_paths"] == "train/a.jpg" and b["img_paths"] == "train/b.jpg" and a["image_id"] == 1
    assert len(a["joint_self"]) == 17
    assert a["joint_self"][0] == [15.5, 25.5, 1] and a["joint_self"][5] == [21.0, 30.5, 0]
    assert a["joint_self"][16] == [0.5, 0.5, 1]                   # a labelled keypoint at COCO (0, 0) stays labelled
    assert a["joint_self"][1] == [0, 0, 0]
    assert b["joint_self"][2] == [0, 0, 0]                        # v = 0 → absent, whatever its coordinates
    assert a["objpos"] == [25.5, 40.5] and a["scale_provided"] == 40.0 / 200
    assert a["center_box"] == [24.5, 39.5, PAD * 40.0] and b["center_box"] == [28.5, 15.5, PAD * 50.0]
    assert a["bbox"] == [10.0, 20.0, 30.0, 40.0]
    joints, labelled = record_joints(records)
    assert joints.shape == (2, 17, 2) and labelled.sum() == 4
    assert joints[0, 0].tolist() == [14.5, 24.5]                  # internal = the COCO value − 0.5


def test_keypoint_set_mismatch_names_both(tmp_path):
    path = coco_json(tmp_path / "train.json", two_image_annotations())
    with pytest.raises(PoseDataError) as e:
        person_records(path, MPII16, tmp_path, tmp_path)
    assert e.value.field == "categories[0].keypoints" and e.value.path == str(path)
    assert "left_shoulder" in str(e.value) and "head_top" in str(e.value) and "mpii16" in str(e.value)
    # same count, other names
    names = COCO_NAMES[:16] + ["tail"]
    path = coco_json(tmp_path / "renamed.json", two_image_annotations(), names=names)
    with pytest.raises(PoseDataError, match="tail.*r_ankle") as e:
        person_records(path, COCO17, tmp_path, tmp_path)
    assert e.value.field == "categories[0].keypoints"


def test_a_custom_set_and_escaping_file_names(tmp_path):
    anns = [ann(1, 1, [10.0, 10.0, 40.0, 60.0], {1: (20.0, 20.0, 2), 4: (30.0, 50.0, 2)}, k=5)]
    path = coco_json(tmp_path / "t.json", anns, names=list(TORSO5.keypoints))
    (r,) = person_records(path, TORSO5, tmp_path / "imgs", tmp_path / "imgs")
    assert r["img_paths"] == "a.jpg" and len(r["joint_self"]) == 5
    images = [{"id": 1, "file_name": "../x.jpg", "width": 100, "height": 80}]
    path = coco_json(tmp_path / "esc.json", anns, names=list(TORSO5.keypoints), images=images)
    with pytest.raises(PoseDataError, match="outside the image root") as e:
        person_records(path, TORSO5, tmp_path / "imgs", tmp_path / "imgs")
    assert e.value.field == "file_name"


def test_val_ground_truth_sizes(tmp_path):
    path = coco_json(tmp_path / "v.json", two_image_annotations())
    gt = val_ground_truth(person_records(path, COCO17, tmp_path, tmp_path), COCO17)
    assert gt["normalize"] == "bbox" and gt["sizes"] == [40.0, 50.0] and gt["keypoints"] == list(COCO17.keypoints)
    assert gt["missing"][0][0] is False and gt["missing"][0][1] is True and gt["joints"][0][1] == [0.0, 0.0]
    anns = [ann(1, 1, [10.0, 10.0, 40.0, 60.0], {1: (20.0, 20.0, 2), 4: (23.0, 24.0, 1)}, k=5),
            ann(2, 1, [10.0, 10.0, 40.0, 60.0], {1: (20.0, 20.0, 2)}, k=5),            # r_hip missing
            ann(3, 2, [10.0, 10.0, 40.0, 60.0], {1: (20.0, 20.0, 2), 4: (20.0, 20.0, 2)}, k=5)]  # coincide
    path = coco_json(tmp_path / "t.json", anns, names=list(TORSO5.keypoints))
    gt = val_ground_truth(person_records(path, TORSO5, tmp_path, tmp_path), TORSO5)
    assert gt["sizes"][0] == 5.0 and math.isnan(gt["sizes"][1]) and math.isnan(gt["sizes"][2])
    with pytest.raises(PoseDataError, match="head boxes") as e:
        val_ground_truth([], MPII16)
    assert e.value.field == "pck.normalize"


@pytest.fixture
def coco(tmp_path):
    root = tmp_path / "coco"
    train = coco_json(root / "annotations" / "train.json", two_image_annotations())
    val = coco_json(root / "annotations" / "val.json", two_image_annotations()[:1])
    for split in ("train2017", "val2017"):
        for name in ("a.jpg", "b.jpg"):
            write_image(root / split / name, np.zeros((4, 4, 3), np.uint8))
    return {"train": train, "val": val, "train_images": root / "train2017", "val_images": root / "val2017",
            "root": root, "tmp": tmp_path}


def run_prepare(c, out, link, skeleton=COCO17):
    return prepare_topdown(c["train"], c["train_images"], c["val"], c["val_images"], skeleton, link, out)


def test_prepare_topdown(coco):
    out, link = coco["tmp"] / "prepared" / "coco", coco["tmp"] / "data" / "coco_images"
    summary = run_prepare(coco, out, link)
    assert summary["train"] == 2 and summary["val"] == 1 and summary["images"] == 3
    assert sorted(os.listdir(out)) == [".posepipe-output", MANIFEST, "gt_val.json", "train.json", "val.json"]
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest == {"written_by": "posepipe mpii_prep", "train": "train.json", "val": "val.json",
                        "gt_val": "gt_val.json", "images": os.path.relpath(link, out), "format": "coco",
                        "keypoints": "coco17"}
    assert link.is_symlink() and link.resolve() == coco["root"].resolve()
    assert prepared_images(out / "val.json").resolve() == coco["root"].resolve()
    train = json.loads((out / "train.json").read_text())
    assert [r["img_paths"] for r in train] == ["train2017/a.jpg", "train2017/b.jpg"]
    assert all((link / r["img_paths"]).is_file() for r in train)
    (val,) = json.loads((out / "val.json").read_text())
    assert val["img_paths"] == "val2017/a.jpg"
    gt = load_val_gt(out / "gt_val.json")
    assert isinstance(gt, TopDownGT) and gt.joints.shape == (1, 17, 2) and gt.sizes.tolist() == [40.0]
    assert gt.joints[0, 0].tolist() == [14.5, 24.5] and gt.missing.sum() == 14 and gt.names == COCO17.keypoints


def test_prepare_topdown_refuses_a_foreign_folder_and_writes_nothing_on_error(coco):
    out, link = coco["tmp"] / "theirs", coco["tmp"] / "link"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(PoseDataError, match="not written by posepipe"):
        run_prepare(coco, out, link)
    assert os.listdir(out) == ["notes.txt"] and not os.path.lexists(link)
    out2 = coco["tmp"] / "prepared"
    (coco["val_images"] / "a.jpg").unlink()
    with pytest.raises(PoseDataError, match="image missing"):
        run_prepare(coco, out2, link)
    assert not out2.exists() and not os.path.lexists(link)
    with pytest.raises(PoseDataError, match="head boxes"):
        run_prepare(coco, out2, link, skeleton=MPII16)
    assert not out2.exists() and not os.path.lexists(link)


def test_prepare_topdown_replaces_its_own_output_atomically(coco):
    out, link = coco["tmp"] / "prepared", coco["tmp"] / "link"
    run_prepare(coco, out, link)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    coco_json(coco["val"], [])                                        # no usable val person
    with pytest.raises(PoseDataError, match="no usable person"):
        run_prepare(coco, out, link)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not list(coco["tmp"].glob(".prepared*"))
    coco_json(coco["val"], two_image_annotations())
    assert run_prepare(coco, out, link)["val"] == 2


def test_read_topdown_gt_errors(tmp_path):
    good = {"keypoints": ["a", "b"], "normalize": "bbox", "joints": [[[1, 2], [3, 4]]], "missing": [[False, True]],
            "sizes": [10]}
    p = tmp_path / "gt.json"
    p.write_text(json.dumps(good))
    gt = read_topdown_gt(p)
    assert gt.joints.tolist() == [[[1, 2], [3, 4]]] and gt.missing.tolist() == [[False, True]]
    p.write_text(json.dumps(dict(good, sizes=[None])))
    assert math.isnan(read_topdown_gt(p).sizes[0])
    for change, fld in [({"joints": [[[1, 2]]]}, "joints"), ({"missing": [[0, 1]]}, "missing"),
                        ({"sizes": [0]}, "sizes"), ({"sizes": [1, 2]}, "sizes"), ({"normalize": "head_box"},
                                                                                    "normalize"),
                        ({"keypoints": []}, "keypoints"), ({"joints": [[[1, "x"], [3, 4]]]}, "joints")]:
        p.write_text(json.dumps(dict(good, **change)))
        with pytest.raises(PoseDataError) as e:
            read_topdown_gt(p)
        assert e.value.field == fld and e.value.path == str(p), change
    p.write_text(json.dumps({k: v for k, v in good.items() if k != "sizes"}))
    with pytest.raises(PoseDataError, match="missing") as e:
        read_topdown_gt(p)
    assert e.value.field == "sizes"
    with pytest.raises(PoseDataError, match="protocol .mat"):
        load_val_gt(tmp_path / "gt.txt")


# ----------------------------------------------------------------------------------------------- crop centre / scale
def old_crop_center_scale(records):
    """The formula before center_box existed."""
    c = np.asarray([r["objpos"] for r in records], dtype=np.float64).reshape(len(records), 2)
    s = np.asarray([r["scale_provided"] for r in records], dtype=np.float64).reshape(len(records))
    known = c[:, 0] != -1
    c[:, 1] += np.where(known, CENTRE_SHIFT * s, 0.0)
    s = np.where(known, s * SCALE_PAD, s)
    return c - 1.0, s


def test_crop_center_scale_unchanged_for_mpii_records():
    rng = np.random.default_rng(0)
    records = [{"objpos": [float(x), float(y)], "scale_provided": float(s)}
               for x, y, s in zip(rng.uniform(1, 500, 50), rng.uniform(1, 400, 50), rng.uniform(0.3, 5, 50))]
    records[3]["objpos"] = [-1.0, -1.0]
    c, s = crop_center_scale(records)
    c0, s0 = old_crop_center_scale(records)
    assert np.array_equal(c, c0) and np.array_equal(s, s0) and c.dtype == c0.dtype and s.shape == (50,)


def test_crop_center_scale_honours_center_box(tmp_path):
    mp = {"objpos": [50.0, 60.0], "scale_provided": 1.0}
    td = {"objpos": [26.0, 41.0], "scale_provided": 0.2, "center_box": [25.0, 40.0, 50.0]}
    c, s = crop_center_scale([mp, td, mp])
    c0, s0 = old_crop_center_scale([mp])
    assert np.array_equal(c[[0, 2]], np.repeat(c0, 2, axis=0)) and s[0] == s[2] == s0[0]
    assert c[1].tolist() == [25.0, 40.0] and s[1] == 50.0 / BOX_PER_SCALE
    path = coco_json(tmp_path / "t.json", two_image_annotations())
    records = person_records(path, COCO17, tmp_path, tmp_path)
    c, s = crop_center_scale(records)
    assert c.tolist() == [[24.5, 39.5], [28.5, 15.5]] and (s * BOX_PER_SCALE).tolist() == [PAD * 40, PAD * 50]
