"""Never delete what the project did not write (pose/outputs.py): a user's folder or file at an output path
survives, with a message naming it; the project's own outputs are replaced on a re-run; a failing ``pose predict``
leaves a named partial state.

Flows run as real ``python -m flows.<name>`` processes (four runs of three flows, against the session's Prefect
server); everything else is library-level (the ``pose`` command in-process, as tests/test_cli.py runs it).
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from conftest import VENV_BIN, prefect_test_env
from pose import outputs
from pose.data import coco, mpii, synthetic
from pose.io import PoseDataError, atomic_path, read_json

ROOT = Path(__file__).resolve().parents[1]
MARKER = outputs.MARKER


def user_folder(path: Path) -> dict[str, bytes]:
    """A folder of someone else's: files and a ``.git``; returns its contents to compare against later."""
    (path / ".git" / "objects").mkdir(parents=True)
    (path / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (path / "notes.txt").write_text("my notes\n")
    (path / "sub").mkdir()
    (path / "sub" / "data.bin").write_bytes(b"\x00\x01")
    return contents(path)


def contents(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else b"<dir>") for p in sorted(path.rglob("*"))}


def tiny_sample_config(contact_sheet: str | None = None) -> synthetic.SampleConfig:
    return synthetic.SampleConfig(seed=1, coco_train_images=3, coco_val_images=2, coco_image_size=(256, 192),
                                  max_people=2, mpii_train_people=3, mpii_val_people=2, mpii_image_size=(64, 64),
                                  unlabeled_images=1, unlabeled_image_size=(48, 48), contact_sheet=contact_sheet)


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("outputs") / "sample"
    synthetic.generate_sample(out, tiny_sample_config())
    return out


# ------------------------------------------------------------------------------------------------ atomic folders
def test_atomic_folder_refuses_a_users_folder_before_the_work(tmp_path):
    target = tmp_path / "out"
    before = user_folder(target)
    ran = []
    with pytest.raises(PoseDataError) as e:
        with atomic_path(target, is_dir=True):
            ran.append(1)
    assert e.value.path == str(target) and "not written by posepipe" in str(e.value)
    assert MARKER in str(e.value) and "nothing was changed" in str(e.value)
    assert ran == [] and contents(target) == before and sorted(os.listdir(tmp_path)) == ["out"]


def test_atomic_folder_marks_and_replaces_its_own_empty_or_new(tmp_path):
    target = tmp_path / "out"
    target.mkdir()                                                    # an empty folder is free
    with atomic_path(target, is_dir=True, written_by="posepipe test") as tmp:
        (tmp / "a.txt").write_text("1")
    assert read_json(target / MARKER)["written_by"] == "posepipe test" and outputs.owns_folder(target)
    with atomic_path(target, is_dir=True) as tmp:                     # its own: replaced whole
        (tmp / "b.txt").write_text("2")
    assert sorted(os.listdir(target)) == [MARKER, "b.txt"]
    assert sorted(os.listdir(tmp_path)) == ["out"]                    # no temporaries left


def test_atomic_folder_checks_again_before_the_replace(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(PoseDataError, match="not written by posepipe"):
        with atomic_path(target, is_dir=True) as tmp:
            (tmp / "a.txt").write_text("1")
            before = user_folder(target)                              # appears while the work runs
    assert contents(target) == before and sorted(os.listdir(tmp_path)) == ["out"]


def test_a_file_or_symlink_at_a_folder_path(tmp_path):
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    theirs.write_text("keep me")
    with pytest.raises(PoseDataError, match="a file.*not written by posepipe"):
        outputs.check_folder(theirs)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "mine_target", target_is_directory=True)
    with pytest.raises(PoseDataError, match="a symlink"):
        outputs.check_folder(link)
    mine.write_text("x")
    outputs.record_file(mine)
    with atomic_path(mine, is_dir=True) as tmp:                       # a file the project owns may be replaced
        (tmp / "a").write_text("1")
    assert mine.is_dir() and theirs.read_text() == "keep me"


