"""The synthetic world against the project's geometry: photometric, flow, lidar and determinism checks.

The rendered ground truth (depth, poses, calibration, scene flow) must explain the rendered images
through ``geometry`` (back-projection, warping, projection), and the renderer must honour the
``SyntheticSequence`` contract for every rig preset.
"""
import numpy as np
import pytest
import torch

from dataset.synthetic import RIG_PRESETS, Rig, get_rig, render_sequence
from dataset.synthetic.sequence import SyntheticSequence
from geometry import (
    backproject,
    backward_warp,
    invert_intrinsics,
    pixel_grid,
    points_to_depth_map,
    project,
    resize_intrinsics,
    sample_at_pixels,
    transform_point_map,
)

DDAD_HW = (96, 160)
KITTI_HW = (96, 320)
NUSCENES_HW = (72, 128)


def _render(*args, **kwargs) -> SyntheticSequence:
    # One thread: the test machine's cores are shared, and results do not depend on it (tested).
    return render_sequence(*args, num_threads=1, **kwargs)


@pytest.fixture(scope="module")
def ddad():
    return _render("ddad", 3, image_hw=DDAD_HW, seed=0)


@pytest.fixture(scope="module")
def kitti():
    return _render("kitti", 3, image_hw=KITTI_HW, seed=1, scene_index=2)


@pytest.fixture(scope="module")
def nuscenes():
    return _render("nuscenes", 2, image_hw=NUSCENES_HW, seed=2)


@pytest.fixture(scope="module")
def tiny_kitti():
    return _render("kitti", 2, image_hw=(48, 160), seed=5)


def _t(x) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(x)).to(torch.float64)


def _image(seq, t, n) -> torch.Tensor:
    return _t(seq.images[t, n]).permute(2, 0, 1) / 255.0


def _depth(seq, t, n) -> torch.Tensor:
    return _t(seq.depth[t, n])[None]


def _T_world_cam(seq) -> torch.Tensor:
    return _t(seq.T_world_rig)[:, None] @ _t(seq.T_rig_cam)[None]


def _not_backdrop(seq, depth):
    return depth < 0.5 * seq.metadata["backdrop"]["radius"]


def _warp_errors(seq, tgt, src, T_src_tgt, static_only, K_src_override=None):
    """Mean |warped source - target| and |unwarped source - target| on the pixels where the
    warp is meaningful: inside the source, not occluded (depth test), not ego body, not backdrop."""
    (t_tgt, n_tgt), (t_src, n_src) = tgt, src
    K = _t(seq.K)
    depth_t = _depth(seq, t_tgt, n_tgt)
    K_src = K[n_src] if K_src_override is None else K_src_override
    warped, valid = backward_warp(_image(seq, t_src, n_src), depth_t, K[n_tgt], K_src, T_src_tgt)
    warped_depth, _ = backward_warp(_depth(seq, t_src, n_src), depth_t, K[n_tgt], K[n_src], T_src_tgt)
    z_src = transform_point_map(T_src_tgt, backproject(depth_t, invert_intrinsics(K[n_tgt])))[2:3]
    mask = (valid > 0) & ((warped_depth - z_src).abs() < 0.02 * z_src) & _not_backdrop(seq, depth_t)
    mask &= _t(seq.self_occlusion[n_tgt])[None] > 0
    if static_only:
        mask &= _t(seq.object_ids[t_tgt, n_tgt])[None] == 0
    m = mask.expand(3, -1, -1)
    target = _image(seq, t_tgt, n_tgt)
    warp_err = (warped - target).abs()[m].mean().item()
    plain_err = (_image(seq, t_src, n_src) - target).abs()[m].mean().item()
    return warp_err, plain_err, int(mask.sum())


