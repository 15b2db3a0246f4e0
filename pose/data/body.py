"""The articulated 2-D body behind every synthetic sample (COCO, MPII and unlabelled sets share it).

A person is a kinematic tree in a *body frame* (units of standing height, y down, the person faces the
camera so their left side is at +x): pelvis → thorax → upper_neck → head, shoulders → elbows → wrists,
hips → knees → ankles, with joint angles drawn inside plausible limits. :func:`sample_body` draws one, places
it in the image (rotation, height in pixels, position) and returns the joint positions together with the
drawing primitives. Every keypoint sits at the centre of a drawn part (a joint disc, an eye, the nose, an ear,
inside the head ellipse), so the written coordinates are exactly where the pixels are.

Left and right are told apart by geometry (the face is always towards the camera, so with the head up the
person's left is on the image right) and by colour: left limbs are a lighter tint of the person's clothing,
right limbs a darker one.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: every point the model defines; COCO17 and MPII16 pick theirs by name (pose.skeletons)
BODY_JOINTS: tuple[str, ...] = (
    "pelvis", "thorax", "upper_neck", "head_top", "head_center", "nose", "l_eye", "r_eye", "l_ear", "r_ear",
    "l_shoulder", "r_shoulder", "l_elbow", "r_elbow", "l_wrist", "r_wrist",
    "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle",
)
_J = {n: i for i, n in enumerate(BODY_JOINTS)}

SHIFT = 4                      # OpenCV fixed-point bits: sub-pixel drawing
_ONE = 1 << SHIFT


def joint_indices(names: tuple[str, ...] | list[str]) -> np.ndarray:
    """Indices into :data:`BODY_JOINTS` for a keypoint set's names (raises KeyError for unknown names)."""
    return np.array([_J[n] for n in names], dtype=np.int64)


def _dir(theta: float) -> np.ndarray:
    """Unit vector at angle ``theta`` from straight down (+y), positive towards +x."""
    return np.array([np.sin(theta), np.cos(theta)])


def _perp_left(up: np.ndarray) -> np.ndarray:
    """The +x ('person's left') side of an up vector."""
    return np.array([-up[1], up[0]])


@dataclass
class Primitive:
    """One filled shape: ``kind`` in capsule / poly / circle / ellipse, image coordinates (pixel centres)."""

    kind: str
    pts: np.ndarray            # capsule: (2,2); poly: (n,2); circle / ellipse: (1,2) centre
    size: tuple[float, ...]    # capsule: (r0, r1); circle: (r,); ellipse: (semi_x, semi_y, angle_deg)
    color: tuple[int, int, int]


@dataclass
class Body:
    """A placed person: joints (len(BODY_JOINTS), 2) in image coordinates and what to draw, back to front."""

    joints: np.ndarray
    primitives: list[Primitive]
    height: float              # standing height in pixels (MPII scale = height / 200)
    head_axes: np.ndarray      # (2, 2): unit 'up' and 'left' vectors of the head, image frame
    head_semi: tuple[float, float]   # ellipse semi-axes (across, along) in pixels


def _jitter(rng: np.random.Generator, base: float, rel: float = 0.08) -> float:
    return base * float(rng.uniform(1.0 - rel, 1.0 + rel))


def _limb_angle(rng: np.random.Generator, lo: float, hi: float, p_wide: float, wide: tuple[float, float]) -> float:
    if rng.random() < p_wide:
        return float(rng.uniform(*wide))
    return float(rng.uniform(lo, hi))


