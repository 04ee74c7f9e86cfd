"""Geometry of the volumetric fusion (network/volumetric_fusion.py) on planted features and voxels,
the fast back-projection against the plain per-camera grid_sample formulation, and the camera
groups of the overlap branch."""
import math

import numpy as np
import pytest
import torch

from dataset.synthetic.rig import get_rig
from network.volumetric_fusion import (REFERENCE_SIX_CAMERA_GROUPS, CalibrationCache, DepthVolumeFusion,
                                       PoseVolumeFusion, VoxelGrid, camera_groups, dense_backprojection,
                                       dense_depth_fusion, ray_points, tensor_nbytes)

# Camera frame (x right, y down, z forward) -> rig frame (x forward, y left, z up) of a camera at
# the rig origin looking along the rig's x axis.
R_RIG_CAM = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]], dtype=torch.float64)
GRID = VoxelGrid(start=(-10.0, -10.0, -4.0), unit=(1.0, 1.0, 1.0), size=(21, 21, 9))
FEATURE_HW = (9, 13)


def forward_camera(yaw_deg=0.0, position=(0.0, 0.0, 0.0)):
    yaw = math.radians(yaw_deg)
    Rz = torch.tensor([[math.cos(yaw), -math.sin(yaw), 0.0], [math.sin(yaw), math.cos(yaw), 0.0], [0.0, 0.0, 1.0]],
                      dtype=torch.float64)
    E = torch.eye(4, dtype=torch.float64)
    E[:3, :3] = Rz @ R_RIG_CAM
    E[:3, 3] = torch.tensor(position, dtype=torch.float64)
    return E


def feature_K(f=5.0, cx=6.0, cy=4.0):
    return torch.tensor([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]], dtype=torch.float64)


def project_voxels(K, E):
    """(u, v, z) of every voxel centre in one camera (numpy-free reference maths, float64)."""
    X = GRID.centres(dtype=torch.float64)
    p = (torch.linalg.inv(E) @ torch.cat([X, torch.ones(len(X), 1, dtype=torch.float64)], 1).t())[:3].t()
    uvw = p @ K.t()
    return uvw[:, 0] / uvw[:, 2], uvw[:, 1] / uvw[:, 2], p[:, 2]


def test_a_feature_at_one_pixel_lands_on_that_pixels_ray_and_nowhere_else():
    K, E = feature_K(), forward_camera()
    row, col = 4, 6
    features = torch.zeros(1, 1, 3, *FEATURE_HW)
    features[0, 0, 1, row, col] = 1.0
    fusion = PoseVolumeFusion(GRID, feat_dim=3, cache=None)
    volume = fusion.fuse(features, K[None, None].float(), E[None, None].float(), None)   # [1, 4, nz, ny, nx]
    planted = volume[0, 1].reshape(-1).double()
    u, v, z = project_voxels(K, E)
    du, dv = (u - col).abs(), (v - row).abs()
    footprint = (z > 0) & (du < 1) & (dv < 1)
    # exactly the bilinear weight of the pixel at each voxel, zero off the pixel's footprint
    expected = torch.where(footprint, (1 - du).clamp(min=0) * (1 - dv).clamp(min=0), torch.zeros_like(du))
    assert torch.allclose(planted, expected, atol=1e-6)
    on_ray = (z > 0) & (du < 1e-9) & (dv < 1e-9)
    assert on_ray.sum() >= 5 and torch.allclose(planted[on_ray], torch.ones(int(on_ray.sum()), dtype=torch.float64))
    assert (planted[~footprint] == 0).all()
    # the other feature channels stay empty; the depth channel is z/100 wherever the camera sees
    assert (volume[0, 0] == 0).all() and (volume[0, 2] == 0).all()
    depth = volume[0, 3].reshape(-1).double()
    seen = (z > 0) & (u >= 0) & (u <= FEATURE_HW[1] - 1) & (v >= 0) & (v <= FEATURE_HW[0] - 1)
    assert torch.allclose(depth[seen], z[seen] / 100, atol=1e-6) and (depth[~seen] == 0).all()


