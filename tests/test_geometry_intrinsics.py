"""Intrinsics under resize / crop / flip, checked against real image operations."""
import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from geometry import (
    crop_intrinsics,
    flip_intrinsics,
    intrinsics_pyramid,
    invert_intrinsics,
    make_intrinsics,
    resize_intrinsics,
    scale_intrinsics,
)

# ----------------------------------------------------------------------------- helpers
BLOB_SIGMA = 3.0  # source pixels: smooth enough that resampling does not move the centroid


def project_point(K, point):
    """Pixel (u, v) of a 3D camera-frame point under K (numpy, float64)."""
    K = np.asarray(K, dtype=np.float64)[:3, :3]
    uvw = K @ np.asarray(point, dtype=np.float64)
    return uvw[:2] / uvw[2]


def render_blob(height, width, center, sigma=BLOB_SIGMA):
    """Gaussian dot sampled at the integer pixel centres, centred at sub-pixel ``center`` (u, v)."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    return np.exp(-((u - center[0]) ** 2 + (v - center[1]) ** 2) / (2 * sigma**2))


def centroid(image):
    """Intensity-weighted mean pixel position (u, v)."""
    v, u = np.mgrid[0 : image.shape[0], 0 : image.shape[1]].astype(np.float64)
    total = image.sum()
    return np.array([(u * image).sum() / total, (v * image).sum() / total])


def resize_image(image, out_hw, method):
    h2, w2 = out_hw
    if method == "cv2":
        return cv2.resize(image, (w2, h2), interpolation=cv2.INTER_LINEAR)
    tensor = torch.from_numpy(image)[None, None]
    align = method == "torch_align_corners"
    out = F.interpolate(tensor, size=(h2, w2), mode="bilinear", align_corners=align, antialias=False)
    return out[0, 0].numpy()


def apply_pipeline(image, K, steps, method, convention):
    """Apply (op, arg) steps to the image and K alike; return image, K and whether x is mirrored."""
    mirrored = False
    for op, arg in steps:
        h, w = image.shape
        if op == "crop":
            x0, y0, cw, ch = arg
            image = image[y0 : y0 + ch, x0 : x0 + cw]
            K = crop_intrinsics(K, x0, y0)
        elif op == "resize":
            image = resize_image(image, arg, method)
            K = resize_intrinsics(K, (h, w), arg, convention)
        elif op == "flip":
            image = np.ascontiguousarray(image[:, ::-1])
            K = flip_intrinsics(K, w, convention)
            mirrored = not mirrored
    return image, K, mirrored


POINT = np.array([0.31, -0.17, 2.0])  # camera frame, metres
K_FULL = make_intrinsics(150.0, 140.0, 81.3, 58.6).double()  # image 120 x 160
CROP = ("crop", (37, 11, 110, 90))  # x0, y0, width, height
PIPELINES = {
    "crop": [CROP],
    "down": [("resize", (57, 71))],
    "up": [("resize", (151, 203))],
    "flip": [("flip", None)],
    "crop_down_flip": [CROP, ("resize", (57, 71)), ("flip", None)],
    "flip_up_crop": [("flip", None), ("resize", (151, 203)), ("crop", (40, 30, 120, 90))],
}


def blob_error(steps, method, convention):
    """Measured blob centroid minus the projection predicted by the updated intrinsics."""
    image = render_blob(120, 160, project_point(K_FULL, POINT))
    image, K, mirrored = apply_pipeline(image, K_FULL, steps, method, convention)
    point = POINT * np.array([-1.0, 1.0, 1.0]) if mirrored else POINT  # flipped image = mirrored camera
    return centroid(image) - project_point(K, point), image.shape


# ----------------------------------------------------------------------------- real image operations
@pytest.mark.parametrize("name", sorted(PIPELINES))
@pytest.mark.parametrize(
    "method, convention",
    [("cv2", "half_pixel"), ("torch", "half_pixel"), ("torch_align_corners", "align_corners")],
)
def test_blob_moves_as_updated_intrinsics_predict(name, method, convention):
    error, _ = blob_error(PIPELINES[name], method, convention)
    assert np.abs(error).max() < 0.01, error


@pytest.mark.parametrize("out_hw", [(57, 71), (151, 203)])
def test_reference_convention_is_off_by_half_pixel_terms(out_hw):
    steps = [CROP, ("resize", out_hw), ("flip", None)]
    correct, _ = blob_error(steps, "cv2", "half_pixel")
    reference, _ = blob_error(steps, "cv2", "reference")
    sx, sy = out_hw[1] / 110, out_hw[0] / 90
    # Resize: cx*sx instead of (cx+0.5)*sx-0.5 predicts 0.5*(1-sx) too far right; the flip then
    # maps that to the left and adds W-cx instead of W-1-cx: one pixel to the right.
    expected = -np.array([1.0 - 0.5 * (1 - sx), 0.5 * (1 - sy)])
    assert np.abs(correct).max() < 0.01
    np.testing.assert_allclose(reference, expected, atol=0.01)
    assert np.abs(reference).max() > 0.2


# ----------------------------------------------------------------------------- formulas
def test_make_intrinsics_layout_and_broadcast():
    fx = torch.tensor([100.0, 200.0])
    K = make_intrinsics(fx, 90.0, 50.0, 40.0, skew=0.5)
    assert K.shape == (2, 3, 3) and K.dtype == torch.float32
    np.testing.assert_allclose(K[1].numpy(), [[200, 0.5, 50], [0, 90, 40], [0, 0, 1]])


@pytest.mark.parametrize("size", [3, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_invert_intrinsics_matches_matrix_inverse(size, dtype):
    fx = torch.tensor([[720.0, 300.0], [95.0, 1200.0]], dtype=dtype)  # leading dims [2, 2]
    K3 = make_intrinsics(fx, fx * 1.1, fx * 0.5 + 3, fx * 0.3 - 1, skew=fx * 0.01)
    K = torch.eye(size, dtype=dtype).repeat(2, 2, 1, 1)
    K[..., :3, :3] = K3
    K_inv = invert_intrinsics(K)
    assert K_inv.shape == K.shape and K_inv.dtype == dtype
    expected = torch.linalg.inv(K.double()).to(dtype)
    torch.testing.assert_close(K_inv, expected, rtol=1e-6 if dtype == torch.float32 else 1e-12, atol=1e-9)
    torch.testing.assert_close(K_inv @ K, torch.eye(size, dtype=dtype).expand_as(K), rtol=0, atol=1e-5)


def test_scale_intrinsics_formulas():
    K = make_intrinsics(100.0, 80.0, 49.5, 29.5)
    half = scale_intrinsics(K, 0.5, 0.25)
    torch.testing.assert_close(half, make_intrinsics(50.0, 20.0, (49.5 + 0.5) * 0.5 - 0.5, (29.5 + 0.5) * 0.25 - 0.5))
    reference = scale_intrinsics(K, 0.5, 0.25, convention="reference")
    torch.testing.assert_close(reference, make_intrinsics(50.0, 20.0, 24.75, 7.375))
    # The centre of a 100 x 60 image stays at the centre of the 50 x 15 image.
    assert half[0, 2].item() == pytest.approx((50 - 1) / 2) and half[1, 2].item() == pytest.approx((15 - 1) / 2)


def test_scale_intrinsics_per_item_factors():
    K = make_intrinsics(100.0, 80.0, 40.0, 30.0).expand(3, 3, 3)
    sx = torch.tensor([0.5, 1.0, 2.0])
    out = scale_intrinsics(K, sx, sx)
    for i in range(3):
        torch.testing.assert_close(out[i], scale_intrinsics(K[i], sx[i].item(), sx[i].item()))


def test_resize_align_corners_formula():
    K = make_intrinsics(100.0, 80.0, 40.0, 30.0)
    out = resize_intrinsics(K, (61, 81), (31, 41), convention="align_corners")
    torch.testing.assert_close(out, make_intrinsics(50.0, 40.0, 20.0, 15.0))


@pytest.mark.parametrize("convention", ["half_pixel", "reference"])
def test_flip_twice_is_identity_and_keeps_focal_positive(convention):
    K = make_intrinsics(100.0, 80.0, 40.3, 30.0, skew=0.7)
    flipped = flip_intrinsics(K, 97, convention)
    assert flipped[0, 0] == 100.0 and flipped[0, 1] == pytest.approx(-0.7)
    expected_cx = 97 - 40.3 if convention == "reference" else 96 - 40.3
    assert flipped[0, 2].item() == pytest.approx(expected_cx)
    torch.testing.assert_close(flip_intrinsics(flipped, 97, convention), K)


def test_four_by_four_intrinsics_keep_identity_block():
    K = torch.eye(4).repeat(2, 1, 1)
    K[:, :3, :3] = make_intrinsics(100.0, 80.0, 40.0, 30.0)
    for out in (
        scale_intrinsics(K, 0.5, 0.5),
        crop_intrinsics(K, 3, 4),
        flip_intrinsics(K, 80),
        resize_intrinsics(K, (60, 80), (30, 40)),
    ):
        assert out.shape == (2, 4, 4)
        torch.testing.assert_close(out[:, 2:, 2:], torch.eye(2).expand(2, 2, 2))
        torch.testing.assert_close(out[:, 3, :3], torch.zeros(2, 3))
        torch.testing.assert_close(out[:, :3, 3], torch.zeros(2, 3))
    torch.testing.assert_close(crop_intrinsics(K, 3, 4)[:, :3, :3], crop_intrinsics(K[:, :3, :3], 3, 4))


@pytest.mark.parametrize("convention", ["half_pixel", "reference", "align_corners"])
def test_intrinsics_pyramid(convention):
    K = make_intrinsics(torch.tensor([[100.0, 120.0, 90.0]] * 2), 80.0, 40.0, 30.0).double()  # [2, 3, 3, 3]
    pyramid = intrinsics_pyramid(K, (375, 1242), 4, convention)
    assert pyramid.shape == (2, 3, 4, 3, 3) and pyramid.dtype == torch.float64
    torch.testing.assert_close(pyramid[..., 0, :, :], K)
    for s in range(4):
        expected = resize_intrinsics(K, (375, 1242), (375 // 2**s, 1242 // 2**s), convention)
        torch.testing.assert_close(pyramid[..., s, :, :], expected)


@pytest.mark.parametrize(
    "call",
    [
        lambda K: scale_intrinsics(K, 0.5, 0.5, convention="corner"),
        lambda K: resize_intrinsics(K, (4, 4), (2, 2), convention="HALF_PIXEL"),
        lambda K: flip_intrinsics(K, 4, convention="mirror"),
        lambda K: intrinsics_pyramid(K, (8, 8), 2, convention=""),
    ],
)
def test_unknown_convention_names_allowed_values(call):
    with pytest.raises(ValueError, match="half_pixel, reference, align_corners"):
        call(make_intrinsics(1.0, 1.0, 0.0, 0.0))


def test_scale_intrinsics_rejects_align_corners():
    with pytest.raises(ValueError, match="resize_intrinsics"):
        scale_intrinsics(make_intrinsics(1.0, 1.0, 0.0, 0.0), 0.5, 0.5, convention="align_corners")
