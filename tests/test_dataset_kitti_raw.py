"""KITTI raw adapter (dataset/kitti_raw.py), its calibration parser (dataset/kitti_calib.py) and
the split files (dataset/splits.py), checked against the real sample ../shared/data/kitti_raw_tiny
(drive 2011_09_26_drive_0023_sync, frames 0..6). Expected values are computed here from the text
files with plain numpy, not with the code under test."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dataset.contract import check_sample
from dataset.kitti_calib import (CalibrationError, date_from_width, fallback_calibration, parse_calib_text,
                                 read_calib_file, read_stereo_calibration)
from dataset.kitti_raw import KittiRawDataset, oxts_to_pose, read_poses_txt
from dataset.splits import (AlternatingBatchSampler, FrameEntry, SplitFileError, detect_split_format,
                            read_frame_split, read_scene_list, read_token_list, write_frame_split,
                            write_scene_list, write_token_list)
from geometry import backward_warp

DATE = "2011_09_26"
DRIVE = "2011_09_26_drive_0023_sync"
H, W = 375, 1242


@pytest.fixture(scope="module")
def kitti_root(shared_data) -> Path:
    return shared_data / "kitti_raw_tiny"


def _text_values(path: Path, key: str) -> np.ndarray:
    """Values of ``key`` in a KITTI calibration text file, parsed independently of the code under test."""
    for line in path.read_text().splitlines():
        if line.startswith(key + ":"):
            return np.array(line.split(":", 1)[1].split(), dtype=np.float64)
    raise KeyError(key)


def _photometric(source, target, depth, K, T_source_target):
    """Mean absolute error over the lidar pixels that warp inside the source image."""
    warped, valid = backward_warp(source, depth, K, K, T_source_target)
    m = ((depth > 0) & (valid > 0))[0]
    return (warped - target).abs().mean(0)[m].mean().item(), int(m.sum())


# ----------------------------------------------------------------------------- calibration
def test_calibration_from_real_files(kitti_root):
    c2c, v2c = kitti_root / DATE / "calib_cam_to_cam.txt", kitti_root / DATE / "calib_velo_to_cam.txt"
    calib = read_stereo_calibration(c2c, v2c)
    P2 = _text_values(c2c, "P_rect_02").reshape(3, 4)
    P3 = _text_values(c2c, "P_rect_03").reshape(3, 4)
    np.testing.assert_array_equal(calib.K[0], P2[:, :3])
    np.testing.assert_array_equal(calib.K[1], P3[:, :3])
    assert calib.image_hw == (H, W)
    assert calib.baseline == pytest.approx(0.5327, abs=1e-4)
    assert calib.baseline == pytest.approx((P2[0, 3] - P3[0, 3]) / P2[0, 0], rel=1e-12)
    np.testing.assert_allclose(calib.T_rig_cam[0], np.eye(4))
    expected_right = np.eye(4)
    expected_right[0, 3] = calib.baseline
    np.testing.assert_allclose(calib.T_rig_cam[1], expected_right)
    # K @ T_cam_velo[:3] is monodepth2's projection P_rect_0X @ R_rect_00 @ [R|T].
    R_rect = np.eye(4)
    R_rect[:3, :3] = _text_values(c2c, "R_rect_00").reshape(3, 3)
    velo = np.eye(4)
    velo[:3, :3] = _text_values(v2c, "R").reshape(3, 3)
    velo[:3, 3] = _text_values(v2c, "T")
    for i, P in enumerate((P2, P3)):
        np.testing.assert_allclose(calib.K[i] @ calib.T_cam_velo[i][:3], P @ R_rect @ velo, rtol=0, atol=1e-9)
        np.testing.assert_allclose(calib.T_cam_velo[i][:3, :3] @ calib.T_cam_velo[i][:3, :3].T, np.eye(3), atol=1e-5)
    # The width fallback of multi-mono-sf gives the same K and baseline for 2011_09_26.
    assert date_from_width(W) == DATE
    fallback = fallback_calibration(W)
    np.testing.assert_allclose(fallback.K[0], P2[:, :3])
    assert fallback.baseline == pytest.approx(calib.baseline, abs=1e-9)


def test_calibration_errors_name_file_and_key(tmp_path):
    calib = parse_calib_text("calib_time: 09-Jan-2012 13:57:47\nP_rect_02: 1 2 3\nR: a b c\n", "x/calib.txt")
    assert "calib_time" not in calib and calib.text["calib_time"] == "09-Jan-2012 13:57:47"
    with pytest.raises(CalibrationError, match=r"x/calib.txt.*'P_rect_02' has 3 values, expected 12"):
        calib.get("P_rect_02", (3, 4))
    with pytest.raises(CalibrationError, match=r"x/calib.txt.*'P_rect_03' is missing"):
        calib.get("P_rect_03", (3, 4))
    with pytest.raises(CalibrationError, match=r"x/calib.txt.*'R' is not a list of numbers"):
        calib.get("R", (3, 3))
    path = tmp_path / "calib_cam_to_cam.txt"
    path.write_text("calib_time: 09-Jan-2012 13:57:47\nP_rect_02: 7.2e+02 0 6.0e+02 0 0 7.2e+02 1.7e+02 0 0 0 1 0\n")
    with pytest.raises(CalibrationError, match=rf"{path}.*'P_rect_03' is missing"):
        read_stereo_calibration(path)
    with pytest.raises(FileNotFoundError, match="nothere.txt"):
        read_calib_file(tmp_path / "nothere.txt")
    with pytest.raises(CalibrationError, match="width 1000"):
        date_from_width(1000)


# ----------------------------------------------------------------------------- items
def test_frames_and_context_windows(kitti_root):
    ds = KittiRawDataset(kitti_root)
    assert [f for _, f, _ in ds.items] == [1, 2, 3, 4, 5]          # 7 frames, [0, -1, 1]
    assert ds.num_excluded == 2
    assert len(ds._drive(f"{DATE}/{DRIVE}").frames["image_02"]) == 7
    window = KittiRawDataset(kitti_root, frame_ids=[-3, -2, -1, 0, 1])
    assert [f for _, f, _ in window.items] == [3, 4, 5]
    assert [f for _, f, _ in KittiRawDataset(kitti_root, frame_ids=[0, -1, 1], target_stride=2).items] == [2, 4]
    with pytest.raises(ValueError, match="target frame 0"):
        KittiRawDataset(kitti_root, frame_ids=[-1, 1])


def test_split_files_select_frames(kitti_root, tmp_path):
    split = tmp_path / "train_files.txt"
    split.write_text(f"{DATE}/{DRIVE} 3 l\n{DATE}/{DRIVE} 0000000004 r\n\n{DATE}/{DRIVE} 0 l\n")
    ds = KittiRawDataset(kitti_root, split=split)
    assert ds.items == [(f"{DATE}/{DRIVE}", 3, "l"), (f"{DATE}/{DRIVE}", 4, "r")]
    assert ds.num_excluded == 1                                     # frame 0 has no frame -1
    sample = ds[1]
    assert sample["meta"]["frame"] == 4 and sample["meta"]["side"] == "r"
    assert sample["meta"]["files"][0].endswith("image_02/data/0000000004.png")   # rig order stays [left, right]
    scenes = tmp_path / "kitti_train_scenes.txt"
    scenes.write_text(f"{DRIVE}\n")
    assert [f for _, f, _ in KittiRawDataset(kitti_root, split=scenes).items] == [1, 2, 3, 4, 5]


def test_missing_image_named_in_split_raises(kitti_root, tmp_path):
    split = tmp_path / "bad.txt"
    split.write_text(f"{DATE}/{DRIVE} 3 l\n{DATE}/{DRIVE} 9 l\n")
    with pytest.raises(FileNotFoundError, match=r"image_02/data/0000000009\.png"):
        KittiRawDataset(kitti_root, split=split)
    split.write_text(f"{DATE}/2011_09_26_drive_9999_sync 3 l\n")
    with pytest.raises(FileNotFoundError, match="2011_09_26_drive_9999_sync"):
        KittiRawDataset(kitti_root, split=split)


# ----------------------------------------------------------------------------- samples
def test_sample_contract_intrinsics_and_rig(kitti_root):
    c2c = kitti_root / DATE / "calib_cam_to_cam.txt"
    P2 = _text_values(c2c, "P_rect_02").reshape(3, 4)
    baseline = (P2[0, 3] - _text_values(c2c, "P_rect_03")[3]) / P2[0, 0]
    out_h, out_w = 128, 416
    sx, sy = out_w / W, out_h / H
    for convention, shift in (("half_pixel", 0.5), ("reference", 0.0)):
        ds = KittiRawDataset(kitti_root, image_hw=(out_h, out_w), requirements=["gt_depth", "gt_pose"],
                             convention=convention)
        sample = ds[2]
        check_sample(sample, num_frames=3, num_cams=2)
        expected = np.array([[P2[0, 0] * sx, 0, (P2[0, 2] + shift) * sx - shift],
                             [0, P2[1, 1] * sy, (P2[1, 2] + shift) * sy - shift], [0, 0, 1]])
        for cam in range(2):
            np.testing.assert_allclose(sample["K"][cam].numpy(), expected, rtol=1e-6)
    assert sample["image"].shape == (3, 2, 3, out_h, out_w)
    assert sample["frame_ids"].tolist() == [0, -1, 1]
    np.testing.assert_allclose(sample["extrinsics"][0].numpy(), np.eye(4), atol=1e-7)
    np.testing.assert_allclose(sample["extrinsics"][1, :3, 3].numpy(), [baseline, 0, 0], atol=1e-6)
    assert sample["depth_gt"].shape == (2, 1, H, W)                  # ground truth at the original size
    np.testing.assert_allclose(sample["pose_gt"][0].numpy(), np.eye(4), atol=1e-6)


def test_projected_depth_loads(kitti_root):
    ds = KittiRawDataset(kitti_root, frame_ids=[0], requirements=["gt_depth"])
    depth = ds[3]["depth_gt"]
    stored = np.load(kitti_root / DATE / DRIVE / "proj_depth/velodyne/image_02/0000000003.npz")["velodyne_depth"]
    np.testing.assert_array_equal(depth[0, 0].numpy(), stored)
    for cam in range(2):
        valid = depth[cam] > 0
        assert int(valid.sum()) > 10_000                               # 19,215 (left) at 375 x 1242
        assert float(depth[cam][valid].min()) > 0 and float(depth[cam].max()) <= 80.0


def test_pose_gt_from_poses_txt(kitti_root):
    ds = KittiRawDataset(kitti_root, frame_ids=[0, -1, 1], requirements=["gt_pose"], pose_source="poses_txt")
    lines = (kitti_root / DATE / DRIVE / "image_02/poses.txt").read_text().splitlines()

    def pose(i):
        T = np.eye(4)
        T[:3] = np.array(lines[i].split(), dtype=np.float64).reshape(3, 4)
        return T

    assert len(read_poses_txt(kitti_root / DATE / DRIVE / "image_02/poses.txt")) == len(lines)
    index = [f for _, f, _ in ds.items].index(3)
    pose_gt = ds[index]["pose_gt"].double().numpy()
    for t, off in enumerate([0, -1, 1]):
        np.testing.assert_allclose(pose_gt[t], np.linalg.inv(pose(3)) @ pose(3 + off), atol=1e-5)
    # T_rig(target)_rig(t+1) holds the next camera centre in the target frame: ahead, along +z.
    assert pose_gt[2, 2, 3] > 0.3 and pose_gt[1, 2, 3] < -0.3


def test_pose_gt_from_oxts_explains_the_images(kitti_root):
    """Warping frame 4 into frame 3 with the lidar depth: the oxts pose must explain the motion far
    better than no motion; the packnet fixture's poses.txt barely does (see kitti_raw.py)."""
    oxts = KittiRawDataset(kitti_root, frame_ids=[0, 1], requirements=["gt_depth", "gt_pose"], pose_source="oxts")
    index = [f for _, f, _ in oxts.items].index(3)
    sample = oxts[index]
    T_target_source = sample["pose_gt"][1].double()
    assert 0.8 < float(T_target_source[2, 3]) < 1.0                   # 8.8 m/s at 10 Hz, forward
    target, source = sample["image"][0, 0].double(), sample["image"][1, 0].double()
    depth, K = sample["depth_gt"][0].double(), sample["K"][0].double()
    err_oxts, n = _photometric(source, target, depth, K, torch.linalg.inv(T_target_source))
    err_static, _ = _photometric(source, target, depth, K, torch.eye(4, dtype=torch.float64))
    txt = KittiRawDataset(kitti_root, frame_ids=[0, 1], requirements=["gt_pose"], pose_source="poses_txt")
    err_txt, _ = _photometric(source, target, depth, K, torch.linalg.inv(txt[index]["pose_gt"][1].double()))
    assert n > 10_000
    assert err_oxts < 0.5 * err_static                                 # measured 0.067 vs 0.220
    assert err_oxts < err_txt                                          # poses.txt: 0.196
    # The conversion itself: a packet at the origin's latitude/longitude sits at the Mercator origin.
    T = oxts_to_pose(np.array([0.0, 0.0, 5.0, 0.0, 0.0, np.pi / 2]), 1.0)
    np.testing.assert_allclose(T[:3, 3], [0.0, 0.0, 5.0], atol=1e-9)
    np.testing.assert_allclose(T[:3, :3] @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-12)


