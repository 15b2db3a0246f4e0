"""``python -m flows.eval_mpii``: MPII val PCKh (docs/PROTOCOLS.md#mpii-pckh) of the four FPD-branch models and the
mean pose.

Writes ``<paths.models>/eval_mpii/<model>.mat`` (``preds`` N×16×2, the reference's layout),
``<paths.metrics>/mpii/<model>.json`` (Head … Ankle, Mean), ``<paths.records>/mpii/<model>.json`` (every joint,
the protocol, params, GMACs, the settings), ``<paths.plots>/pckh/<model>.json``
(DVC plot), ``<paths.plots>/pckh_curve.png`` and ``<paths.plots>/mpii_predictions.png``.
"""
from __future__ import annotations

import json
from pathlib import Path

from prefect import flow

from flows._main import run_flow
from flows._params import load_params, params_source, path_settings, section
from pose.evaluation.pck import format_pck_table
from pose.recipes.fpd import ROLES, STAGES, FpdSettings, MpiiEvalFiles, MpiiPaths, read_mpii
from tasks.fpd import evaluate_mpii


@flow(name="eval_mpii")
def eval_mpii(params: dict | None = None) -> dict:
    p = params or load_params()
    paths, source = path_settings(p), params_source()
    settings = FpdSettings.from_params(section(p, "fpd"), source)     # every setting, before any file
    mpii = read_mpii(section(p, "mpii"), source)
    plots = Path(paths.plots)
    files = MpiiEvalFiles(metrics_dir=str(Path(paths.metrics) / "mpii"), records_dir=str(Path(paths.records) / "mpii"),
                          preds_dir=str(Path(paths.models) / "eval_mpii"),
                          curve_dir=str(plots / "pckh"), curve_png=str(plots / "pckh_curve.png"),
                          grid_png=str(plots / "mpii_predictions.png"))
    models = {role: paths.model(STAGES[role]) for role in ROLES}
    results = evaluate_mpii(models, MpiiPaths.of(mpii), settings, files)
    print(format_pck_table(results, settings.skeleton))
    return json.loads(json.dumps(results, default=str))


if __name__ == "__main__":
    run_flow(eval_mpii)
