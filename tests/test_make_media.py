"""tools/make_media.py: the point-cloud renderer and the picture builders (not a run of the command)."""

import numpy as np
import pytest

from tools import make_media as mm
from utils.visualization import TILE_GAP

HW = (40, 60)
K = np.array([[50.0, 0.0, 29.5], [0.0, 50.0, 19.5], [0.0, 0.0, 1.0]])
RED, BLUE = (255, 0, 0), (0, 0, 255)


def pixel_of(point, T=np.eye(4)):
    x, y, z = T[:3, :3] @ np.asarray(point, float) + T[:3, 3]
    return int(round(K[1, 1] * y / z + K[1, 2])), int(round(K[0, 0] * x / z + K[0, 2]))


def test_planted_point_lands_on_its_pixel_with_its_colour():
    point = np.array([[0.4, -0.2, 5.0]])                       # u = 50 * 0.08 + 29.5 = 33.5 -> 34 (round half even: 34)
    picture = mm.render_points(point, np.array([RED], np.uint8), K, np.eye(4), HW, radius=0)
    row, col = pixel_of(point[0])
    assert tuple(picture[row, col]) == RED
    painted = np.argwhere((picture != np.asarray(mm.CLOUD_BACKGROUND)).any(-1))
    assert painted.tolist() == [[row, col]]                    # one pixel, nothing else drawn


def test_square_splat_covers_its_neighbourhood_only():
    picture = mm.render_points(np.array([[0.0, 0.0, 4.0]]), np.array([RED], np.uint8), K, np.eye(4), HW, radius=1)
    painted = (picture == np.asarray(RED, np.uint8)).all(-1)
    row, col = pixel_of((0.0, 0.0, 4.0))
    assert painted.sum() == 9 and painted[row - 1:row + 2, col - 1:col + 2].all()


@pytest.mark.parametrize("near_first", [True, False])
def test_nearer_point_wins_the_z_buffer_whatever_the_order(near_first):
    # Two points on one ray through a pixel centre: the near one must show, in either input order.
    ray = np.array([0.1, 0.05, 1.0])
    points, colours = np.stack([2.0 * ray, 9.0 * ray]), np.array([RED, BLUE], np.uint8)
    if not near_first:
        points, colours = points[::-1], colours[::-1]
    picture = mm.render_points(points, colours, K, np.eye(4), HW, radius=2)
    row, col = pixel_of(2.0 * ray)
    assert tuple(picture[row, col]) == RED
    assert not (picture == np.asarray(BLUE, np.uint8)).all(-1).any()   # its whole square is hidden


def test_points_behind_the_camera_or_outside_are_not_drawn():
    points = np.array([[0.0, 0.0, -3.0], [100.0, 0.0, 2.0]])
    picture = mm.render_points(points, np.array([RED, RED], np.uint8), K, np.eye(4), HW)
    assert (picture == np.asarray(mm.CLOUD_BACKGROUND, np.uint8)).all()


def test_look_at_puts_the_target_on_the_optical_axis_with_up_up():
    eye, target = (-20.0, 10.0, 15.0), (5.0, 0.0, 0.0)
    T = mm.look_at(eye, target)
    np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-12)
    assert np.linalg.det(T[:3, :3]) == pytest.approx(1.0)
    np.testing.assert_allclose(T[:3, :3] @ eye + T[:3, 3], 0.0, atol=1e-9)
    seen = T[:3, :3] @ np.asarray(target) + T[:3, 3]
    np.testing.assert_allclose(seen[:2], 0.0, atol=1e-9)
    assert seen[2] > 0
    above = T[:3, :3] @ np.array([5.0, 0.0, 3.0]) + T[:3, 3]
    assert above[1] < 0                                       # higher in the world = up in the picture (y down)


