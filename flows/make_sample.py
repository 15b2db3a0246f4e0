"""``python -m flows.make_sample``: write the synthetic COCO / MPII / unlabelled sample (params.yaml ``sample:``)."""
from __future__ import annotations

from prefect import flow

from flows._main import run_flow
from flows._params import load_params
from tasks.sample import generate_sample


@flow(name="make_sample")
def make_sample(params: dict | None = None) -> dict:
    p = params or load_params("sample")["sample"]
    return generate_sample(p["out"], p)


if __name__ == "__main__":
    run_flow(make_sample)
