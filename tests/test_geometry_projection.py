"""Pixel grid, back-projection, projection and grid normalisation."""
import pytest
import torch
import torch.nn.functional as F

from geometry import (
    BEHIND_CAMERA_PIXEL,
    backproject,
    invert_intrinsics,
    make_intrinsics,
    pixel_grid,
    pixels_to_grid,
    project,
)


def test_pixel_grid_has_integer_pixel_centres():
    grid = pixel_grid(3, 4, dtype=torch.float64)
    assert grid.shape == (3, 3, 4) and grid.dtype == torch.float64
    assert grid[0, 2].tolist() == [0, 1, 2, 3]  # u along columns
    assert grid[1, :, 1].tolist() == [0, 1, 2]  # v along rows
    assert (grid[2] == 1).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_project_backproject_round_trip(dtype):
    # Leading dims [B=2, N=3]; K per camera broadcasts against the depth batch.
    K = make_intrinsics(torch.tensor([50.0, 60.0, 70.0]), 55.0, 15.3, 9.7, skew=0.4).to(dtype)  # [3, 3, 3]
    depth = torch.rand(2, 3, 1, 20, 30, dtype=dtype, generator=torch.Generator().manual_seed(0)) * 50 + 0.5
    points = backproject(depth, invert_intrinsics(K))
    assert points.shape == (2, 3, 3, 20, 30) and points.dtype == dtype
    torch.testing.assert_close(points[..., 2:3, :, :], depth)  # depth is z, not range
    pixels, valid = project(points, K, image_hw=(20, 30))
    assert pixels.dtype == dtype and valid.dtype == torch.bool and valid.all()
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(pixels, pixel_grid(20, 30, dtype=dtype)[:2].expand_as(pixels), atol=tol, rtol=0)


def test_project_hand_computed_point():
    K = make_intrinsics(100.0, 120.0, 50.0, 40.0)
    points = torch.tensor([1.0, -0.5, 4.0]).reshape(3, 1, 1)
    pixels, valid = project(points, K, image_hw=(80, 100))
    assert pixels.flatten().tolist() == [75.0, 25.0] and valid.item()


def test_points_behind_camera_are_invalid_and_finite():
    K = make_intrinsics(100.0, 100.0, 50.0, 50.0)
    points = torch.tensor([[0.1, 0.1, -2.0], [0.1, 0.1, 0.0], [0.1, 0.1, 1e-9], [0.1, 0.1, 2.0]]).T.reshape(3, 1, 4)
    points.requires_grad_(True)
    pixels, valid = project(points, K)
    assert valid.flatten().tolist() == [False, False, False, True]
    assert torch.isfinite(pixels).all()
    assert (pixels[..., :3] == BEHIND_CAMERA_PIXEL).all()
    pixels.sum().backward()
    assert torch.isfinite(points.grad).all() and (points.grad[..., :3] == 0).all()


@pytest.mark.parametrize(
    "u, v, inside",
    [(0.0, 0.0, True), (29.0, 19.0, True), (-1e-9, 19.0 + 1e-9, True), (-0.01, 5.0, False), (29.01, 5.0, False),
     (5.0, 19.5, False), (5.0, -3.0, False)],
)
def test_out_of_image_is_invalid(u, v, inside):
    K = make_intrinsics(10.0, 10.0, 0.0, 0.0)
    points = torch.tensor([u / 10.0, v / 10.0, 1.0], dtype=torch.float64).reshape(3, 1, 1)
    _, valid = project(points, K.double(), image_hw=(20, 30))
    assert valid.item() == inside


def test_pixels_to_grid_samples_pixel_centres_exactly():
    image = torch.rand(2, 3, 5, 7, dtype=torch.float64)
    pixels = pixel_grid(5, 7, dtype=torch.float64)[:2].expand(2, 2, 5, 7)
    grid = pixels_to_grid(pixels, (5, 7))
    assert grid.shape == (2, 5, 7, 2)
    assert grid[0, 0, 0].tolist() == [-1.0, -1.0] and grid[0, -1, -1].tolist() == [1.0, 1.0]
    torch.testing.assert_close(F.grid_sample(image, grid, align_corners=True), image)
    # Half-way between two pixel centres gives their mean.
    shifted = pixels_to_grid(pixels + torch.tensor([0.5, 0.0], dtype=torch.float64)[:, None, None], (5, 7))
    sampled = F.grid_sample(image, shifted, align_corners=True)
    torch.testing.assert_close(sampled[..., :-1], 0.5 * (image[..., :-1] + image[..., 1:]))
