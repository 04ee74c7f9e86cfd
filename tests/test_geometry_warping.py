"""Backward warping against views of an analytic scene rendered by exact ray casting."""
import pytest
import torch

from geometry import (
    axis_angle_to_matrix,
    backward_warp,
    invert_intrinsics,
    invert_transform,
    make_intrinsics,
    make_transform,
    pixel_grid,
    sample_at_pixels,
)

# ----------------------------------------------------------------------------- analytic scene
# A tilted plane n . X = d in the world frame (= the target camera frame), textured by a smooth
# function of the 3D point, so that every view of it can be rendered exactly.
PLANE_NORMAL = torch.tensor([-0.2, -0.3, 1.0], dtype=torch.float64)
PLANE_OFFSET = 4.0


def texture(points):
    """Smooth RGB texture [3, ...] of world points [3, ...] (wavelengths of ~2-4 m: 25+ pixels)."""
    x, y, z = points
    return torch.stack(
        (
            0.5 + 0.3 * torch.sin(2.0 * x + 1.3 * y),
            0.5 + 0.3 * torch.cos(1.5 * y - 0.7 * z + 0.4),
            0.5 + 0.2 * torch.sin(1.1 * x + 0.9 * z) * torch.cos(0.8 * y),
        )
    )


def render_plane(K, T_world_cam, height, width):
    """Ray-cast the textured plane: image [3, H, W] and z-depth [1, H, W] of a camera at T_world_cam."""
    rays_cam = (invert_intrinsics(K) @ pixel_grid(height, width, dtype=torch.float64).flatten(1))  # z = 1
    origin = T_world_cam[:3, 3]
    rays_world = T_world_cam[:3, :3] @ rays_cam
    # origin + lam * ray lies on the plane; lam is the z-depth because the camera ray has z = 1.
    lam = (PLANE_OFFSET - PLANE_NORMAL @ origin) / (PLANE_NORMAL @ rays_world)
    assert (lam > 0).all(), "the plane must fill the view"
    points_world = origin[:, None] + lam * rays_world
    image = texture(points_world).reshape(3, height, width)
    return image, lam.reshape(1, height, width)


def source_pose(axis_angle, translation):
    """T_source_target from a rotation vector and a translation (float64)."""
    aa = torch.tensor(axis_angle, dtype=torch.float64)
    return make_transform(axis_angle_to_matrix(aa), torch.tensor(translation, dtype=torch.float64))


K_TARGET = make_intrinsics(60.0, 58.0, 31.7, 23.4).double()  # 48 x 64
POSES = {
    "identity": source_pose([0.0, 0.0, 0.0], [0.0, 0.0, 0.0]),
    "translation": source_pose([0.0, 0.0, 0.0], [-0.4, 0.1, 0.3]),
    "rotation": source_pose([0.03, -0.08, 0.02], [0.0, 0.0, 0.0]),
    "general": source_pose([-0.05, 0.1, 0.04], [0.5, -0.2, -0.3]),
}
SOURCES = {  # the source view may differ from the target in size and intrinsics
    "same_camera": (K_TARGET, (48, 64)),
    "other_camera": (make_intrinsics(75.0, 70.0, 40.2, 27.9).double(), (57, 81)),
}


@pytest.mark.parametrize("source_name", sorted(SOURCES))
@pytest.mark.parametrize("pose_name", sorted(POSES))
def test_warp_with_true_depth_and_pose_reproduces_rendered_view(pose_name, source_name):
    T_source_target = POSES[pose_name]
    K_source, (hs, ws) = SOURCES[source_name]
    target, depth_target = render_plane(K_TARGET, torch.eye(4, dtype=torch.float64), 48, 64)
    source, _ = render_plane(K_source, invert_transform(T_source_target), hs, ws)

    warped, valid = backward_warp(source, depth_target, K_TARGET, K_source, T_source_target)
    assert warped.shape == target.shape and valid.shape == depth_target.shape
    assert set(valid.unique().tolist()) <= {0.0, 1.0} and valid.mean() > 0.5
    error = ((warped - target).abs() * valid).max()
    assert error < 5e-3, error  # bilinear interpolation error of the smooth texture
    # The check has teeth: a slightly wrong pose gives a much larger error.
    wrong = source_pose([0.0, 0.02, 0.0], [0.05, 0.0, 0.0]) @ T_source_target
    warped_wrong, valid_wrong = backward_warp(source, depth_target, K_TARGET, K_source, wrong)
    assert ((warped_wrong - target).abs() * valid_wrong).max() > 10 * error


