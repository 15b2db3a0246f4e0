"""Keypoint sets as data (docs/CUSTOM_DATASET.md#the-keypoint-set-file).

The built-in sets live in ``skeletons.json`` beside this file; a custom set (hands, feet, 25 points) is a YAML or
JSON file of the same shape that a param points to (:func:`resolve_skeleton`). Code never hard-codes a joint
index: it asks a :class:`Skeleton`. A set holds

* ``keypoints``: the names, in channel order;
* ``flip_pairs``: left/right pairs swapped by a horizontal flip (names or indices);
* ``limbs``: connected pairs (names or indices): the drawn skeleton and, for OpenPose, one PAF field each;
* ``sigmas``: per-keypoint OKS sigmas (a list in keypoint order or a ``{name: sigma}`` mapping), which COCO AP
  and tracking need;
* ``pck``: how PCK normalises distances: ``{normalize: head_box}`` (MPII's protocol), ``bbox`` (the person box's
  longer side) or ``torso`` (the distance between the two keypoints ``torso`` names), and ``threshold``;
* optional OpenPose extras: ``source`` (the set the dataset's keypoints come in) with ``from_source`` (for each of
  our keypoints its index there, -1 for a derived one), ``derived`` (``{index: {mean_of: [a, b]}}``), and
  ``infer_limbs`` / ``infer_paf_channels`` (the grouping order of the limbs and their PAF channels, when it is not
  the ``limbs`` order with channels ``2i, 2i+1``).

Every problem in a set file is a :class:`pose.io.PoseDataError` naming the file and the field.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from pose.io import PoseDataError

_BUILTIN = Path(__file__).with_name("skeletons.json")
PCK_NORMALIZE = ("head_box", "bbox", "torso")
#: PCK thresholds when a set does not give one: MPII's PCKh@0.5; mmpose's bbox default (0.05); PCK@0.2 of the torso
PCK_DEFAULT_THRESHOLD = {"head_box": 0.5, "bbox": 0.05, "torso": 0.2}
EXTRA_KEYS = ("source", "from_source", "derived", "infer_limbs", "infer_paf_channels")
KNOWN_KEYS = ("name", "description", "keypoints", "flip_pairs", "limbs", "sigmas", "pck") + EXTRA_KEYS


@dataclass(frozen=True)
class PckNorm:
    """How PCK normalises a keypoint error: ``normalize`` in :data:`PCK_NORMALIZE`, ``threshold`` (a keypoint is
    correct when error / size < threshold) and, for ``torso``, the two keypoint indices whose distance is the size."""

    normalize: str = "bbox"
    threshold: float = PCK_DEFAULT_THRESHOLD["bbox"]
    torso: tuple[int, int] | None = None


@dataclass(frozen=True)
class Skeleton:
    name: str
    keypoints: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    limbs: tuple[tuple[int, int], ...]
    sigmas: tuple[float, ...] | None = None
    pck: PckNorm = PckNorm()
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoints)

    def index(self, name: str) -> int:
        return self.keypoints.index(name)

    def flip_permutation(self) -> np.ndarray:
        """Index array ``p`` such that ``flipped[p]`` swaps every left/right pair."""
        perm = np.arange(self.num_keypoints)
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    @property
    def infer_limbs(self) -> tuple[tuple[int, int], ...]:
        """The limbs in grouping order (``infer_limbs`` when the set gives one, else ``limbs``)."""
        return tuple(tuple(l) for l in self.extra.get("infer_limbs", self.limbs))

    @property
    def num_heatmaps(self) -> int:
        """OpenPose heatmap channels: one per keypoint plus the background."""
        return self.num_keypoints + 1

    @property
    def num_pafs(self) -> int:
        """OpenPose PAF channels: an x and a y field per limb."""
        return 2 * len(self.limbs)

    def source_index(self, num_source: int) -> np.ndarray:
        """For each of our keypoints its index among a dataset's ``num_source`` keypoints (-1: derived)."""
        src = self.extra.get("from_source")
        if src is None:
            if num_source != self.num_keypoints:
                raise ValueError(f"keypoint set {self.name!r} has {self.num_keypoints} keypoints, the dataset "
                                 f"{num_source}")
            return np.arange(self.num_keypoints)
        return np.asarray(src, dtype=np.int64)

    def source_slots(self, num_source: int) -> np.ndarray:
        """For each dataset keypoint the index of the same keypoint in this set (inverse of :meth:`source_index`)."""
        slots = np.full(num_source, -1)
        for ours, theirs in enumerate(self.source_index(num_source)):
            if theirs >= 0:
                slots[theirs] = ours
        if (slots < 0).any():
            raise ValueError(f"keypoint set {self.name!r} does not cover every dataset keypoint")
        return slots

    def require_sigmas(self, what: str) -> np.ndarray:
        if self.sigmas is None:
            raise ValueError(f"keypoint set {self.name!r} has no OKS 'sigmas', which {what} needs")
        return np.asarray(self.sigmas, dtype=np.float64)

    def to_record(self) -> dict[str, Any]:
        """A JSON definition (what model files record for a custom set); :func:`skeleton_from_dict` reads it back."""
        record: dict[str, Any] = {"keypoints": list(self.keypoints), "flip_pairs": [list(p) for p in self.flip_pairs],
                                  "limbs": [list(p) for p in self.limbs],
                                  "pck": {"normalize": self.pck.normalize, "threshold": self.pck.threshold}}
        if self.pck.torso is not None:
            record["pck"]["torso"] = list(self.pck.torso)
        if self.sigmas is not None:
            record["sigmas"] = list(self.sigmas)
        record.update(self.extra)
        return record


