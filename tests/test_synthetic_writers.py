"""Tests of the synthetic dataset writers (dataset/synthetic/writers) and their command line.

Two kinds of input:
- an analytic fixture built here: a rig of forward-looking cameras driving straight at a smooth
  textured wall. Depth, poses, scene flow, optical flow and lidar are exact, so every
  consistency check runs without the renderer;
- real renders from ``dataset.synthetic.render_sequence`` at a tiny size.
Everything is read back from the written files with plain json / numpy / cv2 (and the official
nuscenes-devkit), never with the writers' own code.
"""
import glob
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch

from dataset.synthetic.sequence import SyntheticSequence
from dataset.synthetic.writers import write_davis, write_dgp, write_kitti_2015, write_kitti_raw, write_nuscenes
from geometry import backward_warp, points_to_depth_map, quaternion_translation_to_transform, sample_at_pixels
from utils.kitti_io import read_disparity_png, read_flow_png, read_object_map_png

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Vehicle frame x forward, y left, z up; OpenCV camera looking along +x: cam x = -y, cam y = -z, cam z = x.
R_RIG_CAM_FORWARD = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
WALL_X = 13.5      # world x of the wall
CAM_X, CAM_Z = 1.5, 1.6
SPEED = 10.0       # m/s along world x


def _texture(y, z, channel):
    """Smooth colour pattern on the wall, in [0, 255]."""
    phase = 1.3 * channel
    value = (0.5 + 0.22 * np.sin(2 * np.pi * y / 5.0 + phase) + 0.18 * np.sin(2 * np.pi * z / 3.3 + 2 * phase)
             + 0.08 * np.sin(2 * np.pi * (y + z) / 2.1 + phase))
    return np.clip(value, 0, 1) * 255.0


def plane_sequence(name="000000", camera_names=("CAMERA_01", "CAMERA_05", "CAMERA_06"), num_frames=5, hw=(24, 40),
                   fps=10.0, baseline=0.5, T_rig_lidar=None):
    """A rig of forward cameras, ``baseline`` apart along the rig's -y (camera +x), driving at the wall."""
    H, W = hw
    N, T = len(camera_names), num_frames
    K = np.array([[0.6 * W, 0.0, (W - 1) / 2.0 + 0.3], [0.0, 0.6 * W, (H - 1) / 2.0 - 0.2], [0.0, 0.0, 1.0]])
    Ks = np.repeat(K[None], N, 0)
    T_rig_cam = np.repeat(np.eye(4)[None], N, 0)
    T_rig_cam[:, :3, :3] = R_RIG_CAM_FORWARD
    T_rig_cam[:, :3, 3] = [[CAM_X, -n * baseline, CAM_Z] for n in range(N)]
    times = np.arange(T) / fps
    T_world_rig = np.repeat(np.eye(4)[None], T, 0)
    T_world_rig[:, 0, 3] = SPEED * times
    step = SPEED / fps
    if T_rig_lidar is None:
        T_rig_lidar = np.eye(4)
        T_rig_lidar[:3, 3] = [1.2, 0.1, 1.9]

    v, u = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64), indexing="ij")
    xn, yn = (u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]
    images = np.zeros((T, N, H, W, 3), np.uint8)
    depth = np.zeros((T, N, H, W), np.float32)
    for t in range(T):
        d = WALL_X - (T_world_rig[t, 0, 3] + CAM_X)
        for n in range(N):
            wy, wz = T_rig_cam[n, 1, 3] - xn * d, CAM_Z - yn * d
            images[t, n] = np.stack([_texture(wy, wz, c) for c in range(3)], -1).round().astype(np.uint8)
            depth[t, n] = d
    d_all = depth.astype(np.float64)
    sf_fwd = np.zeros((T, N, H, W, 3), np.float32)
    sf_fwd[..., 2] = -step
    sf_bwd = np.zeros((T, N, H, W, 3), np.float32)
    sf_bwd[..., 2] = step
    flow_fwd = np.stack([xn * K[0, 0] * step / (d_all - step), yn * K[1, 1] * step / (d_all - step)], -1).astype(np.float32)
    flow_bwd = np.stack([-xn * K[0, 0] * step / (d_all + step), -yn * K[1, 1] * step / (d_all + step)], -1).astype(np.float32)
    object_ids = np.zeros((T, N, H, W), np.int32)
    object_ids[:, :, H // 2:H // 2 + 4, W // 4:W // 4 + 6] = 7
    self_occlusion = np.ones((N, H, W), np.uint8)
    self_occlusion[-1, -3:] = 0

    # Lidar: points on the wall in the cameras' view, in the lidar frame.
    gy, gz = np.meshgrid(np.linspace(-4.0, 4.0 - (N - 1) * baseline, 23), np.linspace(-1.5, 4.5, 11))
    lidar = []
    for t in range(T):
        world = np.stack([np.full(gy.size, WALL_X), gy.ravel(), gz.ravel()], -1)
        T_lidar_world = np.linalg.inv(T_world_rig[t] @ T_rig_lidar)
        pts = world @ T_lidar_world[:3, :3].T + T_lidar_world[:3, 3]
        intensity = (np.arange(len(pts)) % 17) / 16.0
        lidar.append(np.column_stack([pts, intensity]).astype(np.float32))
    return SyntheticSequence(
        name=name, camera_names=list(camera_names), K=Ks, T_rig_cam=T_rig_cam, image_hw=(H, W), timestamps=times,
        T_world_rig=T_world_rig, images=images, depth=depth, object_ids=object_ids, scene_flow_fwd=sf_fwd,
        scene_flow_bwd=sf_bwd, optical_flow_fwd=flow_fwd, optical_flow_bwd=flow_bwd,
        T_rig_lidar=np.asarray(T_rig_lidar, np.float64), lidar_points=lidar, self_occlusion=self_occlusion,
        metadata={"preset": "fixture"})


def kitti_sequence(name="000000", num_frames=5, baseline=0.54):
    """A stereo pair; the lidar frame is velodyne-like but rotated a little, to exercise the conversion."""
    c, s = np.cos(0.05), np.sin(0.05)
    T_rig_lidar = np.eye(4)
    T_rig_lidar[:3, :3] = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
    T_rig_lidar[:3, 3] = [1.2, -0.3, 1.9]
    return plane_sequence(name, ("image_02", "image_03"), num_frames, hw=(24, 48), baseline=baseline, T_rig_lidar=T_rig_lidar)


# ------------------------------------------------------------------------------- helpers
def tree_digest(root):
    """{relative path: sha1 of the bytes} of every file under root."""
    out = {}
    for folder, _, files in os.walk(root):
        for f in files:
            path = os.path.join(folder, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, root)] = hashlib.sha1(fh.read()).hexdigest()
    return out


def read_rgb(path):
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    assert image is not None, path
    return image[:, :, ::-1].astype(np.float64) / 255.0


def to_chw(image):
    return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))


def dgp_pose(pose):
    q = pose["rotation"]
    t = pose["translation"]
    return quaternion_translation_to_transform(
        torch.tensor([q["qw"], q["qx"], q["qy"], q["qz"]], dtype=torch.float64),
        torch.tensor([t["x"], t["y"], t["z"]], dtype=torch.float64)).numpy()