def _pose_body_frame(rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Joint positions in the body frame (height units, pelvis at the origin) and shape parameters."""
    p = np.zeros((len(BODY_JOINTS), 2))
    def fore() -> float:   # out-of-plane foreshortening of one segment
        return 1.0 if rng.random() > 0.3 else float(rng.uniform(0.7, 1.0))

    lean = float(np.clip(rng.normal(0.0, 0.12), -0.4, 0.4))
    up = -_dir(lean)                                   # spine direction
    left = _perp_left(up)
    p[_J["thorax"]] = p[_J["pelvis"]] + _jitter(rng, 0.27) * up
    neck_up = -_dir(lean + float(np.clip(rng.normal(0, 0.15), -0.35, 0.35)))
    p[_J["upper_neck"]] = p[_J["thorax"]] + _jitter(rng, 0.065) * neck_up
    head_tilt = float(np.clip(rng.normal(0, 0.2), -0.5, 0.5))
    h_up = -_dir(lean + head_tilt)
    h_left = _perp_left(h_up)
    semi_a = float(rng.uniform(0.095, 0.115))          # large heads: half the head length
    semi_b = semi_a * float(rng.uniform(0.72, 0.85))   # half the head width
    centre = p[_J["upper_neck"]] + 0.9 * semi_a * h_up
    p[_J["head_center"]] = centre
    p[_J["head_top"]] = centre + 0.9 * semi_a * h_up
    yaw = float(rng.uniform(-0.3, 0.3))
    p[_J["nose"]] = centre + yaw * semi_b * h_left - 0.18 * semi_a * h_up
    for side, s in (("l", 1.0), ("r", -1.0)):
        p[_J[f"{side}_eye"]] = centre + (s * 0.4 + 0.8 * yaw) * semi_b * h_left + 0.12 * semi_a * h_up
        p[_J[f"{side}_ear"]] = centre + (s * 0.98 + 0.25 * yaw) * semi_b * h_left - 0.02 * semi_a * h_up
    sh, hip = _jitter(rng, 0.105), _jitter(rng, 0.075)
    pelvis_left = _dir(np.pi / 2 + float(rng.normal(0, 0.06)))
    lengths = dict(upper=_jitter(rng, 0.17), fore=_jitter(rng, 0.15), thigh=_jitter(rng, 0.235),
                   shin=_jitter(rng, 0.235))
    for side, s in (("l", 1.0), ("r", -1.0)):
        shoulder = p[_J["thorax"]] + s * sh * left + 0.012 * (-up)
        p[_J[f"{side}_shoulder"]] = shoulder
        # arm: abduction from hanging along the torso, elbow flexion either way (a 2-D projection)
        abd = _limb_angle(rng, -0.25, 1.7, 0.25, (1.7, 2.9))
        flex = _limb_angle(rng, -0.8, 1.6, 0.2, (-2.3, 2.3))
        a_upper = lean + s * abd
        p[_J[f"{side}_elbow"]] = shoulder + lengths["upper"] * fore() * _dir(a_upper)
        p[_J[f"{side}_wrist"]] = p[_J[f"{side}_elbow"]] + lengths["fore"] * fore() * _dir(a_upper - s * flex)
        hip_pt = p[_J["pelvis"]] + s * hip * pelvis_left
        p[_J[f"{side}_hip"]] = hip_pt
        hab = _limb_angle(rng, -0.15, 0.45, 0.12, (0.45, 1.5))
        knee = _limb_angle(rng, -0.6, 0.6, 0.15, (-2.0, 2.0))
        a_thigh = s * hab
        p[_J[f"{side}_knee"]] = hip_pt + lengths["thigh"] * fore() * _dir(a_thigh)
        p[_J[f"{side}_ankle"]] = p[_J[f"{side}_knee"]] + lengths["shin"] * fore() * _dir(a_thigh + s * knee)
    p[_J["pelvis"]] = 0.5 * (p[_J["l_hip"]] + p[_J["r_hip"]])
    shape = dict(up=up, left=left, h_up=h_up, h_left=h_left, semi_a=semi_a, semi_b=semi_b,
                 thick=dict(upper=_jitter(rng, 0.05, 0.25), fore=_jitter(rng, 0.04, 0.25),
                            thigh=_jitter(rng, 0.07, 0.25), shin=_jitter(rng, 0.055, 0.25),
                            neck=_jitter(rng, 0.045, 0.2)))
    return p, shape


def _tint(color: np.ndarray, amount: float) -> tuple[int, int, int]:
    """amount > 0 mixes towards white, < 0 towards black."""
    c = color.astype(np.float64)
    c = c + (255.0 - c) * amount if amount > 0 else c * (1.0 + amount)
    return tuple(int(v) for v in np.clip(np.round(c), 0, 255))


def random_colors(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Clothing and skin colours of one person (BGR)."""
    def saturated() -> np.ndarray:
        hsv = np.uint8([[[rng.integers(0, 180), rng.integers(120, 256), rng.integers(110, 220)]]])
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.int64)
    skin_tones = np.array([[189, 209, 241], [141, 180, 224], [99, 134, 198], [66, 95, 141], [45, 60, 92]])
    skin = skin_tones[rng.integers(0, len(skin_tones))] + rng.integers(-12, 13, 3)
    return dict(shirt=saturated(), pants=saturated(), skin=np.clip(skin, 0, 255),
                hair=rng.integers(0, 90, 3), shoe=rng.integers(0, 70, 3))