# ------------------------------------------------------------------------------------------------------ reading
def _indices(source: Any, name: str, raw: Any, fld: str, names: list[str]) -> tuple[tuple[int, int], ...]:
    """Pairs of keypoint names or indices → index pairs, each checked."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise PoseDataError(source, f"set {name!r}: must be a list of [a, b] pairs", field=fld)
    out = []
    for i, pair in enumerate(raw):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise PoseDataError(source, f"set {name!r}: must be a pair [a, b], got {pair!r}", field=f"{fld}[{i}]")
        idx = []
        for v in pair:
            if isinstance(v, str):
                if v not in names:
                    raise PoseDataError(source, f"set {name!r}: unknown keypoint {v!r} (known: {names})",
                                        field=f"{fld}[{i}]")
                idx.append(names.index(v))
            elif isinstance(v, int) and not isinstance(v, bool) and 0 <= v < len(names):
                idx.append(v)
            else:
                raise PoseDataError(source, f"set {name!r}: {v!r} is neither a keypoint name nor an index "
                                            f"0..{len(names) - 1}", field=f"{fld}[{i}]")
        if idx[0] == idx[1]:
            raise PoseDataError(source, f"set {name!r}: pair joins {names[idx[0]]!r} to itself", field=f"{fld}[{i}]")
        out.append((idx[0], idx[1]))
    return tuple(out)


def _check_unique_pairs(source: Any, name: str, pairs: tuple, fld: str, names: list[str], disjoint: bool) -> None:
    seen: dict[frozenset, int] = {}
    used: dict[int, int] = {}
    for i, (a, b) in enumerate(pairs):
        key = frozenset((a, b))
        if key in seen:
            raise PoseDataError(source, f"set {name!r}: [{names[a]}, {names[b]}] repeats entry {seen[key]}",
                                field=f"{fld}[{i}]")
        seen[key] = i
        for k in (a, b) if disjoint else ():
            if k in used:
                raise PoseDataError(source, f"set {name!r}: {names[k]!r} is already in pair {used[k]}",
                                    field=f"{fld}[{i}]")
            used[k] = i


def _keypoint_names(source: Any, name: str, raw: Any) -> list[str]:
    if not (isinstance(raw, list) and raw and all(isinstance(n, str) and n.strip() for n in raw)):
        raise PoseDataError(source, f"set {name!r}: must be a non-empty list of keypoint names", field="keypoints")
    dup = sorted({n for n in raw if raw.count(n) > 1})
    if dup:
        raise PoseDataError(source, f"set {name!r}: duplicate keypoint names {dup}", field="keypoints")
    return list(raw)


def _sigmas(source: Any, name: str, raw: Any, names: list[str]) -> tuple[float, ...] | None:
    if raw is None:
        return None
    if isinstance(raw, Mapping):
        missing = [n for n in names if n not in raw]
        unknown = sorted(set(raw) - set(names))
        if missing or unknown:
            raise PoseDataError(source, f"set {name!r}: " + (f"no sigma for {missing}" if missing else "")
                                + ("; " if missing and unknown else "") + (f"unknown keypoints {unknown}" if unknown
                                                                           else ""), field="sigmas")
        raw = [raw[n] for n in names]
    if not isinstance(raw, list) or len(raw) != len(names):
        got = len(raw) if isinstance(raw, list) else type(raw).__name__
        raise PoseDataError(source, f"set {name!r}: needs one sigma per keypoint ({len(names)}), got {got}",
                            field="sigmas")
    for i, v in enumerate(raw):
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0):
            raise PoseDataError(source, f"set {name!r}: sigma of {names[i]!r} must be a positive number, got {v!r}",
                                field=f"sigmas[{i}]")
    return tuple(float(v) for v in raw)


def _pck(source: Any, name: str, raw: Any, names: list[str]) -> PckNorm:
    raw = {} if raw is None else raw
    if not isinstance(raw, Mapping) or set(raw) - {"normalize", "threshold", "torso"}:
        raise PoseDataError(source, f"set {name!r}: must be a mapping of normalize / threshold / torso, got {raw!r}",
                            field="pck")
    norm = raw.get("normalize", "bbox")
    if norm not in PCK_NORMALIZE:
        raise PoseDataError(source, f"set {name!r}: must be one of {PCK_NORMALIZE}, got {norm!r}",
                            field="pck.normalize")
    thr = raw.get("threshold", PCK_DEFAULT_THRESHOLD[norm])
    if not (isinstance(thr, (int, float)) and not isinstance(thr, bool) and math.isfinite(thr) and thr > 0):
        raise PoseDataError(source, f"set {name!r}: must be a positive number, got {thr!r}", field="pck.threshold")
    torso = None
    if norm == "torso" or "torso" in raw:
        try:
            torso = _indices(source, name, [raw.get("torso")], "pck.torso", names)[0]
        except PoseDataError as e:
            raise PoseDataError(source, e.problem, field="pck.torso") from None
    return PckNorm(normalize=norm, threshold=float(thr), torso=torso)


def _extras(source: Any, name: str, d: Mapping[str, Any], names: list[str], limbs: tuple) -> dict[str, Any]:
    extra = {k: d[k] for k in EXTRA_KEYS if k in d}
    n = len(names)
    if "from_source" in extra:
        src = extra["from_source"]
        if not (isinstance(src, list) and len(src) == n and all(isinstance(v, int) and v >= -1 for v in src)):
            raise PoseDataError(source, f"set {name!r}: needs one dataset index (or -1: derived) per keypoint",
                                field="from_source")
        for i in (i for i, v in enumerate(src) if v == -1):
            if str(i) not in extra.get("derived", {}):
                raise PoseDataError(source, f"set {name!r}: keypoint {names[i]!r} has no dataset index and no "
                                            "'derived' rule", field="from_source")
    for slot, rule in extra.get("derived", {}).items():
        ok = (isinstance(rule, Mapping) and isinstance(rule.get("mean_of"), list) and len(rule["mean_of"]) == 2
              and str(slot).isdigit() and int(slot) < n and all(isinstance(v, int) and 0 <= v < n
                                                                 for v in rule["mean_of"]))
        if not ok:
            raise PoseDataError(source, f"set {name!r}: must be {{index: {{mean_of: [a, b]}}}}, got {slot!r}: {rule!r}",
                                field="derived")
    if "infer_limbs" in extra:
        extra["infer_limbs"] = [list(p) for p in _indices(source, name, extra["infer_limbs"], "infer_limbs", names)]
        if {frozenset(p) for p in extra["infer_limbs"]} != {frozenset(p) for p in limbs}:
            raise PoseDataError(source, f"set {name!r}: must hold the same pairs as 'limbs'", field="infer_limbs")
    if "infer_paf_channels" in extra:
        ch = extra["infer_paf_channels"]
        want = len(extra.get("infer_limbs", limbs))
        flat = sorted(v for p in ch for v in p) if isinstance(ch, list) and all(
            isinstance(p, list) and len(p) == 2 for p in ch) else None
        if flat != list(range(2 * len(limbs))) or len(ch) != want:
            raise PoseDataError(source, f"set {name!r}: needs one [x, y] channel pair per limb, every channel "
                                        f"0..{2 * len(limbs) - 1} once", field="infer_paf_channels")
    return extra


def skeleton_from_dict(name: str, d: Any, source: Any = "keypoint set") -> Skeleton:
    """One set from its definition (see the module docstring); errors name ``source`` and the field."""
    if not isinstance(d, Mapping):
        raise PoseDataError(source, f"set {name!r}: must be a mapping, got {type(d).__name__}")
    unknown = sorted(set(d) - set(KNOWN_KEYS))
    if unknown:
        raise PoseDataError(source, f"set {name!r}: unknown keys {unknown} (known: {list(KNOWN_KEYS)})",
                            field=unknown[0])
    names = _keypoint_names(source, name, d.get("keypoints"))
    flips = _indices(source, name, d.get("flip_pairs"), "flip_pairs", names)
    _check_unique_pairs(source, name, flips, "flip_pairs", names, disjoint=True)
    limbs = _indices(source, name, d.get("limbs"), "limbs", names)
    _check_unique_pairs(source, name, limbs, "limbs", names, disjoint=False)
    return Skeleton(name=name, keypoints=tuple(names), flip_pairs=flips, limbs=limbs,
                    sigmas=_sigmas(source, name, d.get("sigmas"), names), pck=_pck(source, name, d.get("pck"), names),
                    extra=_extras(source, name, d, names, limbs))


def _read_file(path: Path) -> Any:
    if not path.is_file():
        raise PoseDataError(path, "keypoint set file does not exist")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            return yaml.safe_load(text)
        return json.loads(text)
    except Exception as e:  # yaml and json raise several types for bad text
        raise PoseDataError(path, f"not readable as {path.suffix.lstrip('.').upper() or 'JSON'} ({e})") from None


def load_skeletons(path: str | Path) -> dict[str, Skeleton]:
    """Every set of a JSON file shaped like ``skeletons.json`` (``{name: definition}``)."""
    path = Path(path)
    raw = _read_file(path)
    if not isinstance(raw, Mapping):
        raise PoseDataError(path, "must map set names to definitions")
    return {name: skeleton_from_dict(name, d, path) for name, d in raw.items()}


def load_skeleton_file(path: str | Path) -> Skeleton:
    """The one set of a YAML / JSON file; its ``name`` field, else the file's stem, names it. A COCO keypoints json
    (``images`` and ``categories``, no ``keypoints`` at the top) gives the set of its ``categories[0]``
    (:func:`skeleton_from_coco`). Read once per file version (path, size, modification time)."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        raise PoseDataError(path, "keypoint set file does not exist") from None
    return _load_skeleton_file(str(path.resolve()), st.st_size, st.st_mtime_ns, str(path))