def parse_kitti_calib(path):
    out = {}
    with open(path) as f:
        for line in f:
            key, value = line.split(":", 1)
            try:
                out[key] = np.array([float(x) for x in value.split()])
            except ValueError:
                pass  # calib_time
    return out


def photometric_check(target, warped, valid, unwarped_source):
    """Mean abs error of the warp on valid pixels, and of the plain (unwarped) difference."""
    m = valid.astype(bool)
    assert m.sum() > 20, "too few valid pixels to judge"
    err = np.abs(warped - target).mean(-1)[m].mean()
    base = np.abs(unwarped_source - target).mean(-1)[m].mean()
    return err, base


class DGPReader:
    """Reads a written DGP dataset with json only."""

    def __init__(self, root):
        self.root = root
        with open(os.path.join(root, "scene_dataset_v1.0.json")) as f:
            self.dataset = json.load(f)
        self.scenes = {}
        for split in self.dataset["scene_splits"].values():
            for rel in split["filenames"]:
                with open(os.path.join(root, rel)) as f:
                    self.scenes[rel] = json.load(f)

    def scene(self, name):
        return next((rel, s) for rel, s in self.scenes.items() if s["name"] == name)

    def frame(self, name, t, cam):
        """(image [H, W, 3], depth [H, W], K, T_world_cam) of camera ``cam`` at sample t."""
        rel, scene = self.scene(name)
        folder = os.path.join(self.root, os.path.dirname(rel))
        data = {d["key"]: d for d in scene["data"]}
        sample = scene["samples"][t]
        datum = next(data[k] for k in sample["datum_keys"] if data[k]["id"]["name"] == cam)
        image = datum["datum"]["image"]
        with open(os.path.join(folder, "calibration", sample["calibration_key"] + ".json")) as f:
            calib = json.load(f)
        intr = calib["intrinsics"][calib["names"].index(cam)]
        K = np.array([[intr["fx"], intr["skew"], intr["cx"]], [0, intr["fy"], intr["cy"]], [0, 0, 1.0]])
        ts = os.path.splitext(os.path.basename(image["filename"]))[0]
        depth = np.load(os.path.join(folder, "depth", "rendered", cam, ts + ".npz"))["depth"]
        return read_rgb(os.path.join(folder, image["filename"])), depth, K, dgp_pose(image["pose"])

    def lidar(self, name, t):
        rel, scene = self.scene(name)
        folder = os.path.join(self.root, os.path.dirname(rel))
        data = {d["key"]: d for d in scene["data"]}
        datum = next(data[k] for k in scene["samples"][t]["datum_keys"] if data[k]["id"]["name"] == "LIDAR")
        cloud = np.load(os.path.join(folder, datum["datum"]["point_cloud"]["filename"]))["data"]
        return cloud, dgp_pose(datum["datum"]["point_cloud"]["pose"])


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def ddad_sequences():
    return [plane_sequence("000000"), plane_sequence("000001", num_frames=4)]


@pytest.fixture(scope="module")
def dgp_root(tmp_path_factory, ddad_sequences):
    root = str(tmp_path_factory.mktemp("dgp"))
    summary = write_dgp(ddad_sequences, root)
    return root, summary


@pytest.fixture(scope="module")
def kitti_sequences():
    return [kitti_sequence("000000", 5), kitti_sequence("000001", 4)]


@pytest.fixture(scope="module")
def kitti_raw_root(tmp_path_factory, kitti_sequences):
    root = str(tmp_path_factory.mktemp("kitti_raw"))
    return root, write_kitti_raw(kitti_sequences, root)


@pytest.fixture(scope="module")
def kitti_2015_root(tmp_path_factory, kitti_sequences):
    root = str(tmp_path_factory.mktemp("kitti_2015"))
    return root, write_kitti_2015(kitti_sequences, root, max_depth=11.0)


@pytest.fixture(scope="module")
def nusc_sequences():
    names = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK")
    return [plane_sequence("000000", names, num_frames=8, fps=12.0), plane_sequence("000001", names, num_frames=7, fps=12.0)]


@pytest.fixture(scope="module")
def nusc_root(tmp_path_factory, nusc_sequences):
    root = str(tmp_path_factory.mktemp("nuscenes"))
    return root, write_nuscenes(nusc_sequences, root)


@pytest.fixture(scope="module")
def nusc(nusc_root):
    from nuscenes.nuscenes import NuScenes
    return NuScenes("v1.0-mini", nusc_root[0], verbose=False)


# ----------------------------------------------------------------------------------- DGP
def _keys_tree(obj, path=""):
    """Set of key paths of a JSON value; list items share the path '[]', map keys (digits) '{}'."""
    out = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            name = "{}" if k.isdigit() else k
            out.add(f"{path}/{name}")
            out |= _keys_tree(v, f"{path}/{name}")
    elif isinstance(obj, list):
        for item in obj:
            out |= _keys_tree(item, f"{path}[]")
    return out


def _real_dgp(shared_data):
    real = os.path.join(str(shared_data), "dgp_test_scene")
    with open(os.path.join(real, "scene_dataset_v1.0.json")) as f:
        dataset = json.load(f)
    scene_path = glob.glob(os.path.join(real, "scene_02", "scene_*.json"))[0]
    with open(scene_path) as f:
        scene = json.load(f)
    with open(glob.glob(os.path.join(real, "scene_02", "calibration", "*.json"))[0]) as f:
        calib = json.load(f)
    return dataset, scene, calib


# Keys dgp needs to load a scene (formats.md §3 minimal example).
DGP_REQUIRED = {
    "dataset": {"/metadata", "/scene_splits", "/scene_splits/{}", "/scene_splits/{}/filenames"},
    "scene": {"/name", "/log", "/samples", "/data", "/samples[]/id", "/samples[]/id/log", "/samples[]/id/name",
              "/samples[]/id/timestamp", "/samples[]/id/index", "/samples[]/datum_keys", "/samples[]/calibration_key",
              "/data[]/id", "/data[]/id/name", "/data[]/id/timestamp", "/data[]/id/index", "/data[]/key", "/data[]/datum",
              "/data[]/prev_key", "/data[]/next_key", "/data[]/datum/image/filename", "/data[]/datum/image/height",
              "/data[]/datum/image/width", "/data[]/datum/image/channels", "/data[]/datum/image/pose/rotation/qw",
              "/data[]/datum/image/pose/translation/x", "/data[]/datum/point_cloud/filename",
              "/data[]/datum/point_cloud/point_format", "/data[]/datum/point_cloud/pose/rotation/qw"},
    "calib": {"/names", "/intrinsics", "/extrinsics", "/intrinsics[]/fx", "/intrinsics[]/fy", "/intrinsics[]/cx",
              "/intrinsics[]/cy", "/intrinsics[]/skew", "/extrinsics[]/rotation/qw", "/extrinsics[]/rotation/qx",
              "/extrinsics[]/rotation/qy", "/extrinsics[]/rotation/qz", "/extrinsics[]/translation/z"},
}