def _build_primitives(j: np.ndarray, sh: dict, colors: dict, height: float) -> list[Primitive]:
    """Drawing list, back to front; every joint gets a disc centred exactly on it."""
    P = Primitive
    t = {k: max(0.6, v * height / 2.0) for k, v in sh["thick"].items()}  # radii in px
    skin = colors["skin"]
    out: list[Primitive] = []
    for side, tint in (("r", -0.25), ("l", 0.45)):
        pc = _tint(colors["pants"], tint)
        out.append(P("capsule", j[[_J[f"{side}_hip"], _J[f"{side}_knee"]]], (t["thigh"], t["shin"] * 1.1), pc))
        out.append(P("capsule", j[[_J[f"{side}_knee"], _J[f"{side}_ankle"]]], (t["shin"] * 1.1, t["shin"] * 0.8), pc))
        out.append(P("circle", j[[_J[f"{side}_ankle"]]], (t["shin"] * 1.15,), _tint(colors["shoe"], tint * 0.6)))
    up, left = sh["up"], sh["left"]
    ext = 0.035 * height
    ls, rs, lh, rh = (j[_J[n]] for n in ("l_shoulder", "r_shoulder", "l_hip", "r_hip"))
    torso = np.array([ls + ext * left + 0.4 * ext * up, rs - ext * left + 0.4 * ext * up,
                      rh - 0.6 * ext * left - 0.3 * ext * up, lh + 0.6 * ext * left - 0.3 * ext * up])
    out.append(P("poly", torso, (), _tint(colors["shirt"], 0.0)))
    out.append(P("capsule", j[[_J["pelvis"], _J["pelvis"]]], (t["thigh"] * 0.9, t["thigh"] * 0.9),
                 _tint(colors["pants"], -0.1)))
    out.append(P("capsule", j[[_J["thorax"], _J["upper_neck"]]], (t["neck"], t["neck"]), _tint(skin, -0.1)))
    for side, tint in (("r", -0.3), ("l", 0.45)):
        sc = _tint(colors["shirt"], tint)
        out.append(P("capsule", j[[_J[f"{side}_shoulder"], _J[f"{side}_elbow"]]], (t["upper"] * 1.1, t["upper"]), sc))
        out.append(P("capsule", j[[_J[f"{side}_elbow"], _J[f"{side}_wrist"]]], (t["fore"] * 1.1, t["fore"] * 0.8),
                     _tint(skin, tint * 0.5)))
        out.append(P("circle", j[[_J[f"{side}_wrist"]]], (t["fore"] * 1.25,), _tint(skin, tint * 0.3 - 0.1)))
    a, b = sh["semi_a"] * height, sh["semi_b"] * height
    h_up, h_left = sh["h_up"], sh["h_left"]
    angle = float(np.degrees(np.arctan2(-h_up[0], h_up[1])))
    c = j[_J["head_center"]]
    out.append(P("ellipse", c[None], (b, a, angle), _tint(skin, 0.0)))
    out.append(P("ellipse", (c + 0.66 * a * h_up)[None], (0.92 * b, 0.4 * a, angle), _tint(colors["hair"], 0.0)))
    for side in ("l", "r"):
        out.append(P("ellipse", j[[_J[f"{side}_ear"]]], (0.2 * b, 0.3 * a, angle), _tint(skin, -0.25)))
        out.append(P("circle", j[[_J[f"{side}_eye"]]], (0.19 * b,), (245, 245, 245)))
        out.append(P("circle", j[[_J[f"{side}_eye"]]], (0.1 * b,), (40, 25, 20)))
    out.append(P("circle", j[[_J["nose"]]], (0.13 * b,), _tint(skin, -0.35)))
    return out


