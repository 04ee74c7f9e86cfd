"""KITTI 2015 scene flow metrics: the 3 px / 5 % rule, SF masks, pooled denominators, EPE, devkit sample."""
import json
import shutil

import numpy as np
import pytest
import torch

from utils.kitti_io import read_disparity_png, read_flow_png
from utils.metrics import (
    KittiSceneFlowAccumulator,
    disparity_depth_errors,
    disparity_outliers,
    flow_outliers,
    kitti_interpolate_background,
    kitti_sceneflow_counts,
    kitti_sceneflow_percentages,
)



def d(values):
    """[1, 1, 1, n] disparity map from a list."""
    return torch.tensor(values, dtype=torch.float32).view(1, 1, 1, -1)


def f(vectors):
    """[1, 2, 1, n] flow map from a list of (u, v)."""
    return torch.tensor(vectors, dtype=torch.float32).t().reshape(1, 2, 1, -1)


# ---------------------------------------------------------------------------------------------
# the outlier rule
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "gt, est, outlier",
    [
        (50.0, 53.0, False),    # error exactly 3.0 px: not > 3
        (50.0, 46.99, True),    # 3.01 px and 3.01/50 = 6.02 % > 5 %
        (50.0, 53.01, True),
        (100.0, 103.5, False),  # 3.5 px > 3 but only 3.5 % of 100
        (100.0, 105.0, False),  # 5 px = exactly 5 %: not > 5 %
        (100.0, 106.0, True),   # 6 px and 6 %
        (10.0, 12.9, False),    # 29 % but under 3 px
        (10.0, 13.5, True),
    ],
)
def test_disparity_outlier_boundaries(gt, est, outlier):
    assert bool(disparity_outliers(d([est]), d([gt]))[0, 0, 0, 0]) is outlier


@pytest.mark.parametrize(
    "gt, est, outlier",
    [
        ((30.0, 40.0), (33.0, 40.0), False),   # |gt| = 50, error exactly 3
        ((30.0, 40.0), (30.0, 43.01), True),   # error 3.01 = 6.02 % of 50
        ((60.0, 80.0), (62.1, 82.8), False),   # |gt| = 100, error sqrt(2.1^2 + 2.8^2) = 3.5 = 3.5 %
        ((60.0, 80.0), (63.6, 84.8), True),    # error sqrt(3.6^2 + 4.8^2) = 6 = 6 %
        ((0.0, 0.0), (0.0, 0.0), False),       # zero GT, zero error: no 0/0
        ((0.0, 0.0), (2.9, 0.0), False),       # zero GT: under 3 px is fine
        ((0.0, 0.0), (0.0, -3.01), True),      # zero GT: over 3 px is an outlier
    ],
)
def test_flow_outlier_boundaries(gt, est, outlier):
    assert bool(flow_outliers(f([est]), f([gt]))[0, 0, 0, 0]) is outlier


def test_nan_estimate_is_an_outlier():
    assert bool(disparity_outliers(d([float("nan")]), d([20.0]))[0, 0, 0, 0])
    assert bool(flow_outliers(f([(float("nan"), 0.0)]), f([(1.0, 1.0)]))[0, 0, 0, 0])


# ---------------------------------------------------------------------------------------------
# per-image counts, SF mask, regions
# ---------------------------------------------------------------------------------------------
def _five_pixel_case():
    """Five pixels, with hand-placed outliers and GT holes.

    pixel:            0      1      2      3      4
    disp_0 gt:       20     20      0     20     20     (pixel 2 invalid)
    disp_0 est:      20     30     30     20     20     -> D1 outlier at 1 (and at 2, but invalid)
    disp_1 gt:       20     20     20      0     20     (pixel 3 invalid)
    disp_1 est:      20     20     20     30     30     -> D2 outlier at 4 (3 invalid)
    flow valid:       1      1      1      1      0     (pixel 4 invalid)
    flow err:         0      0      0     10     10     -> Fl outlier at 3 (4 invalid)
    SF valid on {0, 1}; SF outlier at 1 (from D1). D1 3/4... see asserts.
    """
    return dict(
        disp0_est=d([20, 30, 30, 20, 20]), disp0_gt=d([20, 20, 0, 20, 20]),
        disp1_est=d([20, 20, 20, 30, 30]), disp1_gt=d([20, 20, 20, 0, 20]),
        flow_est=f([(0, 0), (0, 0), (0, 0), (10, 0), (10, 0)]),
        flow_gt=f([(0, 0)] * 5),
        flow_valid=torch.tensor([1, 1, 1, 1, 0]).view(1, 1, 1, 5),
    )