def test_dgp_schema_matches_real_sample(dgp_root, shared_data):
    root, _ = dgp_root
    real = dict(zip(("dataset", "scene", "calib"), _real_dgp(shared_data)))
    reader = DGPReader(root)
    rel, scene = next(iter(reader.scenes.items()))
    with open(os.path.join(root, os.path.dirname(rel), "calibration", scene["samples"][0]["calibration_key"] + ".json")) as f:
        calib = json.load(f)
    ours = {"dataset": reader.dataset, "scene": scene, "calib": calib}
    for kind in ("dataset", "scene", "calib"):
        mine, theirs = _keys_tree(ours[kind]), _keys_tree(real[kind])
        assert mine <= theirs, f"{kind}: keys the real DGP sample does not have: {sorted(mine - theirs)}"
        assert DGP_REQUIRED[kind] <= theirs  # the list above is itself right about the real sample
        assert DGP_REQUIRED[kind] <= mine, f"{kind}: missing {sorted(DGP_REQUIRED[kind] - mine)}"
    # Value types as in the real sample (index strings, RFC 3339 'Z' timestamps, int sizes).
    sample = scene["samples"][0]
    assert isinstance(sample["id"]["index"], str) and sample["id"]["timestamp"].endswith("Z")
    image = next(d for d in scene["data"] if "image" in d["datum"])["datum"]["image"]
    assert isinstance(image["height"], int) and image["channels"] == 3
    assert calib["names"][0] == "LIDAR" and calib["intrinsics"][0]["fx"] == 0.0
    assert set(reader.dataset["scene_splits"]) == {"0", "1"}
    with open(os.path.join(root, "ddad.json"), "rb") as a, open(os.path.join(root, "scene_dataset_v1.0.json"), "rb") as b:
        assert a.read() == b.read()


def test_dgp_links_and_files(dgp_root, ddad_sequences):
    root, summary = dgp_root
    reader = DGPReader(root)
    splits = reader.dataset["scene_splits"]
    assert len(splits["0"]["filenames"]) == 1 and len(splits["1"]["filenames"]) == 1
    assert splits["1"]["filenames"][0].startswith("000001/")  # the last scene is val
    for rel, scene in reader.scenes.items():
        folder = os.path.join(root, os.path.dirname(rel))
        with open(os.path.join(root, rel), "rb") as f:
            assert os.path.basename(rel) == f"scene_{hashlib.sha1(f.read()).hexdigest()}.json"
        data = {d["key"]: d for d in scene["data"]}
        assert len(data) == len(scene["data"])
        seq = next(s for s in ddad_sequences if s.name == scene["name"])
        assert len(scene["samples"]) == seq.num_frames
        for t, sample in enumerate(scene["samples"]):
            names = [data[k]["id"]["name"] for k in sample["datum_keys"]]
            assert names == ["LIDAR"] + seq.camera_names
            calib_path = os.path.join(folder, "calibration", sample["calibration_key"] + ".json")
            with open(calib_path, "rb") as f:
                assert hashlib.sha1(f.read()).hexdigest() == sample["calibration_key"]
            for k in sample["datum_keys"]:
                datum = data[k]["datum"]
                body = datum.get("image") or datum.get("point_cloud")
                assert os.path.isfile(os.path.join(folder, body["filename"]))
                assert data[k]["id"]["timestamp"] == sample["id"]["timestamp"]
                # prev/next chains stay within one sensor and follow the sample order.
                prev = data[k]["prev_key"]
                assert (prev == "") == (t == 0)
                if prev:
                    assert data[prev]["id"]["name"] == data[k]["id"]["name"] and data[prev]["next_key"] == k
        image = np.load(glob.glob(os.path.join(folder, "point_cloud", "LIDAR", "*.npz"))[0])["data"]
        assert image.dtype == np.float64 and image.shape[1] == 4
        for n, cam in enumerate(seq.camera_names):
            mask = cv2.imread(os.path.join(root, "masks", scene["name"], f"{cam}_mask.png"), cv2.IMREAD_UNCHANGED)
            assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
            np.testing.assert_array_equal(mask == 255, seq.self_occlusion[n] > 0)
    assert all(not os.path.isabs(p) for p in summary["files"])


def test_dgp_poses_and_calibration_match_sequence(dgp_root, ddad_sequences):
    reader = DGPReader(dgp_root[0])
    seq = ddad_sequences[0]
    for t in (0, seq.num_frames - 1):
        for n, cam in enumerate(seq.camera_names):
            image, depth, K, T_world_cam = reader.frame(seq.name, t, cam)
            np.testing.assert_allclose(T_world_cam, seq.T_world_rig[t] @ seq.T_rig_cam[n], atol=1e-9)
            np.testing.assert_allclose(K, seq.K[n], atol=1e-12)
            np.testing.assert_array_equal(depth, seq.depth[t, n])
            np.testing.assert_array_equal((image * 255).round().astype(np.uint8), seq.images[t, n])
        cloud, T_world_lidar = reader.lidar(seq.name, t)
        np.testing.assert_allclose(T_world_lidar, seq.T_world_rig[t], atol=1e-12)  # lidar = vehicle frame
        expected = seq.lidar_points[t][:, :3].astype(np.float64) @ seq.T_rig_lidar[:3, :3].T + seq.T_rig_lidar[:3, 3]
        np.testing.assert_allclose(cloud[:, :3], expected, atol=1e-6)


