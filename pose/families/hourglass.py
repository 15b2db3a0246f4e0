"""The stacked-hourglass family (single person, top-down crops): FPD's teacher and mobile student.

Layout, heatmap resolution and the FPD-U key names: docs/MODELS.md#hourglass-network. Evaluation is MPII PCKh
(docs/PROTOCOLS.md) on MPII data and PCK with the keypoint set's normalisation on COCO-format data
(docs/CUSTOM_DATASET.md).
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from pose.data.mpii import MPII_MEAN_RGB
from pose.families.base import DistillSpec, Family, Inference, Runner
from pose.models.hourglass import HourglassNet
from pose.predict.options import EvalOptions, PredictOptions
from pose.skeletons import MPII16

NAME = "hourglass"
model_class = HourglassNet
# RGB in [0, 1] minus the MPII mean, no std (FPD-U's; pose.data.mpii.MPII_MEAN_RGB)
inference = Inference(input_shape=(1, 3, 256, 256), dynamic_hw=False, input_name="image",
                      normalisation={"channels": "RGB", "divide": 255.0, "mean": list(MPII_MEAN_RGB), "std": 1.0})
skeleton = MPII16
multi_person = False                 # one person per crop (top-down)
draw_threshold = -np.inf             # every keypoint is drawn: a crop always holds its person
min_confidence = 0.0                 # the crop's one person is always reported
headline_metric = "Mean"             # PCKh@0.5 Mean (percent)
predict_fields = ("input_res", "flip_test", "decode", "sigma")


def infer_arch(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
    """``arch`` of an FPD-U / FPD-O hourglass state dict (stacks, blocks, classes, depthwise or not)."""
    keys = list(state_dict)
    if not ("score.0.weight" in state_dict and any(k.startswith("hg.0.hg.") for k in keys)):
        return None
    stacks = {int(m.group(1)) for k in keys if (m := re.match(r"score\.(\d+)\.", k))}
    blocks = {int(m.group(1)) for k in keys if (m := re.match(r"res\.0\.(\d+)\.", k))}
    conv2 = state_dict.get("layer1.0.conv2.weight")
    return {"family": NAME, "num_stacks": max(stacks) + 1, "num_blocks": max(blocks) + 1 if blocks else 1,
            "num_classes": int(state_dict["score.0.weight"].shape[0]),
            "mobile": bool(conv2 is not None and conv2.shape[1] == 1)}


def output_names(num_outputs: int) -> list[str]:
    """One heatmap output per stack: ``heatmaps_stack<i>``."""
    return [f"heatmaps_stack{i}" for i in range(num_outputs)]


def owns_outputs(names: Sequence[str]) -> bool:
    return bool(names) and all(n.startswith("heatmaps_stack") for n in names)


class CropPredictor:
    """image → ``[Pose]``: one person, cropped around ``options.center`` / ``options.scale`` (MPII semantics:
    the evaluation crop) or the whole image, decoded from the last stack's heatmaps."""

    def __init__(self, runner: Runner, options: PredictOptions):
        self.runner, self.options = runner, options

    def crop(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """Centre and box size in source pixels."""
        from pose.data.mpii import BOX_PER_SCALE, crop_center_scale

        h, w = image.shape[:2]
        o = self.options
        if o.scale is None:
            c = np.array([(w - 1) / 2.0, (h - 1) / 2.0]) if o.center is None else np.asarray(o.center, np.float64)
            return c, float(max(w, h))
        c0 = [(w - 1) / 2.0, (h - 1) / 2.0] if o.center is None else list(o.center)
        cs, ss = crop_center_scale([{"objpos": [c0[0] + 1.0, c0[1] + 1.0], "scale_provided": float(o.scale)}])
        return cs[0], float(BOX_PER_SCALE * ss[0])

    def __call__(self, image: np.ndarray) -> list:
        from pose.predict.pose import Pose
        from pose.predict.single_person import predict_image

        center, box = self.crop(image)
        o = self.options
        kp = predict_image(self.runner, image, center, box, o.input_res, o.flip_test, decode=o.decode,
                           sigma=o.sigma, skeleton=o.skeleton or skeleton)
        return [Pose(kp, float(kp[:, 2].mean()))]


def evaluate(runner: Runner, options: EvalOptions) -> tuple[dict[str, Any], str]:
    """PCK of ``runner`` in the model's keypoint set on

    * an MPII annotation file (its val records) or a prepared MPII ``val.json``: MPII's PCKh protocol, the protocol
      ``.mat`` beside it unless given;
    * a prepared top-down ``val.json`` (``mpii.format: coco``): PCK with the set's normalisation, its
      ``gt_val.json`` beside it unless given;
    * a COCO keypoints json: one top-down crop per annotated person (:mod:`pose.data.topdown`), the same PCK.

    The images are named by the prepared folder's manifest, else ``images/`` beside the file, unless given."""
    from pose.evaluation.pck import format_pck_table, pck
    from pose.predict.single_person import predict_mpii

    dataset = Path(options.dataset)
    p = options.predict
    keypoint_set = p.skeleton or skeleton
    records, images, gt = _val_data(dataset, options, keypoint_set)
    preds = predict_mpii(runner, records, images, p.input_res, flip_test=p.flip_test, batch_size=options.batch_size,
                         progress=options.progress, decode=p.decode, sigma=p.sigma, skeleton=keypoint_set)
    result = pck(preds, gt, keypoint_set)
    if options.preds_out:
        from pose.data.mpii import write_preds_mat

        write_preds_mat(options.preds_out, preds)
    return result, format_pck_table({dataset.name: result}, keypoint_set) + f"\n({result['protocol']})"


def _val_data(dataset: Path, options: EvalOptions, keypoint_set: Any) -> tuple[list, Path, Any]:
    """``(records, image folder, ground truth)`` of an evaluation dataset (see :func:`evaluate`)."""
    from pose.data.mpii import load_mpii_annotations, prepared_images, read_protocol_gt, split_index
    from pose.evaluation.pck import load_val_gt
    from pose.io import PoseDataError, read_json

    raw = read_json(dataset)
    if isinstance(raw, dict) and "annotations" in raw:          # a COCO keypoints json
        from pose.data.coco import images_of
        from pose.data.topdown import person_records, val_ground_truth
        from pose.evaluation.pck import TopDownGT

        split = dataset.stem.split("_")[-1]                     # person_keypoints_val2017 → val2017
        images = options.images or images_of(dataset, raw) or _first_existing(dataset.parent.parent / split,
                                                                               dataset.parent / "images")
        if images is None:
            raise PoseDataError(dataset, "no images folder found for the dataset; pass --images DIR", field="images")
        records = person_records(dataset, keypoint_set, images, images)
        d = val_ground_truth(records, keypoint_set, dataset)
        gt = TopDownGT(joints=np.asarray(d["joints"], np.float64), missing=np.asarray(d["missing"], bool),
                       sizes=np.asarray(d["sizes"], np.float64), normalize=d["normalize"], names=tuple(d["keypoints"]))
        return records, Path(images), gt
    images = options.images or prepared_images(dataset) or _first_existing(dataset.parent / "images")
    if images is None:
        raise PoseDataError(dataset, "no images folder beside the dataset; pass --images DIR", field="images")
    topdown_gt = Path(options.gt) if options.gt is not None else dataset.parent / "gt_val.json"
    if topdown_gt.suffix.lower() == ".json" and (options.gt is not None or topdown_gt.exists()):
        gt = load_val_gt(topdown_gt)                            # a prepared top-down folder
        records = read_json(dataset)
        if not isinstance(records, list) or len(records) != gt.joints.shape[0]:
            raise PoseDataError(topdown_gt, f"{gt.joints.shape[0]} people but {dataset} holds "
                                f"{len(records) if isinstance(records, list) else 'no list of'} records", field="joints")
        return records, Path(images), gt
    records = load_mpii_annotations(dataset)
    _, val_idx = split_index(records)
    if len(val_idx) < len(records):  # a full annotation file: its val records, in file order
        records = [records[i] for i in val_idx]
    gt_path = options.gt or _first_existing(dataset.parent / "gt_val.mat", dataset.parent / "detections_our_format.mat")
    if gt_path is None:
        raise PoseDataError(dataset, "no gt_val.mat / detections_our_format.mat beside the dataset; pass --gt FILE",
                            field="gt")
    gt = load_val_gt(gt_path) if Path(gt_path).suffix.lower() == ".json" else read_protocol_gt(gt_path)
    if gt.joints.shape[0] != len(records):
        raise PoseDataError(gt_path, f"{gt.joints.shape[0]} people in the protocol file but {len(records)} val "
                                     f"records in {dataset}", field="pos_gt_src")
    return records, Path(images), gt


def _first_existing(*paths: Path) -> Path | None:
    return next((p for p in paths if p.exists()), None)


def codec(sigma: float = 1.0, subpixel: bool = True, decode: str = "reference") -> Any:
    """The Gaussian heatmap codec (:class:`pose.codecs.hourglass.HeatmapCodec`)."""
    from pose.codecs.hourglass import HeatmapCodec

    return HeatmapCodec(sigma=sigma, subpixel=subpixel, decode_method=decode)


def result_record(image_id: Any, pose: Any, keypoint_set: Any = None) -> dict[str, Any]:
    """``{image_id, keypoints [x, y, peak] × K (image pixels), score, skeleton, keypoint_names}`` in the keypoint
    set ``keypoint_set`` (the family's default when ``None``); a pose cropped from a person box (``pose predict
    --detector``: :class:`pose.predict.detector.DetectedPose`) adds COCO's ``category_id`` 1, the ``bbox``
    [x, y, w, h] it was cropped from and the box's ``det_score``."""
    keypoint_set = keypoint_set or skeleton
    record = {"image_id": image_id, "keypoints": [float(v) for v in pose.keypoints.ravel()],
              "score": float(pose.score), "skeleton": keypoint_set.name,
              "keypoint_names": list(keypoint_set.keypoints)}
    if getattr(pose, "bbox", None) is not None:
        from pose.predict.detector import PERSON_CATEGORY

        record.update(category_id=PERSON_CATEGORY, bbox=[float(v) for v in pose.bbox], det_score=float(pose.det_score))
    return record


# ------------------------------------------------------------------------------------------------------ distillation
def _stage_maps(outputs: Sequence[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    return [{"heatmaps": out} for out in outputs]          # one heatmap tensor per stack


def _regression(pred: torch.Tensor, target: torch.Tensor, batch: Mapping[str, torch.Tensor],
                teacher: bool) -> torch.Tensor:
    """Per-sample heatmap MSE; the joint weights apply to the ground truth only (the teacher supplies every
    joint, FPD-U's rule)."""
    from pose.losses import per_sample_mse

    return per_sample_mse(pred, target, None if teacher else batch["target_weight"])


distill = DistillSpec(
    stage_maps=_stage_maps,
    ground_truth=lambda batch: {"heatmaps": batch["target"]},
    regression=_regression,
    kl_mask=lambda batch: None,
    distributions=("heatmaps",),
    feature_layer=lambda model: f"fc.{model.num_stacks - 1}",   # the last stack's features, before its scores
    head_prefixes=("fc.", "score."),                          # every stack's 1×1 feature conv and score conv
)
predictor = CropPredictor
HOURGLASS = Family.of(sys.modules[__name__])