def test_identity_warp_is_exact_everywhere():
    source = torch.rand(2, 3, 10, 12, dtype=torch.float64)
    depth = torch.rand(2, 1, 10, 12, dtype=torch.float64) + 1
    K = make_intrinsics(9.0, 9.0, 5.5, 4.5).double()
    warped, valid = backward_warp(source, depth, K, K, torch.eye(4, dtype=torch.float64))
    assert valid.all()
    torch.testing.assert_close(warped, source)


def test_valid_marks_out_of_view_and_behind_camera():
    K = make_intrinsics(10.0, 10.0, 4.5, 4.5).double()  # 10 x 10 images
    depth = torch.full((1, 10, 10), 2.0, dtype=torch.float64)
    source = torch.ones(1, 10, 10, dtype=torch.float64)
    # Shift the source camera 1 m to the right: target column u lands on source column u - 5.
    warped, valid = backward_warp(source, depth, K, K, source_pose([0, 0, 0], [-1.0, 0.0, 0.0]))
    assert valid[0, :, 5:].all() and not valid[0, :, :5].any()
    assert (warped[0, :, :5] == 0).all() and (warped[0, :, 5:] == 1).all()
    # Move the source camera 3 m forward: every target point is now behind it.
    warped, valid = backward_warp(source, depth, K, K, source_pose([0, 0, 0], [0.0, 0.0, -3.0]))
    assert not valid.any() and torch.isfinite(warped).all() and (warped == 0).all()


def test_nearest_mode_keeps_mask_binary():
    mask = (torch.rand(1, 1, 20, 24, generator=torch.Generator().manual_seed(0)) > 0.5).double()
    depth = torch.full((1, 1, 20, 24), 3.0, dtype=torch.float64)
    K = make_intrinsics(20.0, 20.0, 11.5, 9.5).double()
    warped, _ = backward_warp(mask, depth, K, K, source_pose([0.01, 0.02, 0.0], [0.1, 0.05, 0.0]), mode="nearest")
    assert set(warped.unique().tolist()) <= {0.0, 1.0}


def test_leading_dims_broadcast_and_match_per_item_warps():
    generator = torch.Generator().manual_seed(1)
    B, N = 2, 3
    source = torch.rand(B, N, 2, 9, 11, generator=generator, dtype=torch.float64)
    depth = torch.rand(B, N, 1, 7, 8, generator=generator, dtype=torch.float64) * 3 + 2
    K_t = make_intrinsics(torch.tensor([8.0, 9.0, 10.0]), 8.0, 3.5, 3.0).double()  # [N, 3, 3]
    K_s = make_intrinsics(10.0, 10.0, 5.0, 4.0).double()  # shared
    aa = torch.randn(B, N, 3, generator=generator, dtype=torch.float64) * 0.05
    T = make_transform(axis_angle_to_matrix(aa), torch.randn(B, N, 3, generator=generator, dtype=torch.float64) * 0.2)
    warped, valid = backward_warp(source, depth, K_t, K_s, T)
    assert warped.shape == (B, N, 2, 7, 8) and valid.shape == (B, N, 1, 7, 8)
    assert warped.dtype == torch.float64 and valid.dtype == torch.float64
    for b in range(B):
        for n in range(N):
            w, v = backward_warp(source[b, n], depth[b, n], K_t[n], K_s, T[b, n])
            torch.testing.assert_close(warped[b, n], w)
            torch.testing.assert_close(valid[b, n], v)


def test_sample_at_pixels_broadcasts_one_source_to_many_pixel_maps():
    source = torch.arange(12, dtype=torch.float64).reshape(1, 3, 4)
    pixels = torch.tensor([[3.0, 2.0], [0.5, 0.0]], dtype=torch.float64).reshape(2, 2, 1, 1)  # two (u, v)
    sampled = sample_at_pixels(source, pixels)
    assert sampled.shape == (2, 1, 1, 1)
    torch.testing.assert_close(sampled.flatten(), torch.tensor([11.0, 0.5], dtype=torch.float64))


def test_backward_warp_gradcheck_depth_and_pose():
    generator = torch.Generator().manual_seed(2)
    source = torch.rand(1, 2, 6, 7, generator=generator, dtype=torch.float64)
    depth = (torch.rand(1, 1, 4, 5, generator=generator, dtype=torch.float64) + 2).requires_grad_(True)
    K_t = make_intrinsics(4.0, 4.0, 2.0, 1.5).double()
    K_s = make_intrinsics(5.0, 5.0, 3.0, 2.5).double()
    T = source_pose([0.02, -0.03, 0.01], [0.05, 0.02, -0.03]).requires_grad_(True)

    def warp(depth, T):
        return backward_warp(source, depth, K_t, K_s, T)[0]

    assert torch.autograd.gradcheck(warp, (depth, T), eps=1e-6, atol=1e-6)
