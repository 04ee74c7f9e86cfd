"""Novel-view depth synthesis (models/depth_synthesis.py) on scenes whose answer is known.

The scene is a tilted plane n . X = c in the rig frame (x forward, y left, z up), so the z-depth
of any camera looking at it is known in closed form.
"""
import math

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from geometry import (
    axis_angle_to_matrix,
    invert_intrinsics,
    invert_transform,
    make_intrinsics,
    make_transform,
    matrix_to_axis_angle,
    pixel_grid,
)
from models.depth_synthesis import (
    SWEEP_FRAMES,
    augment_extrinsics,
    random_view_rotation,
    render_sweep,
    rig_synthesis_targets,
    synthesis_losses,
    synthesis_source_slots,
    synthesis_sweep,
    synthesis_targets,
)
from utils.visualization import colorize_depth, depth_range

DT = torch.float64
H, W = 48, 64
K = make_intrinsics(40.0, 42.0, 31.3, 23.6).to(DT)  # ~77 degrees horizontal field of view
# OpenCV camera axes in the rig: camera x (right) = rig -y, camera y (down) = rig -z, z = rig x.
R_RIG_FRONT = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]], dtype=DT)
PLANE_N = torch.tensor([1.0, 0.2, 0.1], dtype=DT)
PLANE_C = 15.0


def rotation(roll=0.0, pitch=0.0, yaw=0.0):
    """4x4 rotation about the rig origin from an axis-angle vector (radians)."""
    aa = torch.tensor([roll, pitch, yaw], dtype=DT)
    return make_transform(axis_angle_to_matrix(aa), torch.zeros(3, dtype=DT))


def camera(yaw_deg=0.0, t=(1.5, 0.0, 1.6)):
    """T_rig_cam of a camera at t looking forward, turned left by yaw_deg about rig z."""
    R = axis_angle_to_matrix(torch.tensor([0.0, 0.0, math.radians(yaw_deg)], dtype=DT)) @ R_RIG_FRONT
    return make_transform(R, torch.tensor(t, dtype=DT))


def rays_in_rig(K_cam, E, h=H, w=W):
    """Rig-frame directions [3, H*W] of the pixel rays (camera z = 1, so the scale is z-depth)."""
    return E[:3, :3] @ (invert_intrinsics(K_cam) @ pixel_grid(h, w, dtype=DT).flatten(1))


def plane_depth(K_cam, E, h=H, w=W):
    """Exact z-depth [1, H, W] of the plane n . X = c seen by the camera (K, E = T_rig_cam)."""
    rays = rays_in_rig(K_cam, E, h, w)
    z = (PLANE_C - PLANE_N @ E[:3, 3]) / (PLANE_N @ rays)
    assert (z > 0).all(), "the plane must fill the view"
    return z.reshape(1, h, w)


def source_pixels_of_aug(K_aug, E_aug, K_src, E_src):
    """Where each augmented pixel's plane point projects in the source camera: u, v [H, W] and its
    source z (computed with explicit matrices, independently of the module)."""
    z_aug = plane_depth(K_aug, E_aug).flatten()
    points_rig = E_aug[:3, 3:4] + rays_in_rig(K_aug, E_aug) * z_aug
    points_src = E_src[:3, :3].T @ (points_rig - E_src[:3, 3:4])
    uvw = K_src @ points_src
    return (uvw[0] / uvw[2]).reshape(H, W), (uvw[1] / uvw[2]).reshape(H, W), points_src[2].reshape(H, W)


# Augmented view: camera 0 rotated about the rig origin (yaw ~10 deg, some pitch and roll).
E_FRONT = camera()
E_AUG = rotation(0.03, -0.05, 0.17) @ E_FRONT
SOURCES = {"self": E_FRONT, "side_camera": camera(yaw_deg=45.0, t=(1.0, 0.8, 1.6))}


