"""COCO label conversion (docs/PROTOCOLS.md#coco-labels), validation errors, val subset, on hand-built files."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from pose.data.coco import (convert_labels, coco_to_openpose18, crowd_mask, load_coco_keypoints, make_val_subset,
                            prepare_train_labels)
from pose.io import PoseDataError, write_image

W, H = 640, 480
# LWOP's mapping, written out independently of skeletons.json: COCO (1-based) indices into OpenPose slots 0, 2..17
B2_FROM_COCO_1BASED = [1, 7, 9, 11, 6, 8, 10, 13, 15, 17, 12, 14, 16, 3, 2, 5, 4]
L_SHO, R_SHO = 5, 6  # COCO 0-based


def kps(points: dict[int, tuple[float, float, int]]) -> list[float]:
    out = [0.0] * 51
    for k, (x, y, v) in points.items():
        out[3 * k:3 * k + 3] = [x, y, v]
    return out


def full_person(cx: float, cy: float, v: int = 2) -> list[float]:
    return kps({k: (cx + k, cy + 2 * k, v) for k in range(17)})


def ann(aid, image_id, bbox, keypoints=None, num_keypoints=None, area=5000.0, iscrowd=0, segmentation=None):
    keypoints = keypoints if keypoints is not None else full_person(bbox[0] + 5, bbox[1] + 5)
    if num_keypoints is None:
        num_keypoints = int(sum(1 for v in keypoints[2::3] if v > 0))
    return {"id": aid, "image_id": image_id, "category_id": 1, "iscrowd": iscrowd, "keypoints": keypoints,
            "num_keypoints": num_keypoints, "area": area, "bbox": bbox,
            "segmentation": segmentation if segmentation is not None else [[0, 0, 1, 0, 1, 1]]}


def coco_file(tmp_path, images, annotations, name="person_keypoints.json", make_images=True):
    data = {"info": {"description": "test"}, "licenses": [], "images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "person", "supercategory": "person", "keypoints": [],
                            "skeleton": []}]}
    path = tmp_path / name
    path.write_text(json.dumps(data))
    img_dir = tmp_path / "images"
    img_dir.mkdir(exist_ok=True)
    if make_images:
        for im in images:
            write_image(img_dir / im["file_name"], np.full((8, 8, 3), 90, np.uint8))
    return path, img_dir


def image(i, w=W, h=H):
    return {"id": i, "file_name": f"{i:012d}.jpg", "width": w, "height": h}


# ---------------------------------------------------------------------------------------------------------------
def test_mapping_to_openpose18_internal_coordinates():
    coco = np.asarray(full_person(100, 50)).reshape(1, 17, 3)
    out = coco_to_openpose18(coco, W, H)[0]
    assert out.shape == (18, 3)
    slots = [0] + list(range(2, 18))
    for slot, k1 in zip(slots, B2_FROM_COCO_1BASED):
        k = k1 - 1
        assert out[slot, 0] == pytest.approx(100 + k - 0.5)
        assert out[slot, 1] == pytest.approx(50 + 2 * k - 0.5)
        assert out[slot, 2] == 1  # COCO v=2 (visible) → v' 1
    # neck = mean of the shoulders, internal
    assert out[1, :2] == pytest.approx([100 + 5.5 - 0.5, 50 + 11 - 0.5])
    assert out[1, 2] == 1


@pytest.mark.parametrize("v_l, v_r, expected", [
    (2, 2, 1),   # both visible → visible
    (1, 2, 0),   # one occluded → occluded
    (1, 1, 0),   # both occluded → occluded
    (0, 2, 2),   # one unlabelled → unlabelled
])
def test_neck_visibility_rule(v_l, v_r, expected):
    pts = {0: (50, 50, 2), L_SHO: (60, 70, v_l) if v_l else (0, 0, 0), R_SHO: (40, 70, v_r)}
    out = coco_to_openpose18(np.asarray(kps(pts)).reshape(1, 17, 3), W, H)[0]
    assert out[1, 2] == expected
    if v_l:
        assert out[1, :2] == pytest.approx([49.5, 69.5])


def test_visibility_remap_and_outside_image():
    pts = {0: (10, 10, 1), 1: (20, 20, 2), 2: (0, 0, 0), 3: (W + 5, 10, 2), 4: (10, -1, 1),
           L_SHO: (W - 1, 100, 2), R_SHO: (W + 40, 100, 2)}   # neck mean x = W + 19.5 → outside
    out = coco_to_openpose18(np.asarray(kps(pts)).reshape(1, 17, 3), W, H)[0]
    assert out[0, 2] == 0      # nose: COCO occluded → 0
    assert out[15, 2] == 1     # l_eye (COCO 1): visible → 1
    assert out[14, 2] == 2     # r_eye (COCO 2): unlabelled → 2
    assert out[17, 2] == 2     # l_ear (COCO 3): outside (x ≥ w) → 2
    assert out[16, 2] == 2     # r_ear (COCO 4): outside (y < 0) → 2
    assert out[5, 2] == 1      # l_sho inside, visible
    assert out[2, 2] == 2      # r_sho outside
    assert out[1, 2] == 2 and out[1, 0] == pytest.approx(W + 19.5 - 0.5)


def test_filters_others_and_crowd(tmp_path):
    rle = {"counts": [10, 5, H * W - 15], "size": [H, W]}
    poly = [[300, 300, 340, 300, 340, 340, 300, 340]]
    anns = [
        ann(1, 7, [50, 50, 100, 200]),                                   # A accepted; centre (100, 150)
        ann(2, 7, [300, 0, 50, 50], num_keypoints=4),                    # B < 5 keypoints
        ann(3, 7, [400, 0, 50, 50], area=32 * 32 - 1),                   # C small area
        ann(4, 7, [50 + 29, 50, 100, 200]),                              # D 29 px from A < 0.3·100
        ann(5, 7, [-100 + 31 + 100, 0, 200, 300]),                       # E 31 px from A (own width 200)
        ann(6, 7, [0, 0, 10, 10], keypoints=[0.0] * 51, num_keypoints=0),  # G no keypoints: not a person at all
        ann(7, 7, [0, 0, 100, 100], keypoints=[0.0] * 51, num_keypoints=0, iscrowd=1, segmentation=rle),
        ann(8, 7, [0, 0, 100, 100], keypoints=[0.0] * 51, num_keypoints=0, iscrowd=1, segmentation=poly),
        ann(9, 8, [0, 0, 100, 100], keypoints=[0.0] * 51, num_keypoints=0, iscrowd=1, segmentation=rle),
    ]
    # E's bbox centre: (131 + 100, 150) → distance from A's centre (100, 150) is exactly 131 - 100 = 31
    anns[4]["bbox"] = [131 - 100, 0, 200, 300]
    path, img_dir = coco_file(tmp_path, [image(7), image(8)], anns)
    stats: dict = {}
    entries = convert_labels(path, img_dir, net_input=368, stats=stats)
    assert [(e["image_id"], e["bbox"][0] + 0.5) for e in entries] == [(7, 50), (7, 31)]
    assert stats["entries"] == 2 and stats["images"] == 1 and stats["skipped_images"] == 0
    a = entries[0]
    assert a["img_paths"] == "000000000007.jpg" and (a["img_width"], a["img_height"]) == (W, H)
    assert a["objpos"] == pytest.approx([99.5, 149.5])
    assert a["bbox"] == pytest.approx([49.5, 49.5, 100, 200])
    assert a["scale_provided"] == pytest.approx(200 / 368)
    assert a["num_keypoints"] == 17 and a["segment_area"] == 5000.0
    assert len(a["keypoints"]) == 18 and all(len(k) == 3 for k in a["keypoints"])
    assert a["keypoints"][0] == [55 - 0.5, 55 - 0.5, 1]
    # others: B, C, D, E (every non-crowd person with keypoints except itself), not G, not crowds
    others = a["processed_other_annotations"]
    assert [o["bbox"][0] + 0.5 for o in others] == [300, 400, 79, 31]
    assert [o["num_keypoints"] for o in others] == [4, 17, 17, 17]
    assert set(others[0]) == {"objpos", "bbox", "segment_area", "scale_provided", "num_keypoints", "keypoints"}
    assert len(others[0]["keypoints"]) == 18
    assert [o["bbox"][0] + 0.5 for o in entries[1]["processed_other_annotations"]] == [50, 300, 400, 79]
    # crowd segmentations of image 7 only: uncompressed RLE → compressed str counts; polygon unchanged
    segs = a["segmentations"]
    assert len(segs) == 2 and isinstance(segs[0]["counts"], str) and segs[1] == poly
    ref = mask_utils.decode(mask_utils.frPyObjects(rle, H, W)).astype(bool)
    assert np.array_equal(mask_utils.decode({"size": segs[0]["size"], "counts": segs[0]["counts"].encode()}) > 0,
                          ref)
    m = crowd_mask(segs, H, W)
    assert ref.sum() == 5 and m.sum() == 5 + 1600 and m[10:15, 0].all() and m[320, 320]


def test_missing_image_fails_or_is_skipped(tmp_path):
    anns = [ann(1, 1, [10, 10, 100, 100]), ann(2, 2, [10, 10, 100, 100]), ann(3, 3, [10, 10, 100, 100])]
    path, img_dir = coco_file(tmp_path, [image(1), image(2), image(3)], anns)
    (img_dir / "000000000002.jpg").unlink()
    (img_dir / "000000000003.jpg").write_bytes(b"")
    with pytest.raises(PoseDataError, match="000000000002.jpg.*missing or unreadable"):
        convert_labels(path, img_dir)
    stats: dict = {}
    entries = convert_labels(path, img_dir, skip_unreadable=True, stats=stats)
    assert [e["image_id"] for e in entries] == [1]
    assert stats["skipped_images"] == 2
    with pytest.raises(PoseDataError, match="images directory does not exist"):
        convert_labels(path, tmp_path / "nope")


def test_prepared_labels_round_trip(tmp_path):
    path, img_dir = coco_file(tmp_path, [image(1)], [ann(1, 1, [10, 10, 100, 100])])
    out = tmp_path / "prepared" / "train_labels.json"
    summary = prepare_train_labels(path, img_dir, out, net_input=256)
    assert summary["entries"] == 1
    back = json.loads(out.read_text())
    assert back == convert_labels(path, img_dir, net_input=256)
    assert back[0]["scale_provided"] == pytest.approx(100 / 256)
    assert not list(out.parent.glob(".*tmp"))


@pytest.mark.parametrize("mutate, field, message", [
    (lambda d: d["annotations"][0].update(keypoints=[0.0] * 50), "keypoints", "annotation id 11.*50"),
    (lambda d: d["annotations"][0].pop("bbox"), "bbox", "annotation id 11"),
    (lambda d: d["annotations"][0].update(image_id=99), "image_id", "annotation id 11.*99"),
    (lambda d: d["annotations"][0]["keypoints"].__setitem__(2, 3), "keypoints", "annotation id 11.*visibility"),
    (lambda d: d["annotations"][0]["bbox"].__setitem__(0, float("nan")), "bbox", "annotation id 11"),
    (lambda d: d["images"][0].pop("width"), "width", "images"),
    (lambda d: d.pop("images"), "images", "top-level"),
])
def test_validation_errors_name_file_annotation_and_field(tmp_path, mutate, field, message):
    path, _ = coco_file(tmp_path, [image(1)], [ann(11, 1, [10, 10, 100, 100])])
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))
    with pytest.raises(PoseDataError, match=message) as e:
        load_coco_keypoints(path)
    assert e.value.field == field and e.value.path == str(path)
    assert str(path) in str(e.value)


def _crowd_rle(compressed: bool) -> dict:
    m = np.zeros((H, W), np.uint8)
    m[100:140, 200:260] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    if compressed:
        return {"size": [H, W], "counts": rle["counts"].decode("ascii")}
    flat = m.ravel(order="F")
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    return {"size": [H, W], "counts": ([0] if flat[0] else []) + runs}


def _mutated_file(tmp_path, mutate):
    """Image 1 (640×480): person 11 (polygon) and crowd 12 (compressed RLE); ``mutate`` edits the parsed json."""
    anns = [ann(11, 1, [10, 10, 100, 100]),
            ann(12, 1, [200, 100, 60, 40], keypoints=[0.0] * 51, num_keypoints=0, iscrowd=1,
                segmentation=_crowd_rle(True))]
    path, _ = coco_file(tmp_path, [image(1)], anns, make_images=False)
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))      # NaN / Infinity as Python writes them (read_json accepts them)
    return path


def _seg(aid, seg):
    return lambda d: d["annotations"][aid - 11].update(segmentation=seg)


def _kp(index, value):
    return lambda d: d["annotations"][0]["keypoints"].__setitem__(index, value)


def _box(box):
    return lambda d: d["annotations"][0].update(bbox=box)


@pytest.mark.parametrize("mutate, field, message", [
    # segmentation: polygons (person 11)
    (_seg(11, "0 0 1 0 1 1"), "segmentation", r"annotation id 11: must be a list of polygons or an RLE.*got str"),
    (_seg(11, None), "segmentation", r"annotation id 11: .*got NoneType"),
    (_seg(11, [0, 0, 10, 0, 10, 10]), "segmentation", r"annotation id 11: a list of numbers; expected a list of po"),
    (_seg(11, [[0, 0, 10, 0, 10, 10], 5]), "segmentation", r"annotation id 11: polygon 1 is a int, not a list"),
    (_seg(11, [[0, 0, 10, 0, 10, 10], {"a": 1}]), "segmentation", r"annotation id 11: polygon 1 is a dict"),
    (_seg(11, [[0, 0, 10, 0, 10]]), "segmentation", r"annotation id 11: polygon 0 has 5 values; expected an even"),
    (_seg(11, [[0, 0, 10, 0]]), "segmentation", r"annotation id 11: polygon 0 has 4 values"),
    (_seg(11, [[0, 0, 10, 0, 10, 10], []]), "segmentation", r"annotation id 11: polygon 1 has 0 values"),
    (_seg(11, [[0, 0, 10, 0, 10, "10"]]), "segmentation", r"annotation id 11: polygon values must be finite num"),
    (_seg(11, [[0, 0, 10, 0, 10, True]]), "segmentation", r"annotation id 11: polygon values .*got True"),
    (_seg(11, [[0, 0, 10, 0, 10, float("nan")]]), "segmentation", r"annotation id 11: polygon values .*nan"),
    (_seg(11, [[0, 0, 10, 0, 10, float("inf")]]), "segmentation", r"annotation id 11: polygon values .*inf"),
    (_seg(11, [[0, 0, 10, 0, 10, 10 ** 400]]), "segmentation", r"annotation id 11: polygon values"),
    (_seg(11, [[0, 0, 10, 0, 10, None]]), "segmentation", r"annotation id 11: polygon values .*None"),
    # segmentation: RLE (crowd 12)
    (_seg(12, []), "segmentation", r"annotation id 12: crowd annotation with an empty segmentation"),
    (_seg(12, dict(_crowd_rle(True), size=[480.0, 640])), "segmentation", r"annotation id 12: RLE size must be \[h"),
    (_seg(12, dict(_crowd_rle(True), size=[480])), "segmentation", r"annotation id 12: RLE size must be"),
    (_seg(12, dict(_crowd_rle(True), size="480x640")), "segmentation", r"annotation id 12: RLE size must be"),
    (_seg(12, {"counts": _crowd_rle(True)["counts"]}), "segmentation", r"annotation id 12: RLE size must be"),
    (_seg(12, dict(_crowd_rle(True), size=[W, H])), "segmentation",
     r"annotation id 12: RLE size \[640, 480\] differs from the image's \[height, width\] \[480, 640\]"),
    (_seg(12, dict(_crowd_rle(False), size=[100, 100])), "segmentation", r"annotation id 12: RLE size .* differs"),
    (_seg(12, dict(_crowd_rle(False), counts=[10, -5, H * W - 5])), "segmentation",
     r"annotation id 12: uncompressed RLE counts must be non-negative integers"),
    (_seg(12, dict(_crowd_rle(False), counts=[10, "5", H * W - 15])), "segmentation",
     r"annotation id 12: uncompressed RLE counts must be non-negative integers"),
    (_seg(12, dict(_crowd_rle(False), counts=[10, 5.0, H * W - 15])), "segmentation",
     r"annotation id 12: uncompressed RLE counts must be non-negative integers"),
    (_seg(12, dict(_crowd_rle(False), counts=[10, 5, H * W])), "segmentation",
     r"annotation id 12: RLE counts cover 307215 pixels, expected height × width = 307200"),
    (_seg(12, dict(_crowd_rle(True), counts="\u00e9t\u00e9")), "segmentation",
     r"annotation id 12: compressed RLE counts are not a valid"),
    (_seg(12, dict(_crowd_rle(True), counts="0h")), "segmentation", r"annotation id 12: compressed RLE"),  # truncated
    (_seg(12, dict(_crowd_rle(True), counts="~~")), "segmentation", r"annotation id 12: compressed RLE"),
    (_seg(12, dict(_crowd_rle(True), counts=mask_utils.encode(np.ones((4, 4), np.uint8, order="F"))["counts"]
                   .decode())), "segmentation", r"annotation id 12: RLE counts cover 16 pixels"),
    (_seg(12, dict(_crowd_rle(True), counts=5)), "segmentation",
     r"annotation id 12: RLE counts must be a list of integers or a compressed string, got int"),
    (lambda d: d["annotations"][1].pop("segmentation"), "segmentation", r"annotation id 12: crowd annotation witho"),
    # keypoints: only JSON numbers, labelled ones inside the image
    (_kp(0, "15"), "keypoints", r"annotation id 11: non-numeric value '15'"),
    (_kp(1, True), "keypoints", r"annotation id 11: non-numeric value True"),
    (_kp(2, False), "keypoints", r"annotation id 11: non-numeric value False"),
    (_kp(1, None), "keypoints", r"annotation id 11: non-numeric value None"),
    (_kp(1, [1]), "keypoints", r"annotation id 11: non-numeric value \[1\]"),
    (_kp(3, float("inf")), "keypoints", r"annotation id 11: values must be finite"),
    (_kp(3, -0.5), "keypoints", r"annotation id 11: labelled keypoint 1 \(v=2\) at \(-0.5, 17\) lies outside the ima"),
    (_kp(4, -3), "keypoints", r"annotation id 11: labelled keypoint 1 .* at \(16, -3\) lies outside"),
    (_kp(6, W + 1.5), "keypoints", r"annotation id 11: labelled keypoint 2 .* at \(641.5, 19\) lies outside the image "
                                   r"\[0, 640\]×\[0, 480\]"),
    (_kp(7, H + 2), "keypoints", r"annotation id 11: labelled keypoint 2"),
    (lambda d: d["annotations"][0]["keypoints"].__setitem__(slice(48, 51), [700, 10, 1]), "keypoints",
     r"annotation id 11: labelled keypoint 16 \(v=1\)"),
    # bbox: only JSON numbers, not completely outside the image
    (_box([10, "10", 100, 100]), "bbox", r"annotation id 11: non-numeric value '10'"),
    (_box([10, 10, True, 100]), "bbox", r"annotation id 11: non-numeric value True"),
    (_box([10, 10, 10 ** 400, 100]), "bbox", r"annotation id 11: value out of range"),
    (_box([10, 10, -1, 100]), "bbox", r"annotation id 11: values must be finite with width, height ≥ 0"),
    (_box([W, 10, 5, 5]), "bbox", r"annotation id 11: box \[640, 10, 5, 5\] lies completely outside the image 640×480"),
    (_box([10, H + 3, 5, 5]), "bbox", r"annotation id 11: box .* lies completely outside"),
    (_box([-20, 10, 20, 5]), "bbox", r"annotation id 11: box .* lies completely outside"),
    (_box([10, -20.5, 5, 20]), "bbox", r"annotation id 11: box .* lies completely outside"),
])
def test_malformed_annotations_are_rejected_at_load(tmp_path, mutate, field, message):
    path = _mutated_file(tmp_path, mutate)
    with pytest.raises(PoseDataError, match=message) as e:
        load_coco_keypoints(path)
    assert e.value.field == field and e.value.path == str(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("mutate", [
    lambda d: None,
    _seg(12, _crowd_rle(False)),                                               # uncompressed RLE
    _seg(12, [[200, 100, 260, 100, 260, 140, 200, 140]]),                      # a crowd polygon
    _seg(12, dict(_crowd_rle(True), counts=mask_utils.encode(np.zeros((H, W), np.uint8, order="F"))["counts"]
                  .decode())),                                                # an empty mask
    _seg(11, [[0, 0, 10, 0, 10, 10], [20.5, 20, 30, 20, 30, 30.25]]),          # several polygons, floats
    _seg(11, []),                                                               # a person without polygons
    lambda d: d["annotations"][0].pop("segmentation"),                          # or without the field
    _kp(6, W + 1.0), _kp(7, H + 1.0), _kp(3, 0.0),                             # on the border (1 px margin)
    lambda d: d["annotations"][0]["keypoints"].__setitem__(slice(48, 51), [-50, 900, 0]),   # unlabelled: any x, y
    _box([-5, -5, 10, 10]), _box([630, 470, 50, 50]),                          # partly outside
])
def test_valid_variants_are_accepted(tmp_path, mutate):
    path = _mutated_file(tmp_path, mutate)
    data = load_coco_keypoints(path)
    assert [a["id"] for a in data["annotations"]] == [11, 12]


def test_sample_crowd_rle_strings_decode_like_pycocotools():
    """The RLE string check reads the run lengths pycocotools encodes (masks of every kind)."""
    from pose.data.coco import _rle_string_counts

    rng = np.random.default_rng(0)
    for t in range(60):
        h, w = (int(v) for v in rng.integers(1, 120, 2))
        m = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        if t % 3 == 0:
            m[:] = 0
            m[rng.integers(0, h):, rng.integers(0, w):] = 1
        rle = mask_utils.encode(np.asfortranarray(m))
        counts = _rle_string_counts(rle["counts"].decode("ascii"))
        flat = m.ravel(order="F")
        edges = np.flatnonzero(np.diff(flat)) + 1
        runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
        assert counts.tolist() == ([0] if flat[0] else []) + runs


def test_val_subset(tmp_path):
    images = [image(i) for i in range(1, 11)]
    anns = [ann(100 + i, (i % 10) + 1, [10, 10, 100, 100]) for i in range(25)]
    path, _ = coco_file(tmp_path, images, anns, make_images=False)
    out1, out2 = tmp_path / "a.json", tmp_path / "b.json"
    s = make_val_subset(path, 4, 0, out1)
    make_val_subset(path, 4, 0, out2)
    assert out1.read_text() == out2.read_text()                      # deterministic
    # images 1..5 have 3 annotations, 6..10 have 2; seed 0 picks indices [7, 8, 1, 5] → ids 8, 9, 2, 6
    assert s == {"images": 4, "annotations": 9, "requested": 4, "available": 10, "out": str(out1)}
    order = list(range(10))
    random.Random(0).shuffle(order)                                   # = random.seed(0); random.shuffle(...)
    sub = json.loads(out1.read_text())
    assert [im["id"] for im in sub["images"]] == [images[i]["id"] for i in order[:4]] == [8, 9, 2, 6]
    chosen = {im["id"] for im in sub["images"]}
    assert {a["image_id"] for a in sub["annotations"]} <= chosen
    assert sorted(a["id"] for a in sub["annotations"]) == sorted(a["id"] for a in anns if a["image_id"] in chosen)
    coco = COCO(str(out1))
    assert len(coco.getImgIds()) == 4 and len(coco.getAnnIds()) == 9
    # more than available → all images; another seed → another order
    assert make_val_subset(path, 50, 0, out2)["images"] == 10
    make_val_subset(path, 4, 1, out2)
    assert [im["id"] for im in json.loads(out2.read_text())["images"]] != [im["id"] for im in sub["images"]]
    with pytest.raises(PoseDataError, match="positive"):
        make_val_subset(path, 0, 0, out2)


def _reference_select(anns: list[dict]) -> list[int]:
    """Oracle: LWOP prepare_train_labels' person filter, literally (Python floats, ``** 0.5``, ``width * 0.3``)."""
    chosen, previous = [], []
    for i, a in enumerate(anns):
        if a["num_keypoints"] < 5 or a["area"] < 32 * 32:
            continue
        c = [a["bbox"][0] + a["bbox"][2] / 2, a["bbox"][1] + a["bbox"][3] / 2]
        if any(((c[0] - p[0]) ** 2 + (c[1] - p[1]) ** 2) ** 0.5 < p[2] * 0.3 for p in previous):
            continue
        previous.append([c[0], c[1], a["bbox"][2]])
        chosen.append(i)
    return chosen


