import cv2
import numpy as np
import pytest

from pose.data.transforms import (apply_affine, compose, crop_matrix, flip_matrix, invert_affine,
                                  rotate_scale_matrix, translation, warp_image)


def test_crop_matrix_maps_centre_to_crop_centre_and_box_to_width():
    M = crop_matrix((120.0, 80.0), box_size=200.0, rotation_deg=0.0, out_size=(64, 48))
    np.testing.assert_allclose(apply_affine(np.array([120.0, 80.0]), M), [31.5, 23.5])
    # half a box to the right lands half the output width to the right
    np.testing.assert_allclose(apply_affine(np.array([220.0, 80.0]), M), [31.5 + 32, 23.5])
    np.testing.assert_allclose(apply_affine(np.array([120.0, 180.0]), M), [31.5, 23.5 + 32])


def test_crop_matrix_rotation_is_counter_clockwise_as_displayed():
    M = crop_matrix((0.0, 0.0), box_size=10.0, rotation_deg=90.0, out_size=(11, 11))
    # a point to the right of the centre ends up above it (y down in images); scale 11/10
    np.testing.assert_allclose(apply_affine(np.array([5.0, 0.0]), M), [5.0, 5.0 - 5.5], atol=1e-9)
    R = cv2.getRotationMatrix2D((3.0, 4.0), 30.0, 1.7)
    np.testing.assert_allclose(rotate_scale_matrix((3.0, 4.0), 30.0, 1.7), R, atol=1e-12)


def test_flip_mirrors_inside_crop():
    a = crop_matrix((50.0, 60.0), 100.0, 17.0, (32, 32))
    b = crop_matrix((50.0, 60.0), 100.0, 17.0, (32, 32), flip=True)
    pts = np.array([[10.0, 20.0], [70.0, 90.0], [50.0, 60.0]])
    pa, pb = apply_affine(pts, a), apply_affine(pts, b)
    np.testing.assert_allclose(pb[:, 0], 31 - pa[:, 0])
    np.testing.assert_allclose(pb[:, 1], pa[:, 1])


def test_inverse_round_trip_and_compose():
    M = crop_matrix((33.3, 44.4), 77.0, -25.0, (64, 64), flip=True)
    pts = np.random.default_rng(0).uniform(-50, 150, (10, 2))
    np.testing.assert_allclose(apply_affine(apply_affine(pts, M), invert_affine(M)), pts, atol=1e-9)
    C = compose(translation(3, 4), flip_matrix(10))
    np.testing.assert_allclose(apply_affine(np.array([2.0, 5.0]), C), [9 - 2 + 3, 9.0])


def test_crop_at_two_resolutions_agree():
    big = crop_matrix((100.0, 90.0), 150.0, 12.0, (256, 256), flip=True)
    small = crop_matrix((100.0, 90.0), 150.0, 12.0, (64, 64), flip=True)
    s = 64 / 256  # 256 grid -> 64 grid over the same area, pixel-index convention: x' = (x + 0.5)·s − 0.5
    np.testing.assert_allclose(compose(np.array([[s, 0.0, 0.5 * s - 0.5], [0.0, s, 0.5 * s - 0.5]]), big), small,
                               atol=1e-12)


@pytest.mark.parametrize("rotation,flip", [(0.0, False), (90.0, True), (180.0, False)])
def test_warp_image_moves_pixels_where_apply_affine_moves_points(rotation, flip):
    img = np.zeros((50, 60, 3), np.uint8)
    src = np.array([17.0, 9.0])
    img[9, 17] = 255
    M = crop_matrix((30.0, 25.0), 41.0, rotation, (41, 41), flip=flip)  # scale 1, integer shift: exact
    out = warp_image(img, M, (41, 41))
    y, x = np.unravel_index(out[..., 0].argmax(), out.shape[:2])
    np.testing.assert_allclose(apply_affine(src, M), [x, y], atol=1e-6)
    assert out[y, x, 0] == 255


def test_warp_image_border_value():
    img = np.full((10, 10, 3), 7, np.uint8)
    out = warp_image(img, translation(50, 0), (20, 10), border_value=(128, 128, 128))
    assert (out == 128).all()