# ----------------------------------------------------------------------------- rigs and contract
def test_rig_presets_calibration():
    ddad = get_rig("ddad")
    assert ddad.camera_names == ["CAMERA_01", "CAMERA_05", "CAMERA_06", "CAMERA_07", "CAMERA_08", "CAMERA_09"]
    assert ddad.native_hw == (1216, 1936) and ddad.frame_rate_hz == 10.0
    np.testing.assert_allclose(ddad.K[0], [[2181.530254382263, 0, 928.0218817103168],
                                           [0, 2181.6034466840038, 615.9567879463117], [0, 0, 1]])
    R = ddad.T_rig_cam[:, :3, :3]
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    np.testing.assert_allclose(ddad.T_rig_cam[0, :3, 3], [1.4855427639599839, 0.28616353316692766, 1.5617304615771417])
    assert ddad.T_rig_cam[0, 0, 2] > 0.99 and ddad.T_rig_cam[5, 0, 2] < -0.99  # front looks +x, rear -x
    np.testing.assert_array_equal(ddad.T_rig_lidar, np.eye(4))
    small = get_rig("ddad", (192, 320))
    expected = resize_intrinsics(torch.as_tensor(ddad.K), (1216, 1936), (192, 320), "half_pixel").numpy()
    np.testing.assert_allclose(small.K, expected)
    assert small.image_hw == (192, 320) and ddad.image_hw == (1216, 1936)  # the preset is not modified

    nus = get_rig("nuscenes")
    assert nus.camera_names == ["CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT", "CAM_BACK_LEFT",
                                "CAM_BACK_RIGHT", "CAM_BACK"]
    assert nus.frame_rate_hz == 12.0 and nus.lidar_rings == 32
    yaws = np.degrees(np.arctan2(nus.T_rig_cam[:, 1, 2], nus.T_rig_cam[:, 0, 2]))
    np.testing.assert_allclose(yaws, [0, 55, -55, 110, -110, 180], atol=1e-9)
    np.testing.assert_allclose(nus.T_rig_lidar[:3, 3], [0.94, 0.0, 1.84])

    kitti = get_rig("kitti")
    np.testing.assert_array_equal(kitti.T_rig_cam[0], np.eye(4))
    np.testing.assert_allclose(kitti.T_rig_cam[1], np.array([[1, 0, 0, 0.54], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]))
    # Velodyne 0.08 m above (camera y is down) and 0.27 m behind the camera; its axes x fwd, y left, z up.
    np.testing.assert_allclose(kitti.T_rig_lidar[:3, 3], [0.0, -0.08, -0.27], atol=1e-12)
    np.testing.assert_allclose(kitti.T_rig_lidar[:3, :3], [[0, -1, 0], [0, 0, -1], [1, 0, 0]], atol=1e-12)
    assert set(RIG_PRESETS) == {"ddad", "nuscenes", "kitti"}
    with pytest.raises(ValueError, match="unknown rig preset"):
        get_rig("waymo")


