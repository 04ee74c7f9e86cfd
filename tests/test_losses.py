"""The shared loss terms (models/losses) on inputs whose answer is known."""
import math

import pytest
import torch

from geometry import (
    axis_angle_to_matrix,
    backproject,
    compose,
    invert_intrinsics,
    invert_transform,
    make_intrinsics,
    make_transform,
    pixel_grid,
    project,
    transform_point_map,
)
from models.losses import (
    SSIM_C1,
    SSIM_C2,
    align_intensity,
    automask,
    edge_aware_smoothness,
    masked_mean,
    min_reprojection,
    overlap_view,
    photometric_error,
    plain_smoothness,
    pose_consistency_loss,
    second_order_edge_aware_smoothness,
    spatial_transform,
    spatio_temporal_transform,
    ssim_error,
    warp_views,
)


def rigid(axis_angle, translation, dtype=torch.float64):
    """T [4, 4] from a rotation vector and a translation."""
    R = axis_angle_to_matrix(torch.tensor(axis_angle, dtype=dtype))
    return make_transform(R, torch.tensor(translation, dtype=dtype))


def translation(t, dtype=torch.float64):
    return make_transform(torch.eye(3, dtype=dtype), torch.tensor(t, dtype=dtype))


def constant(value, shape=(2, 3, 8, 10)):
    return torch.full(shape, float(value), dtype=torch.float64)


def ssim_closed_form_error(a, b):
    """(1 - SSIM) / 2 of two constant patches a, b: variances and covariance are 0."""
    ssim = (2 * a * b + SSIM_C1) * SSIM_C2 / ((a * a + b * b + SSIM_C1) * SSIM_C2)
    return (1 - ssim) / 2


# ----------------------------------------------------------------------------- photometric error
def test_identical_images_give_exactly_zero_error():
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(2, 4, 3, 12, 16, generator=gen)  # [B, N, 3, H, W]
    image[..., :4, :4] = 0.0  # a black flat patch (where an eps in the SSIM denominator would cost 0.05)
    assert ssim_error(image, image).shape == (2, 4, 1, 12, 16)
    assert torch.equal(ssim_error(image, image), torch.zeros(2, 4, 1, 12, 16))
    assert torch.equal(photometric_error(image, image), torch.zeros(2, 4, 1, 12, 16))


@pytest.mark.parametrize("a,b", [(0.5, 0.6), (0.1, 0.9), (0.0, 1.0), (0.3, 0.3)])
def test_ssim_of_two_constants_is_the_closed_form_everywhere_borders_included(a, b):
    """Reflection padding keeps every 3x3 window constant; zero padding would change the border."""
    error = ssim_error(constant(a), constant(b))
    expected = ssim_closed_form_error(a, b)
    assert torch.allclose(error, torch.full_like(error, expected), atol=1e-9, rtol=0)
    photometric = photometric_error(constant(a), constant(b))
    assert torch.allclose(photometric, torch.full_like(photometric, 0.85 * expected + 0.15 * abs(a - b)), atol=1e-9)
    l1_only = photometric_error(constant(a), constant(b), ssim_weight=0.0)
    assert torch.allclose(l1_only, torch.full_like(l1_only, abs(a - b)), atol=1e-12)


def test_ssim_and_l1_are_channel_averaged():
    a, b = [0.1, 0.5, 0.9], [0.3, 0.5, 0.2]
    x = torch.tensor(a, dtype=torch.float64)[:, None, None].expand(2, 3, 5, 6)
    y = torch.tensor(b, dtype=torch.float64)[:, None, None].expand(2, 3, 5, 6)
    ssim = sum(ssim_closed_form_error(ai, bi) for ai, bi in zip(a, b)) / 3
    l1 = sum(abs(ai - bi) for ai, bi in zip(a, b)) / 3
    error = photometric_error(x, y, ssim_weight=0.6)
    assert error.shape == (2, 1, 5, 6)
    assert torch.allclose(error, torch.full_like(error, 0.6 * ssim + 0.4 * l1), atol=1e-9)


