"""tools/inspect_dataset.py on the synthetic DDAD world, and the picture helpers of utils/visualization."""

import contextlib
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dataset.build import build_dataset
from tools.inspect_dataset import json_safe, main, summarize_kitti2015
from utils.config import load_config
from utils.visualization import TILE_GAP, colorize_depth, draw_sparse_depth, tile_images

CONFIG = "configs/synthetic/ddad_surround_fusion.yaml"


def run_tool(argv):
    """(exit status, stdout, stderr) of the tool's main(argv), run in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def cfg():
    return load_config(CONFIG, mode="train")


@pytest.fixture(scope="module")
def val_dataset(cfg):
    return build_dataset(cfg, "val")          # renders the synthetic world on the very first use


@pytest.fixture(scope="module")
def inspected(tmp_path_factory, val_dataset):
    png = tmp_path_factory.mktemp("inspect") / "p.png"
    status, out, err = run_tool([f"--config_file={CONFIG}", "--split", "val", "--index", "0", "--out", str(png)])
    assert status == 0, err
    return json.loads(out), png, err


def test_json_names_the_sample(inspected, cfg, val_dataset):
    report, png, err = inspected
    assert report["dataset"] == "ddad" and report["config"] == "ddad_surround_fusion"
    assert report["split"] == "val" and report["index"] == 0 and report["length"] == len(val_dataset)
    assert report["cameras"] == list(cfg.data.cameras) and len(report["cameras"]) == 6
    assert list(report["per_camera"]) == list(cfg.data.cameras)
    assert report["frame_ids"] == list(cfg.data.frame_ids)
    assert str(png) in err


def test_json_matches_the_dataset_sample(inspected, cfg, val_dataset):
    report, _, _ = inspected
    sample = val_dataset[0]
    assert report["image_shape"] == list(sample["image"].shape)
    for n, name in enumerate(cfg.data.cameras):
        cam = report["per_camera"][name]
        np.testing.assert_allclose(cam["K"], sample["K"][n].numpy(), atol=1e-3)
        np.testing.assert_allclose(cam["extrinsics"], sample["extrinsics"][n].numpy(), atol=1e-5)
        depth = sample["depth_gt"][n]
        count = int((depth > 0).sum())
        assert cam["depth_gt_valid_pixels"] == count > 0
        valid = depth[depth > 0]
        np.testing.assert_allclose(cam["depth_gt_range_m"], [valid.min(), valid.max()], atol=1e-3)
        assert cam["mask_valid_fraction"] == pytest.approx(float((sample["mask"][n] > 0.5).float().mean()), abs=1e-4)
    poses = report["pose_gt"]
    assert [p["frame_id"] for p in poses] == report["frame_ids"]
    for t, pose in enumerate(poses):
        expected = float(sample["pose_gt"][t, :3, 3].norm())
        assert pose["translation_m"] == pytest.approx(expected, abs=1e-3)
        np.testing.assert_allclose(pose["T_target_frame"], sample["pose_gt"][t].numpy(), atol=1e-5)
    target = report["frame_ids"].index(0)
    assert poses[target]["translation_m"] == 0 and poses[target]["rotation_deg"] == pytest.approx(0, abs=1e-3)
    assert report["meta"]["dataset"] == "ddad"
    json.dumps(report["meta"])                          # plain JSON all the way down


def test_preview_grid_layout(inspected, val_dataset):
    report, png, _ = inspected
    picture = cv2.imread(str(png), cv2.IMREAD_COLOR)
    assert picture is not None
    frames, cams, _, h, w = val_dataset[0]["image"].shape
    rows, cols = frames + 1, cams
    height, width = picture.shape[:2]
    assert width <= 1600
    tile_w, rem_w = divmod(width - (cols - 1) * TILE_GAP, cols)
    tile_h, rem_h = divmod(height - (rows - 1) * TILE_GAP, rows)
    assert rem_w == 0 and rem_h == 0
    natural = cols * w + (cols - 1) * TILE_GAP
    if natural > 1600:
        assert width > 1600 - cols                     # scaled down just enough to fit
    else:
        assert width == natural                        # small images are not scaled
    assert abs(tile_h - h * tile_w / w) <= 1           # aspect ratio kept
    for j in range(1, cols):                           # black gaps between the columns
        x = j * (tile_w + TILE_GAP) - TILE_GAP
        assert not picture[:, x:x + TILE_GAP].any()
    assert report["preview"]["rows"] == rows and report["preview"]["columns"] == cols
    assert (report["preview"]["height"], report["preview"]["width"]) == (height, width)


def test_index_out_of_range_names_the_length(tmp_path, val_dataset):
    n = len(val_dataset)
    status, out, err = run_tool([f"--config_file={CONFIG}", "--index", str(n), "--out", str(tmp_path / "p.png")])
    assert status == 2 and out == ""
    assert f"has {n} samples" in err and err.startswith("error:")
    assert not (tmp_path / "p.png").exists()


def test_typo_in_override_is_a_config_error(tmp_path):
    status, out, err = run_tool([f"--config_file={CONFIG}", "traning.batch_size=2", "--out", str(tmp_path / "p.png")])
    assert status == 2 and out == ""
    assert "did you mean" in err and "training.batch_size" in err


def test_colorize_depth_near_is_warm_and_invalid_black():
    depth = np.array([[2.0, 5.0, 50.0, 0.0]], np.float32)
    rgb = colorize_depth(depth)
    assert rgb.shape == (1, 4, 3) and rgb.dtype == np.uint8
    red, blue = rgb[0, :, 0].astype(int), rgb[0, :, 2].astype(int)
    assert red[0] > red[2] and blue[2] > blue[0]       # turbo: near red, far blue
    assert not rgb[0, 3].any()                         # no measurement: black
    masked = colorize_depth(torch.from_numpy(depth), valid=np.array([[1, 0, 1, 1]]))
    assert not masked[0, 1].any() and (masked[0, 0] == rgb[0, 0]).all()
    assert not colorize_depth(np.full((3, 3), np.nan)).any()
    assert colorize_depth(np.full((2, 2), 7.0)).any()  # a single depth still gets a colour


def test_draw_sparse_depth_changes_only_pixels_near_points():
    image = np.full((40, 60, 3), 128, np.uint8)
    depth = np.zeros((40, 60), np.float32)
    points = [(5, 7, 3.0), (20, 30, 10.0), (38, 58, 40.0)]
    for v, u, d in points:
        depth[v, u] = d
    for radius in (0, 1, 2):
        drawn = draw_sparse_depth(image, depth, radius=radius)
        changed = (drawn != image).any(axis=2)
        vv, uu = np.mgrid[:40, :60]
        near = np.zeros_like(changed)
        for v, u, _ in points:
            near |= (np.abs(vv - v) <= radius) & (np.abs(uu - u) <= radius)
        assert changed[near == 0].sum() == 0
        assert all(changed[v, u] for v, u, _ in points)
    assert (image == 128).all()                        # the input is left alone
    # ground truth at twice the resolution lands on the matching image pixels
    big = np.zeros((80, 120), np.float32)
    big[41, 61] = 5.0
    changed = (draw_sparse_depth(image, big, radius=0) != image).any(axis=2)
    assert changed.sum() == 1 and changed[20, 30]


def test_tile_images_layout_and_labels():
    tiles = [[np.full((100, 200, 3), 50 * (i + j), np.uint8) for j in range(3)] for i in range(2)]
    grid = tile_images(tiles, labels=[["a", "b", "c"], ["d", None, ""]], max_width=400)
    tile_w = (400 - 2 * TILE_GAP) // 3
    tile_h = round(100 * tile_w / 200)
    assert grid.shape == (2 * tile_h + TILE_GAP, 3 * tile_w + 2 * TILE_GAP, 3)
    second = grid[tile_h + TILE_GAP:, tile_w + TILE_GAP:2 * tile_w + TILE_GAP]
    assert (second == 100).all()                       # unlabelled tile (1, 1) untouched
    assert grid[:tile_h, :tile_w].max() > 200           # label "a" written in white on the black tile
    small = tile_images([[np.zeros((10, 20, 3), np.uint8)]], max_width=1600)
    assert small.shape == (10, 20, 3)                  # never scaled up


def test_json_safe_and_kitti2015_summary():
    meta = {"t": torch.tensor([1, 2]), "a": np.float32(0.5), "p": Path("x/y"), "n": float("nan"), 3: (1, 2)}
    assert json_safe(meta) == {"t": [1, 2], "a": 0.5, "p": "x/y", "n": None, "3": [1, 2]}
    disp = torch.zeros(1, 4, 5)
    disp[0, 1, 1:4] = torch.tensor([10.0, 20.0, 30.0])
    flow_valid = torch.zeros(1, 4, 5)
    flow_valid[0, 0, :2] = 1
    obj = torch.zeros(1, 4, 5, dtype=torch.int64)
    obj[0, 2, :] = 2
    obj[0, 3, 0] = 5
    summary = summarize_kitti2015({"kitti2015_disp0": disp, "kitti2015_flow": torch.ones(2, 4, 5),
                                   "kitti2015_flow_valid": flow_valid, "kitti2015_obj_map": obj})
    assert summary["kitti2015_disp0"]["valid_pixels"] == 3
    assert summary["kitti2015_disp0"]["range_px"] == [10.0, 30.0]
    assert summary["kitti2015_flow"]["valid_pixels"] == 2
    assert summary["kitti2015_obj_map"] == {"shape": [1, 4, 5], "object_pixels": 6, "objects": 2}
    assert summarize_kitti2015({"image": disp}) is None


def test_contract_error_is_reported(tmp_path, monkeypatch):
    import tools.inspect_dataset as tool
    from dataset.contract import ContractError

    def broken(sample, **_):
        raise ContractError("K: expected shape (6, 3, 3), got (6, 4, 4)")

    monkeypatch.setattr(tool, "check_sample", broken)
    status, out, err = run_tool([f"--config_file={CONFIG}", "--out", str(tmp_path / "p.png")])
    assert status == 1 and out == ""
    assert "breaks the data contract" in err and "K: expected shape" in err
