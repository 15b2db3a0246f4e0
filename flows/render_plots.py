"""``python -m flows.render_plots``: training-curve PNGs of every training run, ``<paths.plots>/training_<stage>.png``.

Params: ``render_plots.stages`` (a list of the pipeline's training stages,
:func:`pose.recipes.stages.training_stages`, whose ``<paths.runs>/<stage>/live`` DVCLive directories are drawn);
without it every ``<paths.runs>/*/live`` found is drawn.
"""
from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows._main import run_flow
from flows._params import load_params, params_source, path_settings
from pose.io import PoseDataError
from pose.plots import find_live_dirs
from pose.recipes.stages import RenderPlotsSettings
from pose.settings import from_mapping
from tasks.plots import render_training_curves


@flow(name="render_plots")
def render_plots(params: dict | None = None) -> dict:
    p = params if params is not None else load_params()
    paths = path_settings(p)                     # every setting, before any file
    stages = from_mapping(RenderPlotsSettings, p.get("render_plots"), params_source(), "render_plots").stages
    runs_dir, out_dir = Path(paths.runs), Path(paths.plots)
    if stages is None:
        live_dirs = find_live_dirs(runs_dir)
    else:
        live_dirs = {s: runs_dir / s / "live" for s in stages}
        missing = [str(d) for d in live_dirs.values() if not d.is_dir()]
        if missing:
            raise PoseDataError(missing[0], "DVCLive directory does not exist (has the stage run?)",
                                field="render_plots.stages")
    summary = {}
    for stage, live in live_dirs.items():
        out = out_dir / f"training_{stage}.png"
        counts = render_training_curves(str(live), str(out), title=f"{stage} ({live})")
        summary[stage] = {"png": str(out), "metrics": counts}
        print(f"render_plots: {out} ← {live} ({len(counts)} metrics, "
              f"{max(counts.values(), default=0)} points)")
    if not summary:
        print(f"render_plots: no DVCLive directories under {runs_dir}")
    return summary


if __name__ == "__main__":
    run_flow(render_plots)