# ------------------------------------------------------------------------------------------------ files
def test_claim_and_record_files(tmp_path):
    out = tmp_path / "labels.json"
    outputs.claim_file(out)                                           # nothing there: free
    out.write_text("[]")
    with pytest.raises(PoseDataError) as e:                          # written, but not recorded
        outputs.claim_file(out)
    assert e.value.path == str(out) and "not written by posepipe" in str(e.value)
    outputs.record_file(out)
    outputs.claim_file(out)
    assert read_json(tmp_path / MARKER)["files"] == ["labels.json"]
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(PoseDataError, match="is a folder, but a file is written here"):
        outputs.claim_file(tmp_path / "folder.json")
    out.unlink()                                                      # gone: dropped from the registry next time
    (tmp_path / "b.json").write_text("{}")
    outputs.record_file(tmp_path / "b.json")
    assert read_json(tmp_path / MARKER)["files"] == ["b.json"]
    outputs.prepare_folder(tmp_path / "run", "posepipe test")         # inside a marked folder: everything is owned
    (tmp_path / "run" / "deep").mkdir()
    (tmp_path / "run" / "deep" / "x.json").write_text("{}")
    outputs.claim_file(tmp_path / "run" / "deep" / "x.json")
    outputs.record_file(tmp_path / "run" / "deep" / "x.json")
    assert not (tmp_path / "run" / "deep" / MARKER).exists()