@pytest.mark.parametrize("name", ["ddad", "kitti", "nuscenes"])
def test_contract_shapes_and_dtypes(name, request):
    seq = request.getfixturevalue(name)
    T, N = seq.num_frames, seq.num_cameras
    H, W = seq.image_hw
    assert isinstance(seq, SyntheticSequence)
    assert N == len(seq.camera_names) == len(RIG_PRESETS[name].camera_names)
    expected = {
        "K": ((N, 3, 3), np.float64), "T_rig_cam": ((N, 4, 4), np.float64), "timestamps": ((T,), np.float64),
        "T_world_rig": ((T, 4, 4), np.float64), "images": ((T, N, H, W, 3), np.uint8),
        "depth": ((T, N, H, W), np.float32), "object_ids": ((T, N, H, W), np.int32),
        "scene_flow_fwd": ((T, N, H, W, 3), np.float32), "scene_flow_bwd": ((T, N, H, W, 3), np.float32),
        "optical_flow_fwd": ((T, N, H, W, 2), np.float32), "optical_flow_bwd": ((T, N, H, W, 2), np.float32),
        "T_rig_lidar": ((4, 4), np.float64), "self_occlusion": ((N, H, W), np.uint8),
    }
    for field, (shape, dtype) in expected.items():
        value = getattr(seq, field)
        assert value.shape == shape and value.dtype == dtype, (field, value.shape, value.dtype)
    assert len(seq.lidar_points) == T
    for points in seq.lidar_points:
        assert points.ndim == 2 and points.shape[1] == 4 and points.dtype == np.float32 and len(points) > 1000
        assert np.all((points[:, 3] >= 0) & (points[:, 3] <= 1))
    np.testing.assert_allclose(np.diff(seq.timestamps), 1.0 / RIG_PRESETS[name].frame_rate_hz)
    assert np.all(np.isfinite(seq.depth)) and seq.depth.min() > 0
    for field in ("scene_flow_fwd", "scene_flow_bwd", "optical_flow_fwd", "optical_flow_bwd"):
        assert np.all(np.isfinite(getattr(seq, field)))
    assert seq.object_ids.min() == 0 and seq.object_ids.max() > 0  # some cars in view
    assert seq.name == f"{seq.metadata['scene_index']:06d}" and seq.metadata["preset"] == name
    # The rig drives forward at a plausible speed.
    step = np.linalg.norm(np.diff(seq.T_world_rig[:, :3, 3], axis=0), axis=1) * RIG_PRESETS[name].frame_rate_hz
    assert np.all((step > 5.0) & (step < 13.0)), step
    # Images are textured everywhere: no flat camera.
    assert np.all(seq.images.reshape(T * N, -1).std(axis=1) > 20)


def test_self_occlusion(ddad, nuscenes, kitti):
    masked = 1.0 - ddad.self_occlusion.reshape(ddad.num_cameras, -1).mean(axis=1)
    print("ddad masked fractions", dict(zip(ddad.camera_names, masked.round(3))))
    assert masked[0] == 0.0  # front camera fully valid
    assert 0.05 < masked[5] < 0.35  # rear camera sees the boot
    assert masked[1] < 0.05 and masked[2] < 0.05
    nus_masked = 1.0 - nuscenes.self_occlusion.reshape(nuscenes.num_cameras, -1).mean(axis=1)
    print("nuscenes masked fractions", dict(zip(nuscenes.camera_names, nus_masked.round(3))))
    assert np.all(nus_masked[:5] == 0.0) and 0.03 < nus_masked[5] < 0.25
    # Only the bottom rows of CAM_BACK: in every column the masked pixels form a suffix.
    back = nuscenes.self_occlusion[5] == 0
    assert np.all(np.diff(back.astype(np.int8), axis=0) >= 0)
    assert np.all(kitti.self_occlusion == 1)
    # The ego body moves with the rig: no scene or optical flow, object id 0.
    ego = ddad.self_occlusion == 0
    for field in ("scene_flow_fwd", "scene_flow_bwd", "optical_flow_fwd", "optical_flow_bwd"):
        assert np.all(getattr(ddad, field)[:, ego] == 0), field
    assert np.all(ddad.object_ids[:, ego] == 0)
    # ... and it is the same at every frame: rendering without it frees those pixels.
    bare = _render("ddad", 1, image_hw=(48, 80), self_occlusion=False)
    assert np.all(bare.self_occlusion == 1)


