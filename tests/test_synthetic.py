"""The synthetic sample: determinism, real-format round trips, keypoints on drawn pixels, visibility rules."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
import yaml
from pycocotools.coco import COCO

from pose.data import body as B
from pose.data import synthetic as S
from pose.data.mpii import read_protocol_gt
from pose.io import PoseDataError, read_json
from pose.skeletons import COCO17, MPII16, get_skeleton, load_skeleton_file
from pose.visualize import contact_sheet, draw_skeleton

ROOT = Path(__file__).resolve().parents[1]


def small_config(tmp_path: Path, **kw) -> S.SampleConfig:
    base = dict(seed=3, coco_train_images=8, coco_val_images=4, coco_image_size=(128, 96), max_people=4,
                crowd_fraction=0.5, mpii_train_people=6, mpii_val_people=5, mpii_image_size=(128, 128),
                unlabeled_images=3, unlabeled_image_size=(96, 96), contact_sheet=str(tmp_path / "s" / "sheet.jpg"))
    base.update(kw)
    return S.SampleConfig(**base)


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> tuple[Path, S.SampleConfig, dict]:
    tmp = tmp_path_factory.mktemp("sample")
    cfg = small_config(tmp)
    summary = S.generate_sample(tmp / "s", cfg)
    return tmp / "s", cfg, summary


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_summary(sample):
    out, cfg, summary = sample
    for rel in ("coco/annotations/person_keypoints_train2017.json", "coco/annotations/person_keypoints_val2017.json",
                "coco/train2017/000000000001.jpg", "coco/val2017/000001000000.jpg", "mpii/images/000000001.jpg",
                "mpii/mpii_annotations.json", "mpii/detections_our_format.mat", "mpii/detections.mat",
                "unlabeled/000000.jpg", "unlabeled/000002.jpg", "sheet.jpg"):
        assert (out / rel).is_file(), rel
    assert len(list((out / "coco/train2017").glob("*.jpg"))) == 8
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask       # not mkdtemp's 0700
    assert len(list((out / "unlabeled").glob("*.jpg"))) == 3
    assert summary["coco_train_images"] == 8 and summary["mpii_records"] == 11 and summary["mpii_val"] == 5
    assert cv2.imread(str(out / "unlabeled/000001.jpg")).shape == (96, 96, 3)
    assert cv2.imread(str(out / "coco/val2017/000001000001.jpg")).shape == (96, 128, 3)


def test_same_seed_byte_identical_other_seed_differs(tmp_path, sample):
    out, cfg, _ = sample
    cfg2 = small_config(tmp_path)          # same values, other contact-sheet location (inside its out dir)
    S.generate_sample(tmp_path / "s", cfg2)
    a, b = _files(out), _files(tmp_path / "s")
    assert a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a), [k for k in a if a[k] != b[k]]
    S.generate_sample(tmp_path / "t", small_config(tmp_path, seed=4, contact_sheet=None))
    c = _files(tmp_path / "t")
    assert c["coco/train2017/000000000001.jpg"] != a["coco/train2017/000000000001.jpg"]


def test_coco_json_through_pycocotools(sample):
    out, cfg, _ = sample
    coco = COCO(str(out / "coco/annotations/person_keypoints_train2017.json"))
    cat = coco.loadCats(1)[0]
    assert cat["keypoints"][:6] == ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder"]
    assert cat["skeleton"][0] == [16, 14] and len(cat["skeleton"]) == 19
    assert len(coco.getImgIds()) == 8
    img = coco.loadImgs(1)[0]
    assert img["file_name"] == "000000000001.jpg" and (img["width"], img["height"]) == (128, 96)
    anns = coco.loadAnns(coco.getAnnIds(iscrowd=None))
    crowd = [a for a in anns if a["iscrowd"] == 1]
    people = [a for a in anns if a["iscrowd"] == 0]
    assert crowd and people
    for a in crowd:
        assert isinstance(a["segmentation"]["counts"], str)
        m = coco.annToMask(a)
        assert m.shape == (96, 128) and m.sum() == a["area"] > 0
        assert a["num_keypoints"] == 0 and len(a["keypoints"]) == 51
    for a in people:
        kp = np.array(a["keypoints"]).reshape(17, 3)
        assert a["num_keypoints"] == int((kp[:, 2] > 0).sum())
        assert np.all(kp[kp[:, 2] == 0, :2] == 0)
        m = coco.annToMask(a)                      # polygons: roughly the person's visible area
        assert m.sum() > 0 and abs(int(m.sum()) - a["area"]) <= max(0.5 * a["area"], 20)
        x, y, w, h = a["bbox"]
        assert 0 <= x and 0 <= y and x + w <= 128 and y + h <= 96
    ids = [a["id"] for a in read_json(out / "coco/annotations/person_keypoints_val2017.json")["annotations"]]
    assert not set(ids) & {a["id"] for a in anns}   # annotation ids unique across splits


def test_coco_keypoints_are_internal_plus_half_of_the_renderer(sample):
    out, cfg, _ = sample
    doc = read_json(out / "coco/annotations/person_keypoints_train2017.json")
    for i in range(3):
        rng = S._rng(cfg.seed, 1, i)
        crowd = bool(rng.random() < cfg.crowd_fraction)
        _, people = S.render_scene(rng, cfg.coco_image_size, "coco", cfg.max_people, crowd,
                                   cfg.occluder_probability)
        anns = [a for a in doc["annotations"] if a["image_id"] == i + 1 and not a["iscrowd"]]
        people = [p for p in people if p.mask.any()]
        assert len(anns) == len(people)
        for a, p in zip(anns, people):
            kp = np.array(a["keypoints"]).reshape(17, 3)
            lab = kp[:, 2] > 0
            if not p.tiny_unlabeled:
                np.testing.assert_array_equal(kp[:, 2], p.coco17[:, 2])
            np.testing.assert_allclose(kp[lab, :2], p.coco17[lab, :2] + 0.5, atol=0.006)


def test_keypoints_lie_on_drawn_pixels():
    rng = np.random.default_rng(11)
    for _ in range(10):
        bg = np.full((200, 200, 3), (255, 0, 255), np.uint8)
        image, labels = bg.copy(), np.zeros((200, 200), np.uint8)
        body = B.sample_body(rng, float(rng.uniform(60, 180)), (100, 100), float(rng.uniform(-40, 40)))
        B.draw_body(image, labels, body, 7)
        for idx in (S.COCO_IDX, S.MPII_IDX):
            ij = np.floor(body.joints[idx] + 0.5).astype(int)
            assert np.all(labels[ij[:, 1], ij[:, 0]] == 7)
            diff = np.abs(image[ij[:, 1], ij[:, 0]].astype(int) - bg[0, 0].astype(int)).max(1)
            assert np.all(diff > 10)
        hb = B.head_box(body)
        for name in ("head_top", "upper_neck", "nose"):
            p = body.joints[B.joint_indices([name])[0]]
            assert np.all(p >= hb[0]) and np.all(p <= hb[1])


def test_left_is_lighter_than_right():
    rng = np.random.default_rng(5)
    body = B.sample_body(rng, 150, (100, 100), 0.0)
    prims = {(p.kind, tuple(np.round(p.pts[0], 3))): p.color for p in body.primitives}
    j = {n: body.joints[B.joint_indices([n])[0]] for n in ("l_hip", "r_hip", "l_shoulder", "r_shoulder")}

    def brightness(name: str) -> int:   # the limb capsule starting at that joint
        return sum(prims[("capsule", tuple(np.round(j[name], 3)))])

    assert brightness("l_hip") > brightness("r_hip") and brightness("l_shoulder") > brightness("r_shoulder")
    # facing the camera, upright: the person's left shoulder is on the image right
    assert j["l_shoulder"][0] > j["r_shoulder"][0]


def test_occlusion_by_a_later_person_and_outside_is_unlabelled():
    rng = np.random.default_rng(2)
    image, labels = np.zeros((120, 160, 3), np.uint8), np.zeros((120, 160), np.uint8)
    a = B.sample_body(rng, 100, (60, 60), 0.0)
    b = B.sample_body(rng, 100, (75, 60), 0.0)
    B.draw_body(image, labels, a, 1)
    v_before = S._visibility(a.joints[S.COCO_IDX], labels, 1)
    assert np.all(v_before == S.VISIBLE)
    B.draw_body(image, labels, b, 2)
    pts = a.joints[S.COCO_IDX]
    v = S._visibility(pts, labels, 1)
    ij = np.floor(pts + 0.5).astype(int)
    covered = labels[ij[:, 1], ij[:, 0]] == 2
    assert covered.any() and not covered.all()
    np.testing.assert_array_equal(v, np.where(covered, S.OCCLUDED, S.VISIBLE))
    # shift everything left by 70 px: joints with x < -0.5 are outside → 0
    v_out = S._visibility(pts - [70, 0], labels, 1)
    outside = np.floor(pts[:, 0] - 70 + 0.5) < 0
    assert outside.any()
    assert np.all(v_out[outside] == S.OUTSIDE) and np.all(v_out[~outside] != S.OUTSIDE)


def test_render_scene_visibility_matches_masks():
    n_occ = n_out = 0
    for i in range(12):
        image, people, crowd = S.render_scene_with_crowd(np.random.default_rng(i), (128, 96), "coco", 5, i % 3 == 0,
                                                         0.6)
        assert image.shape == (96, 128, 3) and image.dtype == np.uint8
        assert (crowd is not None) == (i % 3 == 0)
        for p in people:
            for kp in (p.coco17, p.mpii16):
                ij = np.floor(kp[:, :2] + 0.5).astype(int)
                inside = (ij[:, 0] >= 0) & (ij[:, 0] < 128) & (ij[:, 1] >= 0) & (ij[:, 1] < 96)
                np.testing.assert_array_equal(kp[:, 2] == S.OUTSIDE, ~inside)
                own = np.zeros(len(kp), bool)
                own[inside] = p.mask[ij[inside, 1], ij[inside, 0]]
                np.testing.assert_array_equal(kp[:, 2] == S.VISIBLE, own)
                n_occ += int((kp[:, 2] == S.OCCLUDED).sum())
                n_out += int((kp[:, 2] == S.OUTSIDE).sum())
    assert n_occ > 0 and n_out > 0


def test_mpii_records_and_protocol_mats(sample):
    out, cfg, _ = sample
    recs = read_json(out / "mpii/mpii_annotations.json")
    assert len(recs) == 11 and [r["isValidation"] for r in recs] == [0.0] * 6 + [1.0] * 5
    keys = {"dataset", "isValidation", "img_paths", "img_width", "img_height", "objpos", "joint_self",
            "scale_provided", "joint_others", "scale_provided_other", "objpos_other", "annolist_index",
            "people_index", "numOtherPeople"}
    for i, r in enumerate(recs):
        assert keys <= r.keys() and r["dataset"] == "MPI" and r["img_paths"] == f"{i + 1:09d}.jpg"
        js = np.array(r["joint_self"])
        assert js.shape == (16, 3)
        absent = np.all(js == 0, axis=1)
        assert np.all(js[~absent, :2] >= 0.5) and np.all(js[~absent, :2] <= 128.5)
        if r["numOtherPeople"] == 1:
            assert np.array(r["joint_others"]).shape == (16, 3) and len(r["objpos_other"]) == 2
        # coordinates are the renderer's internal ones + 1
        _, people = S.render_scene(S._rng(cfg.seed, 3, i), cfg.mpii_image_size, "mpii",
                                      occluder_probability=cfg.occluder_probability,
                                      second_person_probability=cfg.second_person_probability)
        main = people[0]
        np.testing.assert_allclose(js[~absent, :2], main.mpii16[~absent, :2] + 1, atol=6e-4)
        np.testing.assert_array_equal(js[:, 2], main.mpii16[:, 2] == S.VISIBLE)
        assert r["scale_provided"] == pytest.approx(main.height / 200, abs=1e-4)
        assert r["numOtherPeople"] == len(people) - 1
    m = scipy.io.loadmat(str(out / "mpii/detections_our_format.mat"))
    assert m["pos_gt_src"].shape == (16, 2, 5) and m["jnt_missing"].shape == (16, 5)
    assert m["headboxes_src"].shape == (2, 2, 5)
    names = [str(x[0]) for x in m["dataset_joints"][0]]
    assert names[:3] == ["rank", "rkne", "rhip"] and names[9] == "head" and len(names) == 16
    assert np.where(m["dataset_joints"] == "head")[1][0] == 9        # how the reference script looks it up
    gt = read_protocol_gt(out / "mpii/detections_our_format.mat")
    val = recs[6:]
    for n, r in enumerate(val):
        js = np.array(r["joint_self"])
        missing = np.all(js == 0, axis=1)
        np.testing.assert_array_equal(gt.missing[n], missing)
        np.testing.assert_allclose(gt.joints[n][~missing], js[~missing, :2] - 1, atol=6e-4)
        hb = gt.headboxes[n]
        assert np.all(hb[1] > hb[0])
        d = np.linalg.norm(hb[1] - hb[0])
        assert 0.1 * r["scale_provided"] * 200 < d < 0.5 * r["scale_provided"] * 200   # big heads, not absurd
    det = scipy.io.loadmat(str(out / "mpii/detections.mat"))
    np.testing.assert_array_equal(det["RELEASE_img_index"], [[7, 8, 9, 10, 11]])


def test_failure_leaves_no_output(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("disk full")
    monkeypatch.setattr(S, "_write_mpii", boom)
    with pytest.raises(RuntimeError):
        S.generate_sample(tmp_path / "out", small_config(tmp_path, contact_sheet=None))
    assert list(tmp_path.iterdir()) == []


def test_config_from_params_yaml_and_bad_values():
    p = yaml.safe_load((ROOT / "params.yaml").read_text())["sample"]
    cfg = S.SampleConfig.from_params(p)
    assert cfg.coco_image_size == tuple(p["coco_image_size"]) and cfg.seed == p["seed"]
    assert cfg.mpii_val_people == p["mpii_val_people"] and cfg.contact_sheet == p["contact_sheet"]
    with pytest.raises(PoseDataError, match="sample.crowd_fraction"):
        S.SampleConfig.from_params({**p, "crowd_fraction": 1.5})
    with pytest.raises(PoseDataError, match="sample.max_poeple"):
        S.SampleConfig.from_params({**p, "max_poeple": 3})
    with pytest.raises(PoseDataError, match="sample.coco_image_size"):
        S.SampleConfig.from_params({**p, "coco_image_size": [256]})
    with pytest.raises(PoseDataError) as e:  # the library names the caller's source, never a file it assumes
        S.SampleConfig.from_params({**p, "seed": "x"})
    assert e.value.path == "settings" and "params.yaml" not in str(e.value)
    with pytest.raises(PoseDataError) as e:
        S.SampleConfig.from_params({**p, "seed": "x"}, source="conf/alt.yaml")
    assert e.value.path == "conf/alt.yaml" and e.value.field == "sample.seed"


def test_draw_skeleton_and_contact_sheet():
    img = np.zeros((64, 64, 3), np.uint8)
    kp = np.zeros((17, 3))
    kp[5] = [20, 30, 2]
    kp[7] = [40, 30, 2]
    kp[6] = [10, 10, 0]                          # unlabelled: not drawn
    out = draw_skeleton(img, kp, COCO17)
    assert img.sum() == 0                        # input untouched
    assert out[30, 30].any() and out[30, 20].any() and not out[10, 10].any()
    with pytest.raises(ValueError):
        draw_skeleton(img, np.zeros((16, 3)), COCO17)
    sheet = contact_sheet([img, np.full((32, 64, 3), 255, np.uint8), img], cols=2, cell_size=(64, 64), pad=2)
    assert sheet.shape == (2 * 64 + 3 * 2, 2 * 64 + 3 * 2, 3)
    assert sheet[2 + 16 + 5, 2 + 64 + 2 + 10].tolist() == [255, 255, 255]   # letterboxed into the 2nd cell
    assert MPII16.num_keypoints == 16


def test_extra_keypoint_set_body21_same_images_and_people(sample):
    out, cfg, _ = sample
    body21 = get_skeleton("body21")
    assert cfg.extra_keypoint_sets == ("body21",)
    assert not (out / "body21" / "train2017").exists()           # the images are not copied
    for split in ("train", "val"):
        a = read_json(out / f"coco/annotations/person_keypoints_{split}2017.json")
        b = read_json(out / f"body21/annotations/person_keypoints_{split}2017.json")
        assert b["images"] == a["images"] and b["images"]
        for im in b["images"]:
            assert (out / "coco" / f"{split}2017" / im["file_name"]).is_file()
        cat = b["categories"][0]
        assert cat["keypoints"] == list(body21.keypoints) and "l_shoulder" in cat["keypoints"]
        assert cat["skeleton"] == [[i + 1, j + 1] for i, j in body21.limbs]
        assert len(a["annotations"]) == len(b["annotations"]) > 0
        assert any(x["iscrowd"] for x in b["annotations"])
        slot = [body21.index(n) for n in COCO17.keypoints]        # the coco17 json's order is COCO17's
        for x, y in zip(a["annotations"], b["annotations"]):
            for k in ("id", "image_id", "category_id", "bbox", "area", "iscrowd", "segmentation"):
                assert x[k] == y[k], k
            k17, k21 = np.array(x["keypoints"]).reshape(17, 3), np.array(y["keypoints"]).reshape(21, 3)
            assert len(y["keypoints"]) == 21 * 3
            np.testing.assert_array_equal(k21[slot], k17)
            assert y["num_keypoints"] == int((k21[:, 2] > 0).sum())
            assert set(k21[:, 2].tolist()) <= {0, 1, 2}
            assert (k21[k21[:, 2] == 0, :2] == 0).all()
        coco = COCO(str(out / f"body21/annotations/person_keypoints_{split}2017.json"))   # a valid COCO file
        assert len(coco.getImgIds()) == len(a["images"])
    assert load_skeleton_file(out / "body21" / "body21.yaml") == body21
    raw = yaml.safe_load((out / "body21" / "body21.yaml").read_text())
    assert list(raw) == ["name", "description", "keypoints", "flip_pairs", "limbs", "sigmas", "pck"]
    assert raw["sigmas"]["head_top"] == body21.sigmas[body21.index("head_top")]


def test_rendered_person_body21_matches_coco17():
    _, people = S.render_scene(np.random.default_rng(5), (160, 120), "coco", max_people=4)
    body21 = get_skeleton("body21")
    for p in people:
        kp = p.keypoints(body21)
        assert kp.shape == (21, 3)
        np.testing.assert_array_equal(kp[[body21.index(n) for n in COCO17.keypoints]], p.coco17)
        np.testing.assert_array_equal(p.keypoints(MPII16), p.mpii16)


def test_no_extra_keypoint_sets_writes_none(tmp_path):
    cfg = small_config(tmp_path, coco_train_images=2, coco_val_images=1, mpii_train_people=1, mpii_val_people=1,
                       unlabeled_images=1, contact_sheet=None, extra_keypoint_sets=())
    S.generate_sample(tmp_path / "s", cfg)
    assert (tmp_path / "s/coco/annotations/person_keypoints_train2017.json").is_file()
    assert not (tmp_path / "s/body21").exists()
    p = yaml.safe_load((ROOT / "params.yaml").read_text())["sample"]
    assert p["extra_keypoint_sets"] == ["body21"]
    assert S.SampleConfig.from_params({**p, "extra_keypoint_sets": []}).extra_keypoint_sets == ()


@pytest.mark.parametrize("value, problem", [(["body99"], "not a built-in"), (["body21", "body21"], "twice"),
                                            (["openpose18"], "neck"), ("body21", "must be a list"),
                                            ([3], "must be a string")])
def test_bad_extra_keypoint_sets(value, problem):
    p = yaml.safe_load((ROOT / "params.yaml").read_text())["sample"]
    with pytest.raises(PoseDataError, match=problem) as e:
        S.SampleConfig.from_params({**p, "extra_keypoint_sets": value}, source="params.yaml")
    assert e.value.field.startswith("sample.extra_keypoint_sets") and "sample.extra_keypoint_sets" in str(e.value)