@lru_cache(maxsize=32)
def _load_skeleton_file(resolved: str, size: int, mtime_ns: int, shown: str) -> Skeleton:
    path = Path(shown)
    raw = _read_file(path)
    if isinstance(raw, Mapping) and "categories" in raw and "images" in raw and "keypoints" not in raw:
        cats = raw["categories"]
        if not (isinstance(cats, list) and cats and isinstance(cats[0], Mapping)):
            raise PoseDataError(path, "must hold the person category", field="categories")
        return skeleton_from_coco(cats[0], path, name=path.stem)
    if not isinstance(raw, Mapping):
        raise PoseDataError(path, f"must be a mapping with 'keypoints', got {type(raw).__name__}")
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not name:
        raise PoseDataError(path, f"must be a non-empty string, got {name!r}", field="name")
    return skeleton_from_dict(name, raw, path)


@lru_cache(maxsize=None)
def _builtin() -> dict[str, Skeleton]:
    return load_skeletons(_BUILTIN)


def builtin_names() -> list[str]:
    return sorted(_builtin())


def get_skeleton(name: str) -> Skeleton:
    try:
        return _builtin()[name]
    except KeyError:
        raise KeyError(f"unknown skeleton {name!r}; known: {sorted(_builtin())}") from None


def resolve_skeleton(spec: Any, source: Any = "settings", fld: str = "keypoints") -> Skeleton:
    """A set from a param: a built-in name (``mpii16``, ``openpose18``, ...), the path of a YAML / JSON set file, or
    the path of a COCO keypoints json (the set its ``categories[0]`` describes)."""
    if isinstance(spec, Skeleton):
        return spec
    if not isinstance(spec, str) or not spec:
        raise PoseDataError(source, f"must be a built-in keypoint set {builtin_names()} or a set file path, "
                                    f"got {spec!r}", field=fld)
    if spec in _builtin():
        return _builtin()[spec]
    if Path(spec).suffix.lower() in (".json", ".yaml", ".yml"):
        if not Path(spec).is_file():
            raise PoseDataError(source, f"keypoint set file {spec} does not exist", field=fld)
        return load_skeleton_file(spec)
    raise PoseDataError(source, f"{spec!r} is neither a built-in keypoint set {builtin_names()} nor a .json / "
                                ".yaml set file", field=fld)


