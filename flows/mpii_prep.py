"""``python -m flows.mpii_prep``: validate MPII, link its images, write the train/val split and the GT .mat."""
from __future__ import annotations

from prefect import flow

from flows._main import run_flow
from flows._params import load_params, params_source
from pose.data.settings import MPII_PREP_KEYS, MpiiSettings
from tasks.mpii import prepare_mpii


@flow(name="mpii_prep")
def mpii_prep(params: dict | None = None) -> dict:
    p = params or load_params("mpii")["mpii"]
    s = MpiiSettings.from_params(p, params_source(), keys=MPII_PREP_KEYS)   # every setting, before any file
    summary = prepare_mpii(s.images, s.annotations, s.gt_val_mat, s.link, s.prepared)
    print(f"mpii_prep: {summary['train']} train / {summary['val']} val records, {summary['images']} images;"
          f" {summary['link']} → {s.images}; outputs in {summary['out_dir']}")
    return summary


if __name__ == "__main__":
    run_flow(mpii_prep)
