"""Run many entry-point invocations cheaply: one process imports the heavy libraries once, then forks a child per
case; each child runs the real entry point (``pose.cli.main`` as the ``pose`` script does, or
``python -m flows.<name>`` through :func:`runpy.run_module`) with its own working directory, environment, argv,
stdout and stderr, and exits with the entry point's status. The parent waits with a timeout (a hang is killed and
reported) and writes one result per case.

Why: starting Python + torch + prefect costs ~2.5 s per process on a 2-core machine; 150+ bad-input cases would
take minutes that way. A forked child starts in milliseconds and runs exactly the code a fresh process runs: the
project's modules are imported in the child (never in the parent), so module-level state (``POSEPIPE_PARAMS``) is
read fresh. ``tests/test_bad_input.py`` checks that a forked case and a real subprocess give the same stderr.

Usage: ``python tests/entry_runner.py CASES.json RESULTS.json``; CASES is a list of
``{"id", "kind": "pose" | "flow", "args": [...], "cwd", "env": {...}, "timeout"}`` (``args`` of a flow case:
``[module, *argv]``).
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time

# the third-party libraries the entry points import (the project's own modules are imported per child)
import cv2  # noqa: F401
import numpy  # noqa: F401
import onnxruntime  # noqa: F401
import openvino  # noqa: F401
import prefect  # noqa: F401
import prefect.flows  # noqa: F401
import pycocotools.coco  # noqa: F401
import scipy.io  # noqa: F401
import torch  # noqa: F401
import yaml  # noqa: F401


def _child(case: dict, out_path: str, err_path: str) -> None:
    """Runs in the forked child; never returns."""
    code = 1
    try:
        os.setpgid(0, 0)
        os.chdir(case["cwd"])
        os.environ.update(case.get("env", {}))
        for fd, path in ((1, out_path), (2, err_path)):
            f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(f, fd)
            os.close(f)
        sys.stdout = os.fdopen(1, "w", buffering=1)
        sys.stderr = os.fdopen(2, "w", buffering=1)
        sys.path.insert(0, case["cwd"])
        stdin = os.open(os.devnull, os.O_RDONLY)
        os.dup2(stdin, 0)
        if case["kind"] == "pose":
            sys.argv = ["pose", *case["args"]]
            from pose.cli import main

            code = int(main(case["args"]) or 0)
        else:
            import runpy

            module, *argv = case["args"]
            sys.argv = [module, *argv]
            runpy.run_module(module, run_name="__main__", alter_sys=True)
            code = 0
    except SystemExit as e:
        if e.code is None:
            code = 0
        elif isinstance(e.code, int):
            code = e.code
        else:  # SystemExit("message"): Python prints it to stderr and exits 1
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            pass
        os._exit(code)


def run_case(case: dict, scratch: str) -> dict:
    out_path = os.path.join(scratch, f"{case['id']}.out")
    err_path = os.path.join(scratch, f"{case['id']}.err")
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child(case, out_path, err_path)
    deadline = start + case.get("timeout", 60)
    status, hung = None, False
    while status is None:
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = st
            break
        if time.monotonic() > deadline:
            hung = True
            for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
                try:
                    kill()
                except (ProcessLookupError, PermissionError):
                    pass
            _, status = os.waitpid(pid, 0)
            break
        time.sleep(0.01)
    try:  # children the case left behind (a hung reader's helpers) go with it
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass

    def text(path: str) -> str:
        try:
            with open(path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    return {"id": case["id"], "returncode": os.waitstatus_to_exitcode(status), "hung": hung,
            "seconds": round(time.monotonic() - start, 2), "stdout": text(out_path), "stderr": text(err_path)}


def main() -> None:
    cases_path, results_path = sys.argv[1:3]
    with open(cases_path) as f:
        cases = json.load(f)
    scratch = os.path.join(os.path.dirname(os.path.abspath(results_path)), "entry_runner_io")
    os.makedirs(scratch, exist_ok=True)
    results = [run_case(c, scratch) for c in cases]
    with open(results_path + ".tmp", "w") as f:
        json.dump(results, f)
    os.replace(results_path + ".tmp", results_path)


if __name__ == "__main__":
    main()