def smooth_depth_mask(depth, tol=0.05):
    """True where the depth is continuous over the 3x3 neighbourhood (no occlusion edge nearby:
    edge pixels mix the colours of two surfaces, so no warp can reproduce them)."""
    log_depth = np.log(np.maximum(depth, 1e-6))
    padded = np.pad(log_depth, 1, mode="edge")
    H, W = depth.shape
    ok = np.ones((H, W), bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            ok &= np.abs(padded[dy:dy + H, dx:dx + W] - log_depth) < tol
    return ok


def rigid_warp(source_image, source_depth, target_depth, K_target, K_source, T_source_target):
    """Warps a source view into the target view; returns (warped image, mask of target pixels that
    are inside the source, not occluded there (depth test) and away from depth edges)."""
    d = torch.as_tensor(target_depth, dtype=torch.float64)[None]
    T = torch.as_tensor(T_source_target)
    Kt, Ks = torch.as_tensor(K_target), torch.as_tensor(K_source)
    warped, valid = backward_warp(to_chw(source_image), d, Kt, Ks, T)
    seen_depth, _ = backward_warp(torch.as_tensor(source_depth, dtype=torch.float64)[None], d, Kt, Ks, T, mode="nearest")
    pixels = np.stack(np.meshgrid(np.arange(d.shape[-1]), np.arange(d.shape[-2]), indexing="xy") + [np.ones(d.shape[-2:])], -1)
    points = (pixels @ np.linalg.inv(K_target).T) * np.asarray(target_depth, np.float64)[..., None]
    z_source = points @ T_source_target[2, :3] + T_source_target[2, 3]
    visible = np.abs(seen_depth[0].numpy() - z_source) < 0.02 * z_source
    mask = (valid[0].numpy() > 0) & visible & smooth_depth_mask(np.asarray(target_depth))
    return warped.numpy().transpose(1, 2, 0), mask


def _check_dgp_consistency(root, seq, spatial_pair=("CAMERA_01", "CAMERA_05"), pooled=0.4, per_camera=0.65):
    """Reads images, dense depth, poses and calibration back from the written DGP files and warps
    frame 1 into frame 0 (every camera) and one camera into its neighbour. The sequence only
    provides which pixels belong to moving cars (DGP stores no object ids)."""
    reader = DGPReader(root)
    errors, bases, wrong = [], [], []
    for n, cam in enumerate(seq.camera_names):
        img0, depth0, K0, T_w_c0 = reader.frame(seq.name, 0, cam)
        img1, depth1, K1, T_w_c1 = reader.frame(seq.name, 1, cam)
        mask_png = cv2.imread(os.path.join(root, "masks", seq.name, f"{cam}_mask.png"), cv2.IMREAD_UNCHANGED)
        T_1_0 = np.linalg.inv(T_w_c1) @ T_w_c0
        warped, mask = rigid_warp(img1, depth1, depth0, K0, K1, T_1_0)
        mask &= (mask_png == 255) & (seq.object_ids[0, n] == 0)
        assert mask.sum() > 0.1 * mask.size, cam
        err = np.abs(warped - img0).mean(-1)[mask]
        base = np.abs(img1 - img0).mean(-1)[mask]
        assert err.mean() < per_camera * base.mean(), (cam, err.mean(), base.mean())
        errors.append(err)
        bases.append(base)
        # The pose in the wrong direction does not explain the images.
        warped_wrong, valid_wrong = backward_warp(to_chw(img1), torch.as_tensor(depth0, dtype=torch.float64)[None],
                                                  torch.as_tensor(K0), torch.as_tensor(K1), torch.as_tensor(np.linalg.inv(T_1_0)))
        both = mask & (valid_wrong[0].numpy() > 0)
        wrong.append((np.abs(warped_wrong.numpy().transpose(1, 2, 0) - img0).mean(-1)[both].mean(),
                      np.abs(warped - img0).mean(-1)[both].mean()))
    err, base = np.concatenate(errors).mean(), np.concatenate(bases).mean()
    assert err < pooled * base, (err, base)
    assert np.mean([w for w, _ in wrong]) > 1.5 * np.mean([c for _, c in wrong]), wrong

    cam_a, cam_b = spatial_pair
    img_a, depth_a, K_a, T_w_a = reader.frame(seq.name, 0, cam_a)
    img_b, depth_b, K_b, T_w_b = reader.frame(seq.name, 0, cam_b)
    warped, mask = rigid_warp(img_b, depth_b, depth_a, K_a, K_b, np.linalg.inv(T_w_b) @ T_w_a)
    assert mask.sum() >= 20, "the two cameras should overlap"
    err = np.abs(warped - img_a).mean(-1)[mask].mean()
    base = np.abs(img_b - img_a).mean(-1)[mask].mean()
    assert err < pooled * base, (err, base, mask.sum())

    # Lidar (vehicle frame, pose lidar -> world) projects onto the dense depth.
    cloud, T_w_l = reader.lidar(seq.name, 0)
    sparse = points_to_depth_map(torch.as_tensor(cloud[:, :3]), K_a, np.linalg.inv(T_w_a) @ T_w_l, depth_a.shape)[0].numpy()
    hit = sparse > 0
    assert hit.sum() >= 10
    rel = np.abs(sparse[hit] - depth_a[hit]) / depth_a[hit]
    assert np.median(rel) < 0.02


def test_dgp_consistency_fixture(dgp_root, ddad_sequences):
    _check_dgp_consistency(dgp_root[0], ddad_sequences[0])


def test_dgp_val_scenes_argument(tmp_path, ddad_sequences):
    summary = write_dgp(ddad_sequences, str(tmp_path), val_scenes=["000000"], write_depth=False, write_masks=False)
    assert summary["train"] == ["000001"] and summary["val"] == ["000000"]
    with open(tmp_path / "ddad.json") as f:
        splits = json.load(f)["scene_splits"]
    assert splits["1"]["filenames"][0].startswith("000000/")
    assert not (tmp_path / "masks").exists() and not glob.glob(str(tmp_path / "*" / "depth"))
    with pytest.raises(ValueError, match="unknown scene"):
        write_dgp(ddad_sequences, str(tmp_path / "x"), val_scenes=["nope"])


# ------------------------------------------------------------------------------ KITTI raw
def test_kitti_raw_calibration(kitti_raw_root, kitti_sequences, shared_data):
    real_root = os.path.join(str(shared_data), "kitti_raw_tiny")
    root, summary = kitti_raw_root
    seq = kitti_sequences[0]
    cam = parse_kitti_calib(os.path.join(root, "2011_09_26", "calib_cam_to_cam.txt"))
    with open(os.path.join(root, "2011_09_26", "calib_cam_to_cam.txt")) as f:
        text = f.read()
    assert text.startswith("calib_time: ")
    real = parse_kitti_calib(os.path.join(real_root, "2011_09_26", "calib_cam_to_cam.txt"))
    assert list(cam) == list(real)  # same keys in the same order
    assert all(cam[k].size == real[k].size for k in real)
    P2, P3 = cam["P_rect_02"].reshape(3, 4), cam["P_rect_03"].reshape(3, 4)
    np.testing.assert_allclose(P2[:, :3], seq.K[0], rtol=1e-6)
    np.testing.assert_allclose(P3[:, :3], seq.K[1], rtol=1e-6)
    assert (P2[0, 3] - P3[0, 3]) / P2[0, 0] == pytest.approx(0.54, rel=1e-6)
    assert P3[0, 3] == pytest.approx(-P3[0, 0] * 0.54, rel=1e-6)
    np.testing.assert_array_equal(cam["S_rect_02"], [48, 24])
    velo = parse_kitti_calib(os.path.join(root, "2011_09_26", "calib_velo_to_cam.txt"))
    assert set(velo) == set(parse_kitti_calib(os.path.join(real_root, "2011_09_26", "calib_velo_to_cam.txt")))
    imu = parse_kitti_calib(os.path.join(root, "2011_09_26", "calib_imu_to_velo.txt"))
    assert set(imu) == {"R", "T"}
    # The number format is the real one: '%e' everywhere.
    line = next(l for l in text.splitlines() if l.startswith("P_rect_03"))
    assert all(len(v.split("e")[1]) == 3 for v in line.split()[1:])


def test_kitti_raw_velodyne_projects_onto_depth(kitti_raw_root, kitti_sequences):
    root, _ = kitti_raw_root
    seq = kitti_sequences[0]
    calib = parse_kitti_calib(os.path.join(root, "2011_09_26", "calib_cam_to_cam.txt"))
    velo = parse_kitti_calib(os.path.join(root, "2011_09_26", "calib_velo_to_cam.txt"))
    drive = os.path.join(root, "2011_09_26", "2011_09_26_drive_0001_sync")
    H, W = calib["S_rect_02"][::-1].astype(int)
    for t in range(seq.num_frames):
        points = np.fromfile(os.path.join(drive, "velodyne_points", "data", f"{t:010d}.bin"), np.float32).reshape(-1, 4)
        assert len(points) == len(seq.lidar_points[t])
        assert points[:, 0].mean() > 5  # x forward: the wall is ahead
        # monodepth2's generate_depth_map: P_rect_02 @ R_rect_00 @ [R|T]_velo2cam.
        R_rect = np.eye(4)
        R_rect[:3, :3] = calib["R_rect_00"].reshape(3, 3)
        velo2cam = np.eye(4)
        velo2cam[:3, :3], velo2cam[:3, 3] = velo["R"].reshape(3, 3), velo["T"]
        for side, P in (("image_02", calib["P_rect_02"]), ("image_03", calib["P_rect_03"])):
            n = 0 if side == "image_02" else 1
            uvz = (P.reshape(3, 4) @ R_rect @ velo2cam @ np.column_stack([points[:, :3], np.ones(len(points))]).T).T
            u, v, z = uvz[:, 0] / uvz[:, 2], uvz[:, 1] / uvz[:, 2], uvz[:, 2]
            keep = (z > 0) & (u >= 0) & (u <= W - 1) & (v >= 0) & (v <= H - 1)
            assert keep.sum() > 20
            rendered = seq.depth[t, n][np.rint(v[keep]).astype(int), np.rint(u[keep]).astype(int)]
            np.testing.assert_allclose(z[keep], rendered, rtol=1e-4)
            proj = np.load(os.path.join(drive, "proj_depth", "velodyne", side, f"{t:010d}.npz"))["velodyne_depth"]
            assert proj.dtype == np.float32 and proj.shape == (H, W)
            np.testing.assert_allclose(proj[proj > 0], seq.depth[t, n][proj > 0], rtol=1e-4)


def test_kitti_raw_poses_timestamps_oxts(kitti_raw_root, kitti_sequences):
    root, _ = kitti_raw_root
    seq = kitti_sequences[0]
    drive = os.path.join(root, "2011_09_26", "2011_09_26_drive_0001_sync")
    poses = np.loadtxt(os.path.join(drive, "image_02", "poses.txt")).reshape(-1, 3, 4)
    assert len(poses) == seq.num_frames
    np.testing.assert_allclose(poses[0], np.eye(4)[:3], atol=1e-12)
    T_w_c = seq.T_world_rig @ seq.T_rig_cam[0]
    expected = np.linalg.inv(T_w_c[0]) @ T_w_c
    np.testing.assert_allclose(poses, expected[:, :3], atol=1e-5)
    assert poses[-1, 2, 3] > 3  # the camera moved forward along its z axis
    K = np.loadtxt(os.path.join(drive, "image_02", "cam.txt"))
    np.testing.assert_allclose(K, seq.K[0])
    with open(os.path.join(drive, "image_02", "timestamps.txt")) as f:
        stamps = f.read().splitlines()
    assert len(stamps) == seq.num_frames and stamps[1] == "2011-09-26 12:00:00.100000000"
    # oxts: pykitti's Mercator conversion gives back the IMU motion (here a straight 1 m/frame drive).
    packets = [np.loadtxt(p) for p in sorted(glob.glob(os.path.join(drive, "oxts", "data", "*.txt")))]
    assert len(packets) == seq.num_frames and all(p.size == 30 for p in packets)
    er = 6378137.0
    scale = np.cos(packets[0][0] * np.pi / 180.0)
    xy = np.array([[scale * p[1] * np.pi * er / 180.0, scale * er * np.log(np.tan((90.0 + p[0]) * np.pi / 360.0))]
                   for p in packets])
    np.testing.assert_allclose(xy - xy[0], (seq.T_world_rig[:, :2, 3] - seq.T_world_rig[0, :2, 3]), atol=1e-4)
    assert all(abs(p[3]) < 1e-9 and abs(p[4]) < 1e-9 and abs(p[5]) < 1e-9 for p in packets)  # level, heading east
    assert packets[2][8] == pytest.approx(SPEED, rel=1e-6)  # vf
    assert packets[2][13] == pytest.approx(9.81, rel=1e-6)  # az: gravity


def test_kitti_raw_splits_list_existing_frames(kitti_raw_root):
    root, summary = kitti_raw_root
    with open(os.path.join(root, "splits", "train_files.txt")) as f:
        train = f.read().splitlines()
    assert train and all(len(line.split()) == 3 for line in train)
    for split in ("train_files.txt", "val_files.txt", "test_files.txt"):
        with open(os.path.join(root, "splits", split)) as f:
            for line in f:
                folder, frame, side = line.split()
                for offset in ((-1, 0, 1) if split != "test_files.txt" else (0,)):
                    path = os.path.join(root, folder, {"l": "image_02", "r": "image_03"}[side], "data",
                                        f"{int(frame) + offset:010d}.png")
                    assert os.path.isfile(path), path
    with open(os.path.join(root, "splits", "kitti_train_scenes.txt")) as f:
        assert f.read().split() == ["2011_09_26_drive_0001_sync"]
    with open(os.path.join(root, "splits", "kitti_valid_scenes.txt")) as f:
        assert f.read().split() == ["2011_09_26_drive_0002_sync"]
    assert summary["drives"] == ["2011_09_26_drive_0001_sync", "2011_09_26_drive_0002_sync"]


def test_kitti_raw_stereo_warp(kitti_raw_root, kitti_sequences):
    """Right image warped into the left with the disparity from the written calibration."""
    root, _ = kitti_raw_root
    calib = parse_kitti_calib(os.path.join(root, "2011_09_26", "calib_cam_to_cam.txt"))
    P2, P3 = calib["P_rect_02"].reshape(3, 4), calib["P_rect_03"].reshape(3, 4)
    fb = P2[0, 3] - P3[0, 3]
    drive = os.path.join(root, "2011_09_26", "2011_09_26_drive_0001_sync")
    left = read_rgb(os.path.join(drive, "image_02", "data", "0000000000.png"))
    right = read_rgb(os.path.join(drive, "image_03", "data", "0000000000.png"))
    disp = fb / kitti_sequences[0].depth[0, 0].astype(np.float64)
    H, W = disp.shape
    v, u = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64), indexing="ij")
    pixels = torch.as_tensor(np.stack([u - disp, v]))
    warped = sample_at_pixels(to_chw(right), pixels).numpy().transpose(1, 2, 0)
    valid = (u - disp) >= 0
    err, base = photometric_check(left, warped, valid, right)
    assert err < 0.2 * base, (err, base)