# ----------------------------------------------------------------------------- photometric consistency
@pytest.mark.parametrize("name", ["ddad", "kitti"])
def test_temporal_photometric_consistency(name, request):
    """Warping frame t+1 into frame t with depth(t), the rig poses and the calibration reproduces
    frame t on static, visible pixels; the pixel-centre convention is right to a fraction of a pixel."""
    seq = request.getfixturevalue(name)
    T_wc = _T_world_cam(seq)
    warp_sum = plain_sum = count = 0.0
    for t in range(seq.num_frames - 1):
        for n in range(seq.num_cameras):
            T_src_tgt = torch.linalg.inv(T_wc[t + 1, n]) @ T_wc[t, n]
            warp_err, plain_err, pixels = _warp_errors(seq, (t, n), (t + 1, n), T_src_tgt, static_only=True)
            assert pixels > 0.2 * np.prod(seq.image_hw), (t, n, pixels)
            assert warp_err < 0.45 * plain_err and warp_err < 0.02, (t, n, warp_err, plain_err)
            warp_sum += warp_err * pixels
            plain_sum += plain_err * pixels
            count += pixels
    print(f"{name}: temporal warp error {warp_sum / count:.4f} vs unwarped {plain_sum / count:.4f}")
    assert warp_sum / count < 0.3 * plain_sum / count
    assert warp_sum / count < 0.012
    # A source camera shifted by a quarter pixel warps clearly worse: the geometry is sub-pixel exact.
    n = 0
    T_src_tgt = torch.linalg.inv(T_wc[1, n]) @ T_wc[0, n]
    exact, _, _ = _warp_errors(seq, (0, n), (1, n), T_src_tgt, static_only=True)
    for du, dv in ((0.25, 0.0), (0.0, 0.25), (-0.25, -0.25)):
        K_shifted = _t(seq.K[n]).clone()
        K_shifted[0, 2] += du
        K_shifted[1, 2] += dv
        shifted, _, _ = _warp_errors(seq, (0, n), (1, n), T_src_tgt, static_only=True, K_src_override=K_shifted)
        assert shifted > 1.1 * exact, (du, dv, shifted, exact)


def test_spatial_photometric_consistency(ddad, kitti):
    """Two cameras of the rig at the same instant (moving cars included): DDAD front / front-left,
    and the KITTI stereo pair, whose relative pose is the pure 0.54 m baseline."""
    T_rc = _t(ddad.T_rig_cam)
    results = {}
    for t in range(ddad.num_frames):
        T_src_tgt = torch.linalg.inv(T_rc[1]) @ T_rc[0]
        results.setdefault("ddad 01<-05", []).append(_warp_errors(ddad, (t, 0), (t, 1), T_src_tgt, static_only=False))
    T_rc = _t(kitti.T_rig_cam)
    T_right_left = torch.linalg.inv(T_rc[1]) @ T_rc[0]
    np.testing.assert_allclose(T_right_left.numpy(), np.array(
        [[1, 0, 0, -0.54], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]), atol=1e-15)
    for t in range(kitti.num_frames):
        results.setdefault("kitti 02<-03", []).append(
            _warp_errors(kitti, (t, 0), (t, 1), T_right_left, static_only=False))
    for key, rows in results.items():
        warp_err, plain_err, pixels = np.mean(np.array(rows), axis=0)
        print(f"{key}: warp error {warp_err:.4f} vs unwarped {plain_err:.4f} on {pixels:.0f} pixels")
        assert pixels > 500
        assert warp_err < 0.3 * plain_err and warp_err < 0.03


# ----------------------------------------------------------------------------- scene flow
def _flow_setup(seq, t, n, direction):
    K = _t(seq.K[n])
    X = backproject(_depth(seq, t, n), invert_intrinsics(K))
    sf = _t(getattr(seq, f"scene_flow_{direction}")[t, n]).permute(2, 0, 1)
    of = _t(getattr(seq, f"optical_flow_{direction}")[t, n]).permute(2, 0, 1)
    return K, X, sf, of


@pytest.mark.parametrize("name", ["ddad", "kitti"])
def test_optical_flow_is_projected_scene_flow(name, request):
    seq = request.getfixturevalue(name)
    H, W = seq.image_hw
    grid = pixel_grid(H, W, dtype=torch.float64)[:2]
    for t in range(seq.num_frames):
        for n in range(seq.num_cameras):
            for direction in ("fwd", "bwd"):
                K, X, sf, of = _flow_setup(seq, t, n, direction)
                pixels, in_front = project(X + sf, K)
                err = (pixels - grid - of).abs().amax(dim=0)[in_front[0]]
                assert err.max() < 2e-3, (t, n, direction, err.max().item())
                assert in_front.float().mean() > 0.99