def test_ssim_pads_by_reflection_at_the_border():
    """Column 0's window reads columns (1, 0, 1) under reflection ((0, 0, 1) under replication)."""
    p, q, c = 0.9, 0.2, 0.5
    x = constant(q, (1, 1, 6, 7))
    x[..., :, 1] = p
    y = constant(c, (1, 1, 6, 7))
    mu_x = (2 * p + q) / 3
    var_x = (2 * p * p + q * q) / 3 - mu_x * mu_x
    ssim = (2 * mu_x * c + SSIM_C1) * SSIM_C2 / ((mu_x**2 + c**2 + SSIM_C1) * (var_x + SSIM_C2))
    error = ssim_error(x, y)[0, 0, :, 0]
    assert torch.allclose(error, torch.full_like(error, (1 - ssim) / 2), atol=1e-9)


def test_photometric_errors_lie_in_zero_one():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, 20, 24, generator=gen)
    checker = ((torch.arange(20)[:, None] + torch.arange(24)[None]) % 2).float().expand(3, 3, 20, 24)
    for pred, target in [(x, torch.rand(3, 3, 20, 24, generator=gen)), (checker, 1 - checker), (x, 1 - x)]:
        for error in (ssim_error(pred, target), photometric_error(pred, target)):
            assert error.min() >= 0 and error.max() <= 1
    assert ssim_error(checker, 1 - checker).max() > 0.4  # anti-correlated patches are far from 0


# ----------------------------------------------------------------------------- min reprojection / automask
def test_min_reprojection_picks_the_smaller_error_per_pixel():
    gen = torch.Generator().manual_seed(2)
    errors = [torch.rand(2, 3, 1, 5, 6, generator=gen) for _ in range(3)]
    expected = torch.minimum(torch.minimum(errors[0], errors[1]), errors[2])
    assert torch.equal(min_reprojection(errors), expected)
    assert torch.equal(min_reprojection(torch.stack(errors)), expected)


def test_automask_keeps_exactly_the_pixels_where_warping_beats_identity():
    gen = torch.Generator().manual_seed(3)
    warped = [torch.rand(2, 1, 16, 16, generator=gen) for _ in range(2)]
    identity = [torch.rand(2, 1, 16, 16, generator=gen) for _ in range(2)]
    tie = torch.zeros(2, 1, 16, 16, dtype=torch.bool)
    tie[:, :, :4] = True  # make the minima equal there: a tie is masked out
    identity[0] = torch.where(tie, min_reprojection(warped), identity[0])
    identity[1] = torch.where(tie, torch.ones_like(identity[1]), identity[1])
    mask = automask(warped, identity, noise_std=0.0)
    expected = (min_reprojection(warped) < min_reprojection(identity)).float()
    assert torch.equal(mask, expected)
    assert mask[tie].sum() == 0 and 0 < mask.mean() < 1
    # by hand at one pixel
    w = min(warped[0][1, 0, 9, 5].item(), warped[1][1, 0, 9, 5].item())
    i = min(identity[0][1, 0, 9, 5].item(), identity[1][1, 0, 9, 5].item())
    assert mask[1, 0, 9, 5].item() == float(w < i)


def test_automask_noise_is_deterministic_given_a_generator_and_only_breaks_ties():
    warped = torch.rand(1, 2, 1, 40, 40, generator=torch.Generator().manual_seed(4))
    identity = warped.clone()  # everything is a tie ...
    identity[..., 20:, :] += 1e-3  # ... except the bottom half, far beyond the noise
    first = automask(warped, identity, generator=torch.Generator().manual_seed(7))
    again = automask(warped, identity, generator=torch.Generator().manual_seed(7))
    other = automask(warped, identity, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert torch.all(first[..., 20:, :] == 1)
    assert 0.3 < first[..., :20, :].mean() < 0.7  # ties are decided by the noise, about half each way
    assert torch.all(automask(warped, identity, noise_std=0.0)[..., :20, :] == 0)


# ----------------------------------------------------------------------------- masked mean
def test_masked_mean_with_a_soft_mask_by_hand():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[0.5, 0.0, 1.0], [0.25, 0.25, 0.0]])
    total = (0.5 * 1 + 1.0 * 3 + 0.25 * 4 + 0.25 * 5) / (0.5 + 1.0 + 0.25 + 0.25)
    assert torch.allclose(masked_mean(loss, mask), torch.tensor(total), atol=1e-6)
    per_item = torch.tensor([(0.5 * 1 + 3.0) / 1.5, (0.25 * 4 + 0.25 * 5) / 0.5])
    assert masked_mean(loss, mask, keep_dims=1).shape == (2,)
    assert torch.allclose(masked_mean(loss, mask, keep_dims=1), per_item, atol=1e-6)


