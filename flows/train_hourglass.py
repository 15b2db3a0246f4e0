"""``python -m flows.train_hourglass <role>``: one hourglass training of the FPD branch
(docs/PROTOCOLS.md#hourglass-training, #distillation).

Roles: ``teacher`` (hg_s8_b1), ``student`` (hg_s2_b1 mobile, ground truth only), ``student_fpd`` (FPD loss against
the frozen teacher, the teacher stage's model), ``student_fpd_unlabeled`` (FPD plus the unlabelled images). The
stage writes ``<paths.models>/train_<role>/model.pt``, resumable state and DVCLive in ``<paths.runs>/train_<role>/``
(rerunning continues an interrupted run) and the training summary in
``<paths.records>/fpd_train/train_<role>.json``. The ``launch`` section says how many processes train
(:mod:`pose.engine.launch`); rank 0 writes the outputs.
"""
from __future__ import annotations

import json

from prefect import flow

from flows._main import run_stage, training_line
from flows._params import launch_settings, load_params, params_source, path_settings, section
from pose.recipes.common import StageFiles
from pose.recipes.fpd import (DISTILLED, ROLES, STAGES, WITH_UNLABELED, FpdRun, FpdSettings, MpiiPaths,
                              read_mpii)
from tasks.fpd import train_hourglass_role



@flow(name="train_hourglass")
def train_hourglass(role: str = "teacher", params: dict | None = None) -> dict:
    p = params or load_params()
    paths, source = path_settings(p), params_source()
    settings = FpdSettings.from_params(section(p, "fpd"), source)     # every setting, before any file
    launch = launch_settings(p)
    mpii = read_mpii(section(p, "mpii"), source, unlabeled=role in WITH_UNLABELED)
    teacher = paths.model(STAGES["teacher"]) if role in DISTILLED else None
    run = FpdRun(settings=settings, role=role, data=MpiiPaths.of(mpii),
                 files=StageFiles.of(paths, STAGES[role], "fpd_train"), teacher=teacher, source=source)
    summary = train_hourglass_role(run, launch)
    print(training_line(f"train_hourglass {role}", summary))
    return json.loads(json.dumps(summary, default=str))


if __name__ == "__main__":
    run_stage(train_hourglass, __doc__, "role", ROLES)