# ----------------------------------------------------------------------------- KITTI 2015
def test_kitti_2015_layout(kitti_2015_root, kitti_sequences):
    root, summary = kitti_2015_root
    seq = kitti_sequences[0]
    train = os.path.join(root, "data_scene_flow", "training")
    for folder in ("image_2", "image_3"):
        n = 0 if folder == "image_2" else 1
        for kitti_frame, t in ((10, 3), (11, 4)):
            img = cv2.imread(os.path.join(train, folder, f"000000_{kitti_frame}.png"))[:, :, ::-1]
            np.testing.assert_array_equal(img, seq.images[t, n])
            assert os.path.isfile(os.path.join(root, "data_scene_flow", "testing", folder, f"000000_{kitti_frame}.png"))
        multiview = sorted(os.listdir(os.path.join(root, "data_scene_flow_multiview", "training", folder)))
        assert [m for m in multiview if m.startswith("000000_")] == [f"000000_{k:02d}.png" for k in range(7, 12)]
        np.testing.assert_array_equal(
            cv2.imread(os.path.join(root, "data_scene_flow_multiview", "training", folder, "000000_07.png"))[:, :, ::-1],
            seq.images[0, n])
    for gt in ("disp_occ_0", "disp_noc_0", "disp_occ_1", "disp_noc_1", "flow_occ", "flow_noc", "obj_map"):
        assert sorted(os.listdir(os.path.join(train, gt))) == ["000000_10.png", "000001_10.png"]
        assert not os.path.exists(os.path.join(root, "data_scene_flow", "testing", gt))
    obj = read_object_map_png(os.path.join(train, "obj_map", "000000_10.png"))
    np.testing.assert_array_equal(obj, (seq.object_ids[3, 0] > 0).astype(np.int32))
    assert cv2.imread(os.path.join(train, "obj_map", "000000_10.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint8
    calib = parse_kitti_calib(os.path.join(root, "data_scene_flow_calib", "training", "calib_cam_to_cam", "000000.txt"))
    P2, P3 = calib["P_rect_02"].reshape(3, 4), calib["P_rect_03"].reshape(3, 4)
    np.testing.assert_allclose(P2[:, :3], seq.K[0], rtol=1e-6)
    assert (P2[0, 3] - P3[0, 3]) / P2[0, 0] == pytest.approx(0.54, rel=1e-6)
    assert summary["frame10"] == {"000000": 3, "000001": 2}


def test_kitti_2015_ground_truth_values(kitti_2015_root, kitti_sequences):
    root, _ = kitti_2015_root
    seq = kitti_sequences[0]
    train = os.path.join(root, "data_scene_flow", "training")
    K, b = seq.K[0], 0.54
    z = seq.depth[3, 0].astype(np.float64)
    sf_z = seq.scene_flow_fwd[3, 0, ..., 2].astype(np.float64)
    d0, occ0 = read_disparity_png(os.path.join(train, "disp_occ_0", "000000_10.png"))
    d1, occ1 = read_disparity_png(os.path.join(train, "disp_occ_1", "000000_10.png"))
    _, noc0 = read_disparity_png(os.path.join(train, "disp_noc_0", "000000_10.png"))
    _, noc1 = read_disparity_png(os.path.join(train, "disp_noc_1", "000000_10.png"))
    flow, flow_occ = read_flow_png(os.path.join(train, "flow_occ", "000000_10.png"))
    _, flow_noc = read_flow_png(os.path.join(train, "flow_noc", "000000_10.png"))
    assert occ0.all() and occ1.all() and flow_occ.all()  # depth 9 < max_depth 11 everywhere
    assert np.abs(d0 - K[0, 0] * b / z).max() <= 0.5 / 256 + 1e-6
    assert np.abs(d1 - K[0, 0] * b / (z + sf_z)).max() <= 0.5 / 256 + 1e-6
    assert np.abs(flow - seq.optical_flow_fwd[3, 0]).max() <= 0.5 / 64 + 1e-6
    # noc: right-image correspondences fall off the left border where u < disparity.
    H, W = z.shape
    u = np.arange(W)[None].repeat(H, 0)
    np.testing.assert_array_equal(noc0, u >= K[0, 0] * b / z)
    # flow noc: the frame-11 pixel must be inside the image (the wall comes closer: flow points outwards).
    target = u + seq.optical_flow_fwd[3, 0, ..., 0]
    assert (~flow_noc).any() and not flow_noc[(target < 0) | (target > W - 1)].any()
    assert (noc1 <= flow_noc).all() and (noc1 <= occ1).all()


def test_kitti_2015_depth_cap(tmp_path, kitti_sequences):
    """Surfaces beyond max_depth (the backdrop) have no ground truth; frame10 can be chosen."""
    seq = kitti_sequences[0]  # depth 12 - t at frame t
    summary = write_kitti_2015([seq], str(tmp_path), frame10=1, max_depth=10.5, testing_sequences=[])
    train = os.path.join(str(tmp_path), "data_scene_flow", "training")
    _, occ0 = read_disparity_png(os.path.join(train, "disp_occ_0", "000000_10.png"))
    _, occ1 = read_disparity_png(os.path.join(train, "disp_occ_1", "000000_10.png"))
    _, flow_valid = read_flow_png(os.path.join(train, "flow_occ", "000000_10.png"))
    assert not occ0.any() and not flow_valid.any()  # frame 1: depth 11 > 10.5
    assert not occ1.any()  # frame 11 is nearer (10) but the point had no valid frame-10 depth
    assert summary["frame10"] == {"000000": 1} and summary["testing"] == []
    multiview = sorted(os.listdir(os.path.join(str(tmp_path), "data_scene_flow_multiview", "training", "image_2")))
    assert multiview == ["000000_09.png", "000000_10.png", "000000_11.png"]
    with pytest.raises(ValueError, match="frame10"):
        write_kitti_2015([seq], str(tmp_path / "bad"), frame10=4)


def test_kitti_2015_flow_warp_consistency(kitti_2015_root):
    _check_kitti_2015_flow(kitti_2015_root[0], factor=0.3)


def _check_kitti_2015_flow(root, factor):
    """Frame 11 warped into frame 10 with the flow_noc ground truth, on noc pixels away from depth edges."""
    train = os.path.join(root, "data_scene_flow", "training")
    img10 = read_rgb(os.path.join(train, "image_2", "000000_10.png"))
    img11 = read_rgb(os.path.join(train, "image_2", "000000_11.png"))
    flow, noc = read_flow_png(os.path.join(train, "flow_noc", "000000_10.png"))
    disp, disp_valid = read_disparity_png(os.path.join(train, "disp_occ_0", "000000_10.png"))
    mask = noc & disp_valid & smooth_depth_mask(np.where(disp_valid, 1.0 / np.maximum(disp, 1e-3), 1.0))
    H, W = noc.shape
    v, u = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64), indexing="ij")
    errors = {}
    for name, sign in (("right", 1.0), ("reversed", -1.0)):
        pixels = torch.as_tensor(np.stack([u + sign * flow[..., 0], v + sign * flow[..., 1]]))
        warped = sample_at_pixels(to_chw(img11), pixels).numpy().transpose(1, 2, 0)
        errors[name] = np.abs(warped - img10).mean(-1)[mask].mean()
    base = np.abs(img11 - img10).mean(-1)[mask].mean()
    assert mask.sum() > 0.1 * mask.size
    assert errors["right"] < factor * base, (errors, base)
    assert errors["reversed"] > 1.5 * errors["right"], (errors, base)


