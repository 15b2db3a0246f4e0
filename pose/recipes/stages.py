"""The pipeline's training stages (each recipe names its own: :data:`pose.recipes.fpd.STAGES`,
:data:`pose.recipes.openpose.STAGES`) and the settings of the stage that draws their curves (``render_plots``)."""
from __future__ import annotations

from dataclasses import dataclass

from pose.io import PoseDataError


def training_stages() -> tuple[str, ...]:
    """Every training stage's folder name (``<paths.runs>/<stage>/live``), FPD's then OpenPose's."""
    from pose.recipes import fpd, openpose

    return (*fpd.STAGES.values(), *openpose.STAGES.values())


@dataclass(frozen=True)
class RenderPlotsSettings:
    """The ``render_plots`` section (optional): which training stages' DVCLive curves to draw."""

    stages: tuple[str, ...] | None = None     # None: every <paths.runs>/*/live found

    def check(self, source: str, prefix: str) -> None:
        if self.stages is None:
            return
        if not self.stages:
            raise PoseDataError(source, "must list at least one training stage (null: every run found)",
                                field=f"{prefix}.stages")
        known = training_stages()
        unknown = [s for s in self.stages if s not in known]
        if unknown:
            raise PoseDataError(source, f"not a training stage of the pipeline: {', '.join(unknown)} "
                                        f"(known: {', '.join(known)})", field=f"{prefix}.stages")
