"""Keypoint sets as data: the built-in sets, set files (YAML / JSON) and their validation errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from pose.io import PoseDataError
from pose.skeletons import (COCO17, MPII16, OPENPOSE18, PckNorm, builtin_names, get_skeleton, load_skeleton_file,
                            resolve_skeleton, skeleton_from_coco, skeleton_from_record, skeleton_record)

HAND = {"name": "hand5", "keypoints": ["wrist", "l_tip", "r_tip", "thumb", "index"],
        "flip_pairs": [["l_tip", "r_tip"]],
        "limbs": [["wrist", "thumb"], ["wrist", "index"], [0, 1], ["wrist", "r_tip"]],
        "sigmas": {"wrist": 0.05, "l_tip": 0.02, "r_tip": 0.02, "thumb": 0.03, "index": 0.03},
        "pck": {"normalize": "torso", "torso": ["wrist", "index"]}}


def _write(tmp_path, d, suffix=".yaml"):
    path = tmp_path / f"set{suffix}"
    path.write_text(yaml.safe_dump(d) if suffix == ".yaml" else json.dumps(d))
    return path


def test_builtin_sets_keep_their_layouts():
    assert builtin_names() == ["body21", "coco17", "mpii16", "openpose18"]
    assert (MPII16.num_keypoints, len(MPII16.limbs), MPII16.pck) == (16, 15, PckNorm("head_box", 0.5))
    assert (OPENPOSE18.num_heatmaps, OPENPOSE18.num_pafs) == (19, 38)        # LWOP's heads
    assert OPENPOSE18.extra["source"] == "coco17" and OPENPOSE18.extra["derived"] == {"1": {"mean_of": [2, 5]}}
    # COCO-17's sigmas are pycocotools' defaults to the last bit, so AP is COCOeval's own
    np.testing.assert_array_equal(COCO17.sigmas, np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62,
                                                           1.07, 1.07, .87, .87, .89, .89]) / 10.0)
    body = get_skeleton("body21")
    assert body.num_keypoints == 21 and set(COCO17.keypoints) < set(body.keypoints)
    assert (body.num_heatmaps, body.num_pafs) == (22, 40)
    assert OPENPOSE18.source_slots(17).tolist() == [0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10]


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_a_set_file_reads_names_or_indices(tmp_path, suffix):
    s = load_skeleton_file(_write(tmp_path, HAND, suffix))
    assert s.name == "hand5" and s.keypoints == tuple(HAND["keypoints"])
    assert s.flip_pairs == ((1, 2),) and s.limbs == ((0, 3), (0, 4), (0, 1), (0, 2))
    assert s.sigmas == (0.05, 0.02, 0.02, 0.03, 0.03)
    assert s.pck == PckNorm("torso", 0.2, (0, 4))                       # the torso default threshold
    assert s.flip_permutation().tolist() == [0, 2, 1, 3, 4]
    assert resolve_skeleton(str(_write(tmp_path, HAND, suffix))) == s
    # a model file records the definition and gives the same set back
    assert skeleton_from_record(skeleton_record(s), "m.pt") == s
    assert skeleton_record(MPII16) == "mpii16" and skeleton_from_record("mpii16", "m.pt") is MPII16


BAD = [
    ({"keypoints": ["a", "b", "a"]}, "keypoints", "duplicate keypoint names \\['a'\\]"),
    ({"keypoints": []}, "keypoints", "non-empty list"),
    ({"flip_pairs": [["l_tip", "toe"]]}, "flip_pairs[0]", "unknown keypoint 'toe'"),
    ({"flip_pairs": [["l_tip", "r_tip"], ["r_tip", "thumb"]]}, "flip_pairs[1]", "already in pair 0"),
    ({"limbs": [["wrist", "wrist"]]}, "limbs[0]", "to itself"),
    ({"limbs": [["wrist", "thumb"], ["thumb", "wrist"]]}, "limbs[1]", "repeats entry 0"),
    ({"limbs": [["wrist", 9]]}, "limbs[0]", "neither a keypoint name nor an index"),
    ({"limbs": [["wrist"]]}, "limbs[0]", "pair"),
    ({"sigmas": {"wrist": 0.05}}, "sigmas", "no sigma for \\['l_tip'"),
    ({"sigmas": [0.1, 0.1]}, "sigmas", "one sigma per keypoint \\(5\\), got 2"),
    ({"sigmas": [0.1, 0.1, -1, 0.1, 0.1]}, "sigmas[2]", "positive number"),
    ({"pck": {"normalize": "head"}}, "pck.normalize", "head_box"),
    ({"pck": {"normalize": "bbox", "threshold": 0}}, "pck.threshold", "positive"),
    ({"pck": {"normalize": "torso"}}, "pck.torso", "pair"),
    ({"flips": []}, "flips", "unknown keys"),
    ({"from_source": [0, 1]}, "from_source", "one dataset index"),
    ({"infer_limbs": [["wrist", "thumb"]]}, "infer_limbs", "same pairs as 'limbs'"),
]


@pytest.mark.parametrize("change, field, message", BAD, ids=[b[1] + ":" + b[2][:12] for b in BAD])
def test_bad_set_files_name_the_file_and_the_field(tmp_path, change, field, message):
    path = _write(tmp_path, {**HAND, **change})
    with pytest.raises(PoseDataError, match=message) as e:
        load_skeleton_file(path)
    assert e.value.path == str(path) and e.value.field == field


def test_unreadable_and_unknown_set_specs(tmp_path):
    (tmp_path / "bad.yaml").write_text("keypoints: [a, b\n")
    with pytest.raises(PoseDataError, match="not readable as YAML"):
        load_skeleton_file(tmp_path / "bad.yaml")
    with pytest.raises(PoseDataError, match="none.yaml does not exist") as e:
        resolve_skeleton(str(tmp_path / "none.yaml"), "params.yaml", "openpose.keypoints")
    assert (e.value.path, e.value.field) == ("params.yaml", "openpose.keypoints")
    with pytest.raises(PoseDataError, match="neither a built-in keypoint set") as e:
        resolve_skeleton("mpii17", "params.yaml", "fpd.keypoints")
    assert (e.value.path, e.value.field) == ("params.yaml", "fpd.keypoints")


def test_a_coco_category_gives_a_set():
    cat = {"keypoints": ["nose", "left_eye", "right_eye", "left_ear"], "skeleton": [[1, 2], [1, 3], [2, 4]]}
    s = skeleton_from_coco(cat, "x.json")
    assert s.limbs == ((0, 1), (0, 2), (1, 3)) and s.flip_pairs == ((1, 2),) and s.sigmas is None
    with pytest.raises(ValueError, match="no OKS 'sigmas'"):
        s.require_sigmas("COCO keypoint AP")


def test_a_coco_json_as_the_set_file_gives_its_category(tmp_path):
    """No set file: the dataset's categories[0] names the keypoints and limbs; COCO's 17 get COCO's sigmas."""
    names = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
             "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
             "right_knee", "left_ankle", "right_ankle"]
    path = tmp_path / "person_keypoints_val.json"
    path.write_text(json.dumps({"images": [], "annotations": [], "categories": [
        {"id": 1, "name": "person", "keypoints": names, "skeleton": [[16, 14], [14, 12]]}]}))
    s = resolve_skeleton(str(path))
    assert s.name == "person_keypoints_val" and s.num_keypoints == 17 and s.limbs == ((15, 13), (13, 11))
    assert s.flip_pairs[0] == (1, 2) and s.sigmas == COCO17.sigmas
    other = tmp_path / "hands.json"
    other.write_text(json.dumps({"images": [], "categories": [{"keypoints": ["a", "b"], "skeleton": [[1, 2]]}]}))
    assert resolve_skeleton(str(other)).sigmas is None          # COCO AP will ask for a set file with sigmas