def test_stereo_warp_with_lidar_depth(kitti_root):
    """Right image warped into the left with the projected lidar depth and the stereo extrinsics
    matches the left image at the lidar pixels much better than the unwarped right image."""
    ds = KittiRawDataset(kitti_root, frame_ids=[0], requirements=["gt_depth"])
    sample = ds[3]
    left, right = sample["image"][0, 0].double(), sample["image"][0, 1].double()
    E = sample["extrinsics"].double()
    T_right_left = torch.linalg.inv(E[1]) @ E[0]
    depth = sample["depth_gt"][0].double()
    K_left, K_right = sample["K"][0].double(), sample["K"][1].double()
    warped, valid = backward_warp(right, depth, K_left, K_right, T_right_left)
    m = ((depth > 0) & (valid > 0))[0]
    err_warp = (warped - left).abs().mean(0)[m].mean().item()
    err_none = (right - left).abs().mean(0)[m].mean().item()
    assert int(m.sum()) > 10_000
    assert err_warp < 0.4 * err_none                                   # measured 0.059 vs 0.198


def _mini_drive(kitti_root: Path, tmp_path: Path, frames=(3,)) -> Path:
    """A copy of the calibration and of a few frames (images, oxts), without proj_depth."""
    root = tmp_path / "kitti"
    src, dst = kitti_root / DATE, root / DATE
    dst.mkdir(parents=True)
    for name in ("calib_cam_to_cam.txt", "calib_velo_to_cam.txt", "calib_imu_to_velo.txt"):
        shutil.copy(src / name, dst / name)
    for sub in ("image_02/data", "image_03/data"):
        (dst / DRIVE / sub).mkdir(parents=True)
        for f in frames:
            shutil.copy(src / DRIVE / sub / f"{f:010d}.png", dst / DRIVE / sub / f"{f:010d}.png")
    return root