@pytest.mark.parametrize("first, second, reference_close", [
    ([37.37, 86.5, 268.67, 83.24], [109.18423735260482, -34.45, 184.11, 175.15], True),
    ([287.52, 277.71, 247.45, 207.01], [297.70844162765184, 324.94, 229.51, 261.0], False),
])
def test_centre_distance_ties_follow_the_reference_arithmetic(tmp_path, first, second, reference_close):
    """Centres exactly at 0.3·width up to the last bit: np.hypot and (dx² + dy²) ** 0.5 disagree; LWOP's wins."""
    from pose.data.coco import _select_people

    c1 = (first[0] + first[2] / 2, first[1] + first[3] / 2)
    c2 = (second[0] + second[2] / 2, second[1] + second[3] / 2)
    ref_dist = ((c2[0] - c1[0]) ** 2 + (c2[1] - c1[1]) ** 2) ** 0.5
    assert (ref_dist < first[2] * 0.3) == reference_close
    assert (np.hypot(c2[0] - c1[0], c2[1] - c1[1]) < 0.3 * first[2]) != reference_close   # a genuine tie
    people = [{"num_keypoints": 17, "area": 5000.0, "bbox": b} for b in (first, second)]
    expected = [0] if reference_close else [0, 1]
    assert _reference_select(people) == expected
    assert _select_people(people) == expected
    # the same through the whole conversion
    # keypoints inside the image (the second box starts above it)
    anns = [ann(1, 7, list(first)), ann(2, 7, list(second), keypoints=full_person(second[0] + 5, 5))]
    path, img_dir = coco_file(tmp_path, [image(7)], anns)
    assert len(convert_labels(path, img_dir, net_input=368)) == len(expected)