def test_a_voxel_projected_back_appears_at_its_pixel_and_depth_bin():
    K, E = feature_K(f=10.0), forward_camera()
    bins = torch.linspace(2.0, 18.0, 9)              # 2, 4, ..., 18 m
    fusion = DepthVolumeFusion(GRID, feat_dim=3, voxel_dim=2, proj_d_bins=9, proj_d_str=2.0, proj_d_end=18.0,
                               out_dim=4, cache=None)
    assert torch.allclose(fusion.depth_bins, bins)
    cases = [((10.0, 0.0, 0.0), (4, 4, 6)),          # rig point -> (bin, row, col): straight ahead at 10 m
             ((6.0, -3.0, 0.0), (2, 4, 11))]         # 6 m ahead, 3 m right: u = 6 + 10·3/6
    for point, (d, r, c) in cases:
        volume = torch.zeros(1, 2, *GRID.volume_shape)
        ix = [int(round((p - s) / u)) for p, s, u in zip(point, GRID.start, GRID.unit)]
        volume[0, 1, ix[2], ix[1], ix[0]] = 1.0
        sampled = fusion.sample_views(volume, K[None, None].float(), E[None, None].float(), FEATURE_HW)
        assert sampled.shape == (1, 2, 9, *FEATURE_HW)
        peak = sampled[0, 1]
        assert torch.isclose(peak[d, r, c], torch.tensor(1.0), atol=1e-5)
        assert int(peak.argmax()) == np.ravel_multi_index((d, r, c), peak.shape)
        assert (sampled[0, 0] == 0).all()
    # the ray points themselves: pixel (row, col) at bin d is the rig point d·K⁻¹(u, v, 1)
    pts = ray_points(K[None, None], E[None, None], FEATURE_HW, bins)[0, 0]
    assert torch.allclose(pts[4, 4, 6], torch.tensor([10.0, 0.0, 0.0], dtype=torch.float64), atol=1e-9)
    assert torch.allclose(pts[3, 1, 1], torch.tensor([8.0, 4.0, 2.4], dtype=torch.float64), atol=1e-9)


def ddad_rig(feature_hw=FEATURE_HW):
    rig = get_rig("ddad", image_hw=(48, 80))
    K = torch.from_numpy(rig.K).float()
    from geometry import resize_intrinsics
    K = resize_intrinsics(K, (48, 80), feature_hw)
    return K[None], torch.from_numpy(rig.T_rig_cam).float()[None]


@pytest.mark.parametrize("preset", ["ddad", "nuscenes"])
def test_camera_groups_alternate_around_the_rig_and_match_the_reference_six_camera_groups(preset):
    rig = get_rig(preset)
    groups = camera_groups(torch.from_numpy(rig.T_rig_cam))
    assert groups.tolist() == list(REFERENCE_SIX_CAMERA_GROUPS)
    # any rig: neighbours by azimuth alternate; a rotated copy of the rig gives the same groups
    E = torch.stack([forward_camera(yaw) for yaw in (0, 90, 180, 270)])
    assert camera_groups(E).tolist() == [0, 1, 0, 1]
    assert camera_groups(E[[0, 2, 1, 3]]).tolist() == [0, 0, 1, 1]


def wide_rig():
    """Six wide cameras (112 degrees) in the reference order F, FL, FR, RL, RR, R: voxels in front
    are seen by three cameras at once."""
    # Off-grid positions: a voxel exactly half-way between two mask pixels would be a tie that the
    # two formulations may break differently (round vs grid_sample's nearest), not a difference.
    E = torch.stack([forward_camera(yaw, (1.0137, -0.0071, 1.5093)) for yaw in (0, 55, -55, 125, -125, 180)]).float()
    return feature_K(f=4.0).float().expand(1, 6, 3, 3), E[None]


@pytest.mark.parametrize("reference", [False, True])
def test_fast_depth_fusion_equals_the_plain_per_camera_formulation(reference):
    torch.manual_seed(0)
    K, E = wide_rig()
    b = 2
    K, E = K.expand(b, -1, -1, -1).clone(), E.expand(b, -1, -1, -1).clone()
    E[1, :, :3, 3] += torch.tensor([0.3, -0.2, 0.1])          # a second calibration in the batch
    grid = VoxelGrid(start=(-30.0, -30.0, -3.0), unit=(3.0, 3.0, 1.5), size=(21, 21, 5))
    fusion = DepthVolumeFusion(grid, feat_dim=8, voxel_dim=5, proj_d_bins=4, out_dim=3,
                               reference_max_two_overlap=reference, cache=CalibrationCache())
    features = torch.randn(b, 6, 8, *FEATURE_HW)
    masks = (torch.rand(b, 6, 1, 48, 80) > 0.2).float()
    fast = fusion.fuse(features, K, E, masks)
    plain = dense_depth_fusion(fusion, features, K, E, masks)
    fusion.plain = True                                   # what tools/benchmark.py --plain runs
    assert torch.equal(fusion.fuse(features, K, E, masks), plain)
    fusion.plain = False
    assert fast.shape == plain.shape == (b, 5, 5, 21, 21)
    counts = dense_backprojection(features, K, E, masks, grid)[1].sum(1)
    assert (counts >= 2).sum() > 50 and (counts >= 3).sum() > 0     # the case both branches must handle
    assert torch.allclose(fast, plain, atol=1e-5)
    if reference:   # voxels seen by three or more cameras are dropped, as in the reference
        assert (fast.reshape(b, 5, -1).transpose(1, 2)[counts.reshape(b, -1) >= 3] == 0).all()
    else:           # ... and kept by default
        assert (fast.reshape(b, 5, -1).transpose(1, 2)[counts.reshape(b, -1) >= 3].abs().sum(-1) > 0).all()
    # the gradients agree too
    features.requires_grad_(True)
    g_fast, = torch.autograd.grad(fusion.fuse(features, K, E, masks).square().sum(), features)
    g_plain, = torch.autograd.grad(dense_depth_fusion(fusion, features, K, E, masks).square().sum(), features)
    assert torch.allclose(g_fast, g_plain, atol=1e-4)


