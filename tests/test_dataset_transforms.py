"""dataset/image_io.py and dataset/transforms.py: intrinsics follow every image operation (checked by
rendering a blob and measuring its centroid), reduced decoding, colour jitter, sparse depth resize,
stereo flip + swap."""
import cv2
import numpy as np
import pytest
import torch

from dataset.image_io import image_size, read_image, read_mask, reduction_factor, resize_rgb
from dataset.transforms import (
    apply_color_jitter,
    crop_views,
    flip_sample,
    flip_views,
    mirror_transform,
    resize_sparse_depth,
    resize_views,
    sample_color_jitter,
    swap_stereo,
)
from geometry import invert_transform, make_intrinsics, resize_intrinsics

SIGMA = 4.0


# ----------------------------------------------------------------------------- helpers
def project(K, point):
    K = np.asarray(K, dtype=np.float64)
    uvw = K @ np.asarray(point, dtype=np.float64)
    return uvw[:2] / uvw[2]


def render_blob(height, width, center, sigma=SIGMA):
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    return np.exp(-((u - center[0]) ** 2 + (v - center[1]) ** 2) / (2 * sigma**2))


def centroid(image, background=0.0):
    """Intensity-weighted centroid (u, v) of a single-channel image, after removing a background
    level and keeping the pixels above 10 % of the peak (robust to JPEG noise)."""
    image = np.asarray(image, dtype=np.float64) - background
    image = np.where(image > 0.1 * image.max(), image, 0.0)
    v, u = np.mgrid[0:image.shape[0], 0:image.shape[1]].astype(np.float64)
    return np.array([(u * image).sum(), (v * image).sum()]) / image.sum()


def blob_views(points, K, hw):
    """Tensor [n, 3, H, W] with one blob per view at the projection of points[i] under K[i]."""
    images = [np.repeat(render_blob(*hw, project(k, p))[None], 3, 0) for k, p in zip(K.numpy(), points)]
    return torch.tensor(np.stack(images), dtype=torch.float32)


K0 = make_intrinsics(300.0, 280.0, 161.3, 118.7).double()
HW0 = (240, 320)
POINTS = [np.array([0.31, -0.22, 4.0]), np.array([-0.5, 0.35, 6.0])]


def assert_blobs_match(images, K, points, tol=0.1, mirrored=False):
    for img, k, p in zip(images, K, points):
        p = np.array([-p[0], p[1], p[2]]) if mirrored else p
        expected = project(k.numpy(), p)
        got = centroid(img[0].numpy())
        assert np.abs(got - expected).max() < tol, (got, expected)


# ----------------------------------------------------------------------------- geometric transforms
@pytest.mark.parametrize("out_hw", [(96, 128), (120, 200), (300, 400)])
def test_resize_views_tensor_keeps_projection(out_hw):
    K = K0.expand(2, 3, 3)
    images = blob_views(POINTS, K, HW0)
    out, K2 = resize_views(images, K, out_hw)
    assert out.shape == (2, 3, *out_hw) and K2.shape == (2, 3, 3)
    assert_blobs_match(out, K2, POINTS, tol=0.05)


