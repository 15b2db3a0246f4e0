"""``python -m flows.train_hourglass <role>``: one hourglass training of the FPD branch (REFERENCE A3).

Roles: ``teacher`` (hg_s8_b1), ``student`` (hg_s2_b1 mobile, ground truth only), ``student_fpd`` (FPD loss against
the frozen teacher ``models/train_teacher/model.pt``), ``student_fpd_unlabeled`` (FPD plus the unlabelled images).
Stage ``train_<role>``: model ``models/train_<role>/model.pt``; resumable state and DVCLive in ``runs/train_<role>/``
(rerunning continues an interrupted run); summary with CPU time in ``metrics/fpd_train/train_<role>.json``.
"""
from __future__ import annotations

import argparse
import json

from prefect import flow

from flows._main import run_flow
from flows._params import load_params
from pose.recipes.fpd import DISTILLED, ROLES, MpiiPaths, resolve_profile
from tasks.fpd import train_hourglass_role

TEACHER = "models/train_teacher/model.pt"


def stage_paths(role: str) -> dict[str, str]:
    stage = f"train_{role}"
    return {"out_path": f"models/{stage}/model.pt", "run_dir": f"runs/{stage}", "live_dir": f"runs/{stage}/live",
            "metrics_path": f"metrics/fpd_train/{stage}.json"}


@flow(name="train_hourglass")
def train_hourglass(role: str = "teacher", params: dict | None = None) -> dict:
    p = params or load_params("fpd", "mpii")
    cfg = resolve_profile(p["fpd"])
    teacher = TEACHER if role in DISTILLED else None
    summary = train_hourglass_role(cfg, role, MpiiPaths.from_params(p["mpii"]), teacher_path=teacher,
                                   **stage_paths(role))
    print(f"train_hourglass {role}: loss {summary.get('loss', float('nan')):.4g}, val PCKh@0.5 Mean "
          f"{summary.get('val/pckh_mean', float('nan')):.2f} after {summary.get('step')} steps; "
          f"{summary['cpu_s']:.0f} CPU s, {summary['wall_s']:.0f} s wall; {summary.get('resume')}")
    return json.loads(json.dumps(summary, default=str))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("role", choices=ROLES)
    run_flow(train_hourglass, role=ap.parse_args().role)


if __name__ == "__main__":
    main()