def test_fast_pose_fusion_is_the_mean_over_the_valid_cameras():
    torch.manual_seed(1)
    K, E = ddad_rig()
    grid = VoxelGrid(start=(-30.0, -30.0, -3.0), unit=(3.0, 3.0, 1.5), size=(21, 21, 5))
    features = torch.randn(1, 6, 4, *FEATURE_HW)
    masks = (torch.rand(1, 6, 1, 48, 80) > 0.3).float()
    module = PoseVolumeFusion(grid, feat_dim=4, cache=None)
    fast = module.fuse(features, K, E, masks)
    feats, valid = dense_backprojection(features, K, E, masks, grid)
    mean = feats.sum(1) / valid.sum(1).clamp(min=1)[:, None]
    assert torch.allclose(fast.reshape(1, 5, -1), mean, atol=1e-5)
    module.plain = True                                  # the benchmarks' plain formulation is the same mean
    assert torch.allclose(module.fuse(features, K, E, masks).reshape(1, 5, -1), mean, atol=1e-6)


def test_calibration_cache_computes_once_per_distinct_rig():
    K, E = ddad_rig()
    cache = CalibrationCache()
    fusion = DepthVolumeFusion(GRID, feat_dim=4, voxel_dim=2, proj_d_bins=3, out_dim=2, cache=cache)
    features = torch.randn(2, 6, 4, *FEATURE_HW)
    KK, EE = K.expand(2, -1, -1, -1), E.expand(2, -1, -1, -1)
    fusion.fuse(features, KK, EE, None)
    assert (cache.misses, cache.hits) == (1, 1)           # two items, one calibration
    fusion.fuse(features, KK, EE, None)
    assert (cache.misses, cache.hits) == (1, 3)
    E2 = EE.clone()
    E2[1, 0, 0, 3] += 0.01
    fusion.fuse(features, KK, E2, None)
    assert cache.misses == 2


def test_cached_sparse_view_sampling_equals_grid_sample_with_gradients():
    """The cached path (sparse trilinear matrices) against grid_sample (the uncached path) in
    float64, for a batch of two different rigs whose rays leave the grid on every side."""
    K, E = ddad_rig()
    E2 = E.clone()
    E2[0, :, :3, 3] += torch.tensor([3.0, -2.0, 1.0])             # the second item: a shifted rig
    K_b, E_b = torch.cat([K, K]).double(), torch.cat([E, E2]).double()
    fusion = DepthVolumeFusion(GRID, feat_dim=4, voxel_dim=3, proj_d_bins=7, proj_d_str=1.0, proj_d_end=16.0,
                               out_dim=2, cache=CalibrationCache())
    volume = torch.randn(2, 3, *GRID.volume_shape, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(2 * 6, 3, 7, *FEATURE_HW, dtype=torch.float64)
    fast = fusion.sample_views(volume, K_b, E_b, FEATURE_HW)
    (grad_fast,) = torch.autograd.grad((fast * weights).sum(), volume)
    plain = fusion.sample_views(volume, K_b, E_b, FEATURE_HW, use_cache=False)
    (grad_plain,) = torch.autograd.grad((plain * weights).sum(), volume)
    assert fast.shape == plain.shape == (12, 3, 7, *FEATURE_HW)
    outside = (plain == 0).float().mean()
    assert 0.05 < outside < 0.95                                    # the test covers zero padding
    assert torch.allclose(fast, plain, atol=1e-10)
    assert torch.allclose(grad_fast, grad_plain, atol=1e-10)
    assert not torch.equal(fast[:6], fast[6:])                      # each item used its own rig


def test_calibration_cache_keeps_to_its_byte_budget():
    cache = CalibrationCache(maxsize=10, max_bytes=1000)
    for i in range(4):
        cache.get(i, lambda: torch.zeros(100))                     # 400 bytes each
    assert cache.nbytes <= 1000 and len(cache._items) == 2
    assert cache.get(3, lambda: None) is not None and cache.hits == 1
    cache.get("big", lambda: torch.zeros(1000))                    # larger than the budget: kept alone
    assert list(cache._items) == ["big"] and cache.nbytes == tensor_nbytes(torch.zeros(1000)) == 4000
