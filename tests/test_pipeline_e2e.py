"""End to end: ``dvc repro`` of the real dvc.yaml in a temporary copy of the repository, on tiny params.

The copy holds the files git would commit (tracked + untracked-not-ignored), gets its own git repository, and
runs every flow against the session's Prefect server on 127.0.0.1 (``prefect_server`` in conftest.py), so each
stage pays ~2 s of Prefect overhead instead of starting an ephemeral server.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import prefect_test_env

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
DATA_STAGES = ["make_sample", "coco_labels", "coco_val_subset", "mpii_prep"]


def copy_repository(dst: Path) -> Path:
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, check=True, capture_output=True,
    ).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    git = ["git", "-c", "user.email=test@example.invalid", "-c", "user.name=posepipe tests"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=dst, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dst, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "copy"], cwd=dst, check=True)
    return dst


def tiny_sample_params(params: dict) -> dict:
    """Shrink the synthetic dataset so that the data stages take seconds."""
    params["sample"].update(
        coco_train_images=12, coco_val_images=6, mpii_train_people=16, mpii_val_people=8, unlabeled_images=6,
    )
    params["coco"]["val_subset_size"] = 4
    return params


def write_params(repo: Path, edit) -> None:
    path = repo / "params.yaml"
    params = edit(yaml.safe_load(path.read_text()))
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def dvc(repo: Path, *args: str, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "dvc"), *args], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    return copy_repository(tmp_path / "repo")


@pytest.fixture
def stage_env(prefect_server: str, tmp_path: Path) -> dict:
    env = prefect_test_env(tmp_path / "prefect_home")
    env["PREFECT_API_URL"] = prefect_server
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
    return env


@pytest.mark.slow
def test_data_stages_reproduce_and_are_then_up_to_date(repo_copy: Path, stage_env: dict) -> None:
    write_params(repo_copy, tiny_sample_params)
    run = dvc(repo_copy, "repro", *DATA_STAGES, env=stage_env)
    assert run.returncode == 0, run.stdout + run.stderr

    coco = json.loads((repo_copy / "data/sample/coco/annotations/person_keypoints_train2017.json").read_text())
    assert len(coco["images"]) == 12
    labels = json.loads((repo_copy / "data/prepared/coco/train_labels.json").read_text())
    assert labels and all(len(e["keypoints"]) == 18 for e in labels)
    subset = json.loads((repo_copy / "data/prepared/coco/val_subset.json").read_text())
    assert len(subset["images"]) == 4
    val = json.loads((repo_copy / "data/prepared/mpii/val.json").read_text())
    assert len(val) == 8
    assert (repo_copy / "data/mpii/images").is_symlink()

    again = dvc(repo_copy, "repro", *DATA_STAGES, env=stage_env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Data and pipelines are up to date" in again.stdout, again.stdout