def test_masked_mean_per_item_and_camera_with_a_broadcast_mask():
    gen = torch.Generator().manual_seed(5)
    loss = torch.rand(2, 3, 3, 4, 5, generator=gen, dtype=torch.float64)  # [B, N, C, H, W]
    mask = torch.rand(2, 3, 1, 4, 5, generator=gen, dtype=torch.float64)  # soft, one channel
    out = masked_mean(loss, mask, keep_dims=2)
    assert out.shape == (2, 3)
    for b in range(2):
        for n in range(3):
            expected = (loss[b, n] * mask[b, n]).sum() / (3 * mask[b, n].sum() + 1e-8)
            assert torch.allclose(out[b, n], expected, atol=1e-12)


def test_masked_mean_of_an_empty_mask_is_zero_without_nan():
    loss = torch.rand(2, 1, 4, 4, requires_grad=True)
    mask = torch.zeros(2, 1, 4, 4)
    mask[1, 0, 0, 0] = 1.0
    per_item = masked_mean(loss, mask, keep_dims=1)
    assert per_item[0].item() == 0.0 and torch.allclose(per_item[1], loss[1, 0, 0, 0], atol=1e-6)
    scalar = masked_mean(loss, torch.zeros_like(mask))
    assert scalar.item() == 0.0
    scalar.backward()
    assert torch.isfinite(loss.grad).all() and torch.all(loss.grad == 0)


# ----------------------------------------------------------------------------- smoothness
def test_edge_aware_smoothness_of_a_constant_disparity_is_zero():
    image = torch.rand(2, 6, 3, 8, 10, generator=torch.Generator().manual_seed(6))
    disp = torch.full((2, 6, 1, 8, 10), 0.37)
    for normalise in (True, False):
        assert edge_aware_smoothness(disp, image, normalise=normalise).item() == 0.0


def step(height, width, low, high, column, channels=1):
    x = torch.full((1, channels, height, width), float(low), dtype=torch.float64)
    x[..., column:] = high
    return x


def test_a_disparity_step_on_an_image_edge_costs_exp_minus_the_edge():
    h, w = 6, 9
    disp = step(h, w, 1.0, 2.0, 4)  # one jump of 1 per row, between columns 3 and 4
    edge = step(h, w, 0.2, 0.7, 4, channels=3)  # image jump of 0.5 at the same place
    flat = torch.full((1, 3, h, w), 0.2, dtype=torch.float64)
    on_edge = edge_aware_smoothness(disp, edge, normalise=False)
    on_flat = edge_aware_smoothness(disp, flat, normalise=False)
    # mean over the H x (W-1) x-differences (one jump per row); the y term is 0
    assert torch.allclose(on_flat, torch.tensor(1.0 / (w - 1), dtype=torch.float64))
    assert torch.allclose(on_edge, torch.tensor(math.exp(-0.5) / (w - 1), dtype=torch.float64))
    # only one channel of the image has the edge: the gradient is channel-averaged
    one_channel = flat.clone()
    one_channel[:, 0, :, 4:] = 0.8
    assert torch.allclose(
        edge_aware_smoothness(disp, one_channel, normalise=False),
        torch.tensor(math.exp(-0.6 / 3) / (w - 1), dtype=torch.float64),
    )


