"""What a model file records about how to use it (docs/ARCHITECTURE.md#model-files).

A model is only usable with the input size, normalisation, network variant and decoding it was trained and
evaluated with. :class:`ModelInfo` holds them; it travels inside every model file the project writes:

* checkpoints: the key ``inference`` of ``{'arch', 'state_dict', ...}``;
* ONNX: the metadata property ``posepipe.inference`` (JSON);
* OpenVINO IR: the runtime-info entry ``posepipe / inference`` (JSON).

``pose predict`` / ``eval`` / ``export`` / ``bench`` take their defaults from it (flags override), and export uses
the recorded input size. Foreign files (FPD-U, LWOP releases) have none: then the family's defaults apply.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from pose.io import PoseDataError
from pose.predict.options import PredictOptions
from pose.skeletons import Skeleton, skeleton_from_record, skeleton_record

CHECKPOINT_KEY = "inference"
ONNX_KEY = "posepipe.inference"
IR_PATH = ["posepipe", "inference"]


@dataclass(frozen=True)
class ModelInfo:
    """How a model is used.

    ``input_size`` (height, width): what the network was trained on (hourglass: the crop; OpenPose: the training
    crop; inference height is ``predict['height']``). ``normalisation``: the input transform the family applies
    (a description checked against the family on load, since the predictors implement it). ``predict``: the
    :class:`~pose.predict.options.PredictOptions` fields the pipeline evaluates the model with. ``arch``: the
    network inference runs when it differs from the trained one (OpenPose step 3 is run with its first refinement
    stage only, as LWOP's ``val.py`` does); ``None``: the trained one. ``keypoints``: the keypoint set, a built-in
    set's name or a custom set's whole definition (:func:`pose.skeletons.skeleton_record`), so that a model trained
    on one's own keypoints predicts, draws and names them wherever it goes.
    """

    family: str
    keypoints: Any
    input_size: tuple[int, int]
    normalisation: dict
    predict: dict = field(default_factory=dict)
    arch: dict | None = None

    def to_record(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "input_size": list(self.input_size)}

    @classmethod
    def from_record(cls, record: Any, source: str | os.PathLike) -> "ModelInfo":
        """Parse a stored record; bad content is a :class:`PoseDataError` naming ``source`` and the field."""
        if not isinstance(record, Mapping):
            raise PoseDataError(source, f"must be a mapping, got {type(record).__name__}", field=CHECKPOINT_KEY)
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                   and f.name not in record]
        if missing:
            raise PoseDataError(source, f"missing {missing}", field=CHECKPOINT_KEY)
        size = record["input_size"]
        if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
            raise PoseDataError(source, f"must be [height, width] positive integers, got {size!r}",
                                field=f"{CHECKPOINT_KEY}.input_size")
        predict = record.get("predict") or {}
        known = {f.name for f in dataclasses.fields(PredictOptions)}
        if not isinstance(predict, Mapping) or set(predict) - known:
            raise PoseDataError(source, f"unknown keys {sorted(set(predict) - known) if isinstance(predict, Mapping) else predict!r}",
                                field=f"{CHECKPOINT_KEY}.predict")
        for key in ("normalisation", "arch"):
            if record.get(key) is not None and not isinstance(record[key], Mapping):
                raise PoseDataError(source, "must be a mapping", field=f"{CHECKPOINT_KEY}.{key}")
        skeleton_from_record(record["keypoints"], source)      # a bad set is an error naming the file here
        return cls(family=str(record["family"]), keypoints=record["keypoints"], input_size=(size[0], size[1]),
                   normalisation=dict(record["normalisation"]), predict=dict(predict),
                   arch=dict(record["arch"]) if record.get("arch") is not None else None)

    def skeleton(self) -> Skeleton:
        """The recorded keypoint set."""
        return skeleton_from_record(self.keypoints, "model info")

    def predict_options(self, **overrides: Any) -> PredictOptions:
        """The recorded options and keypoint set, each ``overrides`` value that is not ``None`` replacing its
        field."""
        values = dict(self.predict)
        if "scales" in values:
            values["scales"] = tuple(values["scales"])
        values["skeleton"] = self.skeleton()
        values.update({k: v for k, v in overrides.items() if v is not None})
        return PredictOptions(**values)

    def check_family(self, family: Any, source: str | os.PathLike) -> None:
        """The family's predictors implement one normalisation; a model trained with another would be fed wrong
        inputs, silently. Refuse it."""
        if self.family != family.name:
            raise PoseDataError(source, f"records family {self.family!r}, opened as {family.name!r}",
                                field=f"{CHECKPOINT_KEY}.family")
        if self.normalisation != family.inference.normalisation:
            raise PoseDataError(source, f"records input normalisation {self.normalisation}, but {family.name} "
                                f"predictors apply {family.inference.normalisation}",
                                field=f"{CHECKPOINT_KEY}.normalisation")


def of_family(family: Any, input_size: tuple[int, int], predict: PredictOptions,
              arch: Mapping[str, Any] | None = None) -> ModelInfo:
    """The record of a ``family`` model trained at ``input_size`` and evaluated with ``predict`` (only the fields
    the family reads are kept, and ``predict.skeleton``, the family's default when ``None``)."""
    values = {name: getattr(predict, name) for name in family.predict_fields}
    values = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
    return ModelInfo(family=family.name, keypoints=skeleton_record(predict.skeleton or family.skeleton),
                     input_size=(int(input_size[0]), int(input_size[1])),
                     normalisation=dict(family.inference.normalisation), predict=values,
                     arch=dict(arch) if arch is not None else None)


# ------------------------------------------------------------------------------------------------------ files
def from_checkpoint(ckpt: Mapping[str, Any], source: str | os.PathLike) -> ModelInfo | None:
    record = ckpt.get(CHECKPOINT_KEY)
    return None if record is None else ModelInfo.from_record(record, source)


def _parse_json(text: str, source: str | os.PathLike) -> ModelInfo:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        raise PoseDataError(source, f"model info is not JSON ({e})", field=CHECKPOINT_KEY) from None
    return ModelInfo.from_record(record, source)


def write_onnx(path: str | os.PathLike, info: ModelInfo) -> None:
    """Add the record to an ONNX file in place (the caller writes into a temporary file it renames later)."""
    import onnx

    proto = onnx.load(str(path))
    props = {p.key: p.value for p in proto.metadata_props}
    props[ONNX_KEY] = json.dumps(info.to_record(), sort_keys=True)
    del proto.metadata_props[:]
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))


