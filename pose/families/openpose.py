"""The Lightweight OpenPose family (multi-person, bottom-up): heatmaps + PAFs, grouped into people.

Network, output order and LWOP's key layout: docs/MODELS.md#lightweight-openpose. Inference paths and COCO AP:
docs/PROTOCOLS.md.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from pose.families.base import DistillSpec, Family, Inference, Runner
from pose.models.openpose import LightweightOpenPose
from pose.predict.options import EvalOptions, PredictOptions
from pose.skeletons import OPENPOSE18

NAME = "openpose"
model_class = LightweightOpenPose
# the IR takes raw BGR pixels: (x - 128) / 256 is folded in, as LWOP's
inference = Inference(input_shape=(1, 3, 256, 456), dynamic_hw=True, input_name="data",
                      normalisation={"channels": "BGR", "mean": 128.0, "divide": 256.0}, ir_mean=128.0,
                      ir_scale=256.0)
skeleton = OPENPOSE18
multi_person = True                  # every person of the image (bottom-up)
draw_threshold = 0.0                 # found keypoints only (missing ones are -1)
# sample step-3 model: the poses below 0.2 have a median of 3 found keypoints (fragments), those above 17
min_confidence = 0.2
headline_metric = "AP"               # COCO keypoint AP (fraction)
predict_fields = ("height", "mode", "scales", "stride")


def infer_arch(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
    """``arch`` of an LWOP state dict (refinement stages, channels, heatmap and PAF counts)."""
    keys = list(state_dict)
    if not any(k.startswith("initial_stage.") for k in keys):
        return None
    stages = {int(m.group(1)) for k in keys if (m := re.match(r"refinement_stages\.(\d+)\.", k))}

    def out_channels(key: str, default: int) -> int:
        return int(state_dict[key].shape[0]) if key in state_dict else default

    return {"family": NAME, "num_refinement_stages": max(stages) + 1 if stages else 0,
            "num_channels": out_channels("cpm.align.0.weight", 128),
            "num_heatmaps": out_channels("initial_stage.heatmaps.1.0.weight", 19),
            "num_pafs": out_channels("initial_stage.pafs.1.0.weight", 38)}


def output_names(num_outputs: int) -> list[str]:
    """LWOP's IR names, one heatmap/PAF pair per stage, in the model's [heatmaps, pafs, ...] order."""
    if num_outputs % 2:
        raise ValueError(f"an OpenPose model returns heatmaps/PAF pairs; got {num_outputs} outputs")
    names: list[str] = []
    for s in range(num_outputs // 2):
        names += [f"stage_{s}_output_1_heatmaps", f"stage_{s}_output_0_pafs"]
    return names


def owns_outputs(names: Sequence[str]) -> bool:
    return any(n.startswith("stage_") and n.endswith("_pafs") for n in names)


def predictor(runner: Runner, options: PredictOptions) -> Any:
    """image → poses through heatmaps, PAFs and grouping (:class:`pose.predict.multi_person.MultiPersonPredictor`)."""
    from pose.predict.multi_person import MultiPersonPredictor

    return MultiPersonPredictor(runner, base_height=options.height, mode=options.mode, scales=options.scales,
                                stride=options.stride, skeleton=options.skeleton or skeleton)


def evaluate(runner: Runner, options: EvalOptions) -> tuple[dict[str, Any], str]:
    """COCO keypoint AP (pycocotools) of ``runner`` on a COCO person-keypoints json; the images are the folder the
    json's ``info`` names (the val subset's), else ``<dataset dir>/../<split>`` (COCO's layout) or
    ``<dataset dir>/images``, unless given."""
    from pose.evaluation.coco_ap import METRIC_NAMES, evaluate_predictor
    from pose.io import PoseDataError, write_json

    from pose.data.coco import images_of, load_coco_keypoints

    dataset = Path(options.dataset)
    split = dataset.stem.split("_")[-1]  # person_keypoints_val2017 → val2017
    images = options.images or images_of(dataset, load_coco_keypoints(dataset)) or next(
        (p for p in (dataset.parent.parent / split, dataset.parent / "images") if p.exists()), None)
    if images is None:
        raise PoseDataError(dataset, "no images folder found for the dataset; pass --images DIR", field="images")
    metrics, results = evaluate_predictor(predictor(runner, options.predict), dataset, images,
                                          progress=options.progress, skeleton=options.predict.skeleton or skeleton)
    if options.preds_out:
        write_json(options.preds_out, results)
    head = "  ".join(f"{n:>6}" for n in METRIC_NAMES)
    row = "  ".join(f"{metrics[n]:6.3f}" if metrics[n] >= 0 else f"{'-':>6}" for n in METRIC_NAMES)
    return {**metrics, "num_results": len(results)}, f"{head}\n{row}\n(COCO keypoints AP, fractions as in metrics/)"


def codec(stride: int = 8, sigma: float = 7.0, paf_thickness: float = 1.0) -> Any:
    from pose.codecs.openpose import OpenPoseCodec

    return OpenPoseCodec(stride=stride, sigma=sigma, paf_thickness=paf_thickness)


def result_record(image_id: Any, pose: Any, keypoint_set: Any = None) -> dict[str, Any]:
    """One COCO keypoint result in the dataset's keypoint order (OpenPose-18 → COCO's 17, LWOP's conversion:
    docs/PROTOCOLS.md; a custom set: its own order), with the set's ``skeleton`` name and ``keypoint_names``."""
    from pose.evaluation.coco_ap import dataset_set, poses_to_coco_results

    keypoint_set = keypoint_set or skeleton
    names = list(dataset_set(keypoint_set).keypoints)
    return {**poses_to_coco_results(0, [pose], keypoint_set)[0], "image_id": image_id, "skeleton": keypoint_set.name,
            "keypoint_names": names}


# ------------------------------------------------------------------------------------------------------ distillation
def _stage_maps(outputs: Sequence[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """``[hm0, paf0, hm1, paf1, …]`` → one ``{heatmaps, pafs}`` per stage (initial, then refinement stages)."""
    if len(outputs) % 2:
        raise ValueError(f"outputs must alternate heatmaps and PAFs, got {len(outputs)} tensors")
    return [{"heatmaps": outputs[i], "pafs": outputs[i + 1]} for i in range(0, len(outputs), 2)]


def _regression(pred: torch.Tensor, target: torch.Tensor, batch: Mapping[str, torch.Tensor],
                teacher: bool) -> torch.Tensor:
    """LWOP's masked L2 per sample; the teacher's maps get the same mask (crowd / unannotated regions)."""
    from pose.losses import per_sample_masked_l2

    return per_sample_masked_l2(pred, target, batch["mask"])


distill = DistillSpec(
    stage_maps=_stage_maps,
    ground_truth=lambda batch: {"heatmaps": batch["heatmaps"], "pafs": batch["pafs"]},
    regression=_regression,
    kl_mask=lambda batch: batch["mask"],
    distributions=("heatmaps",),                   # PAFs are signed vector fields, not distributions
    feature_layer=lambda model: "cpm",             # backbone + CPM features, the input of every stage
    head_prefixes=("initial_stage.", "refinement_stages."),
)
OPENPOSE = Family.of(sys.modules[__name__])