def skeleton_from_record(record: Any, source: Any) -> Skeleton:
    """What a model file recorded: a built-in name, or ``{"name": ..., **definition}`` for a custom set."""
    if isinstance(record, str):
        try:
            return get_skeleton(record)
        except KeyError as e:
            raise PoseDataError(source, str(e.args[0]), field="inference.keypoints") from None
    if isinstance(record, Mapping) and isinstance(record.get("name"), str):
        return skeleton_from_dict(record["name"], {k: v for k, v in record.items() if k != "name"}, source)
    raise PoseDataError(source, f"must be a keypoint set name or definition, got {record!r}",
                        field="inference.keypoints")


def skeleton_record(skeleton: Skeleton) -> Any:
    """The inverse of :func:`skeleton_from_record`: a built-in set by name, any other by its definition."""
    if skeleton.name in _builtin() and _builtin()[skeleton.name] == skeleton:
        return skeleton.name
    return {"name": skeleton.name, **skeleton.to_record()}


def short_spelling(name: str) -> str:
    """COCO spells ``left_eye`` what the built-in sets call ``l_eye``: names compare in the short spelling."""
    for long, short in (("left_", "l_"), ("right_", "r_")):
        if name.startswith(long):
            return short + name[len(long):]
    return name


def skeleton_from_coco(category: Mapping[str, Any], source: Any, name: str = "dataset") -> Skeleton:
    """A set from a COCO ``categories[0]``: names from ``keypoints``, limbs from ``skeleton`` (1-based), flip pairs
    from the ``left_`` / ``right_`` (``l_`` / ``r_``) names, and sigmas from a ``sigmas`` entry when the file has
    one, else COCO-17's when the names are COCO's 17; otherwise the set has none (COCO AP then asks for a set
    file with sigmas)."""
    names = category.get("keypoints")
    names = _keypoint_names(source, name, names)
    limbs = [[a - 1, b - 1] for a, b in category.get("skeleton") or []
             if isinstance(a, int) and isinstance(b, int)]
    flips = []
    for i, n in enumerate(names):
        for left, right in (("left_", "right_"), ("l_", "r_")):
            if n.startswith(left) and right + n[len(left):] in names:
                flips.append([i, names.index(right + n[len(left):])])
    d = {"keypoints": names, "flip_pairs": flips, "limbs": limbs}
    short = [short_spelling(n) for n in names]
    if category.get("sigmas") is not None:
        d["sigmas"] = category["sigmas"]
    elif short == list(_builtin()["coco17"].keypoints):
        d["sigmas"] = list(_builtin()["coco17"].sigmas)
    return skeleton_from_dict(name, d, source)


MPII16 = get_skeleton("mpii16")
COCO17 = get_skeleton("coco17")
OPENPOSE18 = get_skeleton("openpose18")
