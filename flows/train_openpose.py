"""``python -m flows.train_openpose <step>``: one Lightweight OpenPose training step
(docs/PROTOCOLS.md#openpose-training).

``step1`` starts from ``openpose.imagenet_weights`` (from scratch when null), ``step2`` from step 1's model,
``step3`` (3 refinement stages) from step 2's model by a partial load; ``student`` (1 refinement stage) from step
2's model, distilled from step 3's (the profile's ``distill`` loss: :mod:`pose.distill`). The stage writes
``<paths.models>/openpose_<step>/model.pt``, resumable state and DVCLive in ``<paths.runs>/openpose_<step>/``
(rerunning continues an interrupted run) and the training summary in
``<paths.records>/openpose_train/openpose_<step>.json``. The ``launch`` section says how many processes train
(:mod:`pose.engine.launch`); rank 0 writes the outputs.
"""
from __future__ import annotations

import json

from prefect import flow

from flows._main import run_stage, training_line
from flows._params import launch_settings, load_params, params_source, path_settings, section
from pose.recipes.common import StageFiles
from pose.recipes.openpose import (STAGES, STEPS, STUDENT, STUDENT_INIT, STUDENT_TEACHER, TRAINED, CocoTrainData,
                                   OpenPoseRun, OpenPoseSettings, check_init_weights)
from tasks.openpose import train_openpose_step



@flow(name="train_openpose")
def train_openpose(step: str = "step1", params: dict | None = None) -> dict:
    p = params or load_params()
    source = params_source()
    paths = path_settings(p)                     # every setting, before any work
    settings = OpenPoseSettings.from_params(section(p, "openpose"), source)
    data = CocoTrainData.from_params(section(p, "coco"), source)
    launch = launch_settings(p)
    settings.step(step)                          # configured in the profile (the student's entry is optional)
    teacher = None
    if step == STUDENT:                          # step 3 teaches a 1-refinement-stage network started from step 2
        init, teacher = paths.model(STAGES[STUDENT_INIT]), paths.model(STAGES[STUDENT_TEACHER])
    elif step == STEPS[0]:
        check_init_weights(settings.imagenet_weights, source)
        init = settings.imagenet_weights
    else:
        init = paths.model(STAGES[STEPS[STEPS.index(step) - 1]])
    summary = train_openpose_step(OpenPoseRun(
        settings=settings, step=step, data=data, init=init, teacher=teacher, source=source,
        files=StageFiles.of(paths, STAGES[step], "openpose_train")), launch)
    print(training_line(f"train_openpose {step}", summary))
    init_info = summary.get("init") or {}
    if init_info.get("source"):
        print(f"  init from {init_info['source']}: {init_info['loaded']} tensors loaded, "
              f"{len(init_info['missing'])} missing (e.g. {init_info['missing'][:2]}), "
              f"{len(init_info['unexpected'])} unexpected, {len(init_info['mismatched'])} mis-shaped")
    return json.loads(json.dumps(summary, default=str))


if __name__ == "__main__":
    run_stage(train_openpose, __doc__, "step", TRAINED)