def sample_body(rng: np.random.Generator, height: float, center: tuple[float, float],
                rotation_deg: float, colors: dict | None = None) -> Body:
    """Draw a pose and place it: its joint-box centre at ``center``, ``height`` px tall, rotated CCW."""
    p, sh = _pose_body_frame(rng)
    th = np.radians(rotation_deg)
    R = np.array([[np.cos(th), np.sin(th)], [-np.sin(th), np.cos(th)]])   # CCW on screen (y down)
    q = p @ R.T * height
    q += np.asarray(center, dtype=np.float64) - 0.5 * (q.min(0) + q.max(0))
    for k in ("up", "left", "h_up", "h_left"):
        sh[k] = R @ sh[k]
    prims = _build_primitives(q, sh, colors if colors is not None else random_colors(rng), height)
    return Body(joints=q, primitives=prims, height=float(height),
                head_axes=np.stack([sh["h_up"], sh["h_left"]]),
                head_semi=(sh["semi_b"] * height, sh["semi_a"] * height))


def _fx(pts: np.ndarray) -> np.ndarray:
    return np.floor(np.asarray(pts) * _ONE + 0.5).astype(np.int32)


def draw_primitive(image: np.ndarray, prim: Primitive, color, line_type: int) -> None:
    """Fill one primitive into ``image`` (in place) with sub-pixel accuracy (``SHIFT`` fixed-point bits)."""
    if prim.kind == "capsule":
        (p0, p1), (r0, r1) = prim.pts, prim.size
        d = p1 - p0
        n = np.linalg.norm(d)
        if n > 1e-6:
            nrm = np.array([-d[1], d[0]]) / n
            quad = np.stack([p0 + r0 * nrm, p1 + r1 * nrm, p1 - r1 * nrm, p0 - r0 * nrm])
            cv2.fillConvexPoly(image, _fx(quad), color, line_type, SHIFT)
        for c, r in ((p0, r0), (p1, r1)):
            cv2.circle(image, tuple(_fx(c)), int(round(r * _ONE)), color, -1, line_type, SHIFT)
    elif prim.kind == "poly":
        cv2.fillPoly(image, [_fx(prim.pts)], color, line_type, SHIFT)
    elif prim.kind == "circle":
        cv2.circle(image, tuple(_fx(prim.pts[0])), int(round(prim.size[0] * _ONE)), color, -1, line_type, SHIFT)
    elif prim.kind == "ellipse":
        sx, sy, ang = prim.size
        axes = (int(round(sx * _ONE)), int(round(sy * _ONE)))
        cv2.ellipse(image, tuple(_fx(prim.pts[0])), axes, ang, 0, 360, color, -1, line_type, SHIFT)
    else:
        raise ValueError(f"unknown primitive kind {prim.kind!r}")


def draw_body(image: np.ndarray, labels: np.ndarray, body: Body, label: int) -> None:
    """Paint ``body`` into the BGR image (anti-aliased) and its id into the label map (hard edges)."""
    for prim in body.primitives:
        draw_primitive(image, prim, prim.color, cv2.LINE_AA)
        draw_primitive(labels, prim, int(label), cv2.LINE_8)


def head_box(body: Body) -> np.ndarray:
    """Axis-aligned box [[x1,y1],[x2,y2]] around the head rectangle (head_top..upper_neck, head-wide)."""
    up, left = body.head_axes
    top, neck = body.joints[_J["head_top"]], body.joints[_J["upper_neck"]]
    half_w = body.head_semi[0]
    corners = np.stack([top + half_w * left, top - half_w * left, neck + half_w * left, neck - half_w * left])
    return np.stack([corners.min(0), corners.max(0)])
