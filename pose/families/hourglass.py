"""The stacked-hourglass family (single person, top-down crops): FPD's teacher and mobile student.

Layout, heatmap resolution and the FPD-U key names: docs/MODELS.md#hourglass-network. Evaluation is MPII PCKh
(docs/PROTOCOLS.md).
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from pose.data.mpii import MPII_MEAN_RGB
from pose.families.base import Family, Inference, Runner
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
                           sigma=o.sigma)
        return [Pose(kp, float(kp[:, 2].mean()))]


def evaluate(runner: Runner, options: EvalOptions) -> tuple[dict[str, Any], str]:
    """MPII PCKh of ``runner`` on an MPII annotation file (its val records) or a prepared ``val.json``, with the
    images (named by the prepared folder's manifest, else ``images/`` beside it) and the protocol ``.mat`` beside it
    unless given."""
    from pose.data.mpii import load_mpii_annotations, prepared_images, read_protocol_gt, split_index, write_preds_mat
    from pose.evaluation.pckh import format_table, pckh
    from pose.io import PoseDataError
    from pose.predict.single_person import predict_mpii

    dataset = Path(options.dataset)
    records = load_mpii_annotations(dataset)
    _, val_idx = split_index(records)
    if len(val_idx) < len(records):  # a full annotation file: its val records, in file order
        records = [records[i] for i in val_idx]
    images = options.images or prepared_images(dataset) or _first_existing(dataset.parent / "images")
    gt_path = options.gt or _first_existing(dataset.parent / "gt_val.mat", dataset.parent / "detections_our_format.mat")
    if images is None:
        raise PoseDataError(dataset, "no images folder beside the dataset; pass --images DIR", field="images")
    if gt_path is None:
        raise PoseDataError(dataset, "no gt_val.mat / detections_our_format.mat beside the dataset; pass --gt FILE",
                            field="gt")
    gt = read_protocol_gt(gt_path)
    if gt.joints.shape[0] != len(records):
        raise PoseDataError(gt_path, f"{gt.joints.shape[0]} people in the protocol file but {len(records)} val "
                                     f"records in {dataset}", field="pos_gt_src")
    p = options.predict
    preds = predict_mpii(runner, records, images, p.input_res, flip_test=p.flip_test, batch_size=options.batch_size,
                         progress=options.progress, decode=p.decode, sigma=p.sigma)
    result = pckh(preds, gt)
    if options.preds_out:
        write_preds_mat(options.preds_out, preds)
    return result, format_table({dataset.name: result}) + f"\n({result['protocol']})"


def _first_existing(*paths: Path) -> Path | None:
    return next((p for p in paths if p.exists()), None)


def codec(sigma: float = 1.0, subpixel: bool = True, decode: str = "reference") -> Any:
    """The Gaussian heatmap codec (:class:`pose.codecs.hourglass.HeatmapCodec`)."""
    from pose.codecs.hourglass import HeatmapCodec

    return HeatmapCodec(sigma=sigma, subpixel=subpixel, decode_method=decode)


def result_record(image_id: Any, pose: Any) -> dict[str, Any]:
    """``{image_id, keypoints [x, y, peak] × K (image pixels), score, skeleton}``; a pose cropped from a person box
    (``pose predict --detector``: :class:`pose.predict.detector.DetectedPose`) adds COCO's ``category_id`` 1, the
    ``bbox`` [x, y, w, h] it was cropped from and the box's ``det_score``."""
    record = {"image_id": image_id, "keypoints": [float(v) for v in pose.keypoints.ravel()],
              "score": float(pose.score), "skeleton": MPII16.name}
    if getattr(pose, "bbox", None) is not None:
        from pose.predict.detector import PERSON_CATEGORY

        record.update(category_id=PERSON_CATEGORY, bbox=[float(v) for v in pose.bbox], det_score=float(pose.det_score))
    return record


predictor = CropPredictor
HOURGLASS = Family.of(sys.modules[__name__])