def test_resize_views_numpy_list_uint8():
    K = K0.expand(2, 3, 3)
    images = blob_views(POINTS, K, HW0)
    arrays = [(img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for img in images]
    out, K2 = resize_views(arrays, K, (90, 130))
    assert out.dtype == torch.float32 and out.shape == (2, 3, 90, 130)
    assert float(out.max()) <= 1.0
    assert_blobs_match(out, K2, POINTS, tol=0.1)


def test_crop_and_flip_views_keep_projection():
    K = K0.expand(2, 3, 3)
    images = blob_views(POINTS, K, HW0)
    cropped, Kc = crop_views(images, K, top=17, left=33, out_hw=(180, 240))
    assert cropped.shape[-2:] == (180, 240)
    assert_blobs_match(cropped, Kc, POINTS, tol=0.05)
    flipped, Kf = flip_views(images, K)
    assert_blobs_match(flipped, Kf, POINTS, tol=0.05, mirrored=True)
    with pytest.raises(ValueError, match="does not lie inside"):
        crop_views(images, K, top=100, left=0, out_hw=(180, 240))


def test_chain_of_transforms_keeps_projection():
    K = K0.expand(2, 3, 3)
    images = blob_views(POINTS, K, HW0)
    x, k = resize_views(images, K, (180, 250))
    x, k = crop_views(x, k, top=10, left=21, out_hw=(150, 200))
    x, k = flip_views(x, k)
    x, k = resize_views(x, k, (96, 128))
    assert_blobs_match(x, k, POINTS, tol=0.1, mirrored=True)


def test_resize_views_batched_leading_dims():
    images = torch.rand(2, 3, 4, 3, 40, 60)
    K = K0.float().expand(3, 4, 3, 3)
    out, K2 = resize_views(images, K, (20, 30))
    assert out.shape == (2, 3, 4, 3, 20, 30) and K2.shape == (3, 4, 3, 3)
    torch.testing.assert_close(K2[0, 0], resize_intrinsics(K0.float(), (40, 60), (20, 30)))


# ----------------------------------------------------------------------------- image_io
@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_read_image_reduced_decode_keeps_intrinsics(tmp_path, ext):
    hw = (480, 640)
    K = make_intrinsics(500.0, 480.0, 322.4, 236.1).double()
    point = np.array([0.4, -0.3, 5.0])
    blob = render_blob(*hw, project(K.numpy(), point), sigma=8.0)
    rgb = np.stack([40 + 200 * blob, 30 + 180 * blob, 20 + 150 * blob], -1).round().astype(np.uint8)
    path = tmp_path / f"blob.{ext}"
    cv2.imwrite(str(path), rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 97] if ext == "jpg" else [])
    target = (100, 150)
    assert reduction_factor(hw, target) == 4
    reduced, original_hw = read_image(path, target)
    assert original_hw == hw and reduced.shape == (120, 160, 3) and reduced.dtype == np.uint8
    final = resize_rgb(reduced, target)
    K_final = resize_intrinsics(K, original_hw, target).numpy()
    expected = project(K_final, point)
    got = centroid(final[..., 0].astype(np.float64), background=40.0)
    assert np.abs(got - expected).max() < 0.3, (got, expected)
    # The full decode agrees with the original pixels.
    full, full_hw = read_image(path)
    assert full_hw == hw and full.shape == (*hw, 3)
    assert np.abs(full.astype(int) - rgb.astype(int)).max() <= (0 if ext == "png" else 12)


def test_read_image_sizes_and_factors(tmp_path):
    odd = np.zeros((481, 640, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "odd.jpg"), odd)
    image, hw = read_image(tmp_path / "odd.jpg", (100, 150))
    assert hw == (481, 640) and image.shape[:2] == (481, 640)  # 481 not divisible: no reduction
    assert image_size(tmp_path / "odd.jpg") == (481, 640)
    assert reduction_factor((1216, 1936), (384, 640)) == 2
    assert reduction_factor((1216, 1936), (152, 242)) == 8
    assert reduction_factor((900, 1600), (100, 200)) == 4  # 900 / 8 is not an integer
    assert reduction_factor((1216, 1936), (700, 640)) == 1
    grey = np.full((16, 24), 77, np.uint8)
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    image, hw = read_image(tmp_path / "grey.png")
    assert image.shape == (16, 24, 3) and (image == 77).all()