def test_depth_from_velodyne_bin_and_cache(kitti_root, tmp_path):
    """Lidar points made by back-projecting the stored left depth into the velodyne frame project
    back onto the same pixels with the same depth; the result is cached as npz."""
    root = _mini_drive(kitti_root, tmp_path)
    stored = np.load(kitti_root / DATE / DRIVE / "proj_depth/velodyne/image_02/0000000003.npz")["velodyne_depth"]
    calib = read_stereo_calibration(root / DATE / "calib_cam_to_cam.txt", root / DATE / "calib_velo_to_cam.txt")
    v, u = np.nonzero(stored)
    z = stored[v, u].astype(np.float64)
    rays = np.linalg.solve(calib.K[0], np.stack([u, v, np.ones_like(u)]).astype(np.float64))
    cam = np.vstack([rays * z, np.ones_like(z)])
    velo = (np.linalg.inv(calib.T_cam_velo[0]) @ cam)[:3].T
    points = np.hstack([velo, np.full((len(z), 1), 0.5)]).astype(np.float32)
    bin_dir = root / DATE / DRIVE / "velodyne_points/data"
    bin_dir.mkdir(parents=True)
    points.tofile(bin_dir / "0000000003.bin")

    ds = KittiRawDataset(root, frame_ids=[0], requirements=["gt_depth"])
    depth = ds[0]["depth_gt"].numpy()
    np.testing.assert_array_equal(depth[0, 0] > 0, stored > 0)
    np.testing.assert_allclose(depth[0, 0], stored, rtol=1e-5)
    assert (depth[1, 0] > 0).sum() > 10_000                            # the same points seen by image_03
    cache = root / DATE / DRIVE / "proj_depth/velodyne/image_02/0000000003.npz"
    assert cache.is_file() and not list(cache.parent.glob(".*.npz"))  # atomic write left no temp file
    np.testing.assert_array_equal(np.load(cache)["velodyne_depth"], depth[0, 0])

    md2 = KittiRawDataset(root, frame_ids=[0], requirements=["gt_depth"], monodepth2_pixel_offset=True)
    shifted = md2[0]["depth_gt"].numpy()[0, 0]
    inner = stored[1:, 1:]
    np.testing.assert_allclose(shifted[:-1, :-1][inner > 0], inner[inner > 0], rtol=1e-5)   # round(u) - 1
    assert (root / DATE / DRIVE / "proj_depth/velodyne_md2/image_02/0000000003.npz").is_file()

    (bin_dir / "0000000003.bin").unlink()
    shutil.rmtree(root / DATE / DRIVE / "proj_depth")
    with pytest.raises(FileNotFoundError, match=r"0000000003\.npz.*0000000003\.bin"):
        KittiRawDataset(root, frame_ids=[0], requirements=["gt_depth"])[0]


