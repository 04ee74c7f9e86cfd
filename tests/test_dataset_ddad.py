"""dataset/ddad.py on the real DGP test scene (../shared/data/dgp_test_scene) and, when the synthetic
world is available, on synthetic DGP output with known dense depth and poses."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dataset.contract import check_sample
from dataset.ddad import DDAD_CAMERAS, DDADDataset
from dataset.rig_dataset import parse_requirements
from tests.box_world import box_world_sequence, compare_depth_at_lidar_pixels, quat_to_matrix

SCENE_02 = "scene_02/scene_fe9f29d3bde25d182dcf88caf1011acd8cc13624.json"
HW = (152, 242)  # 1/8 of 1216x1936: exercises the reduced decode


# ----------------------------------------------------------------------------- independent helpers
def pose_json_to_matrix(pose):
    r, t = pose["rotation"], pose["translation"]
    T = np.eye(4)
    T[:3, :3] = quat_to_matrix([r["qw"], r["qx"], r["qy"], r["qz"]])
    T[:3, 3] = [t["x"], t["y"], t["z"]]
    return T


def numpy_depth_map(points, K, T_cam_lidar, hw):
    """Reference rasteriser: round to the nearest pixel centre, keep the nearest return."""
    p = points @ T_cam_lidar[:3, :3].T + T_cam_lidar[:3, 3]
    p = p[p[:, 2] > 1e-3]
    uvw = p @ K.T
    u = np.floor(uvw[:, 0] / uvw[:, 2] + 0.5).astype(int)
    v = np.floor(uvw[:, 1] / uvw[:, 2] + 0.5).astype(int)
    ok = (u >= 0) & (u < hw[1]) & (v >= 0) & (v < hw[0])
    u, v, z = u[ok], v[ok], p[ok, 2]
    order = np.argsort(-z)  # far first, so the nearest is written last
    depth = np.zeros(hw)
    depth[v[order], u[order]] = z[order]
    return depth


def scene02_root(tmp_path_factory, shared_data):
    """A copy of scene_02 with a dataset json naming only it (train and val)."""
    root = tmp_path_factory.mktemp("dgp")
    shutil.copytree(shared_data / "dgp_test_scene" / "scene_02", root / "scene_02")
    dataset = json.loads((shared_data / "dgp_test_scene" / "scene_dataset_v1.0.json").read_text())
    dataset["scene_splits"] = {"0": {"filenames": [SCENE_02]}, "1": {"filenames": [SCENE_02]}}
    (root / "scene_dataset_v1.0.json").write_text(json.dumps(dataset))
    return root


@pytest.fixture(scope="module")
def dgp02(tmp_path_factory, shared_data):
    return scene02_root(tmp_path_factory, shared_data)


@pytest.fixture(scope="module")
def scene02_json(shared_data):
    scene = json.loads((shared_data / "dgp_test_scene" / SCENE_02).read_text())
    key = scene["samples"][1]["calibration_key"]
    calib_file = shared_data / "dgp_test_scene" / "scene_02" / "calibration" / f"{key}.json"
    return scene, json.loads(calib_file.read_text())


# ----------------------------------------------------------------------------- real sample
def test_real_scene_intrinsics_extrinsics_poses(dgp02, scene02_json):
    scene, calib = scene02_json
    cams = [c.lower() for c in DDAD_CAMERAS]  # case-insensitive names
    ds = DDADDataset(dgp02 / "scene_dataset_v1.0.json", "train", cams, image_hw=HW, depth_cache=False)
    assert len(ds) == 1  # 3 samples, frame_ids (0, -1, 1): only the middle one
    sample = ds[0]
    check_sample(sample, num_frames=3, num_cams=6)
    assert sample["meta"]["sample_index"] == 1 and sample["meta"]["cameras"] == list(DDAD_CAMERAS)
    sx, sy = HW[1] / 1936, HW[0] / 1216
    datums = {d["key"]: d for d in scene["data"]}
    sample_datums = {datums[k]["id"]["name"]: datums[k]["datum"] for k in scene["samples"][1]["datum_keys"]}
    for n, cam in enumerate(DDAD_CAMERAS):
        intr = calib["intrinsics"][calib["names"].index(cam)]
        expected_K = np.array([[intr["fx"] * sx, 0, (intr["cx"] + 0.5) * sx - 0.5],
                               [0, intr["fy"] * sy, (intr["cy"] + 0.5) * sy - 0.5], [0, 0, 1]])
        np.testing.assert_allclose(sample["K"][n].numpy(), expected_K, rtol=1e-6, atol=1e-4)
        T_rig_cam = pose_json_to_matrix(calib["extrinsics"][calib["names"].index(cam)])
        np.testing.assert_allclose(sample["extrinsics"][n].numpy(), T_rig_cam, atol=1e-6)
        # DGP semantics: the camera pose in the world ~ the lidar (= vehicle) pose composed with the
        # extrinsic (formats.md: within 5 cm; the lidar is 91 ms later).
        T_world_cam = pose_json_to_matrix(sample_datums[cam]["image"]["pose"])
        T_world_lidar = pose_json_to_matrix(sample_datums["LIDAR"]["point_cloud"]["pose"])
        assert np.linalg.norm((T_world_lidar @ T_rig_cam)[:3, 3] - T_world_cam[:3, 3]) < 0.2
    # pose_gt from the camera-0 poses of the three samples: identity at the target, ~1.27 m of
    # forward (+x) motion per second in the rig frame, as expected of a car.
    T_world_rig = []
    for s in (1, 0, 2):
        d = {datums[k]["id"]["name"]: datums[k]["datum"] for k in scene["samples"][s]["datum_keys"]}
        T_world_rig.append(pose_json_to_matrix(d["CAMERA_01"]["image"]["pose"])
                           @ np.linalg.inv(pose_json_to_matrix(calib["extrinsics"][calib["names"].index("CAMERA_01")])))
    for t in range(3):
        expected = np.linalg.inv(T_world_rig[0]) @ T_world_rig[t]
        np.testing.assert_allclose(sample["pose_gt"][t].numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(sample["pose_gt"][0].numpy(), np.eye(4), atol=1e-5)
    assert sample["pose_gt"][1, 0, 3] < -1.0 and sample["pose_gt"][2, 0, 3] > 1.0  # previous behind, next ahead
    assert torch.equal(sample["mask"], torch.ones(6, 1, *HW))


def test_real_scene_lidar_depth_and_cache(dgp02, scene02_json, shared_data):
    scene, calib = scene02_json
    ds = DDADDataset(dgp02 / "scene_dataset_v1.0.json", "val", DDAD_CAMERAS, image_hw=HW,
                     requirements="(gt_pose, gt_depth, mask)")
    sample = ds[0]
    check_sample(sample, num_frames=3, num_cams=6)
    depth = sample["depth_gt"]
    assert depth.shape == (6, 1, 1216, 1936) and depth.dtype == torch.float32
    counts = (depth > 0).flatten(1).sum(1).tolist()
    print("lidar points per camera (scene_02, sample 1):", dict(zip(DDAD_CAMERAS, counts)))
    assert counts[0] > 1000 and min(counts) > 500
    assert float(depth.max()) < 250 and float(depth[depth > 0].min()) > 0.5
    # Independent rasterisation of the same cloud with numpy from the JSON values.
    datums = {d["key"]: d for d in scene["data"]}
    sd = {datums[k]["id"]["name"]: datums[k]["datum"] for k in scene["samples"][1]["datum_keys"]}
    cloud = np.load(shared_data / "dgp_test_scene" / "scene_02" / sd["LIDAR"]["point_cloud"]["filename"])["data"]
    T_world_lidar = pose_json_to_matrix(sd["LIDAR"]["point_cloud"]["pose"])
    for n in (0, 5):
        cam = DDAD_CAMERAS[n]
        intr = calib["intrinsics"][calib["names"].index(cam)]
        K = np.array([[intr["fx"], 0, intr["cx"]], [0, intr["fy"], intr["cy"]], [0, 0, 1]])
        T_cam_lidar = np.linalg.inv(pose_json_to_matrix(sd[cam]["image"]["pose"])) @ T_world_lidar
        expected = numpy_depth_map(cloud[:, :3], K, T_cam_lidar, (1216, 1936))
        got = depth[n, 0].numpy()
        assert ((got > 0) == (expected > 0)).mean() > 0.9999
        both = (got > 0) & (expected > 0)
        np.testing.assert_allclose(got[both], expected[both], rtol=1e-5)
    # The cache: written on first access, reused afterwards (same values, untouched file).
    stem = Path(sd["CAMERA_01"]["image"]["filename"]).stem
    cache = dgp02 / "scene_02" / "depth" / "lidar" / "CAMERA_01" / f"{stem}.npz"
    assert cache.is_file()
    mtime = cache.stat().st_mtime_ns
    with np.load(cache) as npz:
        np.testing.assert_array_equal(npz["depth"], depth[0, 0].numpy())
    again = DDADDataset(dgp02 / "scene_dataset_v1.0.json", "val", DDAD_CAMERAS, image_hw=HW,
                        requirements=("gt_depth",))[0]
    assert torch.equal(again["depth_gt"], depth)
    assert cache.stat().st_mtime_ns == mtime
    assert not list(cache.parent.glob(".*.tmp.npz"))  # no temporary files left behind


def test_unwritable_cache_is_skipped_with_one_warning(dgp02, tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder should be")
    ds = DDADDataset(dgp02 / "scene_dataset_v1.0.json", "val", ["CAMERA_01"], image_hw=HW,
                     requirements=("gt_depth",), depth_cache=blocker)
    with pytest.warns(UserWarning, match="cannot write the depth cache"):
        first = ds[0]
    assert (first["depth_gt"] > 0).sum() > 1000


def test_real_dataset_errors(shared_data, tmp_path):
    data_json = shared_data / "dgp_test_scene" / "scene_dataset_v1.0.json"
    with pytest.raises(ValueError, match=r"CAMERA_07.*scene_01.*CAMERA_01.*CAMERA_05.*CAMERA_06"):
        DDADDataset(data_json, "train", DDAD_CAMERAS, image_hw=HW, depth_cache=False)
    with pytest.raises(ValueError, match=r"split 'test'.*available splits: \['train', 'val'\]"):
        DDADDataset(data_json, "test", ["CAMERA_01"], depth_cache=False)
    with pytest.raises(FileNotFoundError, match="nothere.json"):
        DDADDataset(tmp_path / "nothere.json", "train", ["CAMERA_01"])
    with pytest.raises(ValueError, match="unknown requirement"):
        parse_requirements(("gt_pose", "gt_flow"))
    assert parse_requirements("(gt_pose, gt_depth, mask)") == ("gt_pose", "gt_depth", "mask")
    # Both scenes have CAMERA_01/05/06: two items, one per scene.
    ds = DDADDataset(data_json, "train", ["camera_01", "camera_05", "camera_06"], image_hw=HW, depth_cache=False)
    assert len(ds) == 2 and [ds.scenes[s].name for s, _ in ds.items] == ["scene_01", "scene_02"]


def test_missing_files_are_named(tmp_path_factory, shared_data):
    root = scene02_root(tmp_path_factory, shared_data)
    scene = json.loads((root / SCENE_02).read_text())
    datums = {d["key"]: d for d in scene["data"]}
    names = {datums[k]["id"]["name"]: datums[k]["datum"] for k in scene["samples"][2]["datum_keys"]}
    image = root / "scene_02" / names["CAMERA_05"]["image"]["filename"]
    image.unlink()
    target = {datums[k]["id"]["name"]: datums[k]["datum"] for k in scene["samples"][1]["datum_keys"]}
    lidar = root / "scene_02" / target["LIDAR"]["point_cloud"]["filename"]
    lidar.unlink()
    ds = DDADDataset(root / "scene_dataset_v1.0.json", "train", ["CAMERA_01", "CAMERA_05"], image_hw=HW,
                     requirements=("gt_depth",))
    with pytest.raises(FileNotFoundError, match=image.name):
        ds[0]
    ds = DDADDataset(root / "scene_dataset_v1.0.json", "train", ["CAMERA_01"], image_hw=HW, requirements=("gt_depth",))
    with pytest.raises(FileNotFoundError, match=lidar.name):
        ds[0]
    for calib in (root / "scene_02" / "calibration").glob("*.json"):
        calib.unlink()
    ds = DDADDataset(root / "scene_dataset_v1.0.json", "train", ["CAMERA_01"], image_hw=HW)
    with pytest.raises(FileNotFoundError, match="calibration"):
        ds[0]


def test_masks_layouts_and_jitter(dgp02, tmp_path):
    import cv2

    # Per-scene layout (the synthetic writer's): <mask_path>/<scene>/CAMERA_xx_mask.png
    mask = np.full((1216, 1936), 255, np.uint8)
    mask[1000:] = 0
    (tmp_path / "per_scene" / "scene_02").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "per_scene" / "scene_02" / "CAMERA_05_mask.png"), mask)
    cv2.imwrite(str(tmp_path / "per_scene" / "scene_02" / "CAMERA_01_mask.png"), np.full_like(mask, 255))
    ds = DDADDataset(dgp02 / "scene_dataset_v1.0.json", "train", ["CAMERA_01", "CAMERA_05"], image_hw=HW,
                     mask_path=tmp_path / "per_scene", color_jitter=(0.2, 0.2, 0.2, 0.05), seed=1)
    sample = ds[0]
    check_sample(sample, num_frames=3, num_cams=2)
    assert float(sample["mask"][0].min()) == 1.0
    np.testing.assert_allclose(float(sample["mask"][1].mean()), 1000 / 1216, atol=2e-3)
    # image_aug: one draw per camera, shared by the frames; reproducible for a seed and an epoch.
    assert not torch.equal(sample["image_aug"], sample["image"])
    again = ds[0]
    assert torch.equal(again["image_aug"], sample["image_aug"])
    ds.set_epoch(1)
    assert not torch.equal(ds[0]["image_aug"], sample["image_aug"])
    # Reference layout: mask_idx_dict.pkl maps int(scene folder) -> set; here the folder is
    # "scene_02", which is not an integer: a clear error.
    import pickle

    (tmp_path / "sets" / "3").mkdir(parents=True)
    with open(tmp_path / "sets" / "mask_idx_dict.pkl", "wb") as f:
        pickle.dump({2: 3}, f)
    ds = DDADDataset(dgp02 / "scene_dataset_v1.0.json", "train", ["CAMERA_01"], image_hw=HW,
                     mask_path=tmp_path / "sets")
    with pytest.raises(ValueError, match="not an integer"):
        ds[0]


def test_mask_sets_layout(tmp_path):
    import cv2

    from dataset.masks import MaskSet

    (tmp_path / "4").mkdir()
    mask = np.full((20, 30), 255, np.uint8)
    mask[:, :15] = 0
    cv2.imwrite(str(tmp_path / "4" / "CAMERA_07_mask.png"), mask)
    import pickle

    with open(tmp_path / "mask_idx_dict.pkl", "wb") as f:
        pickle.dump({150: 4}, f)
    masks = MaskSet(tmp_path, (10, 15))
    assert masks.mask_file("camera_07", "000150") == tmp_path / "4" / "CAMERA_07_mask.png"
    got = masks.get(["CAMERA_07"], "000150")
    assert got.shape == (1, 1, 10, 15)
    np.testing.assert_allclose(got.mean().item(), 0.5, atol=0.05)
    with pytest.raises(KeyError, match="000151"):
        masks.get(["CAMERA_07"], "000151")
    with pytest.raises(FileNotFoundError, match="CAMERA_05_mask.png"):
        masks.get(["CAMERA_05"], "000150")


SYN_HW = (48, 80)


@pytest.fixture(scope="module")
def synthetic_dgp(tmp_path_factory):
    from dataset.synthetic.writers import write_dgp

    root = tmp_path_factory.mktemp("syn_dgp")
    seq = box_world_sequence("ddad", 3, SYN_HW)
    summary = write_dgp([seq], str(root))
    return root, seq, summary


def test_synthetic_dgp_depth_poses_and_warp(synthetic_dgp):
    from geometry import backward_warp, compose, invert_transform

    root, seq, summary = synthetic_dgp
    ds = DDADDataset(Path(summary["dataset_json"]), "train", seq.camera_names, image_hw=SYN_HW,
                     requirements=("gt_pose", "gt_depth", "mask"), mask_path=root / "masks")
    assert len(ds) == 1
    sample = ds[0]
    check_sample(sample, num_frames=3, num_cams=6)
    np.testing.assert_allclose(sample["K"].numpy(), seq.K, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(sample["extrinsics"].numpy(), seq.T_rig_cam, atol=1e-5)
    for t, f in enumerate((0, -1, 1)):
        expected = np.linalg.inv(seq.T_world_rig[1]) @ seq.T_world_rig[1 + f]
        np.testing.assert_allclose(sample["pose_gt"][t].numpy(), expected, atol=1e-4)
    np.testing.assert_allclose(sample["mask"][:, 0].numpy(), seq.self_occlusion.astype(np.float32))
    # Lidar depth against the dense rendered depth the writer stored beside it.
    scene = root / seq.name
    ts = Path(sample["meta"]["files"][0]).stem
    for n, cam in enumerate(seq.camera_names):
        with np.load(scene / "depth" / "rendered" / cam / f"{ts}.npz") as npz:
            rendered = npz["depth"]
        np.testing.assert_allclose(rendered, seq.depth[1, n])
        count, fraction = compare_depth_at_lidar_pixels(sample["depth_gt"][n, 0].numpy(), rendered)
        assert count > 200 and fraction > 0.999, (cam, count, fraction)
    # A warp of each context frame with the rendered depth and the loader's poses reproduces the target.
    image, K, E = sample["image"].double(), sample["K"].double(), sample["extrinsics"].double()
    depth = torch.from_numpy(seq.depth[1]).double()[:, None]
    for t in (1, 2):
        T_src_tgt = compose(invert_transform(E), invert_transform(sample["pose_gt"][t].double())[None], E)
        warped, valid = backward_warp(image[t], depth, K, K, T_src_tgt)
        inside = valid.expand_as(warped) > 0
        warp_error = (warped - image[0]).abs()[inside].mean()
        still_error = (image[t] - image[0]).abs()[inside].mean()
        assert inside.float().mean() > 0.5
        assert warp_error < 0.2 * still_error and warp_error < 0.02, (t, float(warp_error), float(still_error))


def test_rendered_world_dgp_depth(tmp_path):
    """The same check on the real renderer's output (cars, buildings, occlusions), at a tiny size."""
    from dataset.synthetic import render_sequence as render
    from dataset.synthetic.writers import write_dgp

    seq = render("ddad", 3, image_hw=(32, 48), seed=0, supersample=1)
    summary = write_dgp([seq], str(tmp_path))
    ds = DDADDataset(Path(summary["dataset_json"]), "train", seq.camera_names, image_hw=(32, 48),
                     requirements=("gt_depth",), depth_cache=False)
    sample = ds[0]
    fractions = []
    for n in range(6):
        count, fraction = compare_depth_at_lidar_pixels(sample["depth_gt"][n, 0].numpy(), seq.depth[1, n],
                                                        scene_mask=seq.self_occlusion[n])
        fractions.append(fraction)
        assert count > 50, (n, count)
    # Cars, poles and trees: the roof lidar sees around occluding edges that the camera does not.
    print("fraction of lidar pixels bracketed by the rendered depth, per camera:", np.round(fractions, 3))
    assert min(fractions) > 0.8 and np.mean(fractions) > 0.9, fractions


