"""Depth metrics: hand-computed values, caps / masks / crops, median scaling, accumulation."""
import json
import math

import numpy as np
import pytest
import torch

from utils.metrics import (
    METRIC_NAMES,
    DepthMetricsAccumulator,
    compute_depth_errors,
    crop_mask,
    depth_metrics_per_image,
    masked_median,
)

IDX = {name: i for i, name in enumerate(METRIC_NAMES)}


def as_list(d):
    return [float(d[m]) for m in METRIC_NAMES]


# ---------------------------------------------------------------------------------------------
# compute_depth_errors on hand-computed values
# ---------------------------------------------------------------------------------------------
def test_compute_depth_errors_hand_computed():
    # gt = [2, 4], pred = [1, 4]
    #   |p-g|/g      = [1/2, 0]          -> abs_rel  = 0.25
    #   (p-g)^2/g    = [1/2, 0]          -> sq_rel   = 0.25
    #   (p-g)^2      = [1, 0]            -> rmse     = sqrt(0.5)
    #   (ln g-ln p)^2 = [ln(2)^2, 0]     -> rmse_log = ln(2)/sqrt(2)
    #   max(g/p,p/g) = [2, 1]; 2 >= 1.25^3 = 1.953 -> a1 = a2 = a3 = 0.5
    e = compute_depth_errors(torch.tensor([1.0, 4.0]), torch.tensor([2.0, 4.0]))
    expected = [0.25, 0.25, math.sqrt(0.5), math.log(2) / math.sqrt(2), 0.5, 0.5, 0.5]
    assert as_list(e) == pytest.approx(expected, rel=1e-6)


def test_compute_depth_errors_second_example():
    # gt = [10, 10, 10], pred = [12, 8, 10]
    #   abs_rel = (0.2 + 0.2 + 0) / 3 = 0.13333
    #   sq_rel  = (4/10 + 4/10 + 0) / 3 = 0.26667
    #   rmse    = sqrt((4 + 4 + 0) / 3) = 1.63299
    #   rmse_log = sqrt((ln(10/12)^2 + ln(10/8)^2) / 3)
    #   ratios [1.2, 1.25, 1]: 1.25 is not < 1.25 -> a1 = 2/3, a2 = a3 = 1
    e = compute_depth_errors(torch.tensor([12.0, 8.0, 10.0]), torch.tensor([10.0, 10.0, 10.0]))
    rmse_log = math.sqrt((math.log(10 / 12) ** 2 + math.log(10 / 8) ** 2) / 3)
    expected = [0.4 / 3, 0.8 / 3, math.sqrt(8 / 3), rmse_log, 2 / 3, 1.0, 1.0]
    assert as_list(e) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    "ratio, a1, a2, a3",
    [
        (1.24, 1.0, 1.0, 1.0),            # just below 1.25
        (1.26, 0.0, 1.0, 1.0),            # just above 1.25
        (1.25 ** 2 - 0.01, 0.0, 1.0, 1.0),  # just below 1.5625
        (1.25 ** 2 + 0.01, 0.0, 0.0, 1.0),  # just above 1.5625
        (1.25 ** 3 - 0.01, 0.0, 0.0, 1.0),  # just below 1.953125
        (1.25 ** 3 + 0.01, 0.0, 0.0, 0.0),  # just above 1.953125
    ],
)
@pytest.mark.parametrize("over", [True, False])
def test_thresholds_around_powers_of_1_25(ratio, a1, a2, a3, over):
    gt = torch.tensor([5.0, 20.0, 40.0])
    pred = gt * ratio if over else gt / ratio
    e = compute_depth_errors(pred, gt)
    assert [float(e["a1"]), float(e["a2"]), float(e["a3"])] == [a1, a2, a3]


def test_empty_input_gives_nan_without_error():
    e = compute_depth_errors(torch.zeros(0), torch.zeros(0))
    assert all(math.isnan(v) for v in as_list(e))


@pytest.mark.parametrize("n", [1, 2, 5, 6, 0])
def test_masked_median_matches_numpy(n):
    gen = torch.Generator().manual_seed(n)
    x = torch.rand(3, 10, generator=gen, dtype=torch.float64) * 10
    valid = torch.zeros(3, 10, dtype=torch.bool)
    valid[0, :n] = True
    valid[1, 10 - n:] = True
    valid[2, ::2] = True  # always 5 values
    med = masked_median(x, valid)
    for i in range(3):
        vals = x[i][valid[i]].numpy()
        if vals.size == 0:
            assert math.isnan(float(med[i]))
        else:
            assert float(med[i]) == pytest.approx(float(np.median(vals)), abs=1e-12)