# ---------------------------------------------------------------------------------------- targets
@pytest.mark.parametrize("source", sorted(SOURCES))
def test_targets_equal_analytic_plane_depth_in_augmented_view(source):
    E_src = SOURCES[source]
    depth_src, depth_aug = plane_depth(K, E_src), plane_depth(K, E_AUG)
    mask = torch.ones(1, H, W, dtype=DT)
    target, valid = synthesis_targets(depth_src, K, E_src, mask, depth_aug, K, E_AUG, 0.1, 1000.0)
    assert target.shape == valid.shape == (1, H, W)
    assert set(valid.unique().tolist()) <= {0.0, 1.0}

    # Validity is exactly "the augmented pixel's plane point projects inside the source image"
    # (compared away from a thin band at the border, where round-off decides).
    u, v, _ = source_pixels_of_aug(K, E_AUG, K, E_src)
    inside = (u >= 0) & (u <= W - 1) & (v >= 0) & (v <= H - 1)
    clear = ((u + 0.01).abs() > 0.02) & ((u - W + 1).abs() > 0.02) & ((v + 0.01).abs() > 0.02) & ((v - H + 1).abs() > 0.02)
    assert torch.equal(valid[0].bool()[clear], inside[clear])
    assert 0.2 < valid.mean() < 1.0  # partial overlap: both kinds of pixel are tested

    ok = valid[0].bool()
    relative = ((target - depth_aug).abs() / depth_aug)[0][ok]
    assert relative.max() < 1e-3, relative.max()
    # The test has teeth: the z of the *source* camera (no transform into the augmented view) is off.
    wrong, _ = synthesis_targets(depth_src, K, E_src, mask, depth_aug, K, E_src, 0.1, 1000.0)
    assert ((wrong - depth_aug).abs() / depth_aug)[0][ok].max() > 1e-2


