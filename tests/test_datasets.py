"""Datasets: the key property is that image and targets go through the same geometry.

A person is rendered (pose.data.synthetic.render_scene), its keypoints become labels, and a second image of
the same size carries coloured dots / a line at chosen keypoints. Both images go through the dataset with the
same seed (same affine); the dots found in the augmented image must sit on the heatmap peaks of the right
(flip-swapped) channels, and the PAF of the drawn limb must cover the drawn line and point along it.
"""
import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import ConcatDataset, DataLoader

from pose.codecs.heatmap import decode_heatmaps
from pose.data.datasets import MPII_MEAN, CocoTrainDataset, MpiiDataset, UnlabeledDataset
from pose.data.transforms import apply_affine, crop_matrix
from pose.io import PoseDataError
from pose.skeletons import MPII16, OPENPOSE18

try:
    from pose.data.synthetic import render_scene
except ImportError:  # pragma: no cover - the renderer is another module; fall back to a plain skeleton
    render_scene = None


def _blob(shape, xy, sigma=1.5):
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    return np.exp(-((xx - xy[0]) ** 2 + (yy - xy[1]) ** 2) / (2 * sigma ** 2))


def _peak(channel, floor=None):
    """Sub-pixel centre of the brightest blob: centroid of the pixels above half way from ``floor`` to the max."""
    c = channel - (np.median(channel) if floor is None else floor)
    m = c > 0.5 * c.max()
    if c.max() <= 0:                                          # nothing drawn here (the dot left the crop)
        return np.array([-1e9, -1e9])
    ys, xs = np.nonzero(m)
    wts = c[m]
    return np.array([(xs * wts).sum() / wts.sum(), (ys * wts).sum() / wts.sum()])


def _mpii_person(seed, size=(256, 256)):
    """(image, joints16 internal (16,3) with v 0 outside / 1 occluded / 2 visible, centre, height)."""
    if render_scene is not None:
        rng = np.random.default_rng(seed)
        image, people = render_scene(rng, size, kind="mpii", occluder_probability=0.0,
                                     second_person_probability=0.0)[:2]
        p = people[0]
        return image, p.mpii16, p.center, p.height
    image = np.full((size[1], size[0], 3), 60, np.uint8)
    j = np.zeros((16, 3))
    j[:, 0] = np.linspace(90, 170, 16)
    j[:, 1] = np.linspace(40, 220, 16)
    j[:, 2] = 2
    for a, b in MPII16.limbs:
        cv2.line(image, tuple(int(v) for v in j[a, :2]), tuple(int(v) for v in j[b, :2]), (200, 180, 160), 5)
    return image, j, np.array([128.0, 130.0]), 180.0


def _mpii_record(joints, centre, height, name="img.png"):
    js = np.zeros((16, 3))
    on = joints[:, 2] > 0
    js[on, :2] = joints[on, :2] + 1.0
    js[:, 2] = joints[:, 2] == 2
    return {"img_paths": name, "objpos": (centre + 1.0).tolist(), "joint_self": js.tolist(),
            "scale_provided": height / 200.0}


