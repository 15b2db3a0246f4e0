"""Every shell command in the README's fenced code blocks is in :data:`COMMANDS`, the checked list, with a status:

``run``       cheap and needs no trained pipeline: the test runs it, as written, in a fresh clone of this repository
              (``git clone`` of the repository this file sits in, committed state), and it must exit 0;
``pipeline``  needs the outputs of a full ``dvc repro`` (minutes to run, or a trained model): verified by hand, the
              comment says when and what it gave. ``pose ...`` commands are at least parsed by the CLI's own parser
              here (an option the CLI lost fails this test);
``long``      too long for the suite (the install, the whole pipeline, a paper-profile training) or runs until
              stopped (servers, workers).

The test fails when the README gains a command that is not in the list, or the list holds one the README lost: a
README edit that adds a command decides its status here. Commands are taken from ```bash / ```sh / ```shell /
```console blocks (also indented ones): lines starting with ``$ `` when a block has such lines, else every line that
is not a comment; backslash continuations are joined and a trailing ``# comment`` is cut.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
VENV_BIN = Path(sys.executable).parent
RUN, PIPELINE, LONG = "run", "pipeline", "long"
SHELL_LANGS = {"bash", "sh", "shell", "console", "shell-session", "zsh"}
RUN_TIMEOUT_S = 120

# command (as the README writes it, without its comment) -> status. "pipeline" entries: verified by hand in a
# workspace holding a full `dvc repro` of the sample; the comment gives the date and what the command gave.
COMMANDS: dict[str, str] = {
    # --- install and test
    'python3 -m venv .venv && . .venv/bin/activate && pip install -c requirements.lock -e ".[dev]" && dvc repro':
        LONG,  # the install (.ci/run does it) and the whole pipeline (~25 min on 2 cores)
    ". .venv/bin/activate && python -m pytest -q": LONG,  # the whole suite (.ci/run)
    # --- experiments and comparing runs
    "dvc metrics show": RUN,
    "dvc metrics diff --md": RUN,
    "dvc exp run -S fpd.profiles.sample.distill.alpha=0.7": PIPELINE,  # 2026-12-01 as `fpd.alpha=0.7 eval_mpii` (the
    # same computation, bit-exact, tests/test_distill.py): exit 0, 6 min 40 s; Means 69.74, 73.80
    "dvc exp run -S openpose.profile=paper": LONG,  # the paper profile: hours of CPU training
    "dvc exp show --only-changed": RUN,
    "dvc exp show --drop '.*' --keep 'Experiment|.*distill\\.alpha|.*:Mean'": RUN,
    "dvc repro --dry eval_mpii": PIPELINE,  # 2026-12-01, full workspace: exit 0, lists the stages it would run
    # --- the pose command (models/ and data/prepared/ of a full dvc repro). 2026-12-01: run in a fresh clone of
    # cf935ad after its full `dvc repro` (the baseline committed next); results in the comments.
    "pose eval models/train_student_fpd/model.pt --dataset data/prepared/mpii/val.json": PIPELINE,
    # 2026-12-01: exit 0, PCKh Mean 71.29 = metrics/mpii/student_fpd.json
    "pose eval models/export_student/model.onnx --dataset data/prepared/mpii/val.json": PIPELINE,
    # 2026-12-01: exit 0, 71.29 = metrics/export_student/onnxruntime.json
    "pose eval models/openpose_step3/model.pt --dataset data/prepared/coco/val_subset.json": PIPELINE,
    # 2026-12-01: exit 0, AP 0.210 = metrics/coco/step3.json (1 refinement stage, height 192, from the file)
    "pose eval models/export_openpose/model.xml --dataset data/prepared/coco/val_subset.json": PIPELINE,
    # 2026-12-01: exit 0, AP 0.210 = metrics/export_openpose/openvino_f32.json
    "pose predict data/sample/coco/val2017 --model models/export_openpose/model.xml": PIPELINE,
    # 2026-12-01: exit 0, 60 images, 272 poses (min confidence 0.2) → pose_out/, 8.4 s
    "pose predict data/sample/mpii/images/000000001.jpg --model models/export_student/model.onnx": PIPELINE,
    # 2026-12-01: exit 0, 1 pose (64 px crop of the whole image, dark decode, from the file) → pose_out/
    "pose export models/train_student_fpd/model.pt --out exported/": PIPELINE,
    # 2026-12-01: exit 0, exported at 1×3×64×64 (the training size), parity 5.4e-7 / 8.3e-7
    "pose bench models/export_student/model.onnx --backends onnxruntime,openvino_f32,openvino": PIPELINE,
    # 2026-12-01: exit 0, median ms onnxruntime 4.85, openvino_f32 5.64, openvino (bf16) 3.35
    "pose eval models/quantize_student/model_int8.xml --dataset data/prepared/mpii/val.json": PIPELINE,
    # 2026-12-02, fresh clone of a5f4102 after its full `dvc repro`: exit 0, PCKh Mean 71.53
    # = metrics/quantize_student/int8.json
    "pose export models/openpose_step3/model.pt --out exported_op/ --int8 --calib data/sample/coco/train2017 "
    "--eval-dataset data/prepared/coco/val_subset.json --max-drop 0.01": PIPELINE,
    # 2026-12-02, same workspace: exit 0 in 58 s, parity 2.3e-6 / 2.7e-6, AP f32 0.2104, default 0.2082, int8 0.2026
    # (the CLI's 300 calibration images), inside 0.01; INT8 3.59x f32
    # --- scheduled retraining: servers and workers run until stopped (tests/test_schedule.py covers the flows)
    "prefect server start --host 127.0.0.1": LONG,
    "python -m flows.serve": LONG,
    "python -m flows.serve --interval 600": LONG,
    "prefect work-pool create posepipe-process --type process": LONG,  # needs the running server
    "prefect deploy --all": LONG,  # needs the running server
    "prefect worker start --pool posepipe-process": LONG,
    # --- parallel experiments (tests/test_exp_queue.py runs the recipe on a tiny copy)
    "dvc exp run --queue -S coco.val_subset_size=100 coco_val_subset": PIPELINE,
    # 2026-12-01: not run by hand (needs the committed baseline's outputs in the cache)
    "dvc exp run --queue -S coco.val_subset_size=250 coco_val_subset": PIPELINE,
    "dvc queue start -j 2": PIPELINE,
    "dvc queue status": RUN,
    "dvc queue logs <task>": PIPELINE,  # <task>: a task of the queue above
    "dvc exp apply <name>": PIPELINE,  # <name>: an experiment of the queue above
    "dvc queue stop --kill": RUN,
}

_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")


def _cut_comment(line: str) -> str:
    """``line`` without a trailing shell comment (a ``#`` at the start or after a blank, outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def _block_commands(lines: list[str], lang: str) -> list[str]:
    prompt = [ln for ln in lines if ln.lstrip().startswith("$ ")]
    if prompt or lang == "console":
        lines = [ln.lstrip()[2:] for ln in prompt]
    commands: list[str] = []
    pending = ""
    for raw in lines:
        line = raw.strip()
        if pending:
            line = pending + " " + line
            pending = ""
        if line.endswith("\\"):
            pending = line[:-1].rstrip()
            continue
        line = _cut_comment(line)
        if line:
            commands.append(line)
    if pending:
        commands.append(_cut_comment(pending))
    return commands


def readme_commands(text: str) -> list[str]:
    """The shell commands of ``text``'s fenced code blocks (see the module docstring), in order."""
    commands: list[str] = []
    fence = None
    lang, block = "", []
    for line in text.splitlines():
        m = _FENCE.match(line)
        if fence is None:
            if m:
                fence, lang, block = m.group(2), m.group(3).lower(), []
        elif m and m.group(2).startswith(fence) and not m.group(3):
            if lang in SHELL_LANGS:
                commands += _block_commands(block, lang)
            fence = None
        else:
            block.append(line)
    return commands


def test_extraction_rules() -> None:
    text = "\n".join([
        "```bash", "dvc repro   # a comment", "# only a comment", "", "pose eval m.pt \\", "    --json 'a # b'", "```",
        "  ```sh", "  $ dvc dag", "  output, not a command", "  ```",
        "```console", "$ dvc status", "Data and pipelines are up to date.", "```",
        "```", "not a shell block", "```", "```yaml", "a: 1", "```",
    ])
    assert readme_commands(text) == ["dvc repro", "pose eval m.pt --json 'a # b'", "dvc dag", "dvc status"]


def test_every_readme_command_is_in_the_checked_list() -> None:
    found = readme_commands(README.read_text())
    assert found, "no shell command found in the README: the extraction is broken"
    missing = [c for c in dict.fromkeys(found) if c not in COMMANDS]
    assert not missing, ("README commands missing from COMMANDS in tests/test_readme_commands.py (add each with "
                         "its status: run / pipeline / long):\n" + "\n".join(missing))
    gone = [c for c in COMMANDS if c not in found]
    assert not gone, "COMMANDS lists commands the README no longer has (remove them):\n" + "\n".join(gone)
    assert set(COMMANDS.values()) <= {RUN, PIPELINE, LONG}


def test_no_dry_experiment() -> None:
    """``dvc exp run --dry`` always runs in a temporary workspace without checking out any output (DVC 3.67), so
    the first stage whose deps come from another stage fails there (``No such file or directory``)."""
    dry = [c for c in COMMANDS if c.startswith("dvc exp run") and "--dry" in shlex.split(c)]
    assert not dry, f"use `dvc repro --dry` in a reproduced workspace instead of {dry}"


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh clone of this repository (its committed state), as a user gets it."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: no fresh clone to run the README's commands in")
    dest = tmp_path_factory.mktemp("readme") / "posepipe"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True, capture_output=True, text=True,
                   timeout=120)
    return dest


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"  # `dvc`, `pose`: this environment's
    return env


