"""``python -m flows.make_sample``: write the synthetic COCO / MPII / unlabelled sample, plus the COCO-format
annotations of ``sample.extra_keypoint_sets`` (params.yaml ``sample:``)."""
from __future__ import annotations

from prefect import flow

from flows._main import run_flow
from flows._params import PARAMS_FILE, load_params
from pose.data.synthetic import sample_settings
from tasks.sample import generate_sample


@flow(name="make_sample")
def make_sample(params: dict | None = None) -> dict:
    source = "make_sample(params=...)" if params else str(PARAMS_FILE)
    p = params or load_params("sample")["sample"]
    out, config = sample_settings(p, source)          # every setting, before anything is written
    return generate_sample(out, config)


if __name__ == "__main__":
    run_flow(make_sample)