def test_depth_to_points_rig_frame_and_colours_from_another_resolution():
    # Camera looking along rig +x (x forward, y left, z up), 1.5 m up; a wall 10 m ahead.
    T_rig_cam = np.eye(4)
    T_rig_cam[:3, :3] = [[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]
    T_rig_cam[:3, 3] = (0.0, 0.0, 1.5)
    depth = np.full(HW, 10.0, np.float32)
    depth[0, 0] = 0.0                                          # no measurement: no point
    image = np.zeros((2 * HW[0], 2 * HW[1], 3), np.uint8)
    image[:, image.shape[1] // 2:] = BLUE                      # right half blue, at twice the size
    points, colours = mm.depth_to_points(depth, K, T_rig_cam, image)
    assert points.shape == (HW[0] * HW[1] - 1, 3)
    np.testing.assert_allclose(points[:, 0], 10.0, atol=1e-9)
    centre = np.argmin(np.abs(points[:, 1]) + np.abs(points[:, 2] - 1.5))
    assert abs(points[centre, 1]) < 0.2 and abs(points[centre, 2] - 1.5) < 0.2
    right = points[:, 1] < -1.0                                # rig -y is the camera's right
    assert (colours[right] == np.asarray(BLUE, np.uint8)).all() and (colours[points[:, 1] > 1.0] == 0).all()


def test_rig_cloud_drops_far_and_high_points():
    depth = np.array([[5.0, 80.0]], np.float32)
    Kc = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    points, _ = mm.rig_cloud([depth], [Kc], [np.eye(4)], [np.zeros((1, 2, 3), np.uint8)], max_range=40.0)
    assert len(points) == 1 and points[0, 2] == pytest.approx(5.0)


def test_depth_grid_size_and_layout():
    n, (h, w) = 6, (24, 40)
    images = [np.full((h, w, 3), 10 * k, np.uint8) for k in range(n)]
    depth = [np.full((h, w), 5.0 + k, np.float32) for k in range(n)]
    grid = mm.depth_grid(images, depth, depth, [f"cam{k}" for k in range(n)], "truth")
    assert grid.shape == (3 * h + 2 * TILE_GAP, n * w + (n - 1) * TILE_GAP, 3)
    # Same depth, same colour range: the predicted and reference tiles of a camera are identical.
    middle, bottom = grid[h + TILE_GAP:2 * h + TILE_GAP], grid[2 * (h + TILE_GAP):]
    np.testing.assert_array_equal(middle[18:, :w], bottom[18:, :w])   # below the labels


def test_depth_grid_scales_down_to_max_width():
    images = [np.zeros((96, 160, 3), np.uint8)] * 6
    depth = [np.ones((96, 160), np.float32)] * 6
    grid = mm.depth_grid(images, depth, depth, ["c"] * 6, "truth", sparse_reference=True, max_width=500)
    assert grid.shape[1] <= 500 and grid.shape[0] == 3 * round(96 * ((500 - 5 * TILE_GAP) // 6) / 160) + 2 * TILE_GAP


def test_flow_row_and_strip_sizes():
    h, w = 16, 48
    rng = np.random.default_rng(0)
    maps = {"disparity": rng.uniform(1, 20, (1, h, w)), "optical_flow": rng.normal(size=(2, h, w)),
            "scene_flow": rng.normal(size=(3, h, w))}
    scales = mm.flow_scales([maps])
    assert scales["disparity"] == pytest.approx(np.percentile(maps["disparity"], mm.FLOW_SCALE_PERCENTILE))
    # One scale for a whole sequence, which a single outlier (a pole next to the camera) does not set.
    spiky = dict(maps, disparity=maps["disparity"].copy())
    spiky["disparity"][0, 0, 0] = 1000.0
    assert mm.flow_scales([maps, spiky])["disparity"] < 25.0
    row = mm.flow_row(np.zeros((h, w, 3), np.uint8), maps, scales)
    assert [t.shape for t in row] == [(h, w, 3)] * 4 and all(t.dtype == np.uint8 for t in row)
    strip = mm.flow_strip([row, row], ["predicted", "truth"])
    assert strip.shape == (2 * h + TILE_GAP, 4 * w + 3 * TILE_GAP, 3)
    stretched = mm.flow_strip([row], ["frame 0"], display_hw=(27, 48))
    assert stretched.shape == (27, 4 * 48 + 3 * TILE_GAP, 3)


def test_gif_is_written_and_loops(tmp_path):
    from PIL import Image

    frames = [np.full((8, 12, 3), v, np.uint8) for v in (0, 128, 255)]
    path = str(tmp_path / "a.gif")
    mm.save_gif(path, frames, frame_ms=100)
    with Image.open(path) as gif:
        assert gif.n_frames == 3 and gif.size == (12, 8) and gif.info.get("loop") == 0