def test_counts_and_sf_only_where_all_three_gt_valid():
    c = kitti_sceneflow_counts(**_five_pixel_case())
    got = {k: int(v[0]) for k, v in c.items() if not k.endswith("epe_sum")}
    assert got == {
        "d1_all_outliers": 1, "d1_all_pixels": 4,   # pixels 0,1,3,4 valid; outlier 1
        "d2_all_outliers": 1, "d2_all_pixels": 4,   # pixels 0,1,2,4 valid; outlier 4
        "fl_all_outliers": 1, "fl_all_pixels": 4,   # pixels 0..3 valid; outlier 3
        "sf_all_outliers": 1, "sf_all_pixels": 2,   # only pixels 0 and 1 valid in all three
    }
    # EPE = (0 + 0 + 0 + 10) / 4 valid flow pixels (the invalid pixel's 10 px error is ignored)
    pct = kitti_sceneflow_percentages(c)
    assert float(pct["epe_all"][0]) == pytest.approx(2.5)
    assert float(pct["sf_all"][0]) == pytest.approx(50.0)
    assert float(pct["d1_all"][0]) == pytest.approx(25.0)


def test_obj_map_splits_background_and_foreground():
    case = _five_pixel_case()
    case["obj_map"] = torch.tensor([0, 2, 0, 1, 0]).view(1, 1, 1, 5)
    c = kitti_sceneflow_counts(**case)
    # bg = pixels {0, 2, 4}, fg = {1, 3}
    assert int(c["d1_bg_pixels"][0]) == 2 and int(c["d1_bg_outliers"][0]) == 0   # valid bg: 0, 4
    assert int(c["d1_fg_pixels"][0]) == 2 and int(c["d1_fg_outliers"][0]) == 1   # valid fg: 1, 3
    assert int(c["fl_fg_outliers"][0]) == 1 and int(c["fl_bg_pixels"][0]) == 2     # bg flow valid: 0, 2
    assert int(c["sf_bg_pixels"][0]) == 1 and int(c["sf_fg_pixels"][0]) == 1
    for q in ("d1", "d2", "fl", "sf"):
        for kind in ("outliers", "pixels"):
            assert int(c[f"{q}_bg_{kind}"][0] + c[f"{q}_fg_{kind}"][0]) == int(c[f"{q}_all_{kind}"][0])


def test_numpy_single_images_are_accepted():
    disp_gt = np.array([[10.0, 0.0], [20.0, 30.0]], dtype=np.float32)
    disp_est = disp_gt + np.array([[5.0, 9.0], [0.0, 1.0]], dtype=np.float32)
    flow_gt = np.zeros((2, 2, 2), np.float32)
    flow_est = np.zeros((2, 2, 2), np.float32)
    flow_est[0, 0] = (4.0, 0.0)
    c = kitti_sceneflow_counts(disp0_est=disp_est, disp0_gt=disp_gt, flow_est=flow_est, flow_gt=flow_gt,
                               flow_valid=np.ones((2, 2), bool))
    assert int(c["d1_all_outliers"][0]) == 1 and int(c["d1_all_pixels"][0]) == 3
    assert int(c["fl_all_outliers"][0]) == 1 and float(c["fl_all_epe_sum"][0]) == pytest.approx(4.0)


def test_missing_inputs_raise():
    with pytest.raises(ValueError, match="flow_valid"):
        kitti_sceneflow_counts(flow_est=f([(0, 0)]), flow_gt=f([(0, 0)]))
    with pytest.raises(ValueError, match="nothing to evaluate"):
        kitti_sceneflow_counts()
    with pytest.raises(ValueError, match="ground-truth size"):
        kitti_sceneflow_counts(disp0_est=d([1, 2]), disp0_gt=d([1, 2, 3]))


# ---------------------------------------------------------------------------------------------
# dataset accumulation
# ---------------------------------------------------------------------------------------------
def _image(n_valid, n_outliers, width=100):
    gt = torch.zeros(width)
    gt[:n_valid] = 50.0
    est = gt.clone()
    est[:n_outliers] = 60.0  # 10 px and 20 %: outliers
    return est.view(1, 1, 1, width), gt.view(1, 1, 1, width)