def test_augmentation_is_seeded_and_flip_swaps_stereo(kitti_root):
    kw = dict(frame_ids=[0, -1, 1], image_hw=(96, 320), requirements=["gt_depth", "gt_pose"], augment=True)
    a, b = KittiRawDataset(kitti_root, seed=5, **kw), KittiRawDataset(kitti_root, seed=5, **kw)
    sa, sb = a[1], b[1]
    check_sample(sa, num_frames=3, num_cams=2)
    assert torch.equal(sa["image"], sb["image"]) and torch.equal(sa["image_aug"], sb["image_aug"])
    assert sa["depth_gt"].shape == (2, 1, 96, 320)
    b.set_epoch(1)
    assert not torch.equal(sa["image"], b[1]["image"])

    # Without crop, scale or jitter, a flipped sample's left image is the mirrored right image, and
    # the rig stays [identity, +baseline].
    plain = KittiRawDataset(kitti_root, frame_ids=[0, 1], requirements=["gt_pose"])
    flip = KittiRawDataset(kitti_root, frame_ids=[0, 1], requirements=["gt_pose"], augment=True,
                           crop_scale=(1.0, 1.0), flip_prob=1.0, color_jitter_prob=0.0)
    ref, flipped = plain[2], flip[2]
    assert flipped["meta"]["flipped"] == 1
    torch.testing.assert_close(flipped["image"][:, 0], ref["image"][:, 1].flip(-1), atol=1e-6, rtol=0)
    torch.testing.assert_close(flipped["image"][:, 1], ref["image"][:, 0].flip(-1), atol=1e-6, rtol=0)
    torch.testing.assert_close(flipped["extrinsics"], ref["extrinsics"], atol=1e-6, rtol=0)
    assert flipped["K"][0, 0, 0] > 0
    assert float(flipped["K"][0, 0, 2]) == pytest.approx(W - 1 - float(ref["K"][1, 0, 2]), abs=1e-3)
    # Forward motion stays forward; the sideways component changes sign.
    assert float(flipped["pose_gt"][1, 2, 3]) == pytest.approx(float(ref["pose_gt"][1, 2, 3]), abs=2e-3)


