"""KITTI PNG I/O: round trips, the cv2 channel order, the real devkit sample, clear errors."""
import shutil

import cv2
import numpy as np
import pytest
import torch

from utils.kitti_io import (
    read_disparity_png,
    read_flow_png,
    read_object_map_png,
    write_disparity_png,
    write_flow_png,
)



@pytest.fixture
def devkit(shared_data):
    return shared_data / "kitti_2015_devkit_sample"


# ---------------------------------------------------------------------------------------------
# disparity
# ---------------------------------------------------------------------------------------------
def test_disparity_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    disp = rng.uniform(0.5, 250.0, size=(7, 11)).astype(np.float32)
    valid = rng.random((7, 11)) < 0.7
    path = tmp_path / "nested" / "dir" / "disp.png"  # writer creates the directories
    write_disparity_png(path, disp, valid)
    got, got_valid = read_disparity_png(path)
    assert got.dtype == np.float32 and got.shape == (7, 11)
    assert np.array_equal(got_valid, valid)
    assert np.all(got[~valid] == 0)
    # exact to the nearest 1/256
    assert np.array_equal(got[valid], (np.rint(disp.astype(np.float64) * 256) / 256)[valid].astype(np.float32))
    assert np.abs(got[valid] - disp[valid]).max() <= 1 / 512 + 1e-6
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.ndim == 2


def test_disparity_writer_edge_values(tmp_path):
    # default valid = finite and > 0; tiny valid disparity kept valid as 1/256; too large clipped
    disp = np.array([[0.0, 0.001, 300.0, np.nan, -2.0, 1.0]], np.float32)
    path = tmp_path / "edge.png"
    write_disparity_png(path, disp)
    got, valid = read_disparity_png(path)
    assert valid.tolist() == [[False, True, True, False, False, True]]
    assert got[0, 1] == pytest.approx(1 / 256)
    assert got[0, 2] == pytest.approx(65535 / 256)
    assert got[0, 5] == 1.0
    # explicit mask, torch input, [1, H, W] layout
    write_disparity_png(path, torch.tensor([[[5.0, 6.0]]]), valid=torch.tensor([[True, False]]))
    got, valid = read_disparity_png(path)
    assert valid.tolist() == [[True, False]] and got.tolist() == [[5.0, 0.0]]


# ---------------------------------------------------------------------------------------------
# flow
# ---------------------------------------------------------------------------------------------
def test_flow_round_trip_exact_on_the_grid_with_negative_values(tmp_path):
    rng = np.random.default_rng(1)
    flow = (rng.integers(-500 * 64, 500 * 64, size=(6, 9, 2)) / 64.0).astype(np.float32)  # multiples of 1/64
    flow[0, 0] = (-3.25, 7.5)
    valid = rng.random((6, 9)) < 0.6
    valid[0, 0] = True
    path = tmp_path / "a" / "flow.png"
    write_flow_png(path, flow, valid)
    got, got_valid = read_flow_png(path)
    assert got.dtype == np.float32 and got.shape == (6, 9, 2)
    assert np.array_equal(got_valid, valid)
    assert np.array_equal(got[valid], flow[valid])
    assert np.all(got[~valid] == 0)
    # channel order on disk (RGB = u, v, valid), i.e. BGR in cv2: valid, v, u
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.shape == (6, 9, 3)
    assert raw[0, 0].tolist() == [1, 7.5 * 64 + 2 ** 15, -3.25 * 64 + 2 ** 15]


def test_flow_rounding_clipping_and_layouts(tmp_path):
    flow = np.array([[[0.005, -0.005], [600.0, -600.0], [np.inf, 0.0], [0.01, -0.02]]], np.float32)  # [1, 4, 2]
    path = tmp_path / "flow.png"
    write_flow_png(path, flow)
    got, valid = read_flow_png(path)
    assert valid.tolist() == [[True, True, False, True]]  # non-finite -> invalid
    assert got[0, 0].tolist() == [0.0, 0.0]  # 0.005 * 64 = 0.32 rounds to 0
    assert got[0, 3].tolist() == [1 / 64, -1 / 64]  # 0.64 and -1.28 round to 1 and -1
    assert got[0, 1, 0] == pytest.approx((65535 - 2 ** 15) / 64) and got[0, 1, 1] == -512.0  # clipped
    # channels-first torch input gives the same file content
    write_flow_png(tmp_path / "chw.png", torch.from_numpy(np.nan_to_num(flow, posinf=0.0)).permute(2, 0, 1),
                   valid=np.array([[True, True, False, True]]))
    got2, valid2 = read_flow_png(tmp_path / "chw.png")
    assert np.array_equal(got2, got) and np.array_equal(valid2, valid)


