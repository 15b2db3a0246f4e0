"""GPU check: ``python bench/gpu_check.py [--steps 20] [--params params.yaml]`` from the repository root.

On a CUDA machine, for every training stage's ``paper`` profile (the four hourglass roles, the three OpenPose
steps) it builds the stage's model, training set and step function the way the recipes do
(:mod:`pose.recipes.fpd`, :mod:`pose.recipes.openpose`), runs a bounded number of optimizer steps with AMP on and
prints samples/s and peak GPU memory as a table. A few batches are loaded first and cycled on the device, so the
figure is the GPU's training throughput, not the data loader's. Then it says where export parity runs and runs
``python -m pytest -m gpu`` when tests carry that marker.

The data is the embedded sample's prepared data: when it is missing the script names the ``dvc repro`` targets
that make it. Without CUDA it prints that and exits 0 (nothing to check on this machine).
"""
from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/gpu_check.py` puts bench/ first, not the repository
    sys.path.insert(0, str(ROOT))

WARMUP_STEPS = 3
CACHED_BATCHES = 4


@dataclass
class Row:
    stage: str
    arch: str
    batch: int
    amp: str
    samples_per_s: float | None = None
    peak_mib: float | None = None
    note: str = ""


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def paper(section: dict[str, Any]) -> dict[str, Any]:
    """A copy of a branch section with ``profile: paper`` selected."""
    out = copy.deepcopy(section)
    out["profile"] = "paper"
    return out


def missing_inputs(params: dict[str, Any]) -> dict[str, list[str]]:
    """``{dvc target: [missing files]}`` for the prepared data the trainings read."""
    mpii, coco = params["mpii"], params["coco"]
    wanted = {
        "mpii_prep": [str(Path(mpii["prepared"]) / "train.json"), mpii["images"]],
        "coco_labels": [coco["labels_out"], coco["train_images"]],
    }
    if "unlabeled_images" in mpii:
        wanted["mpii_prep"].append(mpii["unlabeled_images"])
    return {t: [p for p in paths if not Path(p).exists()] for t, paths in wanted.items()
            if any(not Path(p).exists() for p in paths)}


# ------------------------------------------------------------------------------------------------------ builders
def fpd_case(params: dict[str, Any], role: str) -> tuple[Any, Any, Callable, Any]:
    """(model, train set, step_fn, TrainConfig) of an FPD role at the paper profile; distilled roles get a
    freshly initialised teacher (the throughput does not depend on its weights)."""
    from pose.distill import DistillStep
    from pose.families import build_model
    from pose.families.hourglass import HOURGLASS
    from pose.recipes.fpd import DISTILLED, FpdSettings, MpiiPaths, build_train_set, gt_step

    settings = FpdSettings.from_params(paper(params["fpd"]), "params.yaml")
    data = MpiiPaths.from_params(params["mpii"], "params.yaml")
    tc = settings.train_config(role)
    model = build_model(settings.arch(role))
    train_set = build_train_set(settings, role, data, seed=tc.seed)
    step_fn = (DistillStep(HOURGLASS.distill, settings.distill, build_model(settings.arch("teacher")))
               if role in DISTILLED else gt_step)
    return model, train_set, step_fn, tc


def openpose_case(params: dict[str, Any], step: str) -> tuple[Any, Any, Callable, Any]:
    """(model, train set, step_fn, TrainConfig) of an OpenPose step at the paper profile."""
    from pose.families import build_model
    from pose.recipes.openpose import CocoTrainData, OpenPoseSettings, build_train_set, openpose_step_fn

    settings = OpenPoseSettings.from_params(paper(params["openpose"]), "params.yaml")
    tc = settings.train_config(step)
    data = CocoTrainData.from_params(params["coco"], "params.yaml")
    return build_model(settings.arch(step)), build_train_set(settings, data, seed=tc.seed), openpose_step_fn, tc


# ------------------------------------------------------------------------------------------------------ timing
def amp_dtype() -> Any:
    """bf16 where the GPU has it (Ampere and later), else fp16 (with a gradient scaler)."""
    import torch

    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def device_batches(train_set: Any, batch_size: int, count: int, device: Any) -> list[Any]:
    """``count`` collated batches of items in a seeded random order (so that a set of two parts, e.g. MPII +
    unlabelled images, gives mixed batches; wrapping around a small set), moved to ``device``."""
    import torch
    from torch.utils.data import default_collate

    def to(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            return x.to(device, non_blocking=True)
        if isinstance(x, dict):
            return {k: to(v) for k, v in x.items()}
        return x

    n = len(train_set)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()
    return [to(default_collate([train_set[order[(b * batch_size + i) % n]] for i in range(batch_size)]))
            for b in range(count)]


def time_training(model: Any, train_set: Any, step_fn: Callable, tc: Any, steps: int) -> tuple[float, float]:
    """(samples/s, peak MiB) of ``steps`` optimizer steps after :data:`WARMUP_STEPS`, AMP on, channels_last."""
    import torch

    from pose.engine.optim import build_optimizer

    device = torch.device("cuda")
    model = model.to(device, memory_format=torch.channels_last).train()
    optimizer = build_optimizer(model, tc.optimizer)
    dtype = amp_dtype()
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    batches = device_batches(train_set, tc.batch_size, CACHED_BATCHES, device)

    def one(i: int) -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=dtype):
            loss, _ = step_fn(model, batches[i % len(batches)])
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for i in range(WARMUP_STEPS):
        one(i)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for i in range(steps):
        one(i)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return steps * tc.batch_size / seconds, torch.cuda.max_memory_allocated() / 2**20


def run_case(stage: str, build: Callable[[], tuple[Any, Any, Callable, Any]], steps: int) -> Row:
    """One table row; an error (e.g. out of memory) becomes the row's note instead of stopping the check."""
    import torch

    try:
        model, train_set, step_fn, tc = build()
        arch = type(model).__name__
        row = Row(stage, arch, tc.batch_size, str(amp_dtype()).replace("torch.", ""))
        row.samples_per_s, row.peak_mib = time_training(model, train_set, step_fn, tc, steps)
    except Exception as e:  # report and go on with the next stage
        row = Row(stage, "?", 0, "-", note=f"{type(e).__name__}: {str(e).splitlines()[0][:100]}")
    finally:
        torch.cuda.empty_cache()
    return row


def cases(params: dict[str, Any]) -> Iterable[tuple[str, Callable]]:
    from pose.recipes.fpd import DISTILLED, ROLES
    from pose.recipes.openpose import STEPS

    for role in ROLES:  # the dvc.yaml stage that trains the role
        stage = "distill_hourglass" if role in DISTILLED else "train_hourglass"
        yield f"{stage}@{role}", (lambda r=role: fpd_case(params, r))
    for step in STEPS:
        yield f"openpose@{step}", (lambda s=step: openpose_case(params, s))


def table(rows: list[Row]) -> str:
    head = f"{'stage':<40} {'model':<16} {'batch':>5} {'amp':<9} {'samples/s':>10} {'peak MiB':>9}  note"
    lines = [head, "-" * len(head)]
    for r in rows:
        sps = f"{r.samples_per_s:.1f}" if r.samples_per_s is not None else "-"
        mem = f"{r.peak_mib:.0f}" if r.peak_mib is not None else "-"
        lines.append(f"{r.stage:<40} {r.arch:<16} {r.batch:>5} {r.amp:<9} {sps:>10} {mem:>9}  {r.note}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------ the rest
def export_note() -> str:
    """Where export parity is checked: the exporters verify on the CPU (ONNX Runtime CPU, OpenVINO CPU)."""
    try:
        import onnxruntime

        providers = ", ".join(onnxruntime.get_available_providers())
    except Exception as e:  # pragma: no cover - onnxruntime is a dependency
        providers = f"onnxruntime not importable ({e})"
    return ("export + parity: CPU-only here (pose.export verifies ONNX Runtime and OpenVINO on the CPU against "
            "PyTorch: the export_* stages and tests/test_export.py run it); onnxruntime providers: " + providers)


def gpu_tests() -> list[str]:
    """Test files that use ``pytest.mark.gpu``."""
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                  if "mark.gpu" in p.read_text())


def run_gpu_tests() -> int:
    files = gpu_tests()
    if not files:
        print("pytest -m gpu: no tests carry the gpu marker; nothing to run")
        return 0
    print(f"python -m pytest -m gpu ({', '.join(files)})")
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", *files], cwd=ROOT).returncode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20, help="timed optimizer steps per stage (default 20)")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"), help="params file (default: params.yaml)")
    ap.add_argument("--no-tests", action="store_true", help="skip python -m pytest -m gpu")
    args = ap.parse_args(argv)

    import torch

    if not cuda_available():
        print(f"CUDA is not available (torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}): "
              "no GPU to check on this machine; exiting.")
        return 0
    import os

    import yaml

    os.chdir(ROOT)  # params.yaml's data paths are relative to the repository root
    params = yaml.safe_load(Path(args.params).read_text())
    missing = missing_inputs(params)
    if missing:
        for target, paths in missing.items():
            print(f"missing {', '.join(paths)}")
        print(f"prepare the data first: dvc repro {' '.join(missing)}")
        return 2
    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}; "
          f"{args.steps} timed steps per stage after {WARMUP_STEPS} warm-up, paper profiles, AMP on, "
          f"channels_last, {CACHED_BATCHES} batches cycled on the device")
    rows = [run_case(stage, build, args.steps) for stage, build in cases(params)]
    print(table(rows))
    print(export_note())
    rc = 0 if args.no_tests else run_gpu_tests()
    failed = [r.stage for r in rows if r.samples_per_s is None]
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed or rc not in (0, 5) else 0


if __name__ == "__main__":
    sys.exit(main())