@pytest.mark.parametrize("one_batch", [True, False])
def test_dataset_percentages_use_pooled_denominators(one_batch):
    # image A: 100 valid, 10 outliers (10 %); image B: 10 valid, 5 outliers (50 %)
    ea, ga = _image(100, 10)
    eb, gb = _image(10, 5)
    acc = KittiSceneFlowAccumulator()
    if one_batch:
        acc.update(disp0_est=torch.cat([ea, eb]), disp0_gt=torch.cat([ga, gb]))
    else:
        acc.update(disp0_est=ea, disp0_gt=ga)
        acc.update(disp0_est=eb, disp0_gt=gb)
    res = acc.compute()
    pooled = 100.0 * 15 / 110           # 13.636 %
    mean_of_percentages = (10.0 + 50.0) / 2  # 30 %
    assert res["d1_all"] == pytest.approx(pooled)
    assert abs(res["d1_all"] - mean_of_percentages) > 16.0
    assert res["num_images"] == 2
    assert "fl_all" not in res and "sf_all" not in res


def test_dataset_epe_is_total_error_over_total_pixels():
    # image A: 1 valid pixel with error 4; image B: 3 valid pixels with errors 0, 0, 0
    acc = KittiSceneFlowAccumulator()
    acc.update(flow_est=f([(4, 0), (9, 9)]), flow_gt=f([(0, 0), (0, 0)]), flow_valid=torch.tensor([1, 0]).view(1, 1, 1, 2))
    acc.update(flow_est=f([(0, 0)] * 3), flow_gt=f([(0, 0)] * 3), flow_valid=torch.ones(1, 1, 1, 3))
    res = acc.compute()
    assert res["epe_all"] == pytest.approx(4.0 / 4)  # not the mean of per-image EPEs (2.0)
    assert res["fl_all"] == pytest.approx(25.0)      # 4 px error on a zero flow is an outlier


def test_accumulator_bg_fg_merge_and_json():
    case = _five_pixel_case()
    case["obj_map"] = torch.tensor([0, 2, 0, 1, 0]).view(1, 1, 1, 5)
    a, b = KittiSceneFlowAccumulator(), KittiSceneFlowAccumulator()
    a.update(**case)
    b.update(**case)
    a.merge(b.state())
    res = a.compute()
    assert res["num_images"] == 2
    assert res["sf_all"] == pytest.approx(50.0) and res["sf_fg"] == pytest.approx(100.0) and res["sf_bg"] == 0.0
    assert res["d1_fg"] == pytest.approx(50.0)
    text = json.dumps(a.to_dict(), allow_nan=False)
    assert json.loads(text)["totals"]["sf_all_pixels"] == 4
    table = a.format_table()
    print(table)
    assert "SF" in table and "fg" in table and "EPE" in table


def test_depth_metrics_from_disparity_are_averaged_over_images():
    focal, baseline = 100.0, 0.5  # depth = 50 / disparity
    # image A: one valid pixel, disparity estimated twice too large -> depth half -> abs_rel 0.5
    # image B: three valid pixels, perfect -> abs_rel 0
    est = torch.tensor([[20.0, 7.0, 7.0, 7.0], [5.0, 10.0, 25.0, 1.0]]).view(2, 1, 1, 4)
    gt = torch.tensor([[10.0, 0.0, 0.0, 0.0], [5.0, 10.0, 25.0, 0.0]]).view(2, 1, 1, 4)
    metrics, n = disparity_depth_errors(est, gt, focal, baseline, min_depth=None, max_depth=None)
    assert n.tolist() == [1, 3]
    assert metrics[0, 0].item() == pytest.approx(0.5)          # |2.5 - 5| / 5
    assert metrics[0, 1].item() == pytest.approx(2.5 ** 2 / 5)  # sq_rel
    assert metrics[1, 0].item() == pytest.approx(0.0, abs=1e-7)
    acc = KittiSceneFlowAccumulator(baseline=baseline)
    acc.update(disp0_est=est, disp0_gt=gt, focal_length=torch.tensor([focal, focal]))
    res = acc.compute()
    assert res["abs_rel"] == pytest.approx(0.25)  # mean over images, not over pixels (0.125)
    # the predicted depth is clamped: with max_depth 4 the perfect 5 m pixel of image B is wrong
    metrics_c, _ = disparity_depth_errors(est, gt, focal, baseline, min_depth=1e-3, max_depth=4.0)
    assert metrics_c[1, 0].item() > 0