@pytest.mark.parametrize("name", ["ddad", "kitti"])
def test_scene_flow_static_is_ego_motion_and_cars_move_with_their_velocity(name, request):
    seq = request.getfixturevalue(name)
    T_wc = _T_world_cam(seq)
    dt = 1.0 / seq.metadata["frame_rate_hz"]
    velocities = seq.metadata["car_velocities"]
    moving_pixels = 0
    for t in range(seq.num_frames):
        for n in range(seq.num_cameras):
            for direction, step in (("fwd", 1), ("bwd", -1)):
                if not 0 <= t + step < seq.num_frames:
                    continue  # beyond the rendered frames: see test_scene_flow_beyond_the_rendered_frames
                _, X, sf, _ = _flow_setup(seq, t, n, direction)
                ids = _t(seq.object_ids[t, n])
                visible = _t(seq.self_occlusion[n]) > 0
                T_other = T_wc[t + step, n]
                T_other_now = torch.linalg.inv(T_other) @ T_wc[t, n]
                ego_only = transform_point_map(T_other_now, X) - X
                static = (ids == 0) & visible
                scale = 1e-6 * (1.0 + X.norm(dim=0))
                assert ((sf - ego_only).abs().amax(dim=0) <= 1e-5 + scale)[static].all(), (t, n, direction)
                # World-frame displacement of car points = velocity * dt.
                X_world = transform_point_map(T_wc[t, n], X)
                X_world_other = transform_point_map(T_other, X + sf)
                displacement = X_world_other - X_world
                for k in torch.unique(ids[ids > 0]).tolist():
                    mask = ids == k
                    expected = torch.tensor(velocities[k], dtype=torch.float64) * dt * step
                    err = (displacement[:, mask] - expected[:, None]).abs().max().item()
                    assert err < 1e-3, (t, n, k, err)
                    if expected.norm() > 0.3:
                        moving_pixels += int(mask.sum())
    assert moving_pixels > 100  # moving cars were actually seen


def test_scene_flow_beyond_the_rendered_frames(kitti):
    """The last frame's forward flow equals the flow a longer render computes for that frame."""
    longer = _render("kitti", kitti.num_frames + 1, image_hw=KITTI_HW, seed=1, scene_index=2)
    last = kitti.num_frames - 1
    for field in ("scene_flow_fwd", "optical_flow_fwd", "depth", "images"):
        np.testing.assert_array_equal(getattr(kitti, field)[last], getattr(longer, field)[last], err_msg=field)
    np.testing.assert_array_equal(kitti.scene_flow_bwd[0], longer.scene_flow_bwd[0])


@pytest.mark.parametrize("name", ["ddad", "kitti"])
def test_flow_agrees_with_next_depth_and_backward_flow(name, request):
    """depth(t+1) sampled at p + flow equals (X + sf).z where visible; the backward flow of t+1 there
    undoes the forward flow."""
    seq = request.getfixturevalue(name)
    H, W = seq.image_hw
    for t in range(seq.num_frames - 1):
        for n in range(seq.num_cameras):
            K, X, sf, _ = _flow_setup(seq, t, n, "fwd")
            pixels, valid = project(X + sf, K, image_hw=(H, W))
            valid &= (_t(seq.self_occlusion[n])[None] > 0) & _not_backdrop(seq, _depth(seq, t, n))
            z_pred = (X + sf)[2:3]
            z_next = sample_at_pixels(_depth(seq, t + 1, n), pixels)
            rel = ((z_next - z_pred).abs() / z_pred)[valid]
            assert rel.median() < 1e-3 and (rel < 0.01).double().mean() > 0.75, (t, n, rel.median().item())
            visible = valid & ((z_next - z_pred).abs() < 0.005 * z_pred)
            sf_back = sample_at_pixels(_t(seq.scene_flow_bwd[t + 1, n]).permute(2, 0, 1), pixels)
            residual = (sf_back + sf).norm(dim=0, keepdim=True)[visible]
            assert residual.median() < 1e-3 and residual.quantile(0.95) < 0.02, (t, n, residual.quantile(0.95).item())


