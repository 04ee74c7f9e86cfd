"""Forward (summation) and softmax splatting."""
import pytest
import torch

from geometry import forward_splat, softmax_splat


def constant_flow(du, dv, shape, dtype=torch.float64):
    """Flow [B, 2, H, W] moving every pixel by (du, dv)."""
    b, _, h, w = shape
    flow = torch.empty(b, 2, h, w, dtype=dtype)
    flow[:, 0], flow[:, 1] = du, dv
    return flow


@pytest.mark.parametrize("du, dv", [(0, 0), (2, 0), (0, -1), (-3, 2)])
def test_integer_flow_moves_map_exactly(du, dv):
    image = torch.rand(2, 3, 6, 8, dtype=torch.float64)
    out = forward_splat(image, constant_flow(du, dv, image.shape))
    expected = torch.zeros_like(image)
    h, w = image.shape[-2:]
    # Source pixel (u, v) lands on (u + du, v + dv); what leaves the image is dropped.
    expected[..., max(dv, 0) : h + min(dv, 0), max(du, 0) : w + min(du, 0)] = image[
        ..., max(-dv, 0) : h + min(-dv, 0), max(-du, 0) : w + min(-du, 0)
    ]
    torch.testing.assert_close(out, expected)


def test_mass_is_conserved_when_nothing_leaves_the_image():
    generator = torch.Generator().manual_seed(0)
    image = torch.zeros(2, 3, 12, 12, dtype=torch.float64)
    image[..., 3:9, 3:9] = torch.rand(2, 3, 6, 6, generator=generator, dtype=torch.float64)
    flow = (torch.rand(2, 2, 12, 12, generator=generator, dtype=torch.float64) - 0.5) * 4  # |flow| < 2
    out = forward_splat(image, flow)
    torch.testing.assert_close(out.sum(dim=(-2, -1)), image.sum(dim=(-2, -1)))


def test_fractional_flow_splits_bilinearly():
    image = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    image[0, 0, 2, 2] = 1.0
    out = forward_splat(image, constant_flow(0.25, 0.5, image.shape))[0, 0]
    expected = torch.zeros(5, 5, dtype=torch.float64)
    # Lands at (u, v) = (2.25, 2.5): rows 2 and 3 get 1/2 each, columns 2 and 3 get 3/4 and 1/4.
    expected[2, 2], expected[2, 3], expected[3, 2], expected[3, 3] = 0.375, 0.125, 0.375, 0.125
    torch.testing.assert_close(out, expected)


def test_out_of_image_and_non_finite_contributions_are_dropped():
    image = torch.ones(1, 1, 4, 4, dtype=torch.float64)
    flow = constant_flow(0.5, 0.0, image.shape)
    flow[0, 0, 0, 0] = float("nan")
    flow[0, 1, 1, 1] = 1e30
    out = forward_splat(image, flow)
    # Column 3's pixels put half their mass outside; two pixels are dropped entirely.
    assert torch.isfinite(out).all()
    assert out.sum().item() == pytest.approx(16 - 4 * 0.5 - 2)


def test_coverage_of_ones_detects_disocclusion():
    ones = torch.ones(1, 1, 4, 6, dtype=torch.float64)
    flow = torch.zeros(1, 2, 4, 6, dtype=torch.float64)
    flow[:, 0, :, 3:] = 1.0  # the right half moves one pixel right: column 3 is left empty
    coverage = forward_splat(ones, flow)[0, 0]
    assert (coverage[:, 3] == 0).all()
    assert (coverage[:, :3] == 1).all() and (coverage[:, 4:] == 1).all()


def test_softmax_splat_picks_higher_metric_source():
    image = torch.zeros(1, 1, 1, 4, dtype=torch.float64)
    image[0, 0, 0, 0], image[0, 0, 0, 2] = 5.0, 7.0
    flow = torch.zeros(1, 2, 1, 4, dtype=torch.float64)
    flow[0, 0, 0, 0] = 2.0  # pixel 0 lands on pixel 2, which stays put
    metric = torch.zeros(1, 1, 1, 4, dtype=torch.float64)
    for metric_0, expected in ((30.0, 5.0), (-30.0, 7.0), (0.0, 6.0)):
        metric[0, 0, 0, 0] = metric_0
        out = softmax_splat(image, flow, metric)
        assert out[0, 0, 0, 2].item() == pytest.approx(expected, abs=1e-9)
        assert out[0, 0, 0, 0].item() == 0.0  # nothing lands there


def test_softmax_splat_keeps_low_metric_values_where_they_land_alone():
    image = torch.tensor([[[[3.0, 4.0]]]], dtype=torch.float64)
    metric = torch.tensor([[[[0.0, -60.0]]]], dtype=torch.float64)  # far below the per-sample max
    out = softmax_splat(image, torch.zeros(1, 2, 1, 2, dtype=torch.float64), metric)
    torch.testing.assert_close(out, image)


def test_splatting_supports_leading_dims():
    image = torch.rand(2, 3, 4, 5, 6, dtype=torch.float64)
    flow = torch.rand(2, 3, 2, 5, 6, dtype=torch.float64) * 2 - 1
    metric = torch.rand(2, 3, 1, 5, 6, dtype=torch.float64)
    out = softmax_splat(image, flow, metric)
    assert out.shape == image.shape and out.dtype == torch.float64
    torch.testing.assert_close(out[1, 2], softmax_splat(image[1, 2:3], flow[1, 2:3], metric[1, 2:3])[0])
    torch.testing.assert_close(forward_splat(image, flow)[0, 1], forward_splat(image[0, 1:2], flow[0, 1:2])[0])


def test_softmax_splat_gradcheck():
    generator = torch.Generator().manual_seed(3)
    image = torch.rand(1, 2, 4, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    metric = torch.rand(1, 1, 4, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    flow = (torch.rand(1, 2, 4, 5, generator=generator, dtype=torch.float64) - 0.5) * 3
    flow.requires_grad_(True)
    assert torch.autograd.gradcheck(softmax_splat, (image, flow, metric), eps=1e-6, atol=1e-6)
    assert torch.autograd.gradcheck(forward_splat, (image, flow), eps=1e-6, atol=1e-6)
