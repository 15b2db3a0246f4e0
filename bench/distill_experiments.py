"""Does distillation pay? Each student trained with and without its teacher, for several seeds, on the params' data.

    python bench/distill_experiments.py fpd --seeds 0 1 2 --config fpd='{}' --config kl='{"loss": "kl"}'
    python bench/distill_experiments.py openpose --seeds 0 1 2 --config fpd='{}'

Run it in a workspace where ``dvc repro`` has produced the teachers (``models/train_teacher/model.pt``; OpenPose:
``models/openpose_step2/model.pt``, the start weights, and ``models/openpose_step3/model.pt``, the teacher) and the
prepared data. ``--config NAME=JSON``: a distillation setting as keys that replace the selected profile's
``distill`` section (``{}``: the profile's own). FPD: the plain student is the ``student`` role (ground truth only,
same epochs and seed), the distilled one the ``student_fpd`` role (``--unlabeled``: ``student_fpd_unlabeled``).
OpenPose: both start from step 2's weights and train the profile's ``student`` step, one with step 3 as teacher.

Prints, per configuration, the validation figure (PCKh@0.5 Mean; COCO AP on the val subset) for every seed, the
per-seed gain over the plain student, its mean ± sample standard deviation and its minimum; ``--json`` keeps every
figure. Nothing is timed here (the figures are accuracies); runs write under ``--work`` (default
``runs/distill_experiments``), never over a pipeline's outputs.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _files(work: Path, name: str) -> Any:
    from pose.recipes.common import StageFiles

    run_dir = work / name
    return StageFiles(model=str(run_dir / "model.pt"), run_dir=str(run_dir), live_dir=str(run_dir / "live"),
                      record=str(run_dir / "record.json"))


def _distill(base: Any, overrides: dict[str, Any]) -> Any:
    from pose.distill import DistillSettings
    from pose.settings import from_mapping

    return from_mapping(DistillSettings, {**dataclasses.asdict(base), **overrides}, "--config", "distill")


def fpd_figure(params: dict, name: str, seed: int, distill: dict | None, unlabeled: bool, work: Path,
               threads: int | None) -> float:
    """PCKh@0.5 Mean of one student: plain (``distill`` None) or distilled with these ``distill`` keys."""
    from pose.recipes.fpd import STAGES, FpdRun, FpdSettings, MpiiPaths, train_role

    settings = FpdSettings.from_params(params["fpd"], "params.yaml")
    train = {**settings.train, "seed": seed, **({"threads": threads} if threads else {})}
    role = "student"
    if distill is not None:
        role = "student_fpd_unlabeled" if unlabeled else "student_fpd"
        settings = dataclasses.replace(settings, distill=_distill(settings.distill, distill))
    settings = dataclasses.replace(settings, train=train)
    models = Path(params.get("paths", {}).get("models", "models"))
    run = FpdRun(settings=settings, role=role, data=MpiiPaths.from_params(params["mpii"]),
                 files=_files(work, f"fpd_{name}_s{seed}"), source="params.yaml",
                 teacher=str(models / STAGES["teacher"] / "model.pt") if distill is not None else None)
    return float(train_role(run)["val/pckh_mean"])


def openpose_figure(params: dict, name: str, seed: int, distill: dict | None, unlabeled: bool, work: Path,
                    threads: int | None) -> float:
    """Val-subset AP of the ``student`` step from step 2's weights: with step 3 as teacher or without one."""
    from pose.recipes.openpose import (STAGES, STUDENT, STUDENT_INIT, STUDENT_TEACHER, CocoTrainData, OpenPoseRun,
                                       OpenPoseSettings, train_step)

    if unlabeled:
        raise SystemExit("the OpenPose student trains on labelled COCO images only")
    settings = OpenPoseSettings.from_params(params["openpose"], "params.yaml")
    if distill is not None:
        settings = dataclasses.replace(settings, distill=_distill(settings.distill, distill))
    models = Path(params.get("paths", {}).get("models", "models"))
    run = OpenPoseRun(settings=settings, step=STUDENT, data=CocoTrainData.from_params(params["coco"], "params.yaml"),
                      files=_files(work, f"openpose_{name}_s{seed}"), source="params.yaml",
                      init=str(models / STAGES[STUDENT_INIT] / "model.pt"),
                      teacher=str(models / STAGES[STUDENT_TEACHER] / "model.pt") if distill is not None else None,
                      overrides={"seed": seed, **({"threads": threads} if threads else {})})
    return float(train_step(run)["val/ap"])


def summarise(plain: dict[int, float], with_teacher: dict[int, float]) -> dict[str, Any]:
    gains = [with_teacher[s] - plain[s] for s in sorted(with_teacher)]
    return {"figures": with_teacher, "gains": gains, "mean": statistics.fmean(with_teacher.values()),
            "gain_mean": statistics.fmean(gains), "gain_std": statistics.stdev(gains) if len(gains) > 1 else 0.0,
            "gain_min": min(gains)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("family", choices=("fpd", "openpose"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--config", action="append", default=[], metavar="NAME=JSON",
                    help="a distillation setting (keys replacing the profile's distill section); repeatable")
    ap.add_argument("--unlabeled", action="store_true", help="FPD: the student with unlabelled images")
    ap.add_argument("--skip-plain", action="store_true", help="reuse the plain students' figures from --json")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--work", default="runs/distill_experiments")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per training (default: the profile's)")
    ap.add_argument("--json", default=None, help="write every figure here (read back with --skip-plain)")
    args = ap.parse_args(argv)

    import logging

    import yaml

    logging.basicConfig(level=logging.WARNING)
    params = yaml.safe_load(Path(args.params).read_text())
    configs = {}
    for item in args.config or ["profile={}"]:
        name, _, text = item.partition("=")
        configs[name] = json.loads(text or "{}")
    figure = fpd_figure if args.family == "fpd" else openpose_figure
    work = Path(args.work)
    previous = json.loads(Path(args.json).read_text()) if args.skip_plain and args.json else {}
    plain = {int(k): v for k, v in previous.get("plain", {}).items()}
    for seed in args.seeds:
        if seed not in plain:
            plain[seed] = figure(params, "plain", seed, None, False, work, args.threads)
            print(f"plain seed {seed}: {plain[seed]:.4f}", flush=True)
    results: dict[str, Any] = {"family": args.family, "seeds": args.seeds, "unlabeled": args.unlabeled,
                               "plain": plain, "configs": {}}
    for name, overrides in configs.items():
        got = {}
        for seed in args.seeds:
            got[seed] = figure(params, name, seed, overrides, args.unlabeled, work, args.threads)
            print(f"{name} seed {seed}: {got[seed]:.4f} (plain {plain[seed]:.4f})", flush=True)
        results["configs"][name] = {"distill": overrides, **summarise(plain, got)}
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
    unit = "PCKh Mean" if args.family == "fpd" else "AP"
    print(f"\n{args.family}: {unit}, seeds {args.seeds}; plain student "
          + " / ".join(f"{plain[s]:.4g}" for s in args.seeds)
          + f" (mean {statistics.fmean(plain[s] for s in args.seeds):.4g})")
    print(f"{'config':<18} {'per seed':<28} {'mean':>8} {'gain mean ± sd':>18} {'min gain':>9}")
    for name, r in results["configs"].items():
        per = " / ".join(f"{r['figures'][s]:.4g}" for s in args.seeds)
        print(f"{name:<18} {per:<28} {r['mean']:>8.4g} {r['gain_mean']:>+10.4g} ± {r['gain_std']:<6.3g} "
              f"{r['gain_min']:>+9.4g}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
