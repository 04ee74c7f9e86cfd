"""The multi-mono-sf loss terms (models/losses/census.py, models/losses/sceneflow.py) on inputs with
known answers: the census on identical, brightness-shifted and different images; disocclusion;
the disparity and scene flow terms at the true and at wrong depth and motion of an analytic scene;
the balancing; the supervised fine-tuning terms."""
import pytest
import torch

from models.losses import (balance, census_loss, disocclusion_mask, disparity_term, scene_flow_terms, stereo_warp,
                           supervised_terms)
from models.losses.census import CENSUS_EPS, CENSUS_Q
from sceneflow_world import BASELINE, wall_batch

H, W = 32, 96


@pytest.fixture(scope="module")
def wall():
    return wall_batch(height=H, width=W)


def _image(seed, shape=(2, 3, 20, 24)):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 0.8 + 0.1


# ----------------------------------------------------------------------------------- census
def test_census_is_zero_for_identical_images_and_invariant_to_brightness():
    image, mask = _image(0), torch.ones(2, 1, 20, 24)
    assert float(census_loss(image, image, mask)) == 0.0
    assert float(census_loss(image, image + 0.15, mask)) == pytest.approx(0.0, abs=1e-6)
    different = float(census_loss(image, _image(1), mask))
    assert different > 0.1
    # the reference's value keeps the robust penalty's floor (|0| + 0.01)^0.4
    assert float(census_loss(image, image, mask, subtract_floor=False)) == pytest.approx(CENSUS_EPS ** CENSUS_Q)
    assert float(census_loss(image, _image(1), mask, subtract_floor=False)) == pytest.approx(
        different + CENSUS_EPS ** CENSUS_Q, rel=1e-5)


def test_census_ignores_masked_pixels_and_the_border_without_touching_the_mask():
    image = _image(2)
    other = image.clone()
    other[..., :, 12:] = _image(3)[..., :, 12:]           # the right half differs
    mask = torch.ones(2, 1, 20, 24)
    mask[..., 6:] = 0                                   # only the left quarter counts ...
    before = mask.clone()
    assert float(census_loss(image, other, mask)) == pytest.approx(0.0, abs=1e-6)
    assert torch.equal(mask, before)                    # ... and the mask is not modified
    mask_all = torch.ones_like(mask)
    assert float(census_loss(image, other, mask_all)) > 0.1
    # a difference confined to the 3-pixel border (and its neighbours' windows) does not count
    # beyond those windows: a change in the border only touches pixels within 3 of it
    edge = image.clone()
    edge[..., :, 0] = 1 - edge[..., :, 0]
    inner = torch.zeros_like(mask)
    inner[..., 4:] = 1                                  # pixels at least 4 columns from the change
    assert float(census_loss(image, edge, inner)) == pytest.approx(0.0, abs=1e-6)


# ----------------------------------------------------------------------------------- masks
def test_disocclusion_of_a_shift_and_the_early_training_fallback():
    flow = torch.zeros(1, 2, 6, 10)
    assert bool((disocclusion_mask(flow) == 1).all())
    flow[:, 0] = 2.0                                    # everything moves two pixels right
    visible = disocclusion_mask(flow)
    assert bool((visible[..., :2] == 0).all()) and bool((visible[..., 2:] == 1).all())
    disp = torch.full((1, 1, 6, 10), 2.0)               # a disparity reads as the flow (d, 0)
    torch.testing.assert_close(disocclusion_mask(disp), visible)
    flow[:, 0] = 8.0                                    # 80 % uncovered: trust everything
    assert bool((disocclusion_mask(flow) == 1).all())


def test_stereo_warp_shifts_by_the_disparity():
    right = _image(4, (1, 3, 5, 12))
    disp = torch.full((1, 1, 5, 12), 3.0)
    warped = stereo_warp(right, disp)
    torch.testing.assert_close(warped[..., 3:], right[..., :-3])   # left pixel u = right pixel u - d


