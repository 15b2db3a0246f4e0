"""Keypoint sets as data.

The sets themselves live in ``skeletons.json`` beside this file (names, flip pairs, limbs, OKS sigmas, and
for OpenPose-18 the inference limb order and its PAF channels). Code never hard-codes a joint index: it asks a
:class:`Skeleton`. A custom set (hands, feet, 25 points) is one more JSON entry, loaded with
:func:`load_skeletons`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

_BUILTIN = Path(__file__).with_name("skeletons.json")


@dataclass(frozen=True)
class Skeleton:
    name: str
    keypoints: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    limbs: tuple[tuple[int, int], ...]
    sigmas: tuple[float, ...] | None = None
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


def _from_dict(name: str, d: dict) -> Skeleton:
    keys = ("keypoints", "flip_pairs", "limbs", "sigmas")
    kps = tuple(d["keypoints"])
    n = len(kps)
    for a, b in list(d.get("flip_pairs", [])) + list(d.get("limbs", [])):
        if not (0 <= a < n and 0 <= b < n):
            raise ValueError(f"skeleton {name!r}: index pair {(a, b)} outside 0..{n - 1}")
    if d.get("sigmas") is not None and len(d["sigmas"]) != n:
        raise ValueError(f"skeleton {name!r}: 'sigmas' has {len(d['sigmas'])} values for {n} keypoints")
    return Skeleton(
        name=name,
        keypoints=kps,
        flip_pairs=tuple(tuple(p) for p in d.get("flip_pairs", [])),
        limbs=tuple(tuple(p) for p in d.get("limbs", [])),
        sigmas=tuple(d["sigmas"]) if d.get("sigmas") is not None else None,
        extra={k: v for k, v in d.items() if k not in keys},
    )


def load_skeletons(path: str | Path) -> dict[str, Skeleton]:
    """Read every skeleton of a JSON file shaped like ``skeletons.json``."""
    path = Path(path)
    with open(path) as f:
        raw = json.load(f)
    return {name: _from_dict(name, d) for name, d in raw.items()}


@lru_cache(maxsize=None)
def _builtin() -> dict[str, Skeleton]:
    return load_skeletons(_BUILTIN)


def get_skeleton(name: str) -> Skeleton:
    try:
        return _builtin()[name]
    except KeyError:
        raise KeyError(f"unknown skeleton {name!r}; known: {sorted(_builtin())}") from None


MPII16 = get_skeleton("mpii16")
COCO17 = get_skeleton("coco17")
OPENPOSE18 = get_skeleton("openpose18")
