"""Every ``dvc.yaml`` stage must depend on all the project code it runs, or ``dvc repro`` says "up to date" after
an edit to a file the stage imports.

How the check works (:func:`missing_deps`, :func:`stages_without_pose_dir`):

* The stages are read *resolved* (``${...}`` templating and ``foreach`` expanded) with DVC's own API:
  ``dvc.repo.Repo(root).index.stages`` (the ``PipelineStage`` ones); for each stage ``stage.name`` (e.g.
  ``openpose@step1``; prefixed with ``<dvc.yaml path>:`` outside the root's ``dvc.yaml``), ``stage.cmd`` and
  ``dep.fs_path`` of every ``stage.deps`` entry (taken relative to ``repo.root_dir``).
* Every stage's ``cmd`` must be ``python -m flows.<module> [args]``; any other command makes the check fail.
* One fresh interpreter (``sys.executable``, cwd = the repository root, environment unchanged) imports each
  flow module in turn and records the project files in ``sys.modules`` after each import (files under the
  root, outside the virtual environment). Between two flows it drops every project module from ``sys.modules``
  so each flow re-imports, and is credited with, all the project modules it needs; third-party modules
  (prefect, torch, ...) stay loaded, which keeps the whole collection to one interpreter start.
* Package data: the non-``.py`` files (git-tracked ones when the root is a git work tree) lying directly in
  the directory of a collected package module (e.g. ``pose/skeletons.json`` next to ``pose/__init__.py``)
  are required too.
* A required file is covered when it equals a dep path or lies under a dep directory.

A plain import misses imports made inside function bodies (common in ``pose/``), so a per-file list cannot be
proven complete. The rule is therefore, for every stage: (a) each file found above is covered, and (b) the
whole ``pose`` directory is covered (a dep ``pose``); (b) is its own test.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
POSE_DIR = "pose"
FLOW_CMD = re.compile(r"flows(\.[A-Za-z_]\w*)+")
_MARK = "@@posepipe-imports@@"

# Runs in a fresh interpreter, cwd = the repository root; argv[1:] = the flow modules to import.
_COLLECT = r"""
import importlib, json, os, sys, traceback
root = os.path.realpath(os.getcwd())
sys.path.insert(0, root)
prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}

def inside(path, top):
    return path == top or path.startswith(top + os.sep)

def project_path(path):
    if not isinstance(path, str) or not os.path.isabs(path):
        return None
    path = os.path.realpath(path)
    if not inside(path, root) or any(inside(path, p) for p in prefixes):
        return None
    return path

def project_modules():
    found = {}
    for name, mod in list(sys.modules.items()):
        paths = [getattr(mod, "__file__", None)]
        try:
            paths += list(mod.__path__)  # namespace packages have no __file__
        except Exception:
            pass
        paths = [p for p in map(project_path, paths) if isinstance(p, str) and p]
        if paths:
            found[name] = paths
    return found

result = {}
for module in sys.argv[1:]:
    for name in project_modules():
        del sys.modules[name]
    importlib.invalidate_caches()
    try:
        mod = importlib.import_module(module)
    except BaseException:
        result[module] = {"error": traceback.format_exc()}
        continue
    own = project_path(getattr(mod, "__file__", None))
    if own is None:
        result[module] = {"error": f"{module} was imported from {getattr(mod, '__file__', None)}, "
                                   f"not from a file under {root}"}
        continue
    files = set()
    for name, paths in project_modules().items():
        f = project_path(getattr(sys.modules[name], "__file__", None))
        if f:
            files.add(os.path.relpath(f, root).replace(os.sep, "/"))
    result[module] = {"files": sorted(files)}