# ------------------------------------------------------------------------------- nuScenes
def test_nuscenes_devkit_loads(nusc, nusc_root, nusc_sequences):
    root, summary = nusc_root
    assert len(nusc.scene) == 2
    scene = nusc.scene[0]
    assert scene["nbr_samples"] == 2  # frames 0 and 6 of 8 (frame 7 is after the last key frame)
    sample = nusc.get("sample", scene["first_sample_token"])
    assert set(sample["data"]) == {"CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK", "LIDAR_TOP"}
    seq = nusc_sequences[0]
    for n, channel in enumerate(seq.camera_names):
        path, boxes, K = nusc.get_sample_data(sample["data"][channel])
        assert os.path.isfile(path) and path.startswith(os.path.join(os.path.abspath(root), "samples", channel))
        assert boxes == []
        np.testing.assert_allclose(K, seq.K[n])
        luma = cv2.imread(path, cv2.IMREAD_GRAYSCALE).astype(np.float64)  # JPEG: compare luma (chroma is subsampled)
        assert np.abs(luma - cv2.cvtColor(seq.images[0, n], cv2.COLOR_RGB2GRAY)).mean() < 3
    # prev/next over sweeps: 6 camera frames from key frame to key frame.
    sd = nusc.get("sample_data", sample["data"]["CAM_FRONT"])
    chain = [sd]
    while chain[-1]["next"]:
        chain.append(nusc.get("sample_data", chain[-1]["next"]))
    assert [c["is_key_frame"] for c in chain] == [True] + [False] * 5 + [True]
    assert all(c["filename"].startswith("sweeps/") for c in chain[1:-1])
    assert all(c["sample_token"] == sample["next"] for c in chain[1:])
    assert np.all(np.diff([c["timestamp"] for c in chain]) == pytest.approx(1e6 / 12, abs=1))
    # ego pose and calibration give back the camera pose.
    cs = nusc.get("calibrated_sensor", chain[3]["calibrated_sensor_token"])
    ego = nusc.get("ego_pose", chain[3]["ego_pose_token"])
    from pyquaternion import Quaternion
    from nuscenes.utils.geometry_utils import transform_matrix
    T = transform_matrix(ego["translation"], Quaternion(ego["rotation"])) @ transform_matrix(cs["translation"], Quaternion(cs["rotation"]))
    np.testing.assert_allclose(T, seq.T_world_rig[3] @ seq.T_rig_cam[0], atol=1e-9)
    lidar = np.fromfile(os.path.join(root, nusc.get("sample_data", sample["data"]["LIDAR_TOP"])["filename"]), np.float32)
    assert lidar.size == 5 * len(seq.lidar_points[0])
    with open(os.path.join(root, "splits", "val.txt")) as f:
        assert f.read().split() == summary["samples"]["scene-0001"]
    with open(os.path.join(root, "splits", "train.txt")) as f:
        assert f.read().split() == []  # 2 key frames: neither has both neighbouring sweeps


