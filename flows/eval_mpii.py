"""``python -m flows.eval_mpii``: MPII val PCKh (REFERENCE A4) of the four FPD-branch models and the mean pose.

Writes ``models/eval_mpii/<model>.mat`` (``preds`` N×16×2, the reference's layout), ``metrics/mpii/<model>.json``
(Head … Ankle, Mean, params, GMACs), ``plots/pckh/<model>.json`` (DVC plot), ``plots/pckh_curve.png`` and
``plots/mpii_predictions.png``.
"""
from __future__ import annotations

import json

from prefect import flow

from flows._main import run_flow
from flows._params import load_params
from pose.evaluation.pckh import format_table
from pose.recipes.fpd import ROLES, MpiiPaths, decode_args, resolve_profile
from tasks.fpd import evaluate_mpii

MODELS = {role: f"models/train_{role}/model.pt" for role in ROLES}


@flow(name="eval_mpii")
def eval_mpii(params: dict | None = None) -> dict:
    p = params or load_params("fpd", "mpii")
    cfg = resolve_profile(p["fpd"])
    ev = cfg.get("eval") or {}
    results = evaluate_mpii(MODELS, MpiiPaths.from_params(p["mpii"]), int(cfg["input_res"]), "metrics/mpii",
                            "models/eval_mpii", "plots/pckh", "plots/pckh_curve.png",
                            "plots/mpii_predictions.png", bool(cfg.get("flip_test", False)),
                            int(ev.get("grid_images", 4)), *decode_args(cfg))
    print(format_table(results))
    return json.loads(json.dumps(results, default=str))


if __name__ == "__main__":
    run_flow(eval_mpii)