def test_read_image_errors(tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(FileNotFoundError, match="nope.png"):
        read_image(missing)
    cv2.imwrite(str(tmp_path / "good.png"), np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    corrupt = tmp_path / "corrupt.png"
    data = (tmp_path / "good.png").read_bytes()
    corrupt.write_bytes(data[:len(data) // 2])  # truncated
    with pytest.raises(ValueError, match="could not decode .*corrupt.png"):
        read_image(corrupt)
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(ValueError, match="could not decode .*notes.jpg as an image"):
        read_image(text, (8, 8))
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.jpg"):
        read_image(empty)
    with pytest.raises(FileNotFoundError):
        read_mask(missing)


def test_read_mask(tmp_path):
    mask = np.full((40, 60), 255, np.uint8)
    mask[30:, :] = 0
    cv2.imwrite(str(tmp_path / "m.png"), mask)
    m = read_mask(tmp_path / "m.png")
    assert m.dtype == np.float32 and m.shape == (40, 60)
    assert m[:30].min() == 1.0 and m[30:].max() == 0.0
    small = read_mask(tmp_path / "m.png", (20, 24))
    assert small.shape == (20, 24) and small.min() >= 0 and small.max() <= 1
    np.testing.assert_allclose(small.mean(), 0.75, atol=1e-6)  # INTER_AREA keeps the valid fraction
    rgba = np.zeros((40, 60, 4), np.uint8)
    rgba[:35, :, :3] = 255
    rgba[..., 3] = 255
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba)
    np.testing.assert_allclose(read_mask(tmp_path / "rgba.png").mean(), 35 / 40, atol=1e-6)


# ----------------------------------------------------------------------------- colour jitter
def test_color_jitter_zero_strength_is_identity():
    images = torch.rand(3, 4, 3, 8, 10)
    params = sample_color_jitter(torch.Generator().manual_seed(0), (0, 0, 0, 0), num=4)
    assert torch.equal(apply_color_jitter(images, params, per_camera=True), images)


def test_color_jitter_shared_across_frames_and_per_camera():
    gen = torch.Generator().manual_seed(3)
    frame = torch.rand(1, 1, 3, 12, 16).expand(3, 4, 3, 12, 16).contiguous()
    params = sample_color_jitter(gen, (0.4, 0.4, 0.4, 0.1), num=4)
    out = apply_color_jitter(frame, params, per_camera=True)
    assert out.shape == frame.shape and out.min() >= 0 and out.max() <= 1
    for t in range(1, 3):
        assert torch.equal(out[t], out[0])  # one draw shared by the frames
    assert not torch.allclose(out[0, 0], out[0, 1])  # cameras differ
    # Applying per frame gives the same as all at once (no dependence across frames).
    other = torch.rand(3, 4, 3, 12, 16)
    together = apply_color_jitter(other, params)
    for t in range(3):
        torch.testing.assert_close(apply_color_jitter(other[t], params), together[t])
    shared = sample_color_jitter(gen, (0.4, 0.4, 0.4, 0.1), num=1)
    out = apply_color_jitter(frame, shared, per_camera=False)
    for n in range(1, 4):
        assert torch.equal(out[:, n], out[:, 0])
    with pytest.raises(ValueError, match="per_camera"):
        apply_color_jitter(frame, shared, per_camera=True)


def test_color_jitter_operations_match_definitions():
    gen = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 6, 7)
    base = {k: torch.tensor([1.0, 1.0]) for k in ("brightness", "contrast", "saturation")}
    base.update(hue=torch.zeros(2), order=torch.arange(4).expand(2, 4))
    p = dict(base, brightness=torch.tensor([1.2, 0.8]))
    out = apply_color_jitter(img, p)
    torch.testing.assert_close(out, (img * torch.tensor([1.2, 0.8]).view(2, 1, 1, 1)).clamp(0, 1))
    p = dict(base, saturation=torch.tensor([0.0, 0.0]))
    out = apply_color_jitter(img, p)
    gray = 0.2989 * img[:, 0] + 0.587 * img[:, 1] + 0.114 * img[:, 2]
    torch.testing.assert_close(out, gray[:, None].expand_as(img))
    # A third of a turn of hue maps pure red to pure green.
    p = dict(base, hue=torch.tensor([1.0 / 3.0, 1.0 / 3.0]))
    red = torch.zeros(2, 3, 2, 2)
    red[:, 0] = 0.8
    out = apply_color_jitter(red, p)
    torch.testing.assert_close(out[:, 1], red[:, 0], atol=1e-5, rtol=0)
    assert out[:, 0].abs().max() < 1e-5 and out[:, 2].abs().max() < 1e-5
    params = sample_color_jitter(gen, (0.2, 0.2, 0.2, 0.05), num=1000)
    assert params["brightness"].min() >= 0.8 and params["brightness"].max() <= 1.2
    assert params["hue"].abs().max() <= 0.05
    assert sorted(params["order"][0].tolist()) == [0, 1, 2, 3]


# ----------------------------------------------------------------------------- sparse depth
def test_resize_sparse_depth_keeps_values_and_nearest_wins():
    depth = torch.zeros(2, 1, 8, 8)
    depth[0, 0, 2, 2] = 7.0  # (u, v) = (2, 2) -> (1, 1) at half size
    depth[0, 0, 3, 3] = 5.0  # (3, 3) -> 3.5 * 0.5 - 0.5 = 1.25 -> (1, 1) as well
    depth[1, 0, 6, 1] = 3.5
    out = resize_sparse_depth(depth, (4, 4))
    assert out.shape == (2, 1, 4, 4)
    assert out[0, 0, 1, 1] == 5.0  # both collide at (1, 1): the nearer wins
    assert (out[0] > 0).sum() == 1
    assert out[1, 0, 3, 0] == 3.5 and (out[1] > 0).sum() == 1
    # Upsampling keeps every measurement, unchanged.
    sparse = torch.where(torch.rand(1, 1, 10, 12) > 0.8, torch.rand(1, 1, 10, 12) * 50 + 1, torch.zeros(1, 1, 10, 12))
    up = resize_sparse_depth(sparse, (20, 24))
    assert (up > 0).sum() == (sparse > 0).sum()
    assert torch.equal(up[up > 0].sort().values, sparse[sparse > 0].sort().values)


# ----------------------------------------------------------------------------- stereo flip + swap
def _stereo_sample(baseline=0.54):
    K = make_intrinsics(200.0, 200.0, 158.2, 119.4).double().expand(2, 3, 3).clone()
    E = torch.eye(4, dtype=torch.float64).expand(2, 4, 4).clone()
    E[1, 0, 3] = baseline  # the right camera sits at +b along x of the left camera
    point_rig = np.array([0.3, 0.1, 5.0])
    points_cam = [(invert_transform(e) @ torch.tensor([*point_rig, 1.0], dtype=torch.float64))[:3].numpy() for e in E]
    images = blob_views(points_cam, K, HW0)
    pose = torch.eye(4, dtype=torch.float64).expand(2, 4, 4).clone()
    pose[1, :3, 3] = torch.tensor([0.1, -0.05, 1.2])  # rig at frame 1 seen from the target rig
    sample = {"image": images[None], "K": K, "extrinsics": E, "mask": torch.ones(2, 1, *HW0, dtype=torch.float64),
              "pose_gt": pose}
    return sample, point_rig


def test_flip_sample_swaps_stereo_consistently():
    sample, point_rig = _stereo_sample()
    out = flip_sample(sample)
    # Rectified pair: the extrinsics come back unchanged (the baseline keeps its sign).
    torch.testing.assert_close(out["extrinsics"], sample["extrinsics"])
    # The swapped, flipped images show the mirrored point where the new K and extrinsics put it.
    E0_mirrored = mirror_transform(sample["extrinsics"][1])  # new rig = mirrored right camera
    mirrored_rig = torch.tensor([-point_rig[0], point_rig[1], point_rig[2], 1.0], dtype=torch.float64)
    point_new_rig = invert_transform(E0_mirrored) @ mirrored_rig
    for cam in range(2):
        p_cam = (invert_transform(out["extrinsics"][cam]) @ point_new_rig)[:3].numpy()
        expected = project(out["K"][cam].numpy(), p_cam)
        got = centroid(out["image"][0, cam, 0].numpy())
        assert np.abs(got - expected).max() < 0.05, (cam, got, expected)
    # The flipped left image is now camera 1.
    torch.testing.assert_close(out["image"][0, 1], sample["image"][0, 0].flip(-1))
    # pose_gt maps a point of rig(t) into rig(target) in the new (mirrored, re-anchored) rig frame.
    x_t = torch.tensor([1.0, 2.0, 3.0, 1.0], dtype=torch.float64)
    to_new = invert_transform(E0_mirrored) @ torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(out["pose_gt"][1] @ (to_new @ x_t), to_new @ (sample["pose_gt"][1] @ x_t))
    with pytest.raises(ValueError, match="kitti2015_flow"):
        swap_stereo(dict(sample, kitti2015_flow=torch.zeros(2, 4, 4)))
    assert "kitti2015_flow" not in swap_stereo(dict(sample, kitti2015_flow=torch.zeros(2, 4, 4)), "drop")


@pytest.mark.parametrize("out_hw", [(7, 9), (40, 50)])
def test_resize_views_stays_in_the_input_range(out_hw):
    # Saturated content: the antialiased filter's float rounding must not leave [0, 1].
    images = torch.ones(2, 3, 21, 33)
    images[:, :, ::2] = 0.0
    resized, _ = resize_views(images, torch.eye(3), out_hw)
    assert resized.min() >= 0.0 and resized.max() <= 1.0
    assert torch.equal(resize_views(torch.ones(1, 3, 21, 33), torch.eye(3), out_hw)[0], torch.ones(1, 3, *out_hw))


def test_draw_crop_box_stays_inside_and_is_reproducible():
    from dataset.transforms import draw_crop_box

    boxes = [draw_crop_box((100, 300), (80, 200), (0.5, 0.9), np.random.default_rng(seed)) for seed in range(50)]
    for top, left, (h, w) in boxes:
        assert 0 <= top and top + h <= 100 and 0 <= left and left + w <= 300
        assert 40 <= h <= 72 and 100 <= w <= 180            # 0.5..0.9 of the 80x200 crop
    assert len(set(boxes)) > 40                             # the draws vary
    assert draw_crop_box((100, 300), None, (0.5, 0.9), np.random.default_rng(7)) == \
        draw_crop_box((100, 300), None, (0.5, 0.9), np.random.default_rng(7))
