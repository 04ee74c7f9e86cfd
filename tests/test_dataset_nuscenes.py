"""dataset/nuscenes.py on a nuScenes data root written by the project's synthetic nuScenes writer
(there is no real nuScenes sample): tables through the devkit, sweeps as context, lidar depth with
ego-motion compensation (checked against the devkit's own map_pointcloud_to_image and against the
rendered dense depth)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dataset.contract import check_sample
from dataset.nuscenes import NuScenesDataset
from tests.box_world import box_world_sequence, compare_depth_at_lidar_pixels, quat_to_matrix

HW = (36, 64)
KEY_EVERY = 3
NUM_FRAMES = 7  # key frames 0, 3, 6; only 3 has a sweep before and after it
# The lidar's ego pose is moved away from the camera's (as if the sweep were taken earlier), and the
# cloud re-expressed accordingly, so only a loader that compensates ego motion gets the depth right.
LIDAR_EGO_SHIFT = (0.6, 0.15, 0.04)  # metres x, y; radians yaw


def record_matrix(record):
    T = np.eye(4)
    T[:3, :3] = quat_to_matrix(record["rotation"])
    T[:3, 3] = record["translation"]
    return T


def matrix_to_wxyz(R):
    from pyquaternion import Quaternion

    q = Quaternion(matrix=R, atol=1e-7)
    return [q.w, q.x, q.y, q.z]


@pytest.fixture(scope="module")
def nusc_root(tmp_path_factory):
    from dataset.synthetic.writers import write_nuscenes

    root = tmp_path_factory.mktemp("syn_nusc")
    seq = box_world_sequence("nuscenes", NUM_FRAMES, HW)
    summary = write_nuscenes([seq], str(root), version="v1.0-mini", keyframe_every=KEY_EVERY)
    tables = root / "v1.0-mini"
    sample_data = json.loads((tables / "sample_data.json").read_text())
    ego_poses = json.loads((tables / "ego_pose.json").read_text())
    calibrated = {r["token"]: r for r in json.loads((tables / "calibrated_sensor.json").read_text())}
    key_stamp = min(sd["timestamp"] for sd in sample_data) + round(KEY_EVERY / 12.0 * 1e6)
    lidar_sd = [sd for sd in sample_data
                if sd["filename"].startswith("samples/LIDAR_TOP/") and sd["timestamp"] == key_stamp]
    assert len(lidar_sd) == 1
    lidar_sd = lidar_sd[0]
    ego = next(e for e in ego_poses if e["token"] == lidar_sd["ego_pose_token"])
    T_ego_lidar = record_matrix(calibrated[lidar_sd["calibrated_sensor_token"]])
    T_old = record_matrix(ego)
    dx, dy, yaw = LIDAR_EGO_SHIFT
    delta = np.eye(4)
    delta[:3, :3] = [[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]]
    delta[:3, 3] = [dx, dy, 0.0]
    T_new = T_old @ delta
    cloud_file = root / lidar_sd["filename"]
    cloud = np.fromfile(cloud_file, dtype=np.float32).reshape(-1, 5).astype(np.float64)
    move = np.linalg.inv(T_new @ T_ego_lidar) @ T_old @ T_ego_lidar
    cloud[:, :3] = cloud[:, :3] @ move[:3, :3].T + move[:3, 3]
    cloud.astype(np.float32).tofile(cloud_file)
    ego["rotation"] = matrix_to_wxyz(T_new[:3, :3])
    ego["translation"] = T_new[:3, 3].tolist()
    (tables / "ego_pose.json").write_text(json.dumps(ego_poses))
    return root, seq, summary


@pytest.fixture(scope="module")
def nusc_train(nusc_root):
    root, seq, _ = nusc_root
    return NuScenesDataset(root, "v1.0-mini", "train", cameras=seq.camera_names, frame_ids=(0, -1, 1), image_hw=HW,
                           requirements=("gt_pose", "gt_depth", "mask"), mask_path=root / "masks")


def test_tables_context_and_poses(nusc_root, nusc_train):
    root, seq, summary = nusc_root
    ds = nusc_train
    assert len(ds) == 1 and ds.skipped_short_context == 2  # key frames 0 and 6 lack a sweep on one side
    sample = ds[0]
    check_sample(sample, num_frames=3, num_cams=6)
    tables = root / "v1.0-mini"
    calibrated = {r["token"]: r for r in json.loads((tables / "calibrated_sensor.json").read_text())}
    sample_data = {r["token"]: r for r in json.loads((tables / "sample_data.json").read_text())}
    key_sd = {r["filename"]: r for r in sample_data.values()}
    item = ds.items[0]
    for n, cam in enumerate(seq.camera_names):
        sd = key_sd[item["files"][0][n]]
        assert sd["is_key_frame"] and sd["filename"].startswith(f"samples/{cam}/")
        cs = calibrated[sd["calibrated_sensor_token"]]
        np.testing.assert_allclose(sample["K"][n].numpy(), np.asarray(cs["camera_intrinsic"]), rtol=1e-6, atol=1e-5)
        T_ego_cam = np.eye(4)
        T_ego_cam[:3, :3] = quat_to_matrix(cs["rotation"])
        T_ego_cam[:3, 3] = cs["translation"]
        np.testing.assert_allclose(sample["extrinsics"][n].numpy(), T_ego_cam, atol=1e-6)
        # Context frames are the previous / next sweeps of the same channel.
        assert item["files"][1][n] == sample_data[sd["prev"]]["filename"]
        assert item["files"][2][n] == sample_data[sd["next"]]["filename"]
        assert item["files"][1][n].startswith(f"sweeps/{cam}/") and item["files"][2][n].startswith(f"sweeps/{cam}/")
    timestamps = sample["meta"]["timestamps"]
    assert (timestamps[1] < timestamps[0]).all() and (timestamps[2] > timestamps[0]).all()
    for t, f in enumerate((0, -1, 1)):
        expected = np.linalg.inv(seq.T_world_rig[KEY_EVERY]) @ seq.T_world_rig[KEY_EVERY + f]
        np.testing.assert_allclose(sample["pose_gt"][t].numpy(), expected, atol=1e-5)
    # The self-occlusion masks the writer stored (CAM_BACK has an ego strip in this world).
    np.testing.assert_allclose(sample["mask"][:, 0].numpy(), seq.self_occlusion.astype(np.float32))


def test_lidar_depth_matches_devkit_and_rendered_depth(nusc_root, nusc_train):
    from nuscenes.nuscenes import NuScenes

    root, seq, _ = nusc_root
    sample = nusc_train[0]
    depth = sample["depth_gt"]
    assert depth.shape == (6, 1, *HW)
    nusc = NuScenes("v1.0-mini", str(root), verbose=False)
    record = nusc.get("sample", nusc_train.items[0]["token"])
    for n, cam in enumerate(seq.camera_names):
        got = depth[n, 0].numpy()
        # The devkit's own projection (with its ego-motion compensation), rasterised the same way.
        points, depths, _ = nusc.explorer.map_pointcloud_to_image(record["data"]["LIDAR_TOP"], record["data"][cam])
        u = np.floor(points[0] + 0.5).astype(int)
        v = np.floor(points[1] + 0.5).astype(int)
        expected = np.zeros(HW)
        order = np.argsort(-depths)
        expected[v[order], u[order]] = depths[order]
        interior = np.zeros(HW, bool)
        interior[2:-2, 2:-2] = True  # the devkit drops points within a pixel of the border
        np.testing.assert_allclose(got[interior], expected[interior], rtol=1e-4, atol=1e-4)
        # And against the dense depth rendered for this frame.
        stem = Path(nusc_train.items[0]["files"][0][n]).name[:-len(".jpg")]
        with np.load(root / "depth" / "rendered" / cam / f"{stem}.npz") as npz:
            rendered = npz["depth"]
        count, fraction = compare_depth_at_lidar_pixels(got, rendered, scene_mask=seq.self_occlusion[n])
        assert count > 100 and fraction > 0.999, (cam, count, fraction)
    # Without the compensation (the camera's ego pose used for the lidar too) the depth is off.
    import copy

    from dataset.image_io import DepthCache

    uncached = copy.copy(nusc_train)
    uncached.depth_cache = DepthCache(False)
    item = dict(nusc_train.items[0], T_global_ego_lidar=nusc_train.items[0]["T_global_ego"][0, 0])
    wrong = uncached.lidar_depth(item, [HW] * 6)
    stem = Path(nusc_train.items[0]["files"][0][0]).name[:-len(".jpg")]
    with np.load(root / "depth" / "rendered" / seq.camera_names[0] / f"{stem}.npz") as npz:
        _, fraction = compare_depth_at_lidar_pixels(wrong[0, 0].numpy(), npz["depth"])
    assert fraction < 0.9  # (0.999 with the compensation)
    # The cache was written beside the data and is reused.
    cache = nusc_train.depth_cache_file(seq.camera_names[0], nusc_train.items[0]["files"][0][0])
    assert cache.is_file()
    mtime = cache.stat().st_mtime_ns
    assert torch.equal(nusc_train[0]["depth_gt"], depth) and cache.stat().st_mtime_ns == mtime


def test_split_files_key_frames_and_errors(nusc_root, tmp_path):
    root, seq, summary = nusc_root
    ds = NuScenesDataset(root, "v1.0-mini", split_file=root / "splits" / "train.txt", cameras=seq.camera_names,
                         frame_ids=(0,), image_hw=HW, requirements=("gt_pose",))
    listed = [line for line in (root / "splits" / "train.txt").read_text().splitlines() if line.strip()]
    assert len(listed) >= 1 and len(ds) == len(listed)  # every listed key frame: no context needed
    sample = ds[len(ds) - 1]
    check_sample(sample, num_frames=1, num_cams=6)
    assert torch.equal(sample["mask"], torch.ones(6, 1, *HW))
    bad = tmp_path / "bad.txt"
    bad.write_text("# tokens\n" + "0" * 32 + "\n")
    with pytest.raises(ValueError, match="bad.txt.*not in"):
        NuScenesDataset(root, "v1.0-mini", split_file=bad, cameras=seq.camera_names, frame_ids=(0,), image_hw=HW)
    with pytest.raises(ValueError, match="CAM_SIDE"):
        NuScenesDataset(root, "v1.0-mini", cameras=["CAM_FRONT", "CAM_SIDE"], frame_ids=(0,), image_hw=HW)
    with pytest.raises(FileNotFoundError, match="v1.0-trainval"):
        NuScenesDataset(root, "v1.0-trainval", cameras=seq.camera_names, image_hw=HW)
