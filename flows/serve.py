"""Serve the ``retrain`` flow on a schedule: ``python -m flows.serve [--interval SECONDS] [--cron EXPR]``.

Without options the cron expression comes from ``params.yaml: retrain.cron``. Runs are limited to one at a time
(``concurrency_limit=1`` on the deployment): two ``dvc repro`` in one workspace would fail on DVC's lock. Runs are
executed in the serve process's working directory, which must be the DVC repository. ``prefect.yaml`` declares the
same deployment for a work pool (``prefect deploy --all``); this command is the zero-infrastructure variant.
"""
from __future__ import annotations

import argparse
from datetime import timedelta
from typing import Any

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.types.entrypoint import EntrypointType

from flows.retrain import flow_parameters, retrain, retrain_settings

DEPLOYMENT_NAME = "posepipe-retrain"


def serve_kwargs(settings: dict, interval: float | None = None, cron: str | None = None,
                 name: str = DEPLOYMENT_NAME) -> dict[str, Any]:
    """Keyword arguments of ``retrain.serve``: one schedule (``interval`` seconds, else ``cron``, else
    ``settings['cron']``), one run at a time (further runs wait: ENQUEUE), parameters from ``settings``."""
    schedule: dict[str, Any] = (
        {"interval": timedelta(seconds=interval)} if interval else {"cron": cron or settings["cron"]}
    )
    return {
        "name": name,
        **schedule,
        "global_limit": ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
        "limit": 1,  # this runner, too, starts one run at a time
        "parameters": flow_parameters(settings),
        "tags": ["posepipe", "retrain"],
        # flows.* is installed (editable): the run subprocess imports it by module path from any directory
        "entrypoint_type": EntrypointType.MODULE_PATH,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__.splitlines()[0])
    ap.add_argument("--interval", type=float, help="run every SECONDS instead of on params.yaml retrain.cron")
    ap.add_argument("--cron", help="cron expression overriding params.yaml retrain.cron")
    ap.add_argument("--name", default=DEPLOYMENT_NAME, help=f"deployment name (default {DEPLOYMENT_NAME})")
    ap.add_argument("--params", help="params file (default: params.yaml in the working directory)")
    args = ap.parse_args(argv)
    settings = retrain_settings(args.params)
    retrain.serve(**serve_kwargs(settings, args.interval, args.cron, args.name))


if __name__ == "__main__":
    main()