# ---------------------------------------------------------------------------------------------
# batched per-image metrics
# ---------------------------------------------------------------------------------------------
def _random_scene(b=2, n=3, h=8, w=10, seed=0, density=0.6):
    gen = torch.Generator().manual_seed(seed)
    gt = torch.rand(b, n, 1, h, w, generator=gen) * 40 + 2
    gt = gt * (torch.rand(b, n, 1, h, w, generator=gen) < density)
    pred = (gt.clamp(min=2) * (0.7 + 0.6 * torch.rand(b, n, 1, h, w, generator=gen)))
    return pred, gt


def test_per_image_matches_compute_depth_errors():
    pred, gt = _random_scene()
    res = depth_metrics_per_image(pred, gt, min_depth=1e-3, max_depth=80.0)
    assert res["metric"].shape == (2, 3, 7) and res["median"].shape == (2, 3, 7)
    for b in range(2):
        for n in range(3):
            v = gt[b, n] > 0
            ref = compute_depth_errors(pred[b, n][v], gt[b, n][v])
            assert res["metric"][b, n].tolist() == pytest.approx(as_list(ref), rel=1e-5)
            assert res["num_valid"][b, n] == int(v.sum())
            scale = np.median(gt[b, n][v].numpy()) / np.median(pred[b, n][v].numpy())
            assert res["scale"][b, n].item() == pytest.approx(float(scale), rel=1e-5)
            ref_med = compute_depth_errors((pred[b, n][v] * scale).clamp(1e-3, 80.0), gt[b, n][v])
            assert res["median"][b, n].tolist() == pytest.approx(as_list(ref_med), rel=1e-5, abs=1e-7)


def test_median_scaling_recovers_scaled_prediction():
    pred, gt = _random_scene(density=1.0)
    factors = torch.tensor([[0.5, 2.0, 0.25], [3.0, 0.5, 1.5]]).view(2, 3, 1, 1, 1)
    res = depth_metrics_per_image(gt * factors, gt, min_depth=1e-3, max_depth=80.0)
    med = res["median"]
    for name, target in [("abs_rel", 0.0), ("sq_rel", 0.0), ("rmse", 0.0), ("rmse_log", 0.0),
                         ("a1", 1.0), ("a2", 1.0), ("a3", 1.0)]:
        assert torch.allclose(med[..., IDX[name]], torch.full((2, 3), target, dtype=torch.float64), atol=1e-5), name
    assert torch.allclose(res["scale"], 1.0 / factors.view(2, 3).double(), rtol=1e-5)
    # in metric mode pred = 0.5 gt gives abs_rel = 0.5 (camera 0 of image 0; nothing clamped)
    assert res["metric"][0, 0, IDX["abs_rel"]].item() == pytest.approx(0.5, rel=1e-5)


def test_caps_and_mask_exclude_pixels():
    # gt row: [0.5 (below min), 5, 10, 100 (above max)], pred wildly wrong at the excluded pixels
    gt = torch.tensor([0.5, 5.0, 10.0, 100.0, 20.0, 20.0]).view(1, 1, 1, 2, 3)
    pred = torch.tensor([50.0, 4.0, 10.0, 1.0, 1.0, 30.0]).view(1, 1, 1, 2, 3)
    mask = torch.tensor([1, 1, 1, 1, 0, 1]).view(1, 1, 1, 2, 3)  # masks out the gt=20 / pred=1 pixel
    res = depth_metrics_per_image(pred, gt, mask, min_depth=1.0, max_depth=80.0)
    # remaining pixels: gt [5, 10, 20], pred [4, 10, 30]
    ref = compute_depth_errors(torch.tensor([4.0, 10.0, 30.0]), torch.tensor([5.0, 10.0, 20.0]))
    assert res["metric"][0, 0].tolist() == pytest.approx(as_list(ref), rel=1e-6)
    assert int(res["num_valid"][0, 0]) == 3
    # the pred is clamped to [min, max] in metric mode: pred 1000 with gt 50 counts as 80
    res2 = depth_metrics_per_image(torch.full((1, 1, 1, 1, 1), 1000.0), torch.full((1, 1, 1, 1, 1), 50.0),
                                   min_depth=1.0, max_depth=80.0)
    assert res2["metric"][0, 0, IDX["abs_rel"]].item() == pytest.approx(30 / 50)


