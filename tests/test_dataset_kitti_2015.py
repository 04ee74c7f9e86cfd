"""KITTI 2015 adapter (dataset/kitti_2015.py): a tiny layout built from the real devkit sample
(../shared/data/kitti_2015_devkit_sample), the 160/40 split, errors, augmentation, the
alternating fine-tuning sampler, and the synthetic world written in the KITTI 2015 format."""
import shutil
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import ConcatDataset, DataLoader

from dataset.contract import check_sample
from dataset.kitti_2015 import VALIDATE_INDICES, Kitti2015Dataset, kitti_2015_split_indices
from dataset.splits import AlternatingBatchSampler
from geometry import sample_at_pixels
from utils.kitti_io import read_disparity_png, read_flow_png

# calib_cam_to_cam.txt of 2011_09_26 in the real format (P_rect_02 and P_rect_03[0, 3] as in spec
# formats.md §1; the other values of P_rect_03 are those of the real file).
P_RECT_02 = "7.215377e+02 0.000000e+00 6.095593e+02 4.485728e+01 0.000000e+00 7.215377e+02 1.728540e+02 2.163791e-01 0.000000e+00 0.000000e+00 1.000000e+00 2.745884e-03"
P_RECT_03 = "7.215377e+02 0.000000e+00 6.095593e+02 -3.395242e+02 0.000000e+00 7.215377e+02 1.728540e+02 2.199936e+00 0.000000e+00 0.000000e+00 1.000000e+00 2.729905e-03"
CALIB_TEXT = (
    "calib_time: 09-Jan-2012 13:57:47\n"
    "corner_dist: 9.950000e-02\n"
    "S_rect_02: 1.242000e+03 3.750000e+02\n"
    "R_rect_00: 9.999239e-01 9.837760e-03 -7.445048e-03 -9.869795e-03 9.999421e-01 -4.278459e-03 7.402527e-03 4.351614e-03 9.999631e-01\n"
    f"P_rect_02: {P_RECT_02}\n"
    "S_rect_03: 1.242000e+03 3.750000e+02\n"
    f"P_rect_03: {P_RECT_03}\n"
)
GT_FOLDERS = ("disp_occ_0", "disp_occ_1", "disp_noc_0", "disp_noc_1", "flow_occ", "flow_noc", "obj_map")


@pytest.fixture(scope="module")
def devkit(shared_data) -> Path:
    return shared_data / "kitti_2015_devkit_sample"


def _layout(devkit: Path, root: Path, scenes=(0,), calib=True) -> Path:
    """data_scene_flow/training with images, ground truth and calibration of ``scenes`` (all copies
    of the one devkit scene), plus a multiview frame 09 as JPEG in image_2_jpg / image_3_jpg."""
    train = root / "data_scene_flow" / "training"
    obj = np.zeros((375, 1242), np.uint8)
    obj[200:300, 400:600] = 1
    for s in scenes:
        name = f"{s:06d}_10.png"
        for cam in ("image_2", "image_3"):
            (train / cam).mkdir(parents=True, exist_ok=True)
            shutil.copy(devkit / "image.png", train / cam / name)
            shutil.copy(devkit / "image.png", train / cam / f"{s:06d}_11.png")
        for folder in GT_FOLDERS:
            (train / folder).mkdir(parents=True, exist_ok=True)
            if folder == "obj_map":
                cv2.imwrite(str(train / folder / name), obj)
            else:
                shutil.copy(devkit / ("flow_gt.png" if folder.startswith("flow") else "disp_gt.png"), train / folder / name)
        if calib:
            c = root / "data_scene_flow_calib" / "training" / "calib_cam_to_cam"
            c.mkdir(parents=True, exist_ok=True)
            (c / f"{s:06d}.txt").write_text(CALIB_TEXT)
    return root


def _K_from_text() -> np.ndarray:
    return np.array(P_RECT_02.split(), dtype=np.float64).reshape(3, 4)[:, :3]