# ----------------------------------------------------------------------------- split files
def test_split_files_round_trip_and_errors(tmp_path):
    entries = [FrameEntry(f"{DATE}/{DRIVE}", 3, "l"), FrameEntry(f"{DATE}/{DRIVE}", 69, "r")]
    path = tmp_path / "split.txt"
    write_frame_split(path, entries, zero_pad=True)
    assert path.read_text().splitlines()[1] == f"{DATE}/{DRIVE} 0000000069 r"
    assert read_frame_split(path) == entries
    assert entries[0].date == DATE and entries[0].drive == DRIVE
    assert detect_split_format(path) == "frames"
    packnet = tmp_path / "packnet.txt"
    packnet.write_text(f"{DATE}/{DRIVE}/image_03/data/0000000002.png {DATE}/{DRIVE}/image_02/data/0000000002.png\n")
    assert read_frame_split(packnet) == [FrameEntry(f"{DATE}/{DRIVE}", 2, "r")]
    assert detect_split_format(packnet) == "frames"

    scenes = tmp_path / "scenes.txt"
    write_scene_list(scenes, [DRIVE, "2011_09_28_drive_0001_sync"])
    assert read_scene_list(scenes) == [DRIVE, "2011_09_28_drive_0001_sync"]
    assert detect_split_format(scenes) == "scenes"
    tokens = tmp_path / "tokens.txt"
    write_token_list(tokens, ["ca9a282c9e77460f8360f564131a8af5"])
    assert read_token_list(tokens) == ["ca9a282c9e77460f8360f564131a8af5"]
    assert detect_split_format(tokens) == "tokens"

    bad = tmp_path / "bad.txt"
    bad.write_text(f"{DATE}/{DRIVE} 3 l\n{DATE}/{DRIVE} three l\n")
    with pytest.raises(SplitFileError, match=r"bad\.txt, line 2: .*'three' is not an integer"):
        read_frame_split(bad)
    bad.write_text(f"# comment\n{DATE}/{DRIVE} 3 x\n")
    with pytest.raises(SplitFileError, match=r"bad\.txt, line 2: .*side 'x'"):
        read_frame_split(bad)
    bad.write_text("a b c d\n")
    with pytest.raises(SplitFileError, match=r"bad\.txt, line 1"):
        read_frame_split(bad)
    bad.write_text("scene_a\nscene b\n")
    with pytest.raises(SplitFileError, match=r"bad\.txt, line 2: .*one scene name"):
        read_scene_list(bad)
    bad.write_text("ca9a282c9e77460f8360f564131a8af5\nnot-a-token\n")
    with pytest.raises(SplitFileError, match=r"bad\.txt, line 2: .*sample token"):
        read_token_list(bad)
    with pytest.raises(SplitFileError, match="not found"):
        read_frame_split(tmp_path / "missing.txt")