# ----------------------------------------------------------------------------------- terms
def test_disparity_term_is_smallest_at_the_true_disparity(wall):
    batch, truth = wall
    left, right = batch["image"][:, 3, 0], batch["image"][:, 3, 1]
    true = truth[0]["disparity"]

    def census_at(d):
        disp = torch.full((1, 1, H, W), float(d))
        census, smooth, visible = disparity_term(left, right, disp, disp, disp / W, edge_weight=150.0,
                                                 census_floor=True)
        assert float(smooth) < 1e-2                     # a constant disparity is smooth
        return float(census)
    at_truth = census_at(true)
    assert at_truth < 0.05
    for wrong in (true - 1.5, true + 1.5, 0.0, 3 * true):
        assert census_at(wrong) > at_truth + 0.05, wrong


def test_scene_flow_terms_vanish_at_the_true_motion(wall):
    batch, truth = wall
    K = batch["K"][:, 0]
    src, tgt = batch["image"][:, 2, 0], batch["image"][:, 3, 0]      # frames -1 and 0
    disp_src = torch.full((1, 1, H, W), truth[-1]["disparity"])
    disp_tgt = torch.full((1, 1, H, W), truth[0]["disparity"])
    ones = torch.ones(1, 1, H, W)

    def terms(sf_z):
        sf_f = torch.zeros(1, 3, H, W)
        sf_f[:, 2] = sf_z
        return scene_flow_terms(sf_f, -sf_f, disp_src, disp_tgt, ones, ones, K, torch.tensor([BASELINE]), src, tgt,
                                edge_weight=150.0, census_floor=True)
    true = terms(float(truth[-1]["scene_flow"][2]))
    assert float(true["points"]) < 1e-4 and float(true["image"]) < 0.1 and float(true["smooth"]) < 1e-3
    for wrong in (0.0, -1.0):
        other = terms(wrong)
        assert float(other["points"]) > 0.02 and float(other["image"]) > float(true["image"]) + 0.1


def test_balance_equalises_magnitudes_and_keeps_directions():
    a = torch.tensor(2.0, requires_grad=True)
    b = torch.tensor(8.0, requires_grad=True)
    ba, bb = balance([a * 1.0, b * 1.0])
    assert float(ba.detach()) == pytest.approx(8.0) and float(bb.detach()) == pytest.approx(8.0)
    (ba + bb).backward()
    assert float(a.grad) == pytest.approx(4.0) and float(b.grad) == pytest.approx(1.0)


def test_supervised_terms_are_zero_at_the_ground_truth_and_none_without_it():
    hg, wg = 6, 16
    K = torch.tensor([[[20.0, 0.0, 7.5], [0.0, 20.0, 2.5], [0.0, 0.0, 1.0]]])
    baseline = torch.tensor([BASELINE])
    disp_px = torch.full((1, 1, hg, wg), 4.0)
    sf = torch.zeros(1, 3, hg, wg)
    sf[:, 2] = -0.5
    depth = 20.0 * BASELINE / (4.0 + 1e-4)
    gt_disp1 = torch.full((1, 1, hg, wg), 20.0 * BASELINE / (depth - 0.5))
    # the flow of a pure approach: pixels move away from the principal point by z / (z - 0.5)
    v, u = torch.meshgrid(torch.arange(hg, dtype=torch.float32), torch.arange(wg, dtype=torch.float32), indexing="ij")
    ratio = depth / (depth - 0.5)
    gt_flow = torch.stack([(u - 7.5) * (ratio - 1), (v - 2.5) * (ratio - 1)])[None]
    valid = torch.ones(1, 1, hg, wg)
    terms = supervised_terms(disp_px / wg, sf, K, baseline, disp_px, gt_disp1, gt_flow, valid)
    assert float(terms["d1"]) == pytest.approx(0.0, abs=1e-5)
    assert float(terms["d2"]) == pytest.approx(0.0, abs=1e-3)
    assert float(terms["flow"]) == pytest.approx(0.01 ** 0.4, abs=1e-3)     # the robust EPE's floor
    wrong = supervised_terms(disp_px / wg * 1.5, sf, K, baseline, disp_px, gt_disp1, gt_flow, valid)
    assert float(wrong["d1"]) == pytest.approx(2.0, abs=1e-4) and float(wrong["flow"]) > float(terms["flow"])
    zeros = torch.zeros(1, 1, hg, wg)
    assert supervised_terms(disp_px / wg, sf, K, baseline, zeros, zeros, gt_flow, zeros) is None