def test_ground_truth_matches_kitti_io(devkit, tmp_path):
    root = _layout(devkit, tmp_path)
    ds = Kitti2015Dataset(root, split="full", frame_ids=[0, 1], image_hw=(128, 416), requirements=["gt_depth"])
    assert len(ds) == 1
    sample = ds[0]
    check_sample(sample, num_frames=2, num_cams=2)
    disp, disp_valid = read_disparity_png(devkit / "disp_gt.png")
    flow, flow_valid = read_flow_png(devkit / "flow_gt.png")
    np.testing.assert_array_equal(sample["kitti2015_disp0"][0].numpy(), np.where(disp_valid, disp, 0))
    np.testing.assert_array_equal(sample["kitti2015_disp1"][0].numpy(), np.where(disp_valid, disp, 0))
    np.testing.assert_array_equal(sample["kitti2015_flow"].permute(1, 2, 0).numpy(), flow)
    np.testing.assert_array_equal(sample["kitti2015_flow_valid"][0].numpy(), flow_valid.astype(np.float32))
    assert 0 < float(sample["kitti2015_flow_valid"].mean()) < 1
    assert sample["kitti2015_obj_map"].dtype == torch.int64 and int(sample["kitti2015_obj_map"].sum()) == 100 * 200
    K = _K_from_text()
    np.testing.assert_allclose(sample["kitti2015_K"].numpy(), K, rtol=1e-6)
    expected = K.copy()
    expected[0] *= 416 / 1242
    expected[1] *= 128 / 375
    expected[0, 2] += 0.5 * 416 / 1242 - 0.5
    expected[1, 2] += 0.5 * 128 / 375 - 0.5
    np.testing.assert_allclose(sample["K"][0].numpy(), expected, rtol=1e-5)
    baseline = (float(P_RECT_02.split()[3]) - float(P_RECT_03.split()[3])) / K[0, 0]
    np.testing.assert_allclose(sample["extrinsics"][1, :3, 3].numpy(), [baseline, 0, 0], atol=1e-6)
    assert sample["meta"]["baseline"] == pytest.approx(0.5327, abs=1e-4)
    # Depth from the disparity: fx * b / d on the valid pixels, the right camera empty.
    depth = sample["depth_gt"]
    assert depth.shape == (2, 1, 375, 1242) and not bool(depth[1].any())
    d = disp[disp_valid]
    np.testing.assert_allclose(depth[0, 0].numpy()[disp_valid], K[0, 0] * baseline / d, rtol=1e-5)

    # Without the calibration folder: the width fallback gives the same K and baseline.
    shutil.rmtree(root / "data_scene_flow_calib")
    fallback = Kitti2015Dataset(root, split="full", frame_ids=[0])[0]
    np.testing.assert_allclose(fallback["kitti2015_K"].numpy(), K, rtol=1e-6)
    np.testing.assert_allclose(fallback["extrinsics"][1, 0, 3].item(), baseline, rtol=1e-6)

    noc = Kitti2015Dataset(root, split="full", frame_ids=[0], gt_variant="noc")
    assert noc._gt_files(0)["flow"].parent.name == "flow_noc"


def test_multiview_frames_and_image_folders(devkit, tmp_path):
    root = _layout(devkit, tmp_path)
    image = cv2.imread(str(devkit / "image.png"))
    for cam in ("image_2_jpg", "image_3_jpg"):
        d = root / "data_scene_flow_multiview" / "training" / cam
        d.mkdir(parents=True)
        cv2.imwrite(str(d / "000000_09.jpg"), image[:, ::-1])
    ds = Kitti2015Dataset(root, split="full", frame_ids=[0, -1, 1], load_gt=False)
    files = ds._files[0]
    assert files[1][0].name == "000000_09.jpg" and files[1][1].parent.name == "image_3_jpg"
    assert files[0][0].parent.parent.parent.name == "data_scene_flow"
    sample = ds[0]
    check_sample(sample, num_frames=3, num_cams=2)
    assert not any(k.startswith("kitti2015_") for k in sample)
    # The JPEG frame 09 is the mirrored image (up to compression).
    assert float((sample["image"][1, 0] - sample["image"][0, 0].flip(-1)).abs().mean()) < 0.03
    with pytest.raises(FileNotFoundError, match=r"000000_08"):
        Kitti2015Dataset(root, split="full", frame_ids=[0, -2], load_gt=False)