def test_mpii_dots_land_on_heatmap_peaks_after_rotation_scale_and_flip(tmp_path):
    image, joints, centre, height = _mpii_person(3)
    chosen = [j for j in (10, 5, 9, 15, 0, 12) if joints[j, 2] == 2 and 20 < joints[j, 0] < 236
              and 20 < joints[j, 1] < 236][:3]
    assert len(chosen) == 3
    dots = np.zeros_like(image, dtype=np.float64)
    for c, j in enumerate(chosen):                            # BGR channel c carries joint j
        dots[..., c] = 255 * _blob(image.shape[:2], joints[j, :2])
    (tmp_path / "person").mkdir()
    (tmp_path / "dots").mkdir()
    cv2.imwrite(str(tmp_path / "person" / "img.png"), image)
    cv2.imwrite(str(tmp_path / "dots" / "img.png"), dots.round().astype(np.uint8))
    records = [_mpii_record(joints, centre, height)] * 40
    kw = dict(input_res=128, output_res=32, train=True, seed=7)
    person_ds = MpiiDataset(records, tmp_path / "person", **kw)
    dots_ds = MpiiDataset(records, tmp_path / "dots", **kw)
    perm = MPII16.flip_permutation()

    checked = {"flip": 0, "rotated": 0, "scaled": 0, "dots": 0}
    for i in range(len(records)):
        s_mult, rot, flip, _ = dots_ds.augmentation(i)
        if not (flip or abs(rot) > 10):
            continue
        item, dot_item = person_ds[i], dots_ds[i]
        assert torch.equal(item["target"], dot_item["target"])
        assert item["rotation"].item() == pytest.approx(rot)
        coords, maxvals = decode_heatmaps(item["target"][None])
        rgb = dot_item["image"].numpy() + np.asarray(MPII_MEAN, np.float32)[:, None, None]
        for c, j in enumerate(chosen):
            found = _peak(rgb[2 - c])                        # BGR channel c is RGB channel 2 − c
            if rgb[2 - c].max() < 0.4 or found.min() < 4 or found.max() > 123:
                continue                                      # the dot left the crop
            in_heatmap = (found + 0.5) * 32 / 128 - 0.5
            k = perm[j] if flip else j
            checked["dots"] += 1
            assert maxvals[0, k] > 0.5 and item["target_weight"][k] == 1.0
            assert np.abs(coords[0, k] - in_heatmap).max() <= 1.0, (i, j, k, coords[0, k], in_heatmap)
            if flip and perm[j] != j:                         # the unswapped channel is elsewhere
                assert np.abs(coords[0, j] - in_heatmap).max() > 1.0 or maxvals[0, j] == 0
        checked["flip"] += flip
        checked["rotated"] += abs(rot) > 10
        checked["scaled"] += abs(s_mult - 1) > 0.05
    assert checked["flip"] >= 2 and checked["rotated"] >= 2 and checked["scaled"] >= 2, checked
    assert checked["dots"] >= 3 * (checked["flip"] + checked["rotated"]) // 2, checked


def _coco_person(seed, size=(320, 240)):
    """OpenPose-18 keypoints (18,3) internal with v' of a rendered person whose right upper arm is labelled."""
    if render_scene is not None:
        from pose.data.coco import coco_to_openpose18
        for s in range(seed, seed + 200):
            rng = np.random.default_rng(s)
            image, people = render_scene(rng, size, kind="coco", max_people=1, occluder_probability=0.0)[:2]
            p = people[0]
            kp = p.coco17.copy()
            kp[:, :2] += 0.5                                  # internal → COCO coordinates
            k18 = coco_to_openpose18(kp[None], *size)[0]
            if (k18[[2, 3], 2] <= 1).all() and np.linalg.norm(k18[2, :2] - k18[3, :2]) > 25 and p.height > 100:
                return image, k18
        raise AssertionError("no rendered person with a long labelled right upper arm")
    image = np.full((size[1], size[0], 3), 60, np.uint8)
    k18 = np.zeros((18, 3))
    k18[:, 0] = np.linspace(120, 200, 18)
    k18[:, 1] = np.linspace(30, 210, 18)
    k18[:, 2] = 1
    k18[2, :2], k18[3, :2] = [140, 80], [185, 120]
    return image, k18


def _coco_entry(k18, name="img.png", others=(), segmentations=()):
    lab = k18[k18[:, 2] <= 1]
    x0, y0 = lab[:, :2].min(axis=0)
    x1, y1 = lab[:, :2].max(axis=0)
    return {"img_paths": name, "objpos": [(x0 + x1) / 2, (y0 + y1) / 2], "bbox": [x0, y0, x1 - x0, y1 - y0],
            "scale_provided": (y1 - y0) / 368, "keypoints": k18.tolist(),
            "processed_other_annotations": [{"keypoints": o.tolist()} for o in others],
            "segmentations": list(segmentations)}


