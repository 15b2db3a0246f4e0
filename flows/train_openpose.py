"""``python -m flows.train_openpose <step>``: one Lightweight OpenPose training step (REFERENCE B3).

``step1`` starts from ``openpose.imagenet_weights`` (from scratch when null), ``step2`` from step 1's model,
``step3`` (3 refinement stages) from step 2's model by a partial load. Model: ``models/openpose_<step>/model.pt``;
resumable state: ``runs/openpose_<step>/`` (rerunning continues an interrupted run).
"""
from __future__ import annotations

import argparse
import json

from prefect import flow

from flows._main import run_flow
from flows._params import load_params
from pose.recipes.openpose import STEPS, resolve_profile
from tasks.openpose import train_openpose_step

PREVIOUS = {"step2": "step1", "step3": "step2"}


def model_path(section: dict, step: str) -> str:
    return f"{section.get('models_dir', 'models')}/openpose_{step}/model.pt"


@flow(name="train_openpose")
def train_openpose(step: str = "step1", params: dict | None = None) -> dict:
    p = params or load_params("openpose", "coco")
    op, coco = p["openpose"], p["coco"]
    profile = resolve_profile(op)
    init = op.get("imagenet_weights") if step == "step1" else model_path(op, PREVIOUS[step])
    summary = train_openpose_step(profile, step, coco["labels_out"], coco["train_images"], model_path(op, step),
                                  f"{op.get('runs_dir', 'runs')}/openpose_{step}", init,
                                  float(coco.get("label_net_input", 368)),
                                  bool(coco.get("skip_unreadable_images", False)))
    init_info = summary.get("init") or {}
    print(f"train_openpose {step}: loss {summary.get('loss', float('nan')):.4g} after {summary['step']} steps, "
          f"{summary['cpu_seconds']} CPU s; {summary['resume']}")
    if init_info.get("source"):
        print(f"  init from {init_info['source']}: {init_info['loaded']} tensors loaded, "
              f"{len(init_info['missing'])} missing (e.g. {init_info['missing'][:2]}), "
              f"{len(init_info['unexpected'])} unexpected, {len(init_info['mismatched'])} mis-shaped")
    return json.loads(json.dumps(summary, default=str))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=STEPS)
    run_flow(train_openpose, step=ap.parse_args().step)


if __name__ == "__main__":
    main()