def test_low_resolution_mask_is_resized_nearest_and_pred_bilinearly():
    gt = torch.full((1, 2, 1, 4, 4), 10.0)
    pred = torch.full((1, 2, 1, 2, 2), 10.0)
    pred[0, 1] = 12.5  # constant images stay constant under bilinear resizing
    mask = torch.tensor([[1, 0], [0, 0]]).view(1, 1, 1, 2, 2).expand(1, 2, 1, 2, 2)
    res = depth_metrics_per_image(pred, gt, mask)
    assert res["num_valid"].tolist() == [[4, 4]]  # the top-left quadrant
    assert res["metric"][0, 0, IDX["abs_rel"]].item() == pytest.approx(0.0, abs=1e-7)
    assert res["metric"][0, 1, IDX["abs_rel"]].item() == pytest.approx(0.25, rel=1e-6)
    # a single camera may be given as [B, 1, H, W]
    res1 = depth_metrics_per_image(pred[:, 1], gt[:, 1])
    assert res1["metric"].shape == (1, 1, 7)
    assert res1["metric"][0, 0, IDX["abs_rel"]].item() == pytest.approx(0.25, rel=1e-6)


def test_garg_crop_rows_and_columns():
    m = crop_mask(375, 1242, "garg")
    rows = torch.nonzero(m.any(1)).flatten()
    cols = torch.nonzero(m.any(0)).flatten()
    assert (rows.min().item(), rows.max().item() + 1) == (153, 371)
    assert (cols.min().item(), cols.max().item() + 1) == (44, 1197)
    assert crop_mask(10, 10, None) is None
    with pytest.raises(ValueError, match="crop"):
        crop_mask(10, 10, "nonsense")


def test_crop_excludes_outside_pixels():
    gt = torch.full((1, 1, 1, 10, 10), 10.0)
    pred = torch.full((1, 1, 1, 10, 10), 20.0)
    pred[..., 5:, 2:8] = 10.0  # perfect inside the crop rows [5, 10), cols [2, 8)
    res = depth_metrics_per_image(pred, gt, crop=(0.5, 1.0, 0.2, 0.8))
    assert int(res["num_valid"][0, 0]) == 30
    assert res["metric"][0, 0, IDX["abs_rel"]].item() == 0.0


def test_min_depth_zero_stays_finite():
    gt = torch.tensor([0.0, 5.0, 10.0]).view(1, 1, 1, 1, 3)
    pred = torch.tensor([3.0, 0.0, 10.0]).view(1, 1, 1, 1, 3)
    res = depth_metrics_per_image(pred, gt, min_depth=0.0, max_depth=200.0)
    assert torch.isfinite(res["metric"]).all()
    assert int(res["num_valid"][0, 0]) == 2


def test_image_without_valid_pixels_gives_nan():
    pred, gt = _random_scene(b=2, n=2)
    gt[1, 0] = 0
    res = depth_metrics_per_image(pred, gt)
    assert torch.isnan(res["metric"][1, 0]).all() and torch.isnan(res["median"][1, 0]).all()
    assert torch.isnan(res["scale"][1, 0])
    assert torch.isfinite(res["metric"][0]).all() and torch.isfinite(res["metric"][1, 1]).all()


# ---------------------------------------------------------------------------------------------
# accumulator
# ---------------------------------------------------------------------------------------------
def _feed(acc, pred, gt, sizes):
    start = 0
    for s in sizes:
        acc.update(pred[start:start + s], gt[start:start + s])
        start += s
    return acc.compute()


def _assert_same(r1, r2):
    for mode in ("metric", "median"):
        assert torch.allclose(r1[mode]["per_camera"], r2[mode]["per_camera"], atol=1e-12, equal_nan=True)
        assert torch.allclose(r1[mode]["all"], r2[mode]["all"], atol=1e-12, equal_nan=True)
    assert r1["scale"].keys() == r2["scale"].keys()
    for k in r1["scale"]:
        for stat in ("median", "std"):
            assert r1["scale"][k][stat] == pytest.approx(r2["scale"][k][stat], abs=1e-12)


@pytest.mark.parametrize("sizes", [[4], [1, 1, 1, 1], [3, 1], [2, 2]])
def test_result_independent_of_batching(sizes):
    pred, gt = _random_scene(b=4, n=2, seed=3, density=0.3)
    ref = _feed(DepthMetricsAccumulator(), pred, gt, [4])
    got = _feed(DepthMetricsAccumulator(), pred, gt, sizes)
    _assert_same(ref, got)
    # and it is the plain mean over images of the per-image metrics, camera by camera
    for n in range(2):
        rows = [as_list(compute_depth_errors(pred[b, n][gt[b, n] > 0], gt[b, n][gt[b, n] > 0])) for b in range(4)]
        assert got["metric"]["per_camera"][n].tolist() == pytest.approx(np.mean(rows, 0).tolist(), rel=1e-5)
    assert got["metric"]["all"].tolist() == pytest.approx(got["metric"]["per_camera"].mean(0).tolist(), rel=1e-12)
    assert got["num_images"] == {"cam0": 4, "cam1": 4}