def test_alternating_batch_sampler():
    sampler = AlternatingBatchSampler(len_first=5, len_second=7, batch_size=2, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 2 * 3
    for step, batch in enumerate(batches):
        assert len(batch) == 2
        assert all((i < 5) if step % 2 == 0 else (5 <= i < 12) for i in batch)
    firsts = [i for b in batches[0::2] for i in b]
    assert set(firsts[:5]) == set(range(5))                            # one permutation of the first set
    assert batches == list(AlternatingBatchSampler(5, 7, batch_size=2, seed=3))
    sampler.set_epoch(1)
    assert list(sampler) != batches
    ranks = [list(AlternatingBatchSampler(6, 4, seed=0, num_replicas=2, rank=r)) for r in range(2)]
    assert {i for b in ranks[0][0::2] for i in b}.isdisjoint({i for b in ranks[1][0::2] for i in b})


# ----------------------------------------------------------------------------- synthetic world
@pytest.fixture(scope="module")
def synthetic_raw(tmp_path_factory):
    from dataclasses import replace

    from dataset.synthetic import get_rig, render_sequence
    from dataset.synthetic.writers import write_kitti_raw

    rig = replace(get_rig("kitti", (64, 208)), lidar_rings=8, lidar_azimuth_samples=256)
    seq = render_sequence(rig, 3, seed=1, supersample=1)
    root = tmp_path_factory.mktemp("synthetic_kitti_raw")
    write_kitti_raw([seq], str(root))
    return seq, root


def test_synthetic_drive_poses_depth_and_splits(synthetic_raw):
    """The written drive read back: both pose sources give the rendered rig motion; depth projected
    from the velodyne .bin files equals the writer's own projected depth."""
    seq, root = synthetic_raw
    for source in ("oxts", "poses_txt"):
        ds = KittiRawDataset(root, frame_ids=[0, -1, 1], requirements=["gt_pose"], pose_source=source)
        assert len(ds) == 1
        _, target, _ = ds.items[0]
        expected = np.stack([np.linalg.inv(seq.T_world_rig[target]) @ seq.T_world_rig[target + o] for o in (0, -1, 1)])
        np.testing.assert_allclose(ds[0]["pose_gt"].double().numpy(), expected, atol=1e-5)
    drive = next(p for p in (root / "2011_09_26").iterdir() if p.is_dir())
    written = KittiRawDataset(root, frame_ids=[0], requirements=["gt_depth"])[1]["depth_gt"]
    shutil.move(str(drive / "proj_depth"), str(drive / "proj_depth_writer"))
    computed = KittiRawDataset(root, frame_ids=[0], requirements=["gt_depth"])[1]["depth_gt"]
    assert int((written > 0).sum()) > 100
    torch.testing.assert_close(computed, written, atol=1e-4, rtol=1e-5)
    for name in ("train_files.txt", "kitti_train_scenes_all.txt"):
        split = root / "splits" / name
        if split.is_file():
            half = KittiRawDataset(root, split=split, image_hw=(32, 104))[0]   # decoded at half size
            check_sample(half, num_frames=3, num_cams=2)
            expected = seq.K[0].copy()
            expected[:2] *= 0.5
            expected[:2, 2] -= 0.25                                      # (c + 0.5) / 2 - 0.5
            np.testing.assert_allclose(half["K"][0].numpy(), expected, rtol=1e-5, atol=1e-4)