def test_edge_aware_smoothness_normalises_by_the_mean_disparity():
    h, w = 6, 8
    disp = step(h, w, 1.0, 3.0, 4)  # mean 2 -> normalised 0.5 and 1.5: one jump of 1 per row
    flat = torch.zeros(1, 3, h, w, dtype=torch.float64)
    assert torch.allclose(edge_aware_smoothness(disp, flat), torch.tensor(1.0 / (w - 1), dtype=torch.float64))
    gen = torch.Generator().manual_seed(7)
    disp = torch.rand(2, 3, 1, 10, 12, generator=gen, dtype=torch.float64) + 0.1
    image = torch.rand(2, 3, 3, 10, 12, generator=gen, dtype=torch.float64)
    assert torch.allclose(edge_aware_smoothness(7.0 * disp, image), edge_aware_smoothness(disp, image), rtol=1e-6)
    raw = edge_aware_smoothness(disp, image, normalise=False)
    assert torch.allclose(edge_aware_smoothness(7.0 * disp, image, normalise=False), 7.0 * raw)


def test_plain_smoothness_ignores_the_image_and_normalises():
    h, w = 6, 8
    disp = step(h, w, 1.0, 3.0, 4)  # normalised jump of 1 in each of the h rows
    assert torch.allclose(plain_smoothness(disp), torch.tensor(1.0 / (w - 1), dtype=torch.float64))
    transposed = 5.0 * disp.transpose(-1, -2)  # the same jump along y, scaled
    assert torch.allclose(plain_smoothness(transposed), torch.tensor(1.0 / (w - 1), dtype=torch.float64))


def test_second_order_smoothness_of_a_linear_ramp_is_the_robust_floor():
    h, w = 7, 9
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    ramp = (0.3 * u - 0.7 * v + 2.0).expand(2, 3, h, w)  # a scene-flow-like 3-channel map
    image = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    loss = second_order_edge_aware_smoothness(ramp, image)
    assert loss <= math.sqrt(1e-6) + 1e-9  # rho(0) = sqrt(eps) times weights <= 1
    flat = torch.full_like(image, 0.4)
    assert torch.allclose(second_order_edge_aware_smoothness(ramp, flat), torch.tensor(1e-3, dtype=torch.float64))
    assert second_order_edge_aware_smoothness(ramp, flat, eps=0.0) < 1e-6


def test_second_order_smoothness_of_a_quadratic_by_hand():
    h, w = 7, 16
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    a = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    pred = (a[:, None, None] * u**2)[None]  # p_xx = 2a everywhere, p_yy = 0
    c = 0.002
    image = (c * u).expand(1, 3, h, w)  # 2-pixel difference 2c along x, 0 along y
    rho = lambda x: math.sqrt(x * x + 1e-6)  # noqa: E731
    expected_x = math.exp(-150 * 2 * c) * sum(rho(2 * ai) for ai in a.tolist()) / 3
    expected = (expected_x + rho(0.0)) / 2
    loss = second_order_edge_aware_smoothness(pred, image)
    assert torch.allclose(loss, torch.tensor(expected, dtype=torch.float64), rtol=1e-9)
    # divided by the 3D point norm, taken at the interior pixels where the differences are centred
    norm = (1.0 + u).expand(1, 1, h, w)
    flat = torch.full((1, 3, h, w), 0.5, dtype=torch.float64)
    x_terms = [sum(rho(2 * ai) for ai in a.tolist()) / 3 / (1.0 + uu + 1e-8) for uu in range(1, w - 1)]
    y_terms = [rho(0.0) / (1.0 + uu + 1e-8) for uu in range(w)]
    expected = (sum(x_terms) / len(x_terms) + sum(y_terms) / len(y_terms)) / 2
    loss = second_order_edge_aware_smoothness(pred, flat, point_norm=norm)
    assert torch.allclose(loss, torch.tensor(expected, dtype=torch.float64), rtol=1e-9)