def test_synthetic_dgp_batches_and_frame_order(synthetic_dgp):
    root, seq, summary = synthetic_dgp
    ds = DDADDataset(Path(summary["dataset_json"]), "val", [c.lower() for c in seq.camera_names[:2]],
                     frame_ids=(-1, 0), image_hw=(24, 40), requirements=("gt_pose", "gt_depth", "mask"),
                     mask_path=root / "masks", color_jitter=(0.2, 0.2, 0.2, 0.05), convention="reference")
    assert len(ds) == 2  # samples 1 and 2 have a previous frame
    sample = ds[0]
    np.testing.assert_allclose(sample["pose_gt"][1].numpy(), np.eye(4), atol=1e-6)  # the target is second
    np.testing.assert_allclose(sample["pose_gt"][0].numpy(), np.linalg.inv(seq.T_world_rig[1]) @ seq.T_world_rig[0],
                               atol=1e-4)
    # "reference" convention: rows of K scaled, no half-pixel shift (VFDepth / packnet's train_transforms).
    np.testing.assert_allclose(sample["K"][0, 0, 2].item(), seq.K[0, 0, 2] * 40 / SYN_HW[1], rtol=1e-5)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    check_sample(batch, num_frames=2, num_cams=2, batched=True)
    assert batch["depth_gt"].shape == (2, 2, 1, *SYN_HW) and batch["image_aug"].shape == (2, 2, 2, 3, 24, 40)
    assert batch["meta"]["timestamps"].shape == (2, 2, 2)
