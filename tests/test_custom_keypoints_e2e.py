"""A second keypoint set from params alone: the sample's body21 COCO-format dataset (docs/CUSTOM_DATASET.md),
both families trained by ``dvc repro`` for a few steps, then evaluated, exported with parity and run by
``pose predict`` as a user would — no code edited.

The recipe's ``-S`` values are written into the copy's params.yaml (``dvc exp run -S`` does the same).
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from test_pipeline_e2e import VENV_BIN, dvc, repo_copy, stage_env, tiny_pipeline_params, write_params  # noqa: F401 (fixtures)

SAMPLE = "data/sample"
BODY21 = f"{SAMPLE}/body21"
#: docs/CUSTOM_DATASET.md's recipe (the `-S` values of its `dvc exp run`)
RECIPE = {
    "coco.train_annotations": f"{BODY21}/annotations/person_keypoints_train2017.json",
    "coco.val_annotations": f"{BODY21}/annotations/person_keypoints_val2017.json",
    "openpose.keypoints": f"{BODY21}/body21.yaml",
    "fpd.keypoints": f"{BODY21}/body21.yaml",
    "mpii.format": "coco",
    "mpii.images": f"{SAMPLE}/coco",
}


def apply_recipe(params: dict) -> dict:
    for dotted, value in RECIPE.items():
        section, key = dotted.split(".")
        params[section][key] = value
    return params


def test_the_recipe_is_the_documented_one():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "CUSTOM_DATASET.md").read_text()
    for dotted, value in RECIPE.items():
        assert f"-S {dotted}={value}" in doc, dotted


def _pose(repo: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    run = subprocess.run([str(VENV_BIN / "pose"), *args], cwd=repo, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run


@pytest.mark.slow
def test_both_families_train_evaluate_export_and_predict_a_custom_set(repo_copy: Path, stage_env: dict) -> None:
    def tiny(p: dict) -> dict:
        p = apply_recipe(tiny_pipeline_params(p))
        p["fpd"]["models"]["teacher"]["num_stacks"] = 2     # the suite's budget: a small teacher still distils
        return p

    write_params(repo_copy, tiny)
    run = dvc(repo_copy, "repro", "eval_mpii", "openpose@step1", env=stage_env, timeout=900)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]

    from pose import model_info
    from pose.skeletons import get_skeleton

    body21 = get_skeleton("body21")
    names = list(body21.keypoints)
    manifest = json.loads((repo_copy / "data/prepared/mpii/dataset.json").read_text())
    assert manifest["format"] == "coco" and manifest["gt_val"] == "gt_val.json"
    labels = json.loads((repo_copy / "data/prepared/coco/train_labels.json").read_text())
    assert labels and all(len(e["keypoints"]) == 21 for e in labels)

    # eval_mpii: every FPD model (distilled ones, unlabelled images included) and the mean pose, by keypoint
    for name in ("teacher", "student", "student_fpd", "student_fpd_unlabeled", "mean_pose"):
        row = json.loads((repo_copy / f"metrics/mpii/{name}.json").read_text())
        assert list(row) == names + ["Mean"], name
    assert json.loads((repo_copy / "records/mpii/student.json").read_text())["protocol"].startswith("PCK")

    hourglass = repo_copy / "models/train_student/model.pt"
    openpose = repo_copy / "models/openpose_step1/model.pt"
    for path in (hourglass, openpose):                      # the set travels inside the model file
        assert model_info.read(path).skeleton() == body21, path

    # evaluation: PCK (box-normalised) for the single-person model, COCO AP with the set's sigmas for bottom-up
    val = repo_copy / "data/prepared/mpii/val.json"
    out = repo_copy / "pck.json"
    _pose(repo_copy, stage_env, "eval", str(hourglass), "--dataset", str(val), "--quiet", "--json", str(out))
    pck = json.loads(out.read_text())["metrics"]
    assert set(names) <= set(pck) and 0.0 <= pck["Mean"] <= 100.0 and "bbox" in pck["protocol"]
    coco_val = repo_copy / BODY21 / "annotations/person_keypoints_val2017.json"
    out = repo_copy / "ap.json"
    _pose(repo_copy, stage_env, "eval", str(openpose), "--dataset", str(coco_val), "--images",
          str(repo_copy / SAMPLE / "coco/val2017"), "--quiet", "--json", str(out))
    ap = json.loads(out.read_text())["metrics"]        # a 1-epoch model: AP is measured, not good
    assert 0.0 <= ap["AP"] <= 1.0 and ap["num_results"] >= 0   # (test_coco_ap: the set's sigmas score it)

    # the export stage's accuracy check reads the same ground truth through --gt
    out = repo_copy / "pck_gt.json"
    _pose(repo_copy, stage_env, "eval", str(hourglass), "--dataset", str(val), "--gt", str(val.parent / "gt_val.json"),
          "--quiet", "--json", str(out))
    assert json.loads(out.read_text())["metrics"]["Mean"] == pck["Mean"]

    # export: ONNX and OpenVINO verified against torch; the exported files record the set too
    for path, name, shape in ((hourglass, "hg", "1,3,64,64"), (openpose, "op", "1,3,64,96")):
        folder = repo_copy / f"export_{name}"
        _pose(repo_copy, stage_env, "export", str(path), "--out", str(folder), "--input-shape", shape,
              "--latency-runs", "1", "--json", str(folder.with_suffix(".json")))
        report = json.loads(folder.with_suffix(".json").read_text())
        assert all(p["passed"] for b, p in report["parity"].items() if b != "openvino_default"), report["parity"]
        for file in ("model.onnx", "model.xml"):
            assert model_info.read(folder / file).skeleton() == body21, file

    # predict: the JSON names the set's keypoints, one [x, y, score] per keypoint
    image = repo_copy / SAMPLE / "coco/val2017" / json.loads(coco_val.read_text())["images"][0]["file_name"]
    for name, path in (("hg", hourglass), ("op", repo_copy / "export_op/model.xml")):
        out = repo_copy / f"pred_{name}"
        _pose(repo_copy, stage_env, "predict", str(image), "--model", str(path), "--out", str(out), "--json",
              str(out / "p.json"), "--quiet", "--min-confidence", "0")
        records = json.loads((out / "p.json").read_text())
        for r in records:
            assert r["skeleton"] == "body21" and r["keypoint_names"] == names
            assert np.asarray(r["keypoints"]).shape == (3 * 21,)
    assert json.loads((repo_copy / "pred_hg/p.json").read_text()), "the hourglass always reports its one person"
    # (a 1-epoch OpenPose model may find nobody; test_coco_ap checks its records' names on given poses)
