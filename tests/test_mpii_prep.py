"""MPII annotation validation, image link, split, protocol .mat I/O and the atomic prepare step."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import scipy.io

from pose.data.mpii import (PROTOCOL_JOINT_NAMES, check_images, ensure_image_link, link_images, load_mpii_annotations,
                            prepare_mpii, read_protocol_gt, split_index, write_preds_mat, write_protocol_gt)
from pose.io import PoseDataError, write_image


def record(i: int, val: int) -> dict:
    js = [[10.0 + j + i, 15.0 + 2 * j, 1.0] for j in range(16)]   # inside the 64×48 image
    js[9] = [0.0, 0.0, 0.0]  # an absent joint
    return {"dataset": "MPI", "isValidation": float(val), "img_paths": f"{i:09d}.jpg", "img_width": 64.0,
            "img_height": 48.0, "objpos": [30.0, 25.0], "joint_self": js, "scale_provided": 0.2,
            "joint_others": [], "scale_provided_other": [], "objpos_other": [], "annolist_index": float(i + 1),
            "people_index": 1.0, "numOtherPeople": 0.0}


@pytest.fixture
def mpii(tmp_path):
    """6 records (val = 1, 3, 4), their images, and a matching protocol GT file."""
    records = [record(i, int(i in (1, 3, 4))) for i in range(6)]
    ann = tmp_path / "mpii_annotations.json"
    ann.write_text(json.dumps(records))
    images = tmp_path / "src_images"
    for r in records:
        write_image(images / r["img_paths"], np.zeros((4, 4, 3), np.uint8))
    val = [r for r in records if r["isValidation"] == 1]
    joints = np.asarray([r["joint_self"] for r in val])[..., :2] - 1
    missing = np.asarray([r["joint_self"] for r in val])[..., 2] == 0
    heads = np.tile([[[5.0, 6.0], [15.0, 18.0]]], (len(val), 1, 1))
    gt = tmp_path / "detections_our_format.mat"
    write_protocol_gt(gt, joints, missing, heads)
    return {"records": records, "ann": ann, "images": images, "gt": gt, "tmp": tmp_path}


def rewrite(path, records):
    path.write_text(json.dumps(records))


# ---------------------------------------------------------------------------------------------------------------
def test_load_and_split(mpii):
    records = load_mpii_annotations(mpii["ann"])
    assert len(records) == 6
    assert split_index(records) == ([0, 2, 5], [1, 3, 4])


@pytest.mark.parametrize("mutate, field, message", [
    (lambda r: r.pop("joint_self"), "joint_self", "record 2: missing"),
    (lambda r: r["joint_self"].pop(), "joint_self", "record 2: expected 16.*got 15 joints"),
    (lambda r: r["joint_self"][3].pop(), "joint_self", "record 2: joint 3"),
    (lambda r: r["joint_self"][3].__setitem__(0, float("inf")), "joint_self", "record 2: joint 3"),
    (lambda r: r.update(isValidation=2), "isValidation", "record 2: must be 0 or 1"),
    (lambda r: r.update(scale_provided=-1), "scale_provided", "record 2"),
    (lambda r: r.pop("numOtherPeople"), "numOtherPeople", "record 2: missing"),
    (lambda r: r.update(objpos=[1.0]), "objpos", "record 2"),
])
def test_validation_errors_name_file_record_and_field(mpii, mutate, field, message):
    records = json.loads(mpii["ann"].read_text())
    mutate(records[2])
    rewrite(mpii["ann"], records)
    with pytest.raises(PoseDataError, match=message) as e:
        load_mpii_annotations(mpii["ann"])
    assert e.value.field == field and e.value.path == str(mpii["ann"])
    assert str(mpii["ann"]) in str(e.value)


def _joint(j, value):
    return lambda r: r["joint_self"].__setitem__(j, value)


@pytest.mark.parametrize("mutate, field, message", [
    # record 2's image is 64×48; joint_self is 1-based, an unlabelled joint is [0, 0, 0]
    (_joint(3, [-0.5, 20.0, 1.0]), "joint_self", r"record 2: joint 3 at \(-0.5, 20\) lies outside the image 64×48"),
    (_joint(3, [20.0, -2.0, 0.0]), "joint_self", r"record 2: joint 3 at \(20, -2\) lies outside"),
    (_joint(3, [65.5, 20.0, 1.0]), "joint_self", r"record 2: joint 3 at \(65.5, 20\) lies outside"),
    (_joint(15, [20.0, 49.5, 1.0]), "joint_self", r"record 2: joint 15 at \(20, 49.5\) lies outside"),
    (_joint(9, [0.0, 0.0, 1.0 + 1e-9]), "joint_self", r"record 2: joint 9 visibility must be 0 or 1"),
    (_joint(3, [20.0, 20.0, 2.0]), "joint_self", r"record 2: joint 3 visibility must be 0 or 1, got 2.0"),
    (_joint(3, [20.0, 20.0, -1]), "joint_self", r"record 2: joint 3 visibility must be 0 or 1, got -1"),
    (_joint(3, [20.0, 20.0, True]), "joint_self", r"record 2: joint 3 must be \[x, y, vis\] of finite numbers"),
    (_joint(3, [20.0, 10 ** 400, 1]), "joint_self", r"record 2: joint 3 must be \[x, y, vis\] of finite numbers"),
    (lambda r: r.update(objpos=[-6.0, 25.0]), "objpos", r"record 2: \[-6.0, 25.0\] lies outside the image 64×48"),
    (lambda r: r.update(objpos=[30.0, 54.0]), "objpos", r"record 2: .* lies outside"),
    (lambda r: r.update(objpos=[70.0, 25.0]), "objpos", r"record 2: .* lies outside"),
    (lambda r: r.update(objpos=[30.0, -1.0e6]), "objpos", r"record 2: .* lies outside"),
    (lambda r: r.update(img_paths="/data/mpii/images/000000002.jpg"), "img_paths",
     r"record 2: must be a path inside the image folder \(relative, no '..'\), got '/data/mpii"),
    (lambda r: r.update(img_paths="../000000002.jpg"), "img_paths", r"record 2: must be a path inside"),
    (lambda r: r.update(img_paths="sub/../../x.jpg"), "img_paths", r"record 2: must be a path inside"),
    (lambda r: r.update(img_paths="..\\x.jpg"), "img_paths", r"record 2: must be a path inside"),
    (lambda r: r.update(img_paths="C:\\images\\x.jpg"), "img_paths", r"record 2: must be a path inside"),
])
def test_out_of_image_and_escaping_records_are_rejected(mpii, mutate, field, message):
    test_validation_errors_name_file_record_and_field(mpii, mutate, field, message)


@pytest.mark.parametrize("mutate", [
    _joint(3, [65.0, 49.0, 1.0]),                 # the far border + 1 (1-based pixel centres reach w + 0.5)
    _joint(3, [0.6, 0.4, 0.0]),                   # near the origin, occluded
    _joint(3, [0, 0, 0]),                         # unlabelled, as ints
    lambda r: r.update(objpos=[-1.0, -1.0]),      # the reference's "no centre" marker
    lambda r: r.update(objpos=[68.0, -4.0]),      # a few px outside
    lambda r: r.update(img_paths="sub/dir/x..y.jpg"),
])
def test_border_cases_are_accepted(mpii, mutate):
    records = json.loads(mpii["ann"].read_text())
    mutate(records[2])
    rewrite(mpii["ann"], records)
    assert len(load_mpii_annotations(mpii["ann"])) == 6


def test_check_images_a_folder_is_no_image(mpii):
    records = mpii["records"]
    (mpii["images"] / records[2]["img_paths"]).unlink()
    (mpii["images"] / records[2]["img_paths"]).mkdir()
    with pytest.raises(PoseDataError, match=r"000000002\.jpg: field 'img_paths': image missing \(1 of 6"):
        check_images(records, mpii["images"])


def test_check_images(mpii):
    records = mpii["records"]
    assert check_images(records, mpii["images"]) == records
    (mpii["images"] / records[4]["img_paths"]).unlink()
    (mpii["images"] / records[2]["img_paths"]).unlink()
    with pytest.raises(PoseDataError, match=r"000000002\.jpg: field 'img_paths': image missing \(2 of 6") as e:
        check_images(records, mpii["images"])
    assert e.value.path == str(mpii["images"] / records[2]["img_paths"])
    kept = check_images(records, mpii["images"], skip_missing=True)
    assert [r["img_paths"] for r in kept] == [records[i]["img_paths"] for i in (0, 1, 3, 5)]
    with pytest.raises(PoseDataError, match="images directory does not exist") as e:
        check_images(records, mpii["tmp"] / "nope")
    assert e.value.field == "images" and e.value.path == str(mpii["tmp"] / "nope")


def test_link_images(mpii, tmp_path):
    link = tmp_path / "data" / "mpii" / "images"
    link_images(mpii["images"], link)
    assert link.is_symlink() and sorted(os.listdir(link)) == sorted(r["img_paths"] for r in mpii["records"])
    other = tmp_path / "other"
    other.mkdir()
    link_images(other, link)                                   # replaces the existing link
    assert link.is_symlink() and link.resolve() == other.resolve()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:                                                       # relative source → relative link
        link_images("src_images", "data/mpii/images")
        assert os.readlink(link) == os.path.join("..", "..", "src_images") and link.resolve() == mpii["images"]
    finally:
        os.chdir(cwd)
    with pytest.raises(PoseDataError, match="does not exist"):
        link_images(tmp_path / "missing", link)
    with pytest.raises(PoseDataError, match="is not a directory"):
        link_images(mpii["ann"], link)
    real = tmp_path / "real_dir"
    real.mkdir()
    with pytest.raises(PoseDataError, match="not a symlink"):
        link_images(mpii["images"], real)


@pytest.mark.parametrize("n", [1, 3])
def test_protocol_mat_round_trip(tmp_path, n):
    rng = np.random.default_rng(n)
    joints = rng.uniform(0, 500, (n, 16, 2))
    missing = rng.random((n, 16)) < 0.3
    heads = rng.uniform(0, 500, (n, 2, 2))
    path = tmp_path / "gt.mat"
    write_protocol_gt(path, joints, missing, heads)
    raw = scipy.io.loadmat(str(path))                          # what the MPII PCKh script sees
    assert raw["dataset_joints"].shape == (1, 16)
    assert [str(x[0]) for x in raw["dataset_joints"][0]] == list(PROTOCOL_JOINT_NAMES)
    assert np.where(raw["dataset_joints"] == "head")[1][0] == 9 and np.where(raw["dataset_joints"] == "lhip")[1][0] == 3
    assert raw["jnt_missing"].shape == (16, n) and raw["pos_gt_src"].shape == (16, 2, n)
    assert raw["headboxes_src"].shape == (2, 2, n) and raw["pos_pred_src"].shape == (16, 2, n)
    assert raw["jnt_missing"].dtype == np.uint8                # as in the released file
    np.testing.assert_array_equal(raw["pos_gt_src"][:, :, 0], joints[0] + 1)         # 1-based
    np.testing.assert_array_equal(raw["headboxes_src"][:, :, -1], heads[-1] + 1)
    np.testing.assert_array_equal(raw["jnt_missing"][:, 0], missing[0].astype(float))
    gt = read_protocol_gt(path)
    assert gt.joints.shape == (n, 16, 2) and gt.missing.shape == (n, 16) and gt.headboxes.shape == (n, 2, 2)
    np.testing.assert_allclose(gt.joints, joints, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(gt.missing, missing)
    np.testing.assert_allclose(gt.headboxes, heads, rtol=0, atol=1e-12)
    preds = tmp_path / "preds.mat"
    write_preds_mat(preds, joints)
    p = scipy.io.loadmat(str(preds))["preds"]
    assert p.shape == (n, 16, 2)
    np.testing.assert_allclose(p, joints + 1, rtol=0, atol=1e-12)
    assert sorted(os.listdir(tmp_path)) == ["gt.mat", "preds.mat"]   # no temporaries, no '.mat.mat'


def test_protocol_mat_errors(tmp_path):
    path = tmp_path / "gt.mat"
    scipy.io.savemat(str(path), {"jnt_missing": np.zeros((16, 2)), "pos_gt_src": np.zeros((16, 2, 2))})
    with pytest.raises(PoseDataError, match="missing") as e:
        read_protocol_gt(path)
    assert e.value.field == "headboxes_src" and str(path) in str(e.value)
    scipy.io.savemat(str(path), {"jnt_missing": np.zeros((16, 2)), "pos_gt_src": np.zeros((14, 2, 2)),
                                 "headboxes_src": np.zeros((2, 2, 2))})
    with pytest.raises(PoseDataError, match="expected shape 16×2×N, got 14×2×2") as e:
        read_protocol_gt(path)
    assert e.value.field == "pos_gt_src"
    scipy.io.savemat(str(path), {"jnt_missing": np.zeros((16, 3)), "pos_gt_src": np.zeros((16, 2, 2)),
                                 "headboxes_src": np.zeros((2, 2, 2))})
    with pytest.raises(PoseDataError, match="16×2") as e:
        read_protocol_gt(path)
    assert e.value.field == "jnt_missing"
    names = np.empty((1, 16), dtype=object)
    names[0, :] = list(PROTOCOL_JOINT_NAMES[::-1])
    scipy.io.savemat(str(path), {"dataset_joints": names, "jnt_missing": np.zeros((16, 2)),
                                 "pos_gt_src": np.zeros((16, 2, 2)), "headboxes_src": np.zeros((2, 2, 2))})
    with pytest.raises(PoseDataError, match="differ from the MPII order") as e:
        read_protocol_gt(path)
    assert e.value.field == "dataset_joints"
    with pytest.raises(PoseDataError, match="joints"):
        write_protocol_gt(path, np.zeros((2, 15, 2)), np.zeros((2, 16)), np.zeros((2, 2, 2)))
    with pytest.raises(PoseDataError, match="does not exist"):
        read_protocol_gt(tmp_path / "none.mat")


def test_prepare_mpii(mpii):
    out, link = mpii["tmp"] / "prepared" / "mpii", mpii["tmp"] / "data" / "mpii" / "images"
    summary = prepare_mpii(mpii["images"], mpii["ann"], mpii["gt"], link, out)
    assert summary["train"] == 3 and summary["val"] == 3 and summary["images"] == 6
    assert sorted(os.listdir(out)) == [".posepipe-output", "dataset.json", "gt_val.mat", "train.json", "val.json"]
    from pose.data.mpii import prepared_images

    assert prepared_images(out / "val.json").resolve() == link.resolve()   # tools find the images like the stages
    val = json.loads((out / "val.json").read_text())
    assert [r["img_paths"] for r in val] == ["000000001.jpg", "000000003.jpg", "000000004.jpg"]
    assert val[0] == mpii["records"][1]                                       # records unchanged (1-based)
    assert len(json.loads((out / "train.json").read_text())) == 3
    assert (out / "gt_val.mat").read_bytes() == mpii["gt"].read_bytes()
    assert link.is_symlink() and link.resolve() == mpii["images"].resolve()


@pytest.mark.parametrize("break_it, message", [
    (lambda m: (m["images"] / "000000003.jpg").unlink(), "image missing"),
    (lambda m: write_protocol_gt(m["gt"], np.zeros((2, 16, 2)), np.zeros((2, 16), bool), np.zeros((2, 2, 2))),
     "has 2 people but .* has 3 validation records"),
    (lambda m: rewrite(m["ann"], [dict(r, joint_self=[]) if i == 5 else r for i, r in enumerate(m["records"])]),
     "record 5"),
])
def test_failing_prepare_writes_nothing(mpii, break_it, message):
    out, link = mpii["tmp"] / "prepared" / "mpii", mpii["tmp"] / "data" / "mpii" / "images"
    break_it(mpii)
    with pytest.raises(PoseDataError, match=message):
        prepare_mpii(mpii["images"], mpii["ann"], mpii["gt"], link, out)
    assert not out.exists() and not os.path.lexists(link)
    assert not (mpii["tmp"] / "prepared").exists() or not any((mpii["tmp"] / "prepared").iterdir())


def test_failing_prepare_keeps_previous_output(mpii):
    out, link = mpii["tmp"] / "prepared", mpii["tmp"] / "images_link"
    prepare_mpii(mpii["images"], mpii["ann"], mpii["gt"], link, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    write_protocol_gt(mpii["gt"], np.zeros((1, 16, 2)), np.zeros((1, 16), bool), np.zeros((1, 2, 2)))
    with pytest.raises(PoseDataError, match="has 1 people"):
        prepare_mpii(mpii["images"], mpii["ann"], mpii["gt"], link, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(os.listdir(mpii["tmp"])).count("prepared") == 1 and not list(mpii["tmp"].glob(".prepared*"))


def test_ensure_image_link_remakes_a_missing_or_wrong_link_only(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    link = tmp_path / "data" / "mpii" / "images"
    ensure_image_link(a, link)                        # missing (a run-cache restore of mpii_prep): made
    assert link.is_symlink() and link.resolve() == a.resolve()
    before = os.lstat(link).st_mtime_ns
    ensure_image_link(a, link)                        # right: left alone
    assert os.lstat(link).st_mtime_ns == before
    ensure_image_link(b, link)                        # pointing elsewhere: replaced
    assert link.resolve() == b.resolve()
    with pytest.raises(PoseDataError, match="does not exist"):
        ensure_image_link(tmp_path / "nope", link)