# ----------------------------------------------------------------------------- intensity alignment
def alignment_case():
    gen = torch.Generator().manual_seed(9)
    target = 0.2 + 0.6 * torch.rand(2, 3, 10, 12, generator=gen, dtype=torch.float64)
    region = torch.zeros(2, 1, 10, 12, dtype=torch.float64)
    region[..., :, :7] = 1.0  # a partial region
    warped = 1.7 * target - 0.1  # an affine change of exposure on the region ...
    warped = torch.where(region.bool(), warped, torch.rand(2, 3, 10, 12, generator=gen, dtype=torch.float64))
    return target, region, warped  # ... and anything outside it


def test_intensity_alignment_undoes_an_affine_exposure_change():
    target, region, warped = alignment_case()
    aligned = align_intensity(warped, target, region, region)
    assert torch.allclose(aligned * region, target * region, atol=1e-7)
    assert torch.all(aligned[(1 - region).bool().expand_as(aligned)] == 0)  # zero outside the warp mask


def test_intensity_alignment_reference_variance_counts_every_pixel():
    target, region, warped = alignment_case()
    aligned = align_intensity(warped, target, region, region, reference_variance=True)

    def reference_stats(x):
        mean = (x * region).sum(dim=(1, 2, 3), keepdim=True) / (3 * region.sum(dim=(1, 2, 3), keepdim=True))
        variance = ((x - mean) ** 2).sum(dim=(1, 2, 3), keepdim=True) / (3 * 10 * 12)
        return mean, variance.sqrt()

    mean_t, std_t = reference_stats(target)
    mean_w, std_w = reference_stats(warped)
    expected = ((warped - mean_w) / (std_w + 1e-8) * std_t + mean_t) * region
    assert torch.allclose(aligned, expected, atol=1e-10)
    assert ((aligned - target) * region).abs().max() > 1e-2  # the quirk does not undo the change


def test_intensity_alignment_leaves_an_item_with_an_empty_region_unchanged():
    target, region, warped = alignment_case()
    region[1] = 0.0
    warped_mask = torch.ones_like(region)
    warped_mask[0] = region[0]
    aligned = align_intensity(warped, target, region, warped_mask)
    assert torch.equal(aligned[1], warped[1])
    assert torch.allclose(aligned[0] * region[0], target[0] * region[0], atol=1e-7)