# ----------------------------------------------------------------------------- lidar
@pytest.mark.parametrize("name,camera", [("kitti", 0), ("kitti", 1), ("ddad", 0), ("ddad", 3)])
def test_lidar_agrees_with_rendered_depth(name, camera, request):
    seq = request.getfixturevalue(name)
    H, W = seq.image_hw
    K = _t(seq.K[camera])
    T_cam_lidar = _t(np.linalg.inv(seq.T_rig_cam[camera]) @ seq.T_rig_lidar)
    for t in range(seq.num_frames):
        points = _t(seq.lidar_points[t][:, :3])
        depth = _depth(seq, t, camera)
        visible = _t(seq.self_occlusion[camera])[None] > 0
        # Nearest pixel centre (as a loader would do it) vs the rendered pixel-centre depth.
        sparse = points_to_depth_map(points, K, T_cam_lidar, (H, W))
        hit = (sparse > 0) & visible
        rel_nearest = ((sparse - depth).abs() / depth)[hit]
        # Exact: inverse depth is affine in the pixel coordinates on a plane, so bilinear sampling
        # of 1/depth at the projected sub-pixel position reproduces planar surfaces exactly.
        cam_points = points @ T_cam_lidar[:3, :3].T + T_cam_lidar[:3, 3]
        cam_points = cam_points[cam_points[:, 2] > 0.1]
        uv = cam_points @ K.T
        uv = uv[:, :2] / uv[:, 2:]
        inside = (uv[:, 0] >= 0) & (uv[:, 0] <= W - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= H - 1)
        uv, z = uv[inside], cam_points[inside, 2]
        inv_depth = sample_at_pixels(1.0 / depth, uv.T[:, None, :])[0, 0]
        on_scene = sample_at_pixels(visible.double(), uv.T[:, None, :], mode="nearest")[0, 0] > 0
        rel_exact = ((1.0 / inv_depth - z).abs() / z)[on_scene]
        print(f"{name} cam {camera} t {t}: {int(hit.sum())} pixels, nearest-pixel median rel err "
              f"{rel_nearest.median():.4f}; sub-pixel median {rel_exact.median():.2e}, "
              f"{(rel_exact < 0.01).double().mean():.3f} within 1 %")
        assert hit.sum() > 300
        assert rel_nearest.median() < 0.01
        assert rel_exact.median() < 1e-4 and (rel_exact < 0.01).double().mean() > 0.8


@pytest.mark.parametrize("name", ["kitti", "nuscenes", "ddad"])
def test_lidar_rings_and_range(name, request):
    seq = request.getfixturevalue(name)
    lidar = seq.metadata["lidar"]
    T_lidar_sensor = np.array(lidar["T_lidar_sensor"])
    for points in seq.lidar_points:
        in_sensor = (points[:, :3].astype(np.float64) - T_lidar_sensor[:3, 3]) @ T_lidar_sensor[:3, :3]
        elevation = np.degrees(np.arctan2(in_sensor[:, 2], np.hypot(in_sensor[:, 0], in_sensor[:, 1])))
        levels = np.sort(elevation)
        rings = 1 + int(np.sum(np.diff(levels) > 0.05))
        assert rings == lidar["rings"] == RIG_PRESETS[name].lidar_rings
        top, bottom = lidar["vfov_deg"]
        assert levels[0] > bottom - 0.01 and levels[-1] < top + 0.01
        ranges = np.linalg.norm(in_sensor, axis=1)
        assert ranges.max() <= lidar["max_range_m"] + 1e-3 and ranges.min() > 1.0
        assert points[:, 3].std() > 0.05  # intensity follows the albedo
    # Ring indices (metadata, for formats that store them): 0 is the top beam.
    for points, ring in zip(seq.lidar_points, seq.metadata["lidar_ring_index"]):
        assert ring.shape == (len(points),) and set(np.unique(ring)) == set(range(lidar["rings"]))
        in_sensor = (points[:, :3].astype(np.float64) - T_lidar_sensor[:3, 3]) @ T_lidar_sensor[:3, :3]
        elevation = np.arctan2(in_sensor[:, 2], np.hypot(in_sensor[:, 0], in_sensor[:, 1]))
        mean_per_ring = np.array([elevation[ring == r].mean() for r in range(lidar["rings"])])
        assert np.all(np.diff(mean_per_ring) < 0)