def test_targets_follow_source_mask_and_depth_range():
    E_src = SOURCES["self"]
    depth_src, depth_aug = plane_depth(K, E_src), plane_depth(K, E_AUG)
    mask = torch.ones(1, H, W, dtype=DT)
    mask[..., : W // 2] = 0.0  # the left half of the source is the ego vehicle
    target, valid = synthesis_targets(depth_src, K, E_src, mask, depth_aug, K, E_AUG, 0.1, 1000.0)
    u, v, _ = source_pixels_of_aug(K, E_AUG, K, E_src)
    inside = (u >= 0.01) & (u <= W - 1.01) & (v >= 0.01) & (v <= H - 1.01)
    boundary = W // 2 - 0.5  # nearest sampling switches there
    assert (valid[0][inside & (u < boundary - 0.1)] == 0).all()
    assert (valid[0][inside & (u > boundary + 0.1)] == 1).all()
    assert (inside & (u < boundary - 0.1)).sum() > 50 and (inside & (u > boundary + 0.1)).sum() > 50

    # Range: targets outside (lo, hi) are invalid and clamped to the bound.
    full, full_valid = synthesis_targets(depth_src, K, E_src, torch.ones_like(mask), depth_aug, K, E_AUG, 0.1, 1000.0)
    values = full[full_valid.bool()]
    lo, hi = float(values.quantile(0.25)), float(values.quantile(0.75))
    clamped, clamped_valid = synthesis_targets(depth_src, K, E_src, torch.ones_like(mask), depth_aug, K, E_AUG, lo, hi)
    seen = full_valid.bool()
    above, below = seen & (full >= hi), seen & (full <= lo)
    between = seen & (full > lo) & (full < hi)
    assert above.sum() > 0 and below.sum() > 0
    assert (clamped[above] == hi).all() and (clamped[below] == lo).all()
    assert (clamped_valid[above | below] == 0).all() and (clamped_valid[between] == 1).all()
    assert torch.allclose(clamped[between], full[between])
    assert clamped.min() >= lo and clamped.max() <= hi  # invalid pixels are clamped too


def test_targets_broadcast_over_sources_batch_and_cameras():
    gen = torch.Generator().manual_seed(3)
    S, B, N = 2, 2, 3

    def rand(*shape):
        return torch.rand(*shape, generator=gen, dtype=DT)

    # Smooth positive depths, random masks and slightly different cameras everywhere.
    depth_src = 5.0 + 10.0 * torch.nn.functional.interpolate(rand(S * B * N, 1, 6, 8), (H, W), mode="bilinear")
    depth_src = depth_src.reshape(S, B, N, 1, H, W)
    depth_aug = (5.0 + 10.0 * torch.nn.functional.interpolate(rand(B * N, 1, 6, 8), (H, W), mode="bilinear"))
    depth_aug = depth_aug.reshape(B, N, 1, H, W)
    mask_src = (rand(S, B, N, 1, H, W) > 0.2).to(DT)
    K_src = K * (1.0 + 0.1 * rand(S, B, N, 1, 1))
    K_src[..., 2, :] = torch.tensor([0.0, 0.0, 1.0], dtype=DT)
    E_src = torch.stack([camera(yaw_deg=float(y)) for y in 60.0 * rand(S * B * N) - 30.0]).reshape(S, B, N, 4, 4)
    E_aug = torch.stack([rotation(*(0.2 * rand(3) - 0.1).tolist()) @ E_FRONT for _ in range(B * N)]).reshape(B, N, 4, 4)

    target, valid = synthesis_targets(depth_src, K_src, E_src, mask_src, depth_aug, K, E_aug, 2.0, 40.0)
    assert target.shape == valid.shape == (S, B, N, 1, H, W)
    assert valid.sum() > 0
    for s in range(S):
        for b in range(B):
            for n in range(N):
                t1, v1 = synthesis_targets(depth_src[s, b, n], K_src[s, b, n], E_src[s, b, n], mask_src[s, b, n],
                                           depth_aug[b, n], K, E_aug[b, n], 2.0, 40.0)
                assert torch.allclose(target[s, b, n], t1, atol=1e-10) and torch.equal(valid[s, b, n], v1)


def test_rig_targets_use_neighbours_then_self_with_padding_slots():
    index, slot_valid = synthesis_source_slots([[1, 2], [0], []], 3)
    assert index.tolist() == [[1, 0, 2], [2, 1, 2], [0, 1, 2]]
    assert slot_valid.tolist() == [[1, 1, 1], [1, 1, 0], [1, 0, 0]]
    with pytest.raises(ValueError, match="neighbour"):
        synthesis_source_slots([[0], [0], [1]], 3)

    E = torch.stack([camera(0.0), camera(30.0, t=(1.2, 0.6, 1.6)), camera(-30.0, t=(1.2, -0.6, 1.6))])[None]
    K_rig = K.expand(1, 3, 3, 3)
    depth = torch.stack([plane_depth(K, e) for e in E[0]])[None]
    mask = torch.ones(1, 3, 1, H, W, dtype=DT)
    E_aug = augment_extrinsics(E, rotation(0.02, 0.03, 0.1)[None])
    depth_aug = torch.stack([plane_depth(K, e) for e in E_aug[0]])[None]
    targets, valid = rig_synthesis_targets(depth, K_rig, E, mask, depth_aug, E_aug, [[1, 2], [0], []], 0.1, 1000.0)
    assert targets.shape == valid.shape == (3, 1, 3, 1, H, W)
    for k in range(3):
        for c in range(3):
            j = int(index[k, c])
            t1, v1 = synthesis_targets(depth[0, j], K, E[0, j], mask[0, j], depth_aug[0, c], K, E_aug[0, c], 0.1, 1000.0)
            if slot_valid[k, c]:
                assert torch.allclose(targets[k, 0, c], t1) and torch.equal(valid[k, 0, c], v1)
            else:
                assert (valid[k, 0, c] == 0).all()
    # Every valid target of every slot is the augmented camera's true depth.
    ok = valid.bool()
    assert ok.sum() > 1000
    assert ((targets - depth_aug).abs() / depth_aug)[ok].max() < 1e-3


def test_targets_pass_gradients_to_source_and_augmented_depth():
    E_src = SOURCES["side_camera"]
    depth_src = plane_depth(K, E_src).clone().requires_grad_(True)
    depth_aug = plane_depth(K, E_AUG).clone().requires_grad_(True)
    target, valid = synthesis_targets(depth_src, K, E_src, torch.ones(1, H, W, dtype=DT), depth_aug, K, E_AUG, 0.1, 1e3)
    (target * valid).sum().backward()
    for grad in (depth_src.grad, depth_aug.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_analytic_augmented_depth_gives_zero_consistency():
    E = torch.stack([camera(0.0), camera(45.0, t=(1.0, 0.8, 1.6))])[None]
    depth = torch.stack([plane_depth(K, e) for e in E[0]])[None]
    E_aug = augment_extrinsics(E, rotation(0.03, -0.05, 0.17)[None])
    depth_aug = torch.stack([plane_depth(K, e) for e in E_aug[0]])[None]
    mask = torch.ones(1, 2, 1, H, W, dtype=DT)
    K_rig = K.expand(1, 2, 3, 3)
    disp = torch.rand(1, 2, 1, H, W, dtype=DT)

    targets, valid = rig_synthesis_targets(depth, K_rig, E, mask, depth_aug, E_aug, [[1], [0]], 0.1, 1e3)
    assert valid.sum() > 1000
    loss = synthesis_losses(depth_aug, targets, valid, disp)["depth_consistency"]
    assert loss < 1e-4, loss
    # A wrong augmented depth (10 % too far) is penalised, by about 0.1 / 2.1.
    targets, valid = rig_synthesis_targets(depth, K_rig, E, mask, 1.1 * depth_aug, E_aug, [[1], [0]], 0.1, 1e3)
    loss = synthesis_losses(1.1 * depth_aug, targets, valid, disp)["depth_consistency"]
    assert loss > 0.01, loss


# ---------------------------------------------------------------------------------------- losses
def _loss_inputs(S=2, B=2, N=3, h=4, w=5):
    depth_aug = 1.0 + torch.rand(B, N, 1, h, w, dtype=DT)
    return depth_aug, depth_aug.expand(S, B, N, 1, h, w).clone(), torch.ones(S, B, N, 1, h, w, dtype=DT)


def test_losses_zero_for_equal_targets_and_known_values_otherwise():
    depth_aug, targets, valid = _loss_inputs()
    disp = torch.rand(2, 3, 1, 4, 5, dtype=DT)
    assert synthesis_losses(depth_aug, targets, valid, disp)["depth_consistency"] < 1e-12
    # |2 - 1| / (2 + 1) = 1/3 everywhere.
    losses = synthesis_losses(torch.full_like(depth_aug, 2.0), torch.ones_like(targets), valid, disp)
    assert losses["depth_consistency"].item() == pytest.approx(1.0 / 3.0, rel=1e-6)
    # The ratio is clamped to 1 (a negative target would give 3).
    losses = synthesis_losses(torch.ones_like(depth_aug), torch.full_like(targets, -0.5), valid, disp)
    assert losses["depth_consistency"].item() == pytest.approx(1.0, rel=1e-9)
    # Invalid pixels do not count, however wrong.
    bad = targets.clone()
    bad[..., 0, 0] = 1e6
    cut = valid.clone()
    cut[..., 0, 0] = 0.0
    assert synthesis_losses(depth_aug, bad, cut, disp)["depth_consistency"] < 1e-12
    assert synthesis_losses(depth_aug, bad, valid, disp)["depth_consistency"] > 0.01


def test_consistency_is_per_camera_mean_of_masked_means_pooled_over_slots():
    S, B, N, h, w = 2, 1, 2, 4, 5
    depth_aug = torch.ones(B, N, 1, h, w, dtype=DT)
    targets = torch.ones(S, B, N, 1, h, w, dtype=DT)
    valid = torch.zeros(S, B, N, 1, h, w, dtype=DT)
    # Camera 0: slot 0 has error 1/3 on 10 pixels, slot 1 error 0 on 20 pixels -> (10/3) / 30.
    targets[0, 0, 0] = 2.0
    valid[0, 0, 0].view(-1)[:10] = 1.0
    valid[1, 0, 0] = 1.0
    # Camera 1: one valid pixel with error 3/5 (target 4 vs 1), many valid pixels nowhere else.
    targets[1, 0, 1] = 4.0
    valid[1, 0, 1, 0, 0, 0] = 1.0
    disp = torch.ones(B, N, 1, h, w, dtype=DT)
    loss = synthesis_losses(depth_aug, targets, valid, disp)["depth_consistency"]
    expected = ((10.0 / 3.0) / 30.0 + 3.0 / 5.0) / 2.0
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    pooled = ((10.0 / 3.0) + 3.0 / 5.0) / 31.0  # what a pixel-weighted mean would give
    assert abs(expected - pooled) > 0.1


def test_smoothness_on_mean_normalised_disparity():
    depth_aug, targets, valid = _loss_inputs(h=3, w=4)
    constant = torch.full((2, 3, 1, 3, 4), 0.3, dtype=DT)
    assert synthesis_losses(depth_aug, targets, valid, constant)["depth_smoothness"] < 1e-12
    # disp = u + 1 in every row: mean 2.5, so |dx| = 1/2.5 = 0.4 and dy = 0.
    ramp = (torch.arange(4, dtype=DT) + 1.0).expand(2, 3, 1, 3, 4)
    assert synthesis_losses(depth_aug, targets, valid, ramp)["depth_smoothness"].item() == pytest.approx(0.4)
    assert synthesis_losses(depth_aug, targets, valid, 7.0 * ramp)["depth_smoothness"].item() == pytest.approx(0.4)
    column = ramp.transpose(-1, -2)[..., :3, :]  # the same along v: |dy| = 1 / 2
    assert synthesis_losses(depth_aug, targets, valid, column.contiguous())["depth_smoothness"].item() == pytest.approx(
        1.0 / 2.0)


def test_losses_pass_gradients_to_augmented_depth_targets_and_disparity():
    depth_aug, targets, valid = _loss_inputs()
    targets = (targets * 1.3).requires_grad_(True)
    depth_aug = depth_aug.clone().requires_grad_(True)
    disp = torch.rand(2, 3, 1, 4, 5, dtype=DT).requires_grad_(True)
    losses = synthesis_losses(depth_aug, targets, valid, disp)
    (losses["depth_consistency"] + losses["depth_smoothness"]).backward()
    for grad in (depth_aug.grad, targets.grad, disp.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_losses_reject_wrong_shapes():
    depth_aug, targets, valid = _loss_inputs()
    disp = torch.rand(2, 3, 1, 4, 5, dtype=DT)
    with pytest.raises(ValueError, match="targets"):
        synthesis_losses(depth_aug, targets[0], valid[0], disp)
    with pytest.raises(ValueError, match="valid"):
        synthesis_losses(depth_aug, targets, valid[:, :, :2], disp)
    with pytest.raises(ValueError, match="disp_aug"):
        synthesis_losses(depth_aug, targets, valid, disp[:, :2])


# ---------------------------------------------------------------------------------------- random view
def _angles(R):
    """Axis-angle vectors [..., 3] (roll, pitch, yaw) of rotations [..., 4, 4]."""
    return matrix_to_axis_angle(R[..., :3, :3].double())


def test_random_rotation_is_a_rotation_about_the_rig_origin_within_the_ranges():
    R = random_view_rotation(4000, [15.0, 15.0, 40.0], generator=torch.Generator().manual_seed(0), dtype=DT)
    assert R.shape == (4000, 4, 4) and R.dtype == DT
    eye = torch.eye(3, dtype=DT).expand(4000, 3, 3)
    assert torch.allclose(R[:, :3, :3] @ R[:, :3, :3].transpose(1, 2), eye, atol=1e-12)
    assert torch.allclose(torch.linalg.det(R[:, :3, :3]), torch.ones(4000, dtype=DT))
    assert (R[:, :3, 3] == 0).all() and torch.equal(R[:, 3], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=DT).expand(4000, 4))
    angles = _angles(R)
    bound = torch.tensor([7.5, 7.5, 20.0], dtype=DT) * math.pi / 180.0  # degrees converted
    assert (angles.abs() <= bound + 1e-9).all()
    assert (angles.max(0).values > 0.95 * bound).all() and (angles.min(0).values < -0.95 * bound).all()
    assert (angles.mean(0).abs() < 0.05 * bound).all()  # centred on zero


@pytest.mark.parametrize("axis,ranges", [(0, [10.0, 0.0, 0.0]), (1, [0.0, 10.0, 0.0]), (2, [0.0, 0.0, 10.0])])
def test_random_rotation_maps_roll_pitch_yaw_to_rig_x_y_z(axis, ranges):
    R = random_view_rotation(50, ranges, generator=torch.Generator().manual_seed(1), dtype=DT)
    angles = _angles(R)
    others = [i for i in range(3) if i != axis]
    assert (angles[:, others].abs() < 1e-12).all() and (angles[:, axis].abs() > 0).any()
    # The rotation axis is fixed: the matching rig axis is unchanged.
    e = torch.zeros(3, dtype=DT)
    e[axis] = 1.0
    assert torch.allclose(R[:, :3, :3] @ e, e.expand(50, 3), atol=1e-12)


def test_random_rotation_degrees_versus_reference_radians():
    deg = [15.0, 15.0, 40.0]
    as_rad = random_view_rotation(300, deg, reference_radians=True, generator=torch.Generator().manual_seed(5), dtype=DT)
    # The reference uses the numbers as radians: the same as asking for 180/pi times as many degrees.
    scaled = random_view_rotation(300, [a * 180.0 / math.pi for a in deg], generator=torch.Generator().manual_seed(5),
                                  dtype=DT)
    assert torch.allclose(as_rad, scaled, atol=1e-12)
    in_deg = random_view_rotation(300, deg, generator=torch.Generator().manual_seed(5), dtype=DT)
    max_deg_norm = math.radians(math.sqrt(7.5**2 + 7.5**2 + 20.0**2))  # 0.39 rad
    assert _angles(in_deg).norm(dim=-1).max() <= max_deg_norm + 1e-9
    assert _angles(as_rad).norm(dim=-1).max() > 1.0  # effectively arbitrary rotations


def test_random_rotation_is_deterministic_with_a_generator():
    a = random_view_rotation(8, [15.0, 15.0, 40.0], generator=torch.Generator().manual_seed(7))
    b = random_view_rotation(8, [15.0, 15.0, 40.0], generator=torch.Generator().manual_seed(7))
    c = random_view_rotation(8, [15.0, 15.0, 40.0], generator=torch.Generator().manual_seed(8))
    assert a.dtype == torch.get_default_dtype() and torch.equal(a, b) and not torch.allclose(a, c)
    per_camera = random_view_rotation(8, [15.0, 15.0, 40.0], generator=torch.Generator().manual_seed(7), num_cams=6)
    assert per_camera.shape == (8, 6, 4, 4)
    assert not torch.allclose(per_camera[:, 0], per_camera[:, 1])  # independent per camera
    with pytest.raises(ValueError, match="aug_angle"):
        random_view_rotation(2, [15.0, 15.0])
    with pytest.raises(ValueError, match="aug_angle"):
        random_view_rotation(2, [15.0, -1.0, 40.0])


def test_augment_extrinsics_rotates_every_camera_about_the_rig_origin():
    E = torch.stack([camera(0.0), camera(45.0, t=(1.0, 0.8, 1.6))])[None].expand(2, 2, 4, 4)
    R = torch.stack([rotation(yaw=math.pi / 2), rotation(pitch=0.1)])
    E_aug = augment_extrinsics(E, R)
    assert E_aug.shape == (2, 2, 4, 4)
    for b in range(2):
        for n in range(2):
            assert torch.allclose(E_aug[b, n], R[b] @ E[b, n])
    # A 90 degree yaw turns the front camera to look left (+y) and moves its centre to (0, 1.5, 1.6).
    assert torch.allclose(E_aug[0, 0, :3, 2], torch.tensor([0.0, 1.0, 0.0], dtype=DT), atol=1e-12)
    assert torch.allclose(E_aug[0, 0, :3, 3], torch.tensor([0.0, 1.5, 1.6], dtype=DT), atol=1e-12)
    per_camera = augment_extrinsics(E, R[:, None].expand(2, 2, 4, 4))
    assert torch.allclose(per_camera, E_aug)


# ---------------------------------------------------------------------------------------- sweep
def _relative_angles(sweep, E0):
    R = torch.stack([frame.E @ invert_transform(E0) for frame in sweep])
    return matrix_to_axis_angle(R[:, :3, :3])


@pytest.mark.parametrize("focal_ratio", [1.0, 0.5])
def test_sweep_has_767_frames_with_documented_extremes(focal_ratio):
    E0 = camera()
    sweep = synthesis_sweep(K, E0, (H, W), focal_ratio=focal_ratio)
    assert len(sweep) == SWEEP_FRAMES == 767
    kinds = [frame.label.split()[0] for frame in sweep]
    assert kinds == ["roll"] * 152 + ["pitch"] * 103 + ["focal"] * 152 + ["yaw"] * 360
    assert torch.equal(sweep[0].K, K) and torch.allclose(sweep[0].E, E0)  # starts at camera 0 itself

    # Rotations are about the rig origin: E = R @ E0, so the camera centre moves as R t0.
    for frame in sweep:
        R = frame.E @ invert_transform(E0)
        assert torch.allclose(R[:3, 3], torch.zeros(3, dtype=DT), atol=1e-12)
    angles = torch.rad2deg(_relative_angles(sweep, E0))
    roll, pitch, focal, yaw = angles[:152], angles[152:255], angles[255:407], angles[407:]
    assert roll[:, 0].max().item() == pytest.approx(10.0) and roll[:, 0].min().item() == pytest.approx(-10.0)
    assert roll[:, 1:].abs().max() < 1e-9 and roll[0, 0] == 0 and abs(roll[-1, 0]) < 0.2
    assert pitch[:, 1].max().item() == pytest.approx(5.0) and pitch[:, 1].min().item() == pytest.approx(-5.0)
    assert pitch[:, [0, 2]].abs().max() < 1e-9 and pitch[0, 1] == 0 and pitch[-1, 1] == 0
    assert focal.abs().max() < 1e-9
    yaw_deg = torch.rad2deg(torch.atan2(torch.stack([f.E[1, 2] for f in sweep[407:]]),
                                        torch.stack([f.E[0, 2] for f in sweep[407:]])))  # optical axis heading
    assert torch.allclose(torch.remainder(yaw_deg, 360.0), torch.arange(360, dtype=DT), atol=1e-9)
    assert yaw[:, :2].abs().max() < 1e-9
    # An animation: no jumps between consecutive frames (steps 0.27, 0.2 and 1 degree).
    steps = torch.stack([matrix_to_axis_angle(b.E[:3, :3] @ a.E[:3, :3].T) for a, b in zip(sweep, sweep[1:])])
    assert torch.rad2deg(steps.norm(dim=-1)).max() < 1.0 + 1e-9

    fx = torch.stack([f.K[0, 0] for f in sweep]) / K[0, 0]
    fy = torch.stack([f.K[1, 1] for f in sweep]) / K[1, 1]
    assert torch.allclose(fx, fy)
    assert all(torch.equal(f.K[:, 2], K[:, 2]) and f.K[0, 1] == 0 for f in sweep)  # principal point kept
    assert (fx[:255] == 1).all()
    assert fx[255:407].min().item() == pytest.approx(focal_ratio / 1.5)
    assert fx[255].item() == pytest.approx(1.0) and fx[255 + 100].item() == pytest.approx(focal_ratio / 1.5)
    assert fx[406].item() == pytest.approx(focal_ratio)
    assert torch.allclose(fx[407:], torch.full((360,), focal_ratio, dtype=DT))  # the yaw turn keeps it


def test_sweep_subsampling_and_errors():
    E0 = camera()
    full = synthesis_sweep(K, E0, (H, W))
    every_10th = synthesis_sweep(K, E0, (H, W), stride=10)
    assert len(every_10th) == 77
    for a, b in zip(every_10th, full[::10]):
        assert a.label == b.label and torch.equal(a.K, b.K) and torch.equal(a.E, b.E)
    picked = synthesis_sweep(K, E0, (H, W), frames=[700, 5])
    assert [f.label for f in picked] == [full[700].label, full[5].label]
    with pytest.raises(ValueError, match="principal point"):
        synthesis_sweep(K, E0, (H // 4, W // 4))
    with pytest.raises(ValueError, match="frame indices"):
        synthesis_sweep(K, E0, (H, W), frames=[767])
    with pytest.raises(ValueError, match="stride"):
        synthesis_sweep(K, E0, (H, W), stride=0)


SPHERE_CENTRE = torch.tensor([5.0, 3.0, 2.0], dtype=DT)
SPHERE_RADIUS = 40.0


def sphere_render(calls):
    """A toy render_fn: exact z-depth of the inside of an off-centre sphere around the camera, so
    every ray hits it and every viewpoint gives a different picture."""

    def render(K_cam, E):
        calls.append((K_cam.clone(), E.clone()))
        w = rays_in_rig(K_cam[0, 0], E[0, 0])  # [3, HW], the z-depth is the ray parameter
        o = E[0, 0, :3, 3] - SPHERE_CENTRE
        a, b, c = (w * w).sum(0), 2.0 * (o @ w), o @ o - SPHERE_RADIUS**2
        z = (-b + torch.sqrt(b * b - 4 * a * c)) / (2 * a)
        return z.reshape(1, 1, 1, H, W)

    return render


def test_render_sweep_writes_pngs_and_gif(tmp_path):
    calls = []
    E0 = camera()
    paths = render_sweep(sphere_render(calls), K, E0, (H, W), tmp_path / "syn", stride=50, progress=False)
    expected = [tmp_path / "syn" / f"{i:03d}_syndepth.png" for i in range(0, 767, 50)]
    assert len(expected) == 16
    assert paths == [str(p) for p in expected] + [str(tmp_path / "syn" / "synthesis.gif")]
    sweep = synthesis_sweep(K, E0, (H, W), stride=50)
    assert len(calls) == 16
    for (K_cam, E), frame in zip(calls, sweep):
        assert K_cam.shape == (1, 1, 3, 3) and E.shape == (1, 1, 4, 4)
        assert torch.equal(K_cam[0, 0], frame.K) and torch.equal(E[0, 0], frame.E)

    # Lossless PNGs of the colourised depth, in RGB order, all with the first frame's colour range.
    render = sphere_render([])
    depths = [render(f.K[None, None], f.E[None, None])[0, 0, 0].float() for f in sweep]
    lo, hi = depth_range(depths[0])
    for path, depth in zip(expected, depths):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        assert image is not None and image.shape == (H, W, 3)
        assert np.array_equal(image[:, :, ::-1], colorize_depth(depth, min_depth=lo, max_depth=hi))
    assert depth_range(depths[5]) != (lo, hi)  # so the shared range is actually tested
    with Image.open(paths[-1]) as gif:
        assert gif.format == "GIF" and gif.size == (W, H) and gif.n_frames == 16
        total = 0
        for k in range(gif.n_frames):
            gif.seek(k)
            total += gif.info["duration"]
        assert total == 16 * 40
    assert not list((tmp_path / "syn").glob(".*.tmp"))  # atomic writes leave no temporary files


def test_render_sweep_rejects_a_wrong_render_shape(tmp_path):
    def bad(K_cam, E):
        return torch.ones(1, 1, H, W)

    with pytest.raises(ValueError, match="render_fn must return"):
        render_sweep(bad, K, camera(), (H, W), tmp_path, stride=400, progress=False)