def test_coco_limb_paf_follows_the_drawn_limb_and_dots_hit_heatmap_peaks(tmp_path):
    image, k18 = _coco_person(11)
    a, b = 2, 3                                               # r_shoulder → r_elbow, a training limb
    limb = OPENPOSE18.limbs.index((a, b))
    canvas = np.zeros_like(image, dtype=np.float64)
    canvas[..., 1] = 255 * _blob(image.shape[:2], k18[a, :2], 2.0)
    canvas[..., 2] = 255 * _blob(image.shape[:2], k18[b, :2], 2.0)
    line = np.zeros(image.shape[:2], np.uint8)
    cv2.line(line, tuple(np.round(k18[a, :2] * 16).astype(int)), tuple(np.round(k18[b, :2] * 16).astype(int)),
             255, 3, cv2.LINE_AA, shift=4)
    canvas[..., 0] = line
    (tmp_path / "person").mkdir()
    (tmp_path / "dots").mkdir()
    cv2.imwrite(str(tmp_path / "person" / "img.png"), image)
    cv2.imwrite(str(tmp_path / "dots" / "img.png"), canvas.round().astype(np.uint8))
    entries = [_coco_entry(k18)] * 40
    kw = dict(input_size=256, stride=8, train=True, seed=5)
    person_ds = CocoTrainDataset(entries, tmp_path / "person", **kw)
    dots_ds = CocoTrainDataset(entries, tmp_path / "dots", **kw)
    perm = OPENPOSE18.flip_permutation()

    n_flip = n_rot = 0
    for i in range(len(entries)):
        M, flip = dots_ds.sample_matrix(i)
        rotated = abs(M[0, 1]) > 0.17 * abs(M[0, 0])          # |rotation| > ~10°
        if not (flip or rotated):
            continue
        item, dot_item = person_ds[i], dots_ds[i]
        assert torch.equal(item["heatmaps"], dot_item["heatmaps"]) and torch.equal(item["pafs"], dot_item["pafs"])
        img = dot_item["image"].numpy() * 256 + 128            # BGR uint8 range again
        pa, pb = _peak(img[1], 128.0), _peak(img[2], 128.0)   # padding is grey 128, the dots 255
        if min(pa.min(), pb.min()) < 8 or max(pa.max(), pb.max()) > 247:
            continue                                          # limb pushed out of the crop by the jitter
        # keypoint dots sit on their heatmap peaks (flip-swapped channels)
        coords, _ = decode_heatmaps(item["heatmaps"][None, :18])
        for joint, found in ((a, pa), (b, pb)):
            k = perm[joint] if flip else joint
            assert np.abs(coords[0, k] - (found - 3.5) / 8).max() <= 1.0, (i, joint, k)
        # the PAF of the (flip-swapped) limb covers the drawn line and points from its first to its second joint
        first, second = (perm[a], perm[b]) if flip else (a, b)    # r_sho→r_elb becomes l_sho→l_elb
        li = OPENPOSE18.limbs.index((first, second))
        paf = item["pafs"][2 * li: 2 * li + 2].numpy()
        norm = np.linalg.norm(paf, axis=0)
        on = np.argwhere(norm > 0.99)                          # (row, col) of covered cells
        assert len(on) >= 3
        # along the drawn line: a covered cell within one cell of every point of its middle part
        for t in np.linspace(0.2, 0.8, 7):
            q = (pa + t * (pb - pa) - 3.5) / 8
            assert np.abs(on[:, ::-1] - q).max(axis=1).min() <= 1.0, (i, t)
        # off the line: covered cells lie within 1 cell of the limb's line (+ dot localisation error) and near
        # the segment (the reference grows the limb's box by 1 cell per axis and truncates: ≤ 2.9 cells past an end)
        ca, cb = (pa - 3.5) / 8, (pb - 3.5) / 8
        u = (cb - ca) / np.linalg.norm(cb - ca)
        rel = on[:, ::-1] - ca
        perp = np.abs(rel[:, 0] * u[1] - rel[:, 1] * u[0])
        along = rel @ u
        assert perp.max() <= 1.25, perp.max()
        assert along.min() >= -3.0 and along.max() <= np.linalg.norm(cb - ca) + 3.0
        # direction: from the first joint's dot to the second's
        direction = (pb - pa) / np.linalg.norm(pb - pa)
        vecs = paf[:, on[:, 0], on[:, 1]].T
        assert (vecs @ direction).min() > 0.97
        mirror = OPENPOSE18.limbs.index((perm[first], perm[second]))
        assert not item["pafs"][2 * mirror: 2 * mirror + 2].numpy()[:, on[:, 0], on[:, 1]].any()
        n_flip += flip
        n_rot += rotated
    assert n_flip >= 2 and n_rot >= 2, (n_flip, n_rot)