def test_batch_mean_differs_from_pooled_batches():
    # Two images whose per-image abs_rel differ and whose valid counts differ: the average over
    # images (what we compute) is not the average over pixels.
    gt = torch.tensor([[10.0, 10.0, 10.0, 10.0], [10.0, 0.0, 0.0, 0.0]]).view(2, 1, 1, 1, 4)
    pred = torch.tensor([[10.0, 10.0, 10.0, 10.0], [15.0, 0.0, 0.0, 0.0]]).view(2, 1, 1, 1, 4)
    acc = DepthMetricsAccumulator()
    acc.update(pred, gt)
    res = acc.compute()
    # image 0: abs_rel 0; image 1: abs_rel 0.5 -> mean over images 0.25 (pooled pixels: 0.1)
    assert res["metric"]["all"][IDX["abs_rel"]].item() == pytest.approx(0.25)


def test_image_without_valid_pixels_is_ignored():
    pred, gt = _random_scene(b=3, n=2, seed=5)
    empty_gt = gt.clone()
    empty_gt[1] = 0  # image 1 has no ground truth in any camera
    acc = DepthMetricsAccumulator()
    acc.update(pred, empty_gt)
    ref = DepthMetricsAccumulator()
    ref.update(pred[[0, 2]], gt[[0, 2]])
    _assert_same(acc.compute(), ref.compute())
    assert acc.compute()["num_images"] == {"cam0": 2, "cam1": 2}


def test_per_camera_table_and_json(tmp_path):
    gt = torch.full((2, 3, 1, 4, 4), 10.0)
    pred = gt.clone()
    pred[:, 1] = 20.0  # camera "back": abs_rel 1 in metric mode, 0 after median scaling
    gt[:, 2] = 0.0  # camera "side": no ground truth at all
    acc = DepthMetricsAccumulator(camera_names=["front", "back", "side"], min_depth=0.1, max_depth=80)
    acc.update(pred, gt)
    res = acc.compute()
    pc = res["metric"]["per_camera"]
    assert pc[0, IDX["abs_rel"]].item() == 0.0
    assert pc[1, IDX["abs_rel"]].item() == pytest.approx(1.0)
    assert torch.isnan(pc[2]).all()
    assert res["metric"]["all"][IDX["abs_rel"]].item() == pytest.approx(0.5)  # mean over cameras with data
    assert res["median"]["per_camera"][1, IDX["abs_rel"]].item() == pytest.approx(0.0, abs=1e-7)
    assert res["scale"]["back"]["median"] == pytest.approx(0.5)
    assert res["scale"]["back"]["std"] == pytest.approx(0.0)

    table = acc.format_table()
    print(table)
    lines = table.splitlines()
    for mode in ("metric", "median"):
        header = next(l for l in lines if l.startswith(mode))
        assert [c.strip() for c in header.split("|")[1:]] == list(METRIC_NAMES)
    back_rows = [l for l in lines if l.startswith("back ")]
    assert float(back_rows[0].split("|")[1]) == pytest.approx(1.0)  # metric abs_rel
    assert float(back_rows[1].split("|")[1]) == pytest.approx(0.0)  # median abs_rel
    assert sum(l.startswith("all ") for l in lines) >= 2

    d = acc.to_dict()
    text = json.dumps(d, allow_nan=False)
    back = json.loads(text)
    assert back["metric"]["per_camera"]["back"]["abs_rel"] == pytest.approx(1.0)
    assert back["metric"]["per_camera"]["side"]["abs_rel"] is None
    assert back["num_images"] == {"front": 2, "back": 2, "side": 0}


def test_camera_count_mismatch_raises():
    acc = DepthMetricsAccumulator(camera_names=["a", "b"])
    pred, gt = _random_scene(b=1, n=3)
    with pytest.raises(ValueError, match="cameras"):
        acc.update(pred, gt)


def test_state_merge_equals_single_accumulator():
    pred, gt = _random_scene(b=4, n=2, seed=7)
    full = DepthMetricsAccumulator()
    full.update(pred, gt)
    a, b = DepthMetricsAccumulator(), DepthMetricsAccumulator()
    a.update(pred[:1], gt[:1])
    b.update(pred[1:], gt[1:])
    a.merge(b.state())
    _assert_same(a.compute(), full.compute())
    st = a.state()
    assert st["sums"].shape == (2, 2, 7) and st["counts"].shape == (2,) and st["scales"].shape == (4, 2)


def test_sync_distributed_single_process_gloo(tmp_path):
    import torch.distributed as dist

    pred, gt = _random_scene(b=2, n=2, seed=9)
    acc = DepthMetricsAccumulator()
    acc.update(pred, gt)
    before = acc.compute()
    acc.sync_distributed()  # not initialised: no-op
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        acc.sync_distributed()
    finally:
        dist.destroy_process_group()
    _assert_same(before, acc.compute())