def from_onnx_session(session: Any, source: str | os.PathLike) -> ModelInfo | None:
    text = session.get_modelmeta().custom_metadata_map.get(ONNX_KEY)
    return None if text is None else _parse_json(text, source)


def set_ir(ov_model: Any, info: ModelInfo) -> None:
    """Store the record in an ``openvino.Model`` before it is saved."""
    ov_model.set_rt_info(json.dumps(info.to_record(), sort_keys=True), IR_PATH)


def from_ir_model(ov_model: Any, source: str | os.PathLike) -> ModelInfo | None:
    if not ov_model.has_rt_info(IR_PATH):
        return None
    return _parse_json(ov_model.get_rt_info(IR_PATH).astype(str), source)


def read(path: str | os.PathLike) -> ModelInfo | None:
    """The record of any model file (checkpoint, ONNX, IR); ``None`` when the file has none."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth"):
        from pose.checkpoint import load_checkpoint

        return from_checkpoint(load_checkpoint(path), path)
    if suffix == ".onnx":
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
        text = {p.key: p.value for p in proto.metadata_props}.get(ONNX_KEY)
        return None if text is None else _parse_json(text, path)
    if suffix == ".xml":
        import openvino as ov

        return from_ir_model(ov.Core().read_model(str(path)), path)
    raise PoseDataError(path, f"unknown model file type {suffix!r} (expected .pt, .onnx or .xml)")
