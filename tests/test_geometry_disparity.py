"""Disparity <-> depth and scene flow -> optical flow."""
import pytest
import torch

from geometry import (
    backproject,
    depth_to_disparity,
    disparity_to_depth,
    invert_intrinsics,
    make_intrinsics,
    scene_flow_to_optical_flow,
)

KITTI_FX, KITTI_BASELINE = 721.5377, 0.54


def test_kitti_hand_computed_values():
    # 721.5377 px * 0.54 m = 389.630358 px m.
    depth = disparity_to_depth(torch.tensor([38.9]), KITTI_FX, KITTI_BASELINE)
    assert depth.item() == pytest.approx(10.016204576, rel=1e-6)
    disparity = depth_to_disparity(torch.tensor([10.0]), KITTI_FX, KITTI_BASELINE)
    assert disparity.item() == pytest.approx(38.9630358, rel=1e-6)


def test_multi_mono_sf_style_eps_and_clamp():
    disparity = torch.tensor([0.0, 1e-3, 38.9, 1e9])
    depth = disparity_to_depth(disparity, KITTI_FX, KITTI_BASELINE, eps=1e-4, min_depth=1e-3, max_depth=80.0)
    assert depth.tolist()[:2] == [80.0, 80.0] and depth[3].item() == pytest.approx(1e-3)
    assert depth[2].item() == pytest.approx(389.630358 / (38.9 + 1e-4), rel=1e-6)


@pytest.mark.parametrize("focal_shape", ["number", "[B]", "[B,1,1,1]"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_round_trip_with_per_item_focal(focal_shape, dtype):
    disparity = torch.rand(3, 1, 4, 5, dtype=dtype) * 100 + 1
    focals = torch.tensor([721.5377, 707.0493, 718.856], dtype=dtype)
    focal = {"number": KITTI_FX, "[B]": focals, "[B,1,1,1]": focals.reshape(3, 1, 1, 1)}[focal_shape]
    depth = disparity_to_depth(disparity, focal, KITTI_BASELINE)
    assert depth.shape == disparity.shape and depth.dtype == dtype
    torch.testing.assert_close(depth_to_disparity(depth, focal, KITTI_BASELINE), disparity)
    if focal_shape != "number":  # item i uses focal i
        expected = focals[1].item() * KITTI_BASELINE / disparity[1, 0, 0, 0].item()
        assert depth[1, 0, 0, 0].item() == pytest.approx(expected, rel=1e-5)


K = make_intrinsics(torch.tensor([100.0, 80.0]), 90.0, 15.5, 11.5).double()  # two cameras [2, 3, 3]


def plane_depth(z=5.0, shape=(2, 1, 24, 32)):
    return torch.full(shape, z, dtype=torch.float64)


def test_zero_scene_flow_gives_zero_optical_flow():
    depth = torch.rand(2, 1, 24, 32, dtype=torch.float64) * 10 + 1
    flow = scene_flow_to_optical_flow(depth, torch.zeros(2, 3, 24, 32, dtype=torch.float64), K)
    assert flow.shape == (2, 2, 24, 32)
    torch.testing.assert_close(flow, torch.zeros_like(flow), atol=1e-10, rtol=0)


@pytest.mark.parametrize("tx, ty", [(0.3, 0.0), (-0.2, 0.1)])
def test_lateral_translation_gives_analytic_flow(tx, ty):
    z = 5.0
    scene_flow = torch.zeros(2, 3, 24, 32, dtype=torch.float64)
    scene_flow[:, 0], scene_flow[:, 1] = tx, ty
    flow = scene_flow_to_optical_flow(plane_depth(z), scene_flow, K)
    fx, fy = K[:, 0, 0].reshape(2, 1, 1), K[:, 1, 1].reshape(2, 1, 1)
    torch.testing.assert_close(flow[:, 0], (fx * tx / z).expand(2, 24, 32))
    torch.testing.assert_close(flow[:, 1], (fy * ty / z).expand(2, 24, 32))


def test_forward_motion_expands_from_principal_point_and_points_input_agrees():
    z, tz = 5.0, -1.0  # the point comes 1 m closer
    depth = plane_depth(z)
    scene_flow = torch.zeros(2, 3, 24, 32, dtype=torch.float64)
    scene_flow[:, 2] = tz
    flow = scene_flow_to_optical_flow(depth, scene_flow, K)
    u = torch.arange(32, dtype=torch.float64)
    torch.testing.assert_close(flow[0, 0, 7], (u - 15.5) * (z / (z + tz) - 1))
    points = backproject(depth, invert_intrinsics(K))
    flow_from_points, valid = scene_flow_to_optical_flow(points, scene_flow, K, return_valid=True)
    torch.testing.assert_close(flow_from_points, flow)
    assert valid.all()
    scene_flow[:, 2] = -z - 1  # behind the camera at t+1
    _, valid = scene_flow_to_optical_flow(points, scene_flow, K, return_valid=True)
    assert not valid.any()