def test_splits_and_errors(devkit, tmp_path):
    assert len(VALIDATE_INDICES) == 40 and len(set(VALIDATE_INDICES)) == 40
    assert len(kitti_2015_split_indices("train", range(200))) == 160
    assert kitti_2015_split_indices("val", range(200)) == sorted(VALIDATE_INDICES)
    assert len(kitti_2015_split_indices("full", range(200))) == 200
    with pytest.raises(ValueError, match="split"):
        kitti_2015_split_indices("training", range(200))

    root = _layout(devkit, tmp_path / "a", scenes=(0, 1, 2, 3))
    assert Kitti2015Dataset(root, split="train", frame_ids=[0], validate_indices=(2,)).scenes == [0, 1, 3]
    assert Kitti2015Dataset(root, split="val", frame_ids=[0], validate_indices=(2,)).scenes == [2]
    assert Kitti2015Dataset(root, split="val", frame_ids=[0]).scenes == [2]          # 2 is in VALIDATE_INDICES
    assert len(Kitti2015Dataset(root, split="full", frame_ids=[0])) == 4

    (root / "data_scene_flow" / "training" / "flow_occ" / "000003_10.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"flow_occ/000003_10\.png"):
        Kitti2015Dataset(root, split="full", frame_ids=[0])
    with pytest.raises(FileNotFoundError, match=r"testing/image_2"):
        Kitti2015Dataset(root, split="test", frame_ids=[0])
    with pytest.raises(ValueError, match="gt_pose"):
        Kitti2015Dataset(root, split="full", frame_ids=[0], requirements=["gt_pose"])
    test_root = tmp_path / "b"
    shutil.copytree(root / "data_scene_flow" / "training" / "image_2", test_root / "data_scene_flow" / "testing" / "image_2")
    shutil.copytree(root / "data_scene_flow" / "training" / "image_3", test_root / "data_scene_flow" / "testing" / "image_3")
    test = Kitti2015Dataset(test_root, split="test", frame_ids=[0, 1], image_hw=(64, 208))
    assert len(test) == 4 and "kitti2015_flow" not in test[0]


def test_augmentation_crops_images_and_ground_truth(devkit, tmp_path):
    root = _layout(devkit, tmp_path)
    plain = Kitti2015Dataset(root, split="full", frame_ids=[0, 1])[0]
    ds = Kitti2015Dataset(root, split="full", frame_ids=[0, 1], image_hw=(96, 320), augment=True,
                          crop_hw=(300, 1000), crop_scale=(0.9, 1.0), seed=1)
    sample = ds[0]
    check_sample(sample, num_frames=2, num_cams=2)
    assert sample["image"].shape[-2:] == (96, 320) and "image_aug" in sample
    h, w = sample["kitti2015_flow"].shape[-2:]
    assert 270 <= h <= 300 and 900 <= w <= 1000
    left = int(round(float(plain["kitti2015_K"][0, 2] - sample["kitti2015_K"][0, 2])))
    top = int(round(float(plain["kitti2015_K"][1, 2] - sample["kitti2015_K"][1, 2])))
    torch.testing.assert_close(sample["kitti2015_flow"], plain["kitti2015_flow"][:, top:top + h, left:left + w])
    torch.testing.assert_close(sample["kitti2015_disp0"], plain["kitti2015_disp0"][:, top:top + h, left:left + w])
    again = Kitti2015Dataset(root, split="full", frame_ids=[0, 1], image_hw=(96, 320), augment=True,
                             crop_hw=(300, 1000), crop_scale=(0.9, 1.0), seed=1)[0]
    assert torch.equal(again["image_aug"], sample["image_aug"])


def test_alternating_finetuning_batches(devkit, shared_data, tmp_path):
    from dataset.kitti_raw import KittiRawDataset

    raw_root = shared_data / "kitti_raw_tiny"
    k15 = Kitti2015Dataset(_layout(devkit, tmp_path, scenes=(0, 1)), split="full", frame_ids=[0, 1], image_hw=(64, 208))
    raw = KittiRawDataset(raw_root, frame_ids=[0, 1], image_hw=(64, 208))
    combo = ConcatDataset([k15, raw])
    sampler = AlternatingBatchSampler(len(k15), len(raw), batch_size=1, seed=0)
    batches = list(DataLoader(combo, batch_sampler=sampler, num_workers=0))
    assert len(batches) == 4                                                        # 2 x |KITTI 2015|
    assert ["kitti2015_flow" in b for b in batches] == [True, False, True, False]
    assert all(b["image"].shape == (1, 2, 2, 3, 64, 208) for b in batches)
    check_sample(batches[0], num_frames=2, num_cams=2, batched=True)


# ----------------------------------------------------------------------------- synthetic world
@pytest.fixture(scope="module")
def synthetic_2015(tmp_path_factory):
    from dataset.synthetic import get_rig, render_sequence
    from dataset.synthetic.writers import write_kitti_2015

    rig = replace(get_rig("kitti", (64, 208)), lidar_rings=4, lidar_azimuth_samples=64)   # the lidar is not used here
    seq = render_sequence(rig, 2, seed=0, supersample=1)
    root = tmp_path_factory.mktemp("synthetic_kitti_2015")
    write_kitti_2015([seq], str(root))
    return seq, root


def test_synthetic_ground_truth_reads_back(synthetic_2015):
    seq, root = synthetic_2015
    sample = Kitti2015Dataset(root, split="full", frame_ids=[0, 1], validate_indices=())[0]
    check_sample(sample, num_frames=2, num_cams=2)
    np.testing.assert_allclose(sample["kitti2015_K"].numpy(), seq.K[0], rtol=1e-5)
    baseline = float(seq.T_rig_cam[1, 0, 3] - seq.T_rig_cam[0, 0, 3])
    np.testing.assert_allclose(sample["extrinsics"][1, :3, 3].numpy(), [baseline, 0, 0], atol=1e-5)
    np.testing.assert_allclose(sample["image"][0].permute(0, 2, 3, 1).numpy() * 255, seq.images[0], atol=1e-3)
    disp = sample["kitti2015_disp0"][0].numpy()
    valid = disp > 0
    assert valid.mean() > 0.5
    expected = seq.K[0, 0, 0] * baseline / seq.depth[0, 0]
    np.testing.assert_allclose(disp[valid], expected[valid], atol=0.5 / 256 + 1e-4)
    flow_valid = sample["kitti2015_flow_valid"][0].numpy() > 0
    assert flow_valid.mean() > 0.5
    np.testing.assert_allclose(sample["kitti2015_flow"].permute(1, 2, 0).numpy()[flow_valid],
                               seq.optical_flow_fwd[0, 0][flow_valid], atol=0.5 / 64 + 1e-4)


def test_synthetic_flow_warps_frame_11_onto_frame_10(synthetic_2015):
    _, root = synthetic_2015
    sample = Kitti2015Dataset(root, split="full", frame_ids=[0, 1], validate_indices=(), gt_variant="noc")[0]
    frame10, frame11 = sample["image"][0, 0], sample["image"][1, 0]
    flow = sample["kitti2015_flow"]
    h, w = flow.shape[-2:]
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    warped = sample_at_pixels(frame11, torch.stack([u, v]) + flow)
    noc = sample["kitti2015_flow_valid"][0] > 0
    assert noc.float().mean() > 0.3
    err_warp = (warped - frame10).abs().mean(0)[noc].mean().item()
    err_none = (frame11 - frame10).abs().mean(0)[noc].mean().item()
    assert err_warp < 0.5 * err_none and err_warp < 0.05