def test_record_file_loses_no_name_when_many_write_at_once(tmp_path):
    names = [f"f{i}.json" for i in range(16)]
    for n in names:
        (tmp_path / n).write_text("{}")
    threads = [threading.Thread(target=outputs.record_file, args=(tmp_path / n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert read_json(tmp_path / MARKER)["files"] == sorted(names)
    assert sorted(os.listdir(tmp_path)) == sorted([*names, MARKER])   # no temporaries left


def test_a_file_dvc_restored_is_the_projects(tmp_path, monkeypatch):
    """A fresh clone after ``dvc pull`` has the file outputs but no registry: the md5 in ./dvc.lock vouches."""
    monkeypatch.chdir(tmp_path)
    out = Path("data/prepared/coco/train_labels.json")
    out.parent.mkdir(parents=True)
    out.write_text("[1, 2]\n")
    lock = {"schema": "2.0", "stages": {"coco_labels": {"cmd": "x", "outs": [
        {"path": str(out), "hash": "md5", "md5": hashlib.md5(out.read_bytes()).hexdigest(), "size": 7}]}}}
    Path("dvc.lock").write_text(yaml.safe_dump(lock))
    outputs.claim_file(out)
    out.write_text("[1, 2, 3]\n")                                     # edited since: not what DVC restored
    with pytest.raises(PoseDataError, match="not written by posepipe"):
        outputs.claim_file(out)


# ------------------------------------------------------------------------------------------------ the writers
def test_sample_rerun_over_its_own_output(tmp_path):
    out = tmp_path / "sample"
    sheet = tmp_path / "sheet.jpg"                                    # outside the folder: a file output
    synthetic.generate_sample(out, tiny_sample_config(str(sheet)))
    assert read_json(out / MARKER)["written_by"] == "posepipe make_sample"
    synthetic.generate_sample(out, tiny_sample_config(str(sheet)))    # its own output (and sheet): replaced
    sheet.write_bytes(b"mine")
    (tmp_path / MARKER).unlink()
    with pytest.raises(PoseDataError, match="sheet.jpg"):
        synthetic.generate_sample(out, tiny_sample_config(str(sheet)))
    assert sheet.read_bytes() == b"mine"


def test_mpii_prep_rerun_and_a_real_folder_at_the_link(sample, tmp_path):
    m = sample / "mpii"
    out, link = tmp_path / "prepared", tmp_path / "link"
    args = (m / "images", m / "mpii_annotations.json", m / "detections_our_format.mat")
    mpii.prepare_mpii(*args, link, out)
    mpii.prepare_mpii(*args, link, out)                               # its own folder and link: replaced
    assert read_json(out / MARKER)["written_by"] == "posepipe mpii_prep" and link.is_symlink()
    real = tmp_path / "real"
    before = user_folder(real)
    with pytest.raises(PoseDataError, match="not a symlink") as e:
        mpii.prepare_mpii(*args, real, tmp_path / "prepared2")
    assert e.value.path == str(real) and contents(real) == before and not (tmp_path / "prepared2").exists()


def test_coco_outputs_claimed_before_and_recorded_after(sample, tmp_path):
    c = sample / "coco"
    ann, images = c / "annotations" / "person_keypoints_train2017.json", c / "train2017"
    labels, subset = tmp_path / "prepared" / "train_labels.json", tmp_path / "prepared" / "val_subset.json"
    coco.prepare_train_labels(ann, images, labels)
    coco.prepare_train_labels(ann, images, labels)                    # its own file: replaced
    coco.make_val_subset(ann, 2, 0, subset)
    coco.make_val_subset(ann, 2, 0, subset)
    assert read_json(labels.parent / MARKER)["files"] == ["train_labels.json", "val_subset.json"]
    theirs = tmp_path / "theirs.json"
    theirs.write_text("precious")
    for write in (lambda: coco.prepare_train_labels(ann, images, theirs),
                  lambda: coco.make_val_subset(ann, 2, 0, theirs)):
        with pytest.raises(PoseDataError) as e:
            write()
        assert e.value.path == str(theirs) and "not written by posepipe" in str(e.value)
    assert theirs.read_text() == "precious"


# ------------------------------------------------------------------------------------------------ pose CLI
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    import torch

    from pose.checkpoint import save_model
    from pose.families import build_model

    torch.set_num_threads(2)
    torch.manual_seed(0)
    arch = {"family": "hourglass", "num_stacks": 1, "num_blocks": 1, "mobile": True}
    path = tmp_path_factory.mktemp("model") / "hourglass.pt"
    save_model(path, build_model(arch), arch)
    return path


def image_folder(path: Path, n: int, broken: int | None = None) -> Path:
    path.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        if i == broken:
            (path / f"{i:03d}.png").write_bytes(b"not an image")
        else:
            cv2.imwrite(str(path / f"{i:03d}.png"), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    return path


def predict(*argv: str) -> int:
    from pose.cli import main

    return main(["predict", *argv, "--input-res", "64", "--quiet"])


def test_cli_refuses_a_users_folder_or_file(tiny_model, tmp_path, capsys):
    from pose.cli import main

    images = image_folder(tmp_path / "images", 1)
    theirs = tmp_path / "theirs"
    before = user_folder(theirs)
    assert predict(str(images), "--model", str(tiny_model), "--out", str(theirs)) == 1
    err = capsys.readouterr().err
    assert str(theirs) in err and "not written by posepipe" in err and contents(theirs) == before
    # the wrong kind of path: a clean error naming it, no traceback
    assert predict(str(images), "--model", str(tiny_model), "--out", str(tmp_path / "o"), "--json", str(theirs)) == 1
    assert f"{theirs}: exists and is a folder" in capsys.readouterr().err
    a_file = theirs / "notes.txt"
    assert predict(str(images), "--model", str(tiny_model), "--out", str(a_file)) == 1
    assert f"{a_file}: exists and is not a folder" in capsys.readouterr().err
    assert main(["export", str(tiny_model), "--out", str(theirs), "--no-verify"]) == 1
    assert str(theirs) in capsys.readouterr().err
    assert main(["bench", str(tiny_model), "--backends", "torch", "--runs", "1", "--json", str(a_file)]) == 1
    assert f"{a_file}: exists and was not written by posepipe" in capsys.readouterr().err
    assert contents(theirs) == before and not (tmp_path / "o").exists()


def test_failing_predict_leaves_a_named_partial_state(tiny_model, tmp_path, capsys):
    images = image_folder(tmp_path / "images", 5, broken=2)
    out = tmp_path / "out"
    json_path, partial = out / "images_predictions.json", out / "images_predictions.json.partial"
    assert predict(str(images), "--model", str(tiny_model), "--out", str(out)) == 1
    err = capsys.readouterr().err
    assert (f"stopped at image 3 of 5 ({images / '002.png'}): " in err
            and f"2 images done, their drawings are in {out} and their poses in {partial} (marked incomplete)" in err)
    assert sorted(p.name for p in out.glob("*.jpg")) == ["000_pose.jpg", "001_pose.jpg"] and not json_path.exists()
    state = read_json(partial)
    assert state["complete"] is False and state["done"] == 2 and state["of"] == 5
    assert [r["image_id"] for r in state["results"]] == [0, 1]
    # fixed: the re-run over its own output succeeds, writes the plain list and removes the partial state
    cv2.imwrite(str(images / "002.png"), np.zeros((48, 64, 3), np.uint8))
    assert predict(str(images), "--model", str(tiny_model), "--out", str(out)) == 0
    results = read_json(json_path)
    assert isinstance(results, list) and [r["image_id"] for r in results] == [0, 1, 2, 3, 4]
    assert not partial.exists() and [r for r in results if r["image_id"] < 2] == state["results"]


def test_a_failing_first_image_is_its_own_error(tiny_model, tmp_path, capsys):
    images = image_folder(tmp_path / "images", 2, broken=0)
    out = tmp_path / "out"
    assert predict(str(images), "--model", str(tiny_model), "--out", str(out)) == 1
    err = capsys.readouterr().err
    assert f"{images / '000.png'}: " in err and "stopped at" not in err
    assert sorted(os.listdir(out)) == [MARKER]                        # nothing done, nothing kept


def test_a_bug_while_predicting_keeps_its_traceback_with_the_partial_state(tiny_model, tmp_path, monkeypatch):
    import pose.cli as cli

    images = image_folder(tmp_path / "images", 3)
    real, calls = cli.select_poses, []

    json_path = tmp_path / "r.json"

    def flaky(*a, **k):
        if calls:                                       # written as it goes: what a killed run leaves
            calls.append(read_json(tmp_path / "r.json.partial")["done"])
            raise RuntimeError("boom")
        calls.append(0)
        return real(*a, **k)

    monkeypatch.setattr(cli, "select_poses", flaky)
    monkeypatch.setattr(cli, "PARTIAL_EVERY_S", 0.0)
    with pytest.raises(RuntimeError, match="boom") as e:
        predict(str(images), "--model", str(tiny_model), "--out", str(tmp_path / "out"), "--json", str(json_path),
                "--no-images")
    assert any("stopped at image 2 of 3 (001): boom; 1 image done, their poses are in" in n for n in e.value.__notes__)
    assert calls == [0, 1] and read_json(tmp_path / "r.json.partial")["done"] == 1 and not json_path.exists()
    assert not (tmp_path / "out").exists()                            # --no-images with --json: --out unused


# ------------------------------------------------------------------------------------------------ flows
@pytest.fixture(scope="module")
def flow_env(prefect_server, tmp_path_factory) -> dict[str, str]:
    env = prefect_test_env(tmp_path_factory.mktemp("prefect_home"))
    env.update(PREFECT_API_URL=prefect_server, PATH=f"{VENV_BIN}:{env.get('PATH', '')}", PYTHONPATH=str(ROOT),
               POSEPIPE_PREFECT_PROBE="0", TQDM_DISABLE="1")
    return env


def run_flow(name: str, params: dict, tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return subprocess.run([sys.executable, "-m", f"flows.{name}"], cwd=ROOT, capture_output=True, text=True,
                          env={**env, "POSEPIPE_PARAMS": str(tmp_path / "params.yaml")}, timeout=180)


def test_make_sample_flow_keeps_a_users_folder_and_replaces_its_own(tmp_path, flow_env):
    cfg = tiny_sample_config()
    params = {"sample": {**{k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()},
                         "out": str(tmp_path / "sample")}}
    theirs = tmp_path / "sample"
    before = user_folder(theirs)
    p = run_flow("make_sample", params, tmp_path, flow_env)
    assert p.returncode == 1 and f"{theirs}: exists and was not written by posepipe" in p.stderr, p.stderr[-2000:]
    assert p.stderr.strip().splitlines()[-1].startswith("error in make_sample: ")   # run_flow's one line
    assert contents(theirs) == before
    own = tmp_path / "own"
    synthetic.generate_sample(own, cfg)
    (own / "coco" / "stale.txt").write_text("from an older run")
    p = run_flow("make_sample", {"sample": {**params["sample"], "out": str(own)}}, tmp_path, flow_env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert not (own / "coco" / "stale.txt").exists() and (own / "mpii" / "mpii_annotations.json").is_file()


def test_mpii_prep_and_coco_labels_flows_keep_a_users_folder(sample, tmp_path, flow_env):
    m, c = sample / "mpii", sample / "coco"
    prepared = tmp_path / "prepared"
    before = user_folder(prepared)
    p = run_flow("mpii_prep", {"mpii": {"images": str(m / "images"), "annotations": str(m / "mpii_annotations.json"),
                                        "gt_val_mat": str(m / "detections_our_format.mat"),
                                        "link": str(tmp_path / "link"), "prepared": str(prepared)}},
                 tmp_path, flow_env)
    assert p.returncode == 1 and f"{prepared}: exists and was not written by posepipe" in p.stderr, p.stderr[-2000:]
    assert contents(prepared) == before and not os.path.lexists(tmp_path / "link")
    labels = tmp_path / "labels.json"
    before = user_folder(labels)
    p = run_flow("coco_labels", {"coco": {"train_annotations": str(c / "annotations/person_keypoints_train2017.json"),
                                          "train_images": str(c / "train2017"), "labels_out": str(labels)}},
                 tmp_path, flow_env)
    assert p.returncode == 1 and f"{labels}: exists and is a folder" in p.stderr, p.stderr[-2000:]
    assert contents(labels) == before
