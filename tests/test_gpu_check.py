"""bench/gpu_check.py on a machine without CUDA: it says so and exits 0."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_without_cuda_exits_0_with_a_message() -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # hides any GPU: the no-CUDA path on every machine
    p = subprocess.run([sys.executable, "bench/gpu_check.py"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "CUDA is not available" in p.stdout and "exiting" in p.stdout
