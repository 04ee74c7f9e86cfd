"""Lidar points -> sparse depth maps."""
import numpy as np
import pytest
import torch

from geometry import make_intrinsics, make_transform, points_to_depth_map

H, W = 30, 40
K = make_intrinsics(100.0, 100.0, 20.0, 15.0).double()
# DDAD/nuScenes-style lidar axes (x forward, y left, z up) -> OpenCV camera (x right, y down, z forward).
LIDAR_TO_CAMERA_AXES = torch.tensor([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
T_CAM_LIDAR = make_transform(LIDAR_TO_CAMERA_AXES, torch.zeros(3, dtype=torch.float64))


def lidar_point_for_pixel(u, v, z):
    """Lidar-frame point that the camera sees at pixel (u, v) with depth z (K, T_CAM_LIDAR above)."""
    x_cam, y_cam = (u - 20.0) * z / 100.0, (v - 15.0) * z / 100.0
    return [z, -x_cam, -y_cam]


def brute_force_depth_map(points, K, T, hw):
    """Per-point loop: the obviously correct (slow) version."""
    depth = np.zeros(hw)
    for p in np.asarray(points, dtype=np.float64):
        pc = T[:3, :3] @ p[:3] + T[:3, 3]
        if pc[2] <= 1e-3:
            continue
        u, v = np.floor((K @ pc)[:2] / pc[2] + 0.5).astype(int)
        if 0 <= u < hw[1] and 0 <= v < hw[0] and (depth[v, u] == 0 or pc[2] < depth[v, u]):
            depth[v, u] = pc[2]
    return depth


def test_hand_placed_point_lands_on_expected_pixel():
    # Lidar (5, -0.5, 0.2) is camera (0.5, -0.2, 5): u = 100 * 0.1 + 20 = 30, v = 100 * -0.04 + 15 = 11.
    depth = points_to_depth_map(torch.tensor([[5.0, -0.5, 0.2]], dtype=torch.float64), K, T_CAM_LIDAR, (H, W))
    assert depth.shape == (1, H, W) and depth.dtype == torch.float64
    assert depth[0, 11, 30].item() == 5.0
    assert (depth > 0).sum() == 1


@pytest.mark.parametrize("u, expected_column", [(30.4, 30), (30.6, 31), (0.2, 0), (39.3, 39)])
def test_rounds_to_nearest_pixel_centre(u, expected_column):
    depth = points_to_depth_map(torch.tensor([lidar_point_for_pixel(u, 11.0, 4.0)]), K, T_CAM_LIDAR, (H, W))
    assert depth[0, 11, expected_column].item() == pytest.approx(4.0)


@pytest.mark.parametrize("near_first", [True, False])
def test_nearest_point_wins_on_shared_pixel(near_first):
    near, far = lidar_point_for_pixel(12.0, 7.0, 3.0), lidar_point_for_pixel(12.1, 6.9, 9.0)
    points = [near, far] if near_first else [far, near]
    depth = points_to_depth_map(np.array(points), K.numpy(), T_CAM_LIDAR.numpy(), (H, W))
    assert depth[0, 7, 12].item() == pytest.approx(3.0)
    assert (depth > 0).sum() == 1


@pytest.mark.parametrize(
    "point",
    [
        [-5.0, 0.0, 0.0],  # behind the camera
        [0.0, 0.0, 0.0],  # at the camera centre
        lidar_point_for_pixel(45.0, 10.0, 5.0),  # right of the image
        lidar_point_for_pixel(10.0, -0.6, 5.0),  # above the image (rounds to row -1)
        [float("nan"), 0.0, 0.0],
    ],
)
def test_points_behind_or_outside_are_dropped(point):
    depth = points_to_depth_map(torch.tensor([point], dtype=torch.float64), K, T_CAM_LIDAR, (H, W))
    assert (depth == 0).all()


def test_several_cameras_match_single_camera_maps_and_brute_force():
    generator = np.random.default_rng(0)
    points = np.concatenate(
        [generator.uniform([-20, -20, -3], [20, 20, 3], size=(3000, 3)), generator.uniform(size=(3000, 1))], axis=1
    )  # [N, 4]: x, y, z, reflectance (ignored)
    K_all = torch.stack([K, make_intrinsics(60.0, 60.0, 19.5, 14.5).double(), K])
    yaw = torch.tensor(np.pi / 2)
    rotate_left = torch.tensor([[torch.cos(yaw), torch.sin(yaw), 0], [-torch.sin(yaw), torch.cos(yaw), 0], [0, 0, 1]],
                               dtype=torch.float64)
    T_all = torch.stack([
        T_CAM_LIDAR,
        make_transform(LIDAR_TO_CAMERA_AXES @ rotate_left, torch.tensor([0.1, 0.3, -0.2], dtype=torch.float64)),
        make_transform(LIDAR_TO_CAMERA_AXES, torch.tensor([0.0, 1.5, 0.0], dtype=torch.float64)),
    ])
    depth = points_to_depth_map(points, K_all, T_all, (H, W))
    assert depth.shape == (3, 1, H, W)
    for c in range(3):
        single = points_to_depth_map(points, K_all[c], T_all[c], (H, W))
        torch.testing.assert_close(depth[c], single)
        expected = brute_force_depth_map(points, K_all[c].numpy(), T_all[c].numpy(), (H, W))
        np.testing.assert_allclose(depth[c, 0].numpy(), expected)
        assert (depth[c] > 0).sum() > 50  # the test exercises real points


def test_float32_numpy_input_gives_float32_tensor():
    points = np.array([lidar_point_for_pixel(3.0, 4.0, 2.0)], dtype=np.float32)
    depth = points_to_depth_map(points, K.float(), T_CAM_LIDAR.float(), (H, W))
    assert isinstance(depth, torch.Tensor) and depth.dtype == torch.float32
    assert depth[0, 4, 3].item() == pytest.approx(2.0)