@pytest.mark.slow
@pytest.mark.parametrize("command", [c for c, status in COMMANDS.items() if status == RUN])
def test_cheap_readme_command_runs_in_a_fresh_clone(command: str, clone: Path) -> None:
    p = subprocess.run(["bash", "-c", command], cwd=clone, env=_env(), capture_output=True, text=True,
                       timeout=RUN_TIMEOUT_S)
    assert p.returncode == 0, f"`{command}` exited with {p.returncode}:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"


@pytest.mark.slow
def test_readme_mermaid_graph_is_dvc_dag_mermaid(clone: Path) -> None:
    """The README says "`dvc dag --mermaid` gives the graph below": it must be that command's output."""
    block = re.search(r"^```mermaid\n(.*?)^```", README.read_text(), re.S | re.M)
    assert block, "the README's mermaid graph is gone"
    p = subprocess.run(["dvc", "dag", "--mermaid"], cwd=clone, env=_env(), capture_output=True, text=True,
                       timeout=RUN_TIMEOUT_S)
    assert p.returncode == 0, p.stderr
    assert block.group(1).strip() == p.stdout.strip(), "README mermaid graph differs from `dvc dag --mermaid`"


def test_pose_commands_parse() -> None:
    """The ``pose`` commands that need a trained pipeline still parse with the CLI's options."""
    from pose.cli import build_parser

    parser = build_parser()
    for command, status in COMMANDS.items():
        if status == PIPELINE and command.startswith("pose "):
            try:
                parser.parse_args(shlex.split(command)[1:])
            except SystemExit as e:
                pytest.fail(f"`{command}` does not parse (exit {e.code})")