# ----------------------------------------------------------------------------- determinism and options
def test_determinism_threads_and_seed(tiny_kitti):
    again = render_sequence("kitti", 2, image_hw=(48, 160), seed=5, num_threads=2)
    fields = ("images", "depth", "object_ids", "scene_flow_fwd", "scene_flow_bwd", "optical_flow_fwd",
              "optical_flow_bwd", "self_occlusion", "T_world_rig")
    for field in fields:
        assert np.array_equal(getattr(tiny_kitti, field), getattr(again, field)), field
    assert all(np.array_equal(a, b) for a, b in zip(tiny_kitti.lidar_points, again.lidar_points))
    other = _render("kitti", 2, image_hw=(48, 160), seed=6)
    assert not np.array_equal(tiny_kitti.images, other.images)
    assert not np.array_equal(tiny_kitti.depth, other.depth)
    scene = _render("kitti", 1, image_hw=(48, 160), seed=5, scene_index=1)
    assert not np.array_equal(tiny_kitti.images[0], scene.images[0])


def test_exposure_jitter_and_noise(tiny_kitti):
    jittered = _render("kitti", 2, image_hw=(48, 160), seed=5, exposure_jitter=0.2)
    gains = np.array(jittered.metadata["exposure_gains"])
    assert gains.shape == (2, 2) and np.all(np.abs(gains - 1.0) <= 0.2) and np.abs(gains - 1.0).max() > 0.01
    np.testing.assert_array_equal(jittered.depth, tiny_kitti.depth)
    base = tiny_kitti.images.astype(np.float64)
    for t in range(2):
        for n in range(2):
            expected = np.clip(base[t, n] * gains[t, n], 0, 255)
            # Gain applied before quantisation: within one grey level (plus the base's own rounding).
            assert np.abs(jittered.images[t, n] - expected).max() <= 0.5 * gains[t, n] + 0.51
    noisy = _render("kitti", 1, image_hw=(48, 160), seed=5, noise_std=0.02)
    diff = noisy.images[0].astype(np.float64) - base[0]
    unclipped = (base[0] > 20) & (base[0] < 235)
    assert abs(diff[unclipped].std() / 255.0 - 0.02) < 0.003 and abs(diff[unclipped].mean()) < 0.5


def test_custom_rig_and_validation():
    rig = get_rig("kitti", (40, 96))
    custom = Rig(name="mono", camera_names=["cam"], K=rig.K[:1], T_rig_cam=rig.T_rig_cam[:1], native_hw=(40, 96),
                 image_hw=(40, 96), frame_rate_hz=5.0, T_rig_lidar=rig.T_rig_lidar, lidar_rings=4,
                 lidar_azimuth_samples=64, T_vehicle_rig=rig.T_vehicle_rig)
    seq = _render(custom, 2, supersample=1)
    assert seq.images.shape == (2, 1, 40, 96, 3) and seq.camera_names == ["cam"]
    np.testing.assert_allclose(np.diff(seq.timestamps), 0.2)
    with pytest.raises(ValueError):
        render_sequence("kitti", 0)
    with pytest.raises(ValueError):
        render_sequence("kitti", 1, image_hw=(40, 96), supersample=0)