def test_nuscenes_lidar_maps_onto_depth(nusc, nusc_root, nusc_sequences):
    _check_nuscenes_projection(nusc, nusc_root[0], nusc_sequences[0].depth)


def _check_nuscenes_projection(nusc, root, depth_of_seq=None, channels=("CAM_FRONT",)):
    sample = nusc.get("sample", nusc.scene[0]["first_sample_token"])
    for channel in channels:
        cam_sd = nusc.get("sample_data", sample["data"][channel])
        points, coloring, _ = nusc.explorer.map_pointcloud_to_image(sample["data"]["LIDAR_TOP"], sample["data"][channel])
        assert points.shape[1] >= 10, channel
        stem = os.path.basename(cam_sd["filename"])[:-4]
        depth = np.load(os.path.join(root, "depth", "rendered", channel, stem + ".npz"))["depth"]
        u, v = np.rint(points[0]).astype(int), np.rint(points[1]).astype(int)
        rel = np.abs(depth[v, u] - coloring) / coloring
        assert np.median(rel) < 0.03, (channel, np.median(rel))


# ---------------------------------------------------------------------------------- DAVIS
def test_davis_layout(tmp_path, kitti_sequences):
    summary = write_davis(kitti_sequences[:1], str(tmp_path))
    files = sorted(glob.glob(str(tmp_path / "JPEGImages" / "480p" / "synthetic-000000" / "*.jpg")))
    assert [os.path.basename(f) for f in files] == [f"{t:05d}.jpg" for t in range(5)]
    image = cv2.imread(files[0])
    assert image.shape == (480, 854, 3)
    ann = cv2.imread(str(tmp_path / "Annotations" / "480p" / "synthetic-000000" / "00000.png"), cv2.IMREAD_UNCHANGED)
    assert ann.shape == (480, 854) and set(np.unique(ann)) == {0, 1}
    with open(tmp_path / "ImageSets" / "2017" / "val.txt") as f:
        assert f.read().split() == ["synthetic-000000"]
    native = write_davis(kitti_sequences[:1], str(tmp_path / "native"), size=None)
    assert native["size"] == (48, 24)
    assert summary["size"] == (854, 480)


# ----------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("writer", [write_dgp, write_kitti_raw, write_kitti_2015, write_nuscenes, write_davis],
                         ids=["dgp", "kitti_raw", "kitti_2015", "nuscenes", "davis"])
def test_writers_are_deterministic(tmp_path, writer, ddad_sequences, kitti_sequences, nusc_sequences):
    sequences = {write_dgp: ddad_sequences, write_nuscenes: nusc_sequences}.get(writer, kitti_sequences)
    a, b = tree_digest_of(writer, sequences, tmp_path / "a"), tree_digest_of(writer, iter(sequences), tmp_path / "b")
    assert a == b and len(a) > 5
    assert not [p for p in a if ".tmp" in p]


def tree_digest_of(writer, sequences, root):
    summary = writer(sequences, str(root))
    digest = tree_digest(str(root))
    assert sorted(digest) == summary["files"]
    return digest


def test_writers_reject_bad_input(tmp_path, kitti_sequences):
    with pytest.raises(ValueError, match="no sequences"):
        write_dgp([], str(tmp_path / "a"))
    bad = replace(kitti_sequences[0], depth=kitti_sequences[0].depth[:, :, :5])
    with pytest.raises(ValueError, match="depth has shape"):
        write_kitti_raw([bad], str(tmp_path / "b"))
    toed_in = kitti_sequences[0].T_rig_cam.copy()
    c, s = np.cos(0.02), np.sin(0.02)
    toed_in[1, :3, :3] = toed_in[1, :3, :3] @ np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    with pytest.raises(ValueError, match="rectified stereo"):
        write_kitti_raw([replace(kitti_sequences[0], T_rig_cam=toed_in)], str(tmp_path / "c"))
    with pytest.raises(ValueError, match="unique"):
        write_davis([kitti_sequences[0], kitti_sequences[0]], str(tmp_path / "d"))


# --------------------------------------------------------------------------- command line
PRESET_CAMERAS = {
    "ddad": ("CAMERA_01", "CAMERA_05", "CAMERA_06", "CAMERA_07", "CAMERA_08", "CAMERA_09"),
    "nuscenes": ("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT"),
    "kitti": ("image_02", "image_03"),
}


def fake_render(preset, num_frames, image_hw=None, seed=0, scene_index=0):
    """Stands in for render_sequence in the command-line tests: the analytic wall scene."""
    hw = image_hw or (24, 40)
    return plane_sequence(f"{scene_index:06d}", PRESET_CAMERAS[preset], num_frames, hw,
                          fps=12.0 if preset == "nuscenes" else 10.0)


CLI_CASES = [("ddad", 3, "ddad.json"), ("nuscenes", 7, "v1.0-mini/sample_data.json"),
             ("kitti_raw", 3, "2011_09_26/calib_cam_to_cam.txt"),
             ("kitti_2015", 3, "data_scene_flow/training/flow_occ/000000_10.png"),
             ("davis", 3, "JPEGImages/480p/synthetic-000000/00000.jpg")]