print(%r + json.dumps(result))
""" % _MARK


def flow_module(cmd) -> str | None:
    """``flows.<module>`` when ``cmd`` is ``python -m flows.<module> [args]``, else ``None``."""
    if isinstance(cmd, (list, tuple)):
        if len(cmd) != 1:
            return None
        cmd = cmd[0]
    try:
        argv = shlex.split(cmd)
    except ValueError:
        return None
    if len(argv) < 3 or Path(argv[0]).name not in ("python", "python3") or argv[1] != "-m":
        return None
    return argv[2] if FLOW_CMD.fullmatch(argv[2]) else None


def resolved_stages(root: str | os.PathLike) -> list[tuple[str, object, list[str]]]:
    """``(stage name, stage.cmd, [dep paths relative to the root, posix])`` of every stage of the
    resolved pipeline (``${...}`` and ``foreach`` expanded by DVC itself)."""
    from dvc.repo import Repo
    from dvc.stage import PipelineStage

    with Repo(os.fspath(root)) as repo:
        top = os.path.realpath(repo.root_dir)
        out = []
        for stage in repo.index.stages:
            if not isinstance(stage, PipelineStage):  # a .dvc file (tracked data), not a dvc.yaml stage
                continue
            # stage.addressing is relative to the cwd; name it relative to the root instead
            dvcfile = os.path.relpath(os.path.realpath(stage.path), top).replace(os.sep, "/")
            name = stage.name if dvcfile == "dvc.yaml" else f"{dvcfile}:{stage.name}"
            deps = [os.path.relpath(os.path.realpath(d.fs_path), top).replace(os.sep, "/") for d in stage.deps]
            out.append((name, stage.cmd, deps))
    return out


def bad_cmds(root: str | os.PathLike) -> dict[str, object]:
    """Stages whose ``cmd`` is not ``python -m flows.<module> [args]``: ``{stage: cmd}``."""
    return {name: cmd for name, cmd, _ in resolved_stages(root) if flow_module(cmd) is None}


@cache
def flow_imports(root: str, modules: tuple[str, ...]) -> dict[str, list[str]]:
    """``{module: [project files in sys.modules after importing it]}`` (paths relative to ``root``), from one
    fresh interpreter. Cached per (root, modules): the code under ``root`` does not change during a test run."""
    proc = subprocess.run([sys.executable, "-c", _COLLECT, *modules], cwd=root, capture_output=True, text=True,
                          timeout=300)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(_MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"collecting the flows' imports failed (exit {proc.returncode}):\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1][len(_MARK):])
    errors = {m: r["error"] for m, r in result.items() if "error" in r}
    if errors:
        raise RuntimeError("cannot import flow module(s):\n" + "\n".join(
            f"--- {m}\n" + "\n".join(e.strip().splitlines()[-3:]) for m, e in errors.items()))
    return {m: r["files"] for m, r in result.items()}


def _git_tracked(root: str) -> set[str] | None:
    try:
        proc = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    return {p for p in proc.stdout.split("\0") if p}


def package_data(root: str, files: list[str], tracked: set[str] | None) -> set[str]:
    """The non-``.py`` files directly inside the directory of every package module (``__init__.py``) among
    ``files``: git-tracked ones when ``tracked`` is given, else every regular, non-hidden file there."""
    data = set()
    for f in files:
        if Path(f).name != "__init__.py":
            continue
        d = Path(f).parent
        for entry in sorted((Path(root) / d).iterdir()):
            rel = (d / entry.name).as_posix()
            if (not entry.is_file() or entry.suffix in (".py", ".pyc", ".pyo") or entry.name.startswith(".")
                    or entry.name.endswith("~")):
                continue
            if tracked is None or rel in tracked:
                data.add(rel)
    return data


def covered(path: str, deps: list[str]) -> bool:
    """``path`` equals a dep or lies under a dep directory (all paths relative to the root, posix)."""
    path = os.path.normpath(path)
    for dep in deps:
        dep = os.path.normpath(dep)
        if dep == "." or path == dep or path.startswith(dep + "/"):
            return True
    return False


def missing_deps(root: str | os.PathLike) -> dict[str, list[str]]:
    """``{stage: [files it imports (or their package data) that no dep covers]}``, only stages that miss some.
    Raises ``ValueError`` for a stage whose cmd is not ``python -m flows.<module> [args]``."""
    root = os.path.realpath(root)
    stages = resolved_stages(root)
    bad = {name: cmd for name, cmd, _ in stages if flow_module(cmd) is None}
    if bad:
        raise ValueError(f"stage cmd(s) not of the form 'python -m flows.<module> [args]': {bad}")
    modules = tuple(sorted({flow_module(cmd) for _, cmd, _ in stages}))
    imports = flow_imports(root, modules)
    tracked = _git_tracked(root)
    missing = {}
    for name, cmd, deps in stages:
        files = imports[flow_module(cmd)]
        required = set(files) | package_data(root, files, tracked)
        lacking = sorted(f for f in required if not covered(f, deps))
        if lacking:
            missing[name] = lacking
    return missing


def stages_without_pose_dir(root: str | os.PathLike) -> list[str]:
    """Stages none of whose deps covers the whole ``pose`` directory."""
    return [name for name, _, deps in resolved_stages(os.path.realpath(root)) if not covered(POSE_DIR, deps)]


def _report(missing: dict[str, list[str]]) -> str:
    return "\n".join(f"  {stage}: {', '.join(files)}" for stage, files in missing.items())


@pytest.mark.slow
def test_every_stage_cmd_runs_a_flow():
    bad = bad_cmds(ROOT)
    assert not bad, f"dvc.yaml stage cmd(s) not of the form 'python -m flows.<module> [args]': {bad}"


@pytest.mark.slow
def test_every_stage_depends_on_the_project_files_its_flow_imports():
    missing = missing_deps(ROOT)
    assert not missing, ("dvc.yaml stages that import project files none of their deps cover (editing one "
                         "would leave the stage 'up to date'):\n" + _report(missing))


@pytest.mark.slow
def test_every_stage_depends_on_the_whole_pose_package():
    # pose/ imports lazily inside functions, so the per-file check above cannot be complete: every stage must
    # depend on the pose directory itself.
    lacking = stages_without_pose_dir(ROOT)
    assert not lacking, f"dvc.yaml stages without a dep covering the whole '{POSE_DIR}' directory: {lacking}"


@pytest.mark.slow
def test_stages_reading_mpii_images_depend_on_the_link_target():
    # the stages read MPII images through the symlink mpii.link; DVC hashes a symlink dep as the link, not what it
    # points to, so a stage that reads the images (mpii_prep, which checks and links them, and every stage on its
    # records) must depend on the folder itself, mpii.images
    mpii = yaml.safe_load((ROOT / "params.yaml").read_text())["mpii"]
    images, prepared = (os.path.normpath(mpii[k]) for k in ("images", "prepared"))
    readers = {name: deps for name, cmd, deps in resolved_stages(ROOT)
               if flow_module(cmd) == "flows.mpii_prep" or prepared in deps}
    assert {"mpii_prep", "eval_mpii", "export_student", "train_hourglass@teacher"} <= set(readers)
    lacking = sorted(name for name, deps in readers.items() if images not in deps)
    assert not lacking, f"stages reading MPII images without a dep on {images} (mpii.images): {lacking}"


def _copy_project(dst: Path) -> None:
    from dvc.repo import Repo

    Repo.init(os.fspath(dst), no_scm=True).close()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy2(ROOT / name, dst / name)
    for name in ("pose", "flows", "tasks"):
        shutil.copytree(ROOT / name, dst / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def _stage_entry(stages: dict, addressing: str) -> dict:
    """The ``dvc.yaml`` mapping that defines the deps of a resolved stage (``do`` of a foreach/matrix stage)."""
    entry = stages[addressing] if addressing in stages else stages[addressing.split("@", 1)[0]]
    return entry.get("do", entry)


@pytest.mark.slow
def test_missing_deps_reports_a_removed_dep(tmp_path):
    _copy_project(tmp_path)
    dvc_yaml = tmp_path / "dvc.yaml"
    doc = yaml.safe_load(dvc_yaml.read_text())

    # 1. Complete the copy's deps: every stage gets the pose directory and whatever else it was missing.
    missing = missing_deps(tmp_path)
    for stage in {*missing, *stages_without_pose_dir(tmp_path)}:
        deps = _stage_entry(doc["stages"], stage).setdefault("deps", [])
        deps += [f for f in [POSE_DIR, *missing.get(stage, [])]
                 if f not in deps and not f.startswith(POSE_DIR + "/")]
    dvc_yaml.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert missing_deps(tmp_path) == {}
    assert stages_without_pose_dir(tmp_path) == []

    # 2. Remove the first stage's flow file from its deps: exactly that stage and file are reported.
    first, cmd, _ = resolved_stages(tmp_path)[0]
    assert "@" not in first, "the first stage of dvc.yaml is expected to be a plain stage"
    flow_file = flow_module(cmd).replace(".", "/") + ".py"
    deps = _stage_entry(doc["stages"], first)["deps"]
    assert flow_file in deps
    deps.remove(flow_file)
    dvc_yaml.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert missing_deps(tmp_path) == {first: [flow_file]}

    # 3. Remove the pose directory from it as well: reported by the second check, for that stage only.
    deps.remove(POSE_DIR)
    dvc_yaml.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert stages_without_pose_dir(tmp_path) == [first]
    assert first in missing_deps(tmp_path)

    # 4. A stage cmd that does not run a flow is refused.
    _stage_entry(doc["stages"], first)["cmd"] = "python tasks/sample.py"
    dvc_yaml.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert first in bad_cmds(tmp_path)
    with pytest.raises(ValueError, match=first):
        missing_deps(tmp_path)