def test_object_map_reader(tmp_path):
    obj = np.array([[0, 1, 2], [0, 0, 7]], np.uint8)
    cv2.imwrite(str(tmp_path / "obj.png"), obj)
    got = read_object_map_png(tmp_path / "obj.png")
    assert got.dtype == np.int32 and got.tolist() == obj.tolist()


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reader", [read_disparity_png, read_flow_png, read_object_map_png])
def test_missing_file_names_the_path(tmp_path, reader):
    missing = tmp_path / "does_not_exist_000000_10.png"
    with pytest.raises(FileNotFoundError, match="does_not_exist_000000_10.png"):
        reader(missing)


@pytest.mark.parametrize("reader", [read_disparity_png, read_flow_png])
def test_corrupt_file_names_the_path(tmp_path, reader):
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    with pytest.raises(ValueError, match="corrupt.png"):
        reader(bad)


def test_wrong_bit_depth_and_channels_name_the_path(tmp_path):
    rgb8 = tmp_path / "rgb8.png"
    cv2.imwrite(str(rgb8), np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(ValueError, match=r"rgb8\.png.*16-bit single-channel.*got uint8 with 3 channels"):
        read_disparity_png(rgb8)
    grey16 = tmp_path / "grey16.png"
    cv2.imwrite(str(grey16), np.ones((4, 5), np.uint16))
    with pytest.raises(ValueError, match=r"grey16\.png.*16-bit 3-channel.*got uint16 with 1 channel"):
        read_flow_png(grey16)
    with pytest.raises(ValueError, match="rgb8.png"):
        read_object_map_png(rgb8)
    with pytest.raises(ValueError, match=r"\.png"):
        write_disparity_png(tmp_path / "disp.jpg", np.ones((2, 2)))
    with pytest.raises(ValueError, match="shape"):
        write_flow_png(tmp_path / "f.png", np.ones((4, 4, 3)))


def test_devkit_image_is_rejected_as_disparity(tmp_path, devkit):
    path = tmp_path / "image.png"
    shutil.copyfile(devkit / "image.png", path)
    with pytest.raises(ValueError, match=r"image\.png.*got uint8 with 3 channels"):
        read_disparity_png(path)


# ---------------------------------------------------------------------------------------------
# the real devkit sample
# ---------------------------------------------------------------------------------------------
def test_devkit_disparity_gt_decodes_to_documented_ranges(devkit):
    raw = cv2.imread(str(devkit / "disp_gt.png"), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.ndim == 2
    disp, valid = read_disparity_png(devkit / "disp_gt.png")
    assert disp.shape == (375, 1242)
    assert 0.0 < valid.mean() < 1.0
    assert np.all(disp[~valid] == 0)
    assert disp[valid].min() > 0 and disp[valid].max() < 256
    assert 4.0 < disp[valid].min() < 6.0 and 100.0 < disp[valid].max() < 130.0  # formats.md: ~4.7-116 px


def test_devkit_flow_gt_decodes_to_documented_ranges(devkit):
    raw = cv2.imread(str(devkit / "flow_gt.png"), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.shape == (375, 1242, 3)
    assert set(np.unique(raw[..., 0]).tolist()) <= {0, 1}  # valid channel (B in cv2's BGR)
    flow, valid = read_flow_png(devkit / "flow_gt.png")
    assert flow.shape == (375, 1242, 2) and valid.shape == (375, 1242)
    assert 0.0 < valid.mean() < 1.0
    assert np.all(np.abs(flow[valid]) <= 512)
    # real motion: a car-mounted camera moving forward gives a few px to a few hundred px of flow
    mag = np.linalg.norm(flow[valid], axis=-1)
    assert 1.0 < np.median(mag) < 200.0


def test_devkit_estimates_decode(devkit):
    disp, valid = read_disparity_png(devkit / "disp_est.png")
    flow, fvalid = read_flow_png(devkit / "flow_est.png")
    assert disp.shape == (375, 1242) and flow.shape == (375, 1242, 2)
    assert valid.mean() > 0.9 and fvalid.mean() > 0.9