@pytest.mark.parametrize("fmt,frames,expected", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_main_with_fake_renderer(tmp_path, monkeypatch, fmt, frames, expected):
    import dataset.synthetic.writers.generate as generate
    from dataset.synthetic.__main__ import main

    monkeypatch.setattr(generate, "_default_render", fake_render)
    out = tmp_path / fmt
    assert main(["--format", fmt, "--out", str(out), "--scenes", "2", "--frames", str(frames),
                 "--height", "24", "--width", "40", "--quiet"]) == 0
    assert (out / expected).is_file()
    with open(out / ".sfdepth_synthetic.json") as f:
        marker = json.load(f)
    assert marker["format"] == fmt and marker["scenes"] == 2 and marker["frames"] == frames and marker["height"] == 24


@pytest.mark.parametrize("argv,message", [
    (["--format", "kitti"], "invalid choice"),
    (["--format", "ddad"], "required"),
    (["--format", "nuscenes", "--out", "x", "--frames", "6"], "at least 7 frames"),
    (["--format", "kitti_2015", "--out", "x", "--frames", "1"], "at least 2 frames"),
    (["--format", "ddad", "--out", "x", "--height", "48"], "both height and width"),
    (["--format", "ddad", "--out", "x", "--scenes", "0"], "positive integer"),
])
def test_cli_argument_errors(argv, message, capsys):
    from dataset.synthetic.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_ensure_generates_once(tmp_path):
    from dataset.synthetic.writers import ensure_synthetic_dataset

    calls = []

    def counting_render(*args, **kwargs):
        calls.append(args)
        return fake_render(*args, **kwargs)

    out = str(tmp_path / "kitti")
    path = ensure_synthetic_dataset("kitti_raw", out, 1, 3, 24, 40, 0, render_fn=counting_render)
    assert path == out and len(calls) == 1
    mtimes = {p: os.stat(os.path.join(out, p)).st_mtime_ns for p in tree_digest(out)}
    assert ensure_synthetic_dataset("kitti_raw", out, 1, 3, 24, 40, 0, render_fn=counting_render) == out
    assert len(calls) == 1
    assert {p: os.stat(os.path.join(out, p)).st_mtime_ns for p in tree_digest(out)} == mtimes
    # Other parameters: regenerated in place of the old one (no stale frames left).
    ensure_synthetic_dataset("kitti_raw", out, 1, 4, 24, 40, 0, render_fn=counting_render)
    assert len(calls) == 2
    drive = os.path.join(out, "2011_09_26", "2011_09_26_drive_0001_sync", "image_02", "data")
    assert len(os.listdir(drive)) == 4
    assert not glob.glob(out + ".partial*")
    # A folder that is not ours is never overwritten.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        ensure_synthetic_dataset("davis", str(foreign), 1, 3, 24, 40, 0, render_fn=counting_render)
    assert (foreign / "keep.txt").read_text() == "mine"


# ------------------------------------------------------------------------- real renders
TINY_HW = (48, 80)


@pytest.fixture(scope="module")
def rendered_dgp(tmp_path_factory):
    from dataset.synthetic import render_sequence
    seq = render_sequence("ddad", 2, image_hw=TINY_HW, seed=0, scene_index=0)
    root = str(tmp_path_factory.mktemp("rendered_dgp"))
    write_dgp([seq], root)
    return root, seq


@pytest.fixture(scope="module")
def rendered_kitti(tmp_path_factory):
    from dataset.synthetic import render_sequence
    seq = render_sequence("kitti", 2, image_hw=TINY_HW, seed=0, scene_index=0)
    root = str(tmp_path_factory.mktemp("rendered_kitti"))
    write_kitti_raw([seq], os.path.join(root, "raw"))
    write_kitti_2015([seq], os.path.join(root, "2015"))
    return root, seq


def test_rendered_dgp_consistency(rendered_dgp):
    root, seq = rendered_dgp
    assert seq.camera_names[:2] == ["CAMERA_01", "CAMERA_05"]
    _check_dgp_consistency(root, seq)


def test_rendered_dgp_schema(rendered_dgp, shared_data):
    test_dgp_schema_matches_real_sample(rendered_dgp, shared_data)


def test_rendered_kitti(rendered_kitti):
    root, seq = rendered_kitti
    raw = os.path.join(root, "raw")
    calib = parse_kitti_calib(os.path.join(raw, "2011_09_26", "calib_cam_to_cam.txt"))
    P2, P3 = calib["P_rect_02"].reshape(3, 4), calib["P_rect_03"].reshape(3, 4)
    np.testing.assert_allclose(P2[:, :3], seq.K[0], rtol=1e-6)
    baseline = np.linalg.inv(seq.T_rig_cam[0]) @ seq.T_rig_cam[1]
    assert (P2[0, 3] - P3[0, 3]) / P2[0, 0] == pytest.approx(baseline[0, 3], rel=1e-5)
    velo = parse_kitti_calib(os.path.join(raw, "2011_09_26", "calib_velo_to_cam.txt"))
    points = np.fromfile(os.path.join(raw, "2011_09_26", "2011_09_26_drive_0001_sync", "velodyne_points", "data",
                                      "0000000000.bin"), np.float32).reshape(-1, 4)
    assert np.median(points[:, 2]) < 0  # z up: most returns are below the sensor (road)
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = velo["R"].reshape(3, 3), velo["T"]
    sparse = points_to_depth_map(torch.as_tensor(points[:, :3].astype(np.float64)), P2[:, :3], T, TINY_HW)[0].numpy()
    hit = sparse > 0
    assert hit.sum() > 20
    rel = np.abs(sparse[hit] - seq.depth[0, 0][hit]) / seq.depth[0, 0][hit]
    assert np.median(rel) < 0.03
    _check_kitti_2015_flow(os.path.join(root, "2015"), factor=0.45)
    disp, valid = read_disparity_png(os.path.join(root, "2015", "data_scene_flow", "training", "disp_occ_0", "000000_10.png"))
    z = seq.depth[0, 0]  # 2 frames: KITTI frame 10 is frame 0
    assert valid.any() and not valid[z >= 80].any()
    np.testing.assert_allclose(disp[valid], (P2[0, 0] * baseline[0, 3] / z)[valid], atol=0.5 / 256 + 1e-4)


def test_rendered_nuscenes_devkit(tmp_path):
    from dataset.synthetic import render_sequence
    from nuscenes.nuscenes import NuScenes
    seq = render_sequence("nuscenes", 1, image_hw=TINY_HW, seed=0, scene_index=0)  # one key frame
    write_nuscenes([seq], str(tmp_path))
    nusc = NuScenes("v1.0-mini", str(tmp_path), verbose=False)
    sample = nusc.get("sample", nusc.scene[0]["first_sample_token"])
    for n, channel in enumerate(seq.camera_names):
        _, _, K = nusc.get_sample_data(sample["data"][channel])
        np.testing.assert_allclose(K, seq.K[n])
    _check_nuscenes_projection(nusc, str(tmp_path), channels=("CAM_FRONT", "CAM_BACK"))


def test_cli_module_runs(tmp_path):
    """The real entry point, in a subprocess, at a tiny size."""
    out = tmp_path / "davis"
    result = subprocess.run([sys.executable, "-m", "dataset.synthetic", "--format", "davis", "--out", str(out),
                             "--frames", "2", "--height", "48", "--width", "80", "--quiet"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert len(os.listdir(out / "JPEGImages" / "480p" / "synthetic-000000")) == 2