def test_mpii_eval_mode_centre_scale_and_normalisation(tmp_path):
    grey = np.full((200, 300, 3), 100, np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), grey)
    joints = np.zeros((16, 3))
    joints[:, 0], joints[:, 1], joints[:, 2] = 150, 100, 1
    joints[3] = [0, 0, 0]                                     # absent
    joints[4, 2] = 0                                          # occluded
    rec = {"img_paths": "a.png", "objpos": [151.0, 91.0], "joint_self": (joints + [1, 1, 0]).tolist(),
           "scale_provided": 1.2}
    rec["joint_self"][3] = [0, 0, 0]
    ds = MpiiDataset([rec], tmp_path, input_res=64, output_res=16, train=False)
    item = ds[0]
    np.testing.assert_allclose(item["center"].numpy(), [150.0, 90.0 + 15 * 1.2])
    assert item["scale"].item() == pytest.approx(1.5)                      # 1.2 × 1.25: a 300 px box
    assert item["rotation"].item() == 0.0 and item["labeled"].item() == 1.0 and item["index"] == 0
    img = item["image"].numpy()
    np.testing.assert_allclose(img[:, 32, 32], 100 / 255 - np.asarray(MPII_MEAN), atol=1e-5)
    np.testing.assert_allclose(img[:, 0, 0], -np.asarray(MPII_MEAN), atol=1e-5)   # padding is black
    M = crop_matrix(item["center"].numpy(), 200 * 1.5, 0.0, (16, 16))
    expected = apply_affine(np.array([150.0, 100.0]), M)
    coords, _ = decode_heatmaps(item["target"][None])
    assert np.abs(coords[0, 0] - expected).max() <= 0.25
    w = item["target_weight"].numpy()
    assert w[3] == 0 and w[4] == 0 and w[0] == 1 and item["target"][4].max() == 0
    ref = MpiiDataset([rec], tmp_path, input_res=64, output_res=16, train=False, targets="reference")[0]
    assert (ref["target_weight"] == 1).all()
    assert ref["target"][4].max() > 0.5                                     # occluded joint drawn
    assert ref["target"][3].max() == 0.0                                     # unlabelled joint not drawn
    lab = MpiiDataset([rec], tmp_path, input_res=64, output_res=16, train=False, targets="labelled")[0]
    assert lab["target_weight"][4] == 1 and lab["target"][4].max() > 0.5   # occluded but labelled: trained on
    assert lab["target_weight"][3] == 0 and lab["target"][3].max() == 0.0   # unlabelled: no map, no weight


def test_mpii_items_are_reproducible_per_epoch(tmp_path):
    image, joints, centre, height = _mpii_person(4)
    cv2.imwrite(str(tmp_path / "img.png"), image)
    ds = MpiiDataset([_mpii_record(joints, centre, height)] * 3, tmp_path, input_res=64, output_res=16, seed=1)
    a = ds[1]
    assert torch.equal(a["image"], ds[1]["image"]) and torch.equal(a["target"], ds[1]["target"])
    ds.set_epoch(1)
    assert not torch.equal(a["image"], ds[1]["image"])