def test_intensity_alignment_statistics_carry_no_gradient():
    target, region, warped = alignment_case()
    warped = warped.clone().requires_grad_(True)
    weights = torch.rand(warped.shape, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    (align_intensity(warped, target, region, region) * weights).sum().backward()
    # d/dw of (w - mu_w) / sigma_w * sigma_t with constant statistics: sigma_t / sigma_w = 1 / 1.7
    assert torch.allclose(warped.grad, weights * region / 1.7, atol=1e-7)


# ----------------------------------------------------------------------------- view rendering
# A textured plane z = PLANE_Z in the frame of the target camera (the "world"), rendered in closed
# form: a camera's ray through pixel (u, v) meets the plane at a known point, whose texture is a
# smooth function of the 3D point.
PLANE_Z = 5.0
H, W = 36, 48
K_TARGET = make_intrinsics(40.0, 42.0, 23.6, 17.2).double()
K_SOURCE = make_intrinsics(44.0, 43.0, 24.9, 18.1).double()


def texture(points):
    x, y, z = points
    return torch.stack(
        (
            0.5 + 0.3 * torch.sin(1.7 * x + 1.1 * y),
            0.5 + 0.3 * torch.cos(1.3 * y - 0.4 * x + 0.3),
            0.5 + 0.25 * torch.sin(0.9 * x) * torch.cos(1.2 * y + 0.2 * z),
        )
    )


def render_plane(K, T_world_cam):
    """Image [3, H, W] and z-depth [1, H, W] of the plane seen by a camera at T_world_cam."""
    rays = T_world_cam[:3, :3] @ (invert_intrinsics(K) @ pixel_grid(H, W, dtype=torch.float64).flatten(1))
    origin = T_world_cam[:3, 3]
    depth = (PLANE_Z - origin[2]) / rays[2]  # the camera ray has z = 1: the parameter is the z-depth
    assert (depth > 0).all()
    return texture(origin[:, None] + depth * rays).reshape(3, H, W), depth.reshape(1, H, W)


def plane_rig():
    """Two cameras of a rig: target and source images, the target depth and both extrinsics."""
    T_source_target = rigid([0.02, -0.05, 0.03], [-0.4, 0.1, 0.2])
    E_target = rigid([1.2, -0.3, 0.4], [1.5, 0.2, 1.6])  # T_rig_target, arbitrary
    E_source = compose(E_target, invert_transform(T_source_target))  # T_rig_source
    target, depth = render_plane(K_TARGET, torch.eye(4, dtype=torch.float64))
    source, _ = render_plane(K_SOURCE, invert_transform(T_source_target))
    return target, depth, source, E_target, E_source


def erode(mask):
    """Pixels whose 3x3 neighbourhood is valid (the SSIM window sees no invalid pixel)."""
    return -torch.nn.functional.max_pool2d(-mask, 3, stride=1, padding=1)


def test_warp_with_the_true_depth_and_pose_reproduces_the_target():
    target, depth, source, E_target, E_source = plane_rig()
    T_source_target = spatial_transform(E_target, E_source)
    source_mask = torch.ones(1, H, W, dtype=torch.float64)
    image, mask = warp_views(source[None], source_mask[None], depth[None], K_TARGET, K_SOURCE, T_source_target)
    assert image.shape == (1, 3, H, W) and mask.shape == (1, 1, H, W)
    assert set(mask.unique().tolist()) <= {0.0, 1.0} and 0.5 < mask.mean() < 1.0
    inner = erode(mask)
    true_error = masked_mean(photometric_error(image, target[None]), inner)
    assert true_error < 5e-3, true_error

    wrong = compose(translation([0.15, 0.0, 0.0]), T_source_target)
    image_w, mask_w = warp_views(source[None], source_mask[None], depth[None], K_TARGET, K_SOURCE, wrong)
    wrong_error = masked_mean(photometric_error(image_w, target[None]), erode(mask_w))
    assert wrong_error > 10 * true_error, (wrong_error, true_error)


def test_warp_views_carries_the_source_mask_and_batches():
    target, depth, source, E_target, E_source = plane_rig()
    T = spatial_transform(E_target, E_source)
    source_mask = torch.ones(1, H, W, dtype=torch.float64)
    source_mask[:, :, : W // 2] = 0.0  # e.g. the ego vehicle covers the left half of the source
    # [B, N] = [2, 3] leading dims, all broadcast from one view
    images = source.expand(2, 3, 3, H, W)
    image, mask = warp_views(images, source_mask.expand(2, 3, 1, H, W), depth, K_TARGET, K_SOURCE, T)
    assert image.shape == (2, 3, 3, H, W) and mask.shape == (2, 3, 1, H, W)
    # with a full source mask, only the in-image validity remains
    _, full = warp_views(source, torch.ones_like(source_mask), depth, K_TARGET, K_SOURCE, T)
    assert mask[0, 0].sum() < 0.7 * full.sum()
    # where the mask is 1, the target pixel lands in the unmasked half of the source
    pixels, _ = project(transform_point_map(T, backproject(depth, invert_intrinsics(K_TARGET))), K_SOURCE)
    kept = mask[0, 0, 0] > 0
    assert (pixels[0][kept] >= W // 2 - 0.5).all()


def test_warp_views_is_nan_free():
    target, depth, source, E_target, E_source = plane_rig()
    depth = depth.clone()
    depth[0, 3, 4] = float("nan")
    depth[0, 5, 6] = float("inf")
    depth[0, 7, 8] = -2.0
    image, mask = warp_views(source, torch.ones(1, H, W, dtype=torch.float64), depth, K_TARGET, K_SOURCE,
                             spatial_transform(E_target, E_source))
    assert torch.isfinite(image).all() and torch.isfinite(mask).all()
    assert mask[0, 3, 4] == 0 and mask[0, 5, 6] == 0 and mask[0, 7, 8] == 0
    # a non-finite source pixel (a corrupt frame) is masked out instead of spreading NaN
    corrupt = source.clone()
    corrupt[1, H // 2, W // 2] = float("nan")
    image, mask_corrupt = warp_views(corrupt, torch.ones(1, H, W, dtype=torch.float64), depth, K_TARGET, K_SOURCE,
                                     spatial_transform(E_target, E_source))
    assert torch.isfinite(image).all() and torch.isfinite(mask_corrupt).all()
    lost = mask - mask_corrupt  # the target pixels that sample the corrupt source pixel
    assert lost.min() == 0 and 1 <= lost.sum() <= 9


def test_gradients_flow_to_depth_through_the_warp():
    target, depth, source, E_target, E_source = plane_rig()
    depth = (1.05 * depth.float()).requires_grad_(True)
    T = spatial_transform(E_target, E_source).float()
    image, mask = warp_views(source.float(), torch.ones(1, H, W), depth, K_TARGET.float(), K_SOURCE.float(), T)
    loss = masked_mean(photometric_error(image, target.float()), mask)
    loss.backward()
    assert torch.isfinite(depth.grad).all() and depth.grad.abs().sum() > 0


def test_spatial_and_spatio_temporal_transforms_follow_the_rig():
    E_target = rigid([0.1, -1.5, 0.2], [1.0, 0.5, 1.5])
    E_source = rigid([-0.2, 1.4, 0.1], [0.8, -0.6, 1.4])
    rig_t = rigid([0.01, 0.02, 0.3], [10.0, 4.0, 0.1])  # T_world_rig at t
    rig_t1 = rigid([0.02, 0.0, 0.35], [11.2, 4.5, 0.1])  # ... at t + f
    world_target_t, world_target_t1 = rig_t @ E_target, rig_t1 @ E_target  # T_world_cam
    world_source_t, world_source_t1 = rig_t @ E_source, rig_t1 @ E_source
    T_target_pose = invert_transform(world_target_t1) @ world_target_t  # target(t) -> target(t+f)
    expected = invert_transform(world_source_t) @ world_target_t  # target(t) -> source(t)
    assert torch.allclose(spatial_transform(E_target, E_source), expected, atol=1e-12)
    expected = invert_transform(world_source_t1) @ world_target_t  # target(t) -> source(t+f)
    assert torch.allclose(spatio_temporal_transform(E_target, E_source, T_target_pose), expected, atol=1e-12)


def test_overlap_view_averages_and_takes_the_union_by_default():
    w = 10
    mask_a = torch.zeros(2, 1, 4, w)
    mask_a[..., :5] = 1.0  # columns 0-4
    mask_b = torch.zeros(2, 1, 4, w)
    mask_b[..., 3:8] = 1.0  # columns 3-7: both valid on 3-4, none on 8-9
    image_a, image_b = 0.2 * mask_a.expand(2, 3, 4, w), 0.6 * mask_b.expand(2, 3, 4, w)
    image, mask = overlap_view([(image_a, mask_a), (image_b, mask_b)])
    expected_mask = torch.tensor([1.0] * 8 + [0.0] * 2)
    expected_image = torch.tensor([0.2] * 3 + [0.4] * 2 + [0.6] * 3 + [0.0] * 2)
    assert torch.equal(mask, expected_mask.expand(2, 1, 4, w))
    assert torch.allclose(image, expected_image.expand(2, 3, 4, w), atol=1e-7)

    # soft masks: union = max, image weighted by the masks
    image, mask = overlap_view([(image_a, 0.5 * mask_a), (image_b, 0.8 * mask_b)])
    assert torch.allclose(mask[..., 3], torch.tensor(0.8)) and torch.allclose(mask[..., 0], torch.tensor(0.5))
    assert torch.allclose(image[..., 3], torch.tensor((0.5 * 0.2 + 0.8 * 0.6) / 1.3))

    image, mask = overlap_view([(image_a, mask_a), (image_b, mask_b)], reference_sum=True)
    assert torch.equal(mask, torch.tensor([1.0] * 3 + [2.0] * 2 + [1.0] * 3 + [0.0] * 2).expand(2, 1, 4, w))
    assert torch.allclose(image, torch.tensor([0.2] * 3 + [0.8] * 2 + [0.6] * 3 + [0.0] * 2).expand(2, 3, 4, w))


# ----------------------------------------------------------------------------- pose consistency
def rig_extrinsics():
    return torch.stack(
        [
            rigid([1.2, -1.2, 1.2], [1.5, 0.0, 1.6]),
            rigid([0.3, -1.9, 1.0], [1.2, -0.8, 1.5]),
            rigid([-0.5, 1.8, -1.1], [-1.0, 0.7, 1.4]),
        ]
    )  # [N = 3, 4, 4] T_rig_cam


def camera_motions(E, aligned):
    """Per-camera motions T_c whose expression in camera 0's frame is aligned[c]."""
    T_c0 = spatial_transform(E[0:1], E)  # E_c^-1 E_0
    return T_c0 @ aligned @ invert_transform(T_c0)


def test_consistent_motions_give_zero_pose_loss():
    E = rig_extrinsics()
    motion = rigid([0.01, -0.03, 0.02], [0.1, -0.05, 1.2])  # camera 0's motion
    T_cams = camera_motions(E, motion.expand(3, 4, 4)).expand(2, 3, 4, 4).clone().requires_grad_(True)
    loss = pose_consistency_loss(T_cams, E.expand(2, 3, 4, 4))
    assert loss.abs() < 1e-9
    loss.backward()
    assert torch.isfinite(T_cams.grad).all()
    # the same from a rig motion: T_c = E_c^-1 M E_c for every camera
    rig_motion = rigid([0.0, 0.0, 0.05], [1.0, 0.1, 0.0])
    T_cams = invert_transform(E) @ rig_motion @ E
    assert pose_consistency_loss(T_cams, E) < 1e-9
    # and wrong extrinsics do not
    assert pose_consistency_loss(T_cams, E[[0, 2, 1]]) > 0.1


def test_pose_loss_of_a_known_translation_and_rotation_offset():
    E = rig_extrinsics()
    motion = translation([0.1, -0.05, 1.2])  # no rotation: euler angles 0
    offset = translation([0.3, -0.4, 0.0]) @ motion  # translation error of norm 0.5
    alpha = 0.02
    rotated = compose(motion, rigid([alpha, 0.0, 0.0], [0.0, 0.0, 0.0]))  # euler XYZ error (alpha, 0, 0)
    T_cams = camera_motions(E, torch.stack([motion, offset, motion]))
    assert torch.allclose(pose_consistency_loss(T_cams, E), torch.tensor(0.5 / 2, dtype=torch.float64))
    T_cams = camera_motions(E, torch.stack([motion, offset, rotated]))
    assert torch.allclose(pose_consistency_loss(T_cams, E), torch.tensor((0.5 + 10 * alpha) / 2, dtype=torch.float64))
    assert torch.allclose(
        pose_consistency_loss(T_cams, E, rotation_weight=1.0), torch.tensor((0.5 + alpha) / 2, dtype=torch.float64)
    )
    # leading dims: [B, F, N, 4, 4]
    many = pose_consistency_loss(T_cams.expand(2, 2, 3, 4, 4), E)
    assert torch.allclose(many, torch.tensor((0.5 + 10 * alpha) / 2, dtype=torch.float64))
    assert pose_consistency_loss(T_cams[:1], E[:1]) == 0


def test_ssim_of_several_warps_against_one_target_equals_the_expanded_comparison():
    torch.manual_seed(0)
    warps, target = torch.rand(2, 3, 1, 3, 9, 11), torch.rand(1, 3, 9, 11)
    broadcast = ssim_error(warps, target)
    expanded = ssim_error(warps, target.expand_as(warps).clone())
    assert broadcast.shape == (2, 3, 1, 1, 9, 11)
    assert torch.allclose(broadcast, expanded, atol=1e-6)