# ---------------------------------------------------------------------------------------------
# devkit interpolation of missing estimates
# ---------------------------------------------------------------------------------------------
def _devkit_interpolation_reference(values, valid):
    """Loop transcription of the devkit's interpolateBackground, for [H, W, C] numpy arrays."""
    x = values.astype(np.float64).copy()
    ok = valid.copy()
    h, w = ok.shape
    for v in range(h):
        count = 0
        for u in range(w):
            if ok[v, u]:
                if count >= 1:
                    u1, u2 = u - count, u - 1
                    if u1 > 0 and u2 < w - 1:
                        x[v, u1:u2 + 1] = np.minimum(x[v, u1 - 1], x[v, u2 + 1])
                        ok[v, u1:u2 + 1] = True
                count = 0
            else:
                count += 1
        for u in range(w):
            if ok[v, u]:
                x[v, :u] = x[v, u]
                ok[v, :u] = True
                break
        for u in range(w - 1, -1, -1):
            if ok[v, u]:
                x[v, u + 1:] = x[v, u]
                ok[v, u + 1:] = True
                break
    for u in range(w):
        for v in range(h):
            if ok[v, u]:
                x[:v, u] = x[v, u]
                ok[:v, u] = True
                break
        for v in range(h - 1, -1, -1):
            if ok[v, u]:
                x[v + 1:, u] = x[v, u]
                ok[v + 1:, u] = True
                break
    return x, ok


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_interpolate_background_matches_devkit_loops(channels, seed):
    rng = np.random.default_rng(seed)
    h, w = 9, 13
    values = rng.uniform(-20, 20, size=(h, w, channels))
    valid = rng.random((h, w)) < 0.4
    valid[0] = False      # empty top row -> extrapolated from below
    valid[4] = False      # empty interior row -> stays invalid (as in the devkit)
    valid[-1] = False     # empty bottom row
    valid[2, 0] = False   # gap touching the left border
    ref_x, ref_ok = _devkit_interpolation_reference(values, valid)
    x = torch.from_numpy(values).permute(2, 0, 1).unsqueeze(0)
    got_x, got_ok = kitti_interpolate_background(x, torch.from_numpy(valid).view(1, 1, h, w))
    assert np.array_equal(got_ok[0, 0].numpy(), ref_ok)
    got = got_x[0].permute(1, 2, 0).numpy()
    assert np.allclose(got[ref_ok], ref_x[ref_ok])
    assert not ref_ok[4].any()


# ---------------------------------------------------------------------------------------------
# the real devkit sample
# ---------------------------------------------------------------------------------------------
def test_devkit_example_estimates(tmp_path, shared_data):
    src = {name: tmp_path / name for name in ("disp_gt.png", "disp_est.png", "flow_gt.png", "flow_est.png")}
    for name, dst in src.items():
        shutil.copyfile(shared_data / "kitti_2015_devkit_sample" / name, dst)  # read copies: the shared data is never touched
    disp_gt, disp_gt_valid = read_disparity_png(src["disp_gt.png"])
    disp_est, disp_est_valid = read_disparity_png(src["disp_est.png"])
    flow_gt, flow_gt_valid = read_flow_png(src["flow_gt.png"])
    flow_est, flow_est_valid = read_flow_png(src["flow_est.png"])

    acc = KittiSceneFlowAccumulator(baseline=0.54)
    acc.update(disp0_est=disp_est, disp0_gt=disp_gt, disp0_est_valid=disp_est_valid,
               flow_est=flow_est, flow_gt=flow_gt, flow_valid=flow_gt_valid, flow_est_valid=flow_est_valid,
               focal_length=721.5377)
    res = acc.compute()
    print(f"\ndevkit sample: D1-all {res['d1_all']:.2f} %, Fl-all {res['fl_all']:.2f} %, "
          f"EPE {res['epe_all']:.2f} px, abs_rel {res['abs_rel']:.4f}")
    for key in ("d1_all", "fl_all"):
        assert 0.0 < res[key] < 100.0
    assert res["epe_all"] > 0
    assert 0.0 < res["abs_rel"] < 1.0
    # the estimate is interpolated the devkit's way: every GT pixel gets an estimate
    counts = acc.totals()
    assert counts["d1_all_pixels"] == int(disp_gt_valid.sum())
    assert counts["fl_all_pixels"] == int(flow_gt_valid.sum())