def test_unlabeled_dataset_concatenates_with_mpii(tmp_path):
    (tmp_path / "u").mkdir()
    for n in range(3):
        cv2.imwrite(str(tmp_path / "u" / f"{n:06d}.jpg"), np.full((90, 120, 3), 40 * n, np.uint8))
    image, joints, centre, height = _mpii_person(5)
    cv2.imwrite(str(tmp_path / "img.png"), image)
    mpii = MpiiDataset([_mpii_record(joints, centre, height)] * 2, tmp_path, input_res=64, output_res=16)
    unl = UnlabeledDataset(tmp_path / "u", input_res=64, output_res=16)
    assert len(unl) == 3
    u = unl[2]
    assert set(u) == set(mpii[0]) and u["labeled"].item() == 0.0
    assert u["target"].shape == (16, 16, 16) and not u["target"].any() and not u["target_weight"].any()
    batch = next(iter(DataLoader(ConcatDataset([mpii, unl]), batch_size=5, num_workers=0)))
    assert batch["image"].shape == (5, 3, 64, 64)
    np.testing.assert_array_equal(batch["labeled"].numpy(), [1, 1, 0, 0, 0])


def test_coco_crowd_mask_background_and_normalisation(tmp_path):
    img = np.full((240, 320, 3), 128, np.uint8)
    img[:, :, 0] = 200
    cv2.imwrite(str(tmp_path / "img.png"), img)
    k18 = np.zeros((18, 3))
    k18[:, 2] = 2
    k18[0] = [160, 60, 1]
    k18[10] = [160, 180, 0]
    crowd = [[100.0, 100.0, 140.0, 100.0, 140.0, 140.0, 100.0, 140.0]]   # a 40×40 square left of the person
    entry = _coco_entry(k18, segmentations=[crowd])
    ds = CocoTrainDataset([entry], tmp_path, input_size=368, train=False)
    item = ds[0]
    assert item["image"].shape == (3, 368, 368) and item["mask"].shape == (1, 46, 46)
    np.testing.assert_allclose(item["image"][:, 184, 184].numpy(), [(200 - 128) / 256, 0, 0], atol=1e-6)
    M, flip = ds.sample_matrix(0)
    assert not flip
    cx, cy = (apply_affine(np.array([120.0, 120.0]), M) - 3.5) / 8
    mask = item["mask"][0].numpy()
    assert mask[int(round(cy)), int(round(cx))] == 0.0
    assert mask[23, 23] == 1.0 and mask.min() == 0.0 and ((mask > 0) & (mask < 1)).any()
    hm = item["heatmaps"].numpy()
    nose = (apply_affine(k18[0, :2], M) - 3.5) / 8
    coords, _ = decode_heatmaps(hm[None, :18])
    assert np.abs(coords[0, 0] - nose).max() <= 0.5
    assert hm[10].max() > 0.7 and hm[1:10].max() == 0.0                 # occluded ankle drawn, unlabelled not
    np.testing.assert_allclose(hm[18], 1 - hm[:18].max(axis=0))
    assert not item["pafs"].any()                                        # no limb has two labelled ends


def test_unreadable_images_raise_or_are_skipped(tmp_path):
    image, joints, centre, height = _mpii_person(6)
    cv2.imwrite(str(tmp_path / "img.png"), image)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    good = _mpii_record(joints, centre, height)
    recs = [dict(good, img_paths="broken.png"), good]
    with pytest.raises(PoseDataError, match="broken.png"):
        MpiiDataset(recs, tmp_path, input_res=64, output_res=16)[0]
    ds = MpiiDataset(recs, tmp_path, input_res=64, output_res=16, skip_unreadable=True)
    assert ds[0]["index"] == 1 and ds.skipped == 1
    with pytest.raises(PoseDataError, match="joint_self"):
        MpiiDataset([{"img_paths": "a", "objpos": [1, 1], "scale_provided": 1}], tmp_path)
