"""KITTI 2015 scene flow metrics (D1, D2, Fl, SF outliers, flow EPE) as in the official devkit.

Outlier rule (``evaluate_scene_flow.cpp``: ``ABS_THRESH = 3.0``, ``REL_THRESH = 0.05``):

* disparity (D1 on ``disp_0``, D2 on ``disp_1``): ``err = |d_gt - d_est|``, outlier when
  ``err > 3`` **and** ``err > 0.05 * |d_gt|``;
* flow (Fl): ``err = ||f_gt - f_est||``, outlier when ``err > 3`` **and** ``err > 0.05 * ||f_gt||``;
* SF: outlier in D1 **or** D2 **or** Fl, counted only on pixels valid in all three GT maps.

The relative test is written as a product, not a division, so a zero ground truth (flow of exactly
zero) is an outlier exactly when the error exceeds 3 px, without any 0/0. A non-finite estimate is
an outlier (comparisons are written so that NaN fails the "inlier" test).

Pixel sets: "all", and with an object map "bg" (obj_map == 0) and "fg" (obj_map > 0), like the
benchmark. Over a dataset the benchmark's denominators are used: total outliers / total valid
pixels (pooled over all images), not a mean of per-image percentages; EPE = total end-point error /
total valid flow pixels.

Estimates are expected dense at the GT resolution (resize them and rescale disparity / flow to
that resolution first). For sparse estimates (submission PNGs with invalid pixels) pass the
``*_est_valid`` masks: the estimate is then filled with the devkit's ``interpolateBackground``
(``kitti_interpolate_background``) before evaluation, as the official "all pixels" figures do;
pixels the interpolation cannot reach get 0.

Tensors are channels-first: disparities and masks [B, 1, H, W], flow [B, 2, H, W]. Single images in
the layout the KITTI readers of ``utils.kitti_io`` return (numpy [H, W] and [H, W, 2]) are accepted
too.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from .depth_metrics import METRIC_NAMES, _masked_errors

__all__ = [
    "ABS_THRESH",
    "REL_THRESH",
    "QUANTITIES",
    "REGIONS",
    "disparity_outliers",
    "flow_end_point_error",
    "flow_outliers",
    "kitti_interpolate_background",
    "kitti_sceneflow_counts",
    "kitti_sceneflow_percentages",
    "disparity_depth_errors",
    "KittiSceneFlowAccumulator",
]

ABS_THRESH = 3.0
REL_THRESH = 0.05
QUANTITIES: Tuple[str, ...] = ("d1", "d2", "fl", "sf")
REGIONS: Tuple[str, ...] = ("all", "bg", "fg")

ArrayLike = Union[torch.Tensor, np.ndarray]


# ----------------------------------------------------------------------------------------------
# Input normalisation
# ----------------------------------------------------------------------------------------------
def _to_tensor(x: ArrayLike) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    return torch.as_tensor(np.ascontiguousarray(x))


def _as_map(x: Optional[ArrayLike], channels: int, name: str) -> Optional[torch.Tensor]:
    """Brings x to [B, channels, H, W]. Accepts [H, W] (1 channel), [H, W, 2] numpy-style flow,
    [C, H, W] and [B, C, H, W]."""
    if x is None:
        return None
    t = _to_tensor(x)
    if t.dim() == 4:
        pass
    elif t.dim() == 3:
        if channels == 2 and t.shape[-1] == 2 and t.shape[0] != 2:
            t = t.permute(2, 0, 1).unsqueeze(0)
        elif t.shape[0] == channels:
            t = t.unsqueeze(0)
        elif channels == 1:  # [B, H, W]
            t = t.unsqueeze(1)
        else:
            raise ValueError(f"{name}: cannot interpret shape {tuple(t.shape)} as {channels}-channel map")
    elif t.dim() == 2 and channels == 1:
        t = t.unsqueeze(0).unsqueeze(0)
    else:
        raise ValueError(f"{name} must be [B, {channels}, H, W], got {tuple(t.shape)}")
    if t.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channel(s) ([B, {channels}, H, W]), got {tuple(t.shape)}")
    return t


def _float(t: torch.Tensor) -> torch.Tensor:
    return t if t.is_floating_point() else t.to(torch.float32)


def _check_same(a: torch.Tensor, b: torch.Tensor, na: str, nb: str) -> None:
    if a.shape[0] != b.shape[0] or a.shape[-2:] != b.shape[-2:]:
        raise ValueError(f"{na} {tuple(a.shape)} and {nb} {tuple(b.shape)} must share batch size and H, W "
                         "(resize the estimate to the ground-truth size first)")


# ----------------------------------------------------------------------------------------------
# Pixel-wise errors
# ----------------------------------------------------------------------------------------------
def _outlier(err: torch.Tensor, magnitude: torch.Tensor, abs_thresh: float, rel_thresh: float) -> torch.Tensor:
    # outlier = err > abs AND err > rel*|gt|, written as NOT(inlier) so that NaN errors are outliers.
    return ~((err <= abs_thresh) | (err <= rel_thresh * magnitude))


def disparity_outliers(disp_est: ArrayLike, disp_gt: ArrayLike, abs_thresh: float = ABS_THRESH,
                       rel_thresh: float = REL_THRESH) -> torch.Tensor:
    """Boolean map: |d_gt - d_est| > abs_thresh and |d_gt - d_est| > rel_thresh * |d_gt| (any shape)."""
    est, gt = _float(_to_tensor(disp_est)), _float(_to_tensor(disp_gt))
    err = (gt.to(est.dtype) - est).abs()
    return _outlier(err, gt.to(est.dtype).abs(), abs_thresh, rel_thresh)


def flow_end_point_error(flow_est: ArrayLike, flow_gt: ArrayLike) -> torch.Tensor:
    """||f_gt - f_est|| over the channel dimension: [B, 2, H, W] -> [B, 1, H, W]."""
    est, gt = _float(_as_map(flow_est, 2, "flow_est")), _float(_as_map(flow_gt, 2, "flow_gt"))
    return torch.linalg.vector_norm(gt.to(est.dtype) - est, dim=1, keepdim=True)


def flow_outliers(flow_est: ArrayLike, flow_gt: ArrayLike, abs_thresh: float = ABS_THRESH,
                  rel_thresh: float = REL_THRESH) -> torch.Tensor:
    """Boolean [B, 1, H, W]: ||Δf|| > abs_thresh and ||Δf|| > rel_thresh * ||f_gt||."""
    gt = _float(_as_map(flow_gt, 2, "flow_gt"))
    err = flow_end_point_error(flow_est, gt)
    mag = torch.linalg.vector_norm(gt.to(err.dtype), dim=1, keepdim=True)
    return _outlier(err, mag, abs_thresh, rel_thresh)


# ----------------------------------------------------------------------------------------------
# Devkit interpolation of missing estimates
# ----------------------------------------------------------------------------------------------
def kitti_interpolate_background(values: ArrayLike, valid: ArrayLike) -> Tuple[torch.Tensor, torch.Tensor]:
    """Fills invalid estimates like the devkit's ``interpolateBackground`` (disparity and flow).

    Per row, a gap between two valid pixels takes the smaller (background) of the two neighbours,
    per channel; gaps touching the left / right border take the nearest valid value. Then, per
    column, rows above the first / below the last non-empty row are filled from it. Empty rows
    between non-empty rows stay invalid, as in the devkit. Vectorised (cumulative max/min of valid
    indices), no Python loop over pixels.

    Args: values [B, C, H, W] (or a single [H, W] / [H, W, 2] image), valid [B, 1, H, W].
    Returns (filled [B, C, H, W], filled_valid [B, 1, H, W] bool).
    """
    t = _to_tensor(values)
    if t.dim() == 2:
        channels = 1
    elif t.dim() == 3:
        channels = 2 if (t.shape[-1] == 2 and t.shape[0] != 2) else t.shape[0]
    elif t.dim() == 4:
        channels = t.shape[1]
    else:
        raise ValueError(f"values must be [B, C, H, W], got {tuple(t.shape)}")
    x = _float(_as_map(t, channels, "values"))
    v = _as_map(valid, 1, "valid").to(x.device).bool()
    _check_same(x, v, "values", "valid")
    b, c, h, w = x.shape

    # --- rows -------------------------------------------------------------------------------
    idx = torch.arange(w, device=x.device).view(1, 1, 1, w).expand(b, 1, h, w)
    prev = torch.cummax(torch.where(v, idx, torch.full_like(idx, -1)), dim=-1).values
    nxt = torch.flip(torch.cummin(torch.flip(torch.where(v, idx, torch.full_like(idx, w)), [-1]), dim=-1).values, [-1])
    has_prev, has_next = prev >= 0, nxt < w
    xp = torch.gather(x, -1, prev.clamp(0, w - 1).expand(b, c, h, w))
    xn = torch.gather(x, -1, nxt.clamp(0, w - 1).expand(b, c, h, w))
    fill = torch.where(has_prev & has_next, torch.minimum(xp, xn), torch.where(has_next, xn, xp))
    out = torch.where(v, x, torch.where(has_prev | has_next, fill, x))
    row_ok = v.any(-1, keepdim=True)  # [B, 1, H, 1]; a row with any valid pixel is now full

    # --- columns: extrapolate to the top and the bottom only ---------------------------------
    ridx = torch.arange(h, device=x.device).view(1, 1, h, 1).expand(b, 1, h, 1)
    rprev = torch.cummax(torch.where(row_ok, ridx, torch.full_like(ridx, -1)), dim=-2).values
    rnext = torch.flip(torch.cummin(torch.flip(torch.where(row_ok, ridx, torch.full_like(ridx, h)), [-2]), dim=-2).values, [-2])
    top = (rprev < 0) & (rnext < h)      # above the first non-empty row
    bottom = (rnext >= h) & (rprev >= 0)  # below the last non-empty row
    src = torch.where(top, rnext, rprev).clamp(0, h - 1).expand(b, c, h, w)
    rows_filled = torch.gather(out, -2, src)
    extra = (top | bottom) & ~row_ok
    out = torch.where(extra, rows_filled, out)
    new_valid = (row_ok | extra).expand(b, 1, h, w)
    return out, new_valid.clone()


# ----------------------------------------------------------------------------------------------
# Per-image counts
# ----------------------------------------------------------------------------------------------
def _prepare_estimate(est: torch.Tensor, est_valid: Optional[ArrayLike]) -> torch.Tensor:
    if est_valid is None:
        return est
    filled, ok = kitti_interpolate_background(est, est_valid)
    # Pixels the interpolation cannot reach (an empty row between non-empty ones, or an empty
    # estimate) get the value 0, what decoding an empty PNG pixel gives.
    return torch.where(ok, filled, torch.zeros_like(filled))


def kitti_sceneflow_counts(
    *,
    disp0_est: Optional[ArrayLike] = None,
    disp0_gt: Optional[ArrayLike] = None,
    disp0_valid: Optional[ArrayLike] = None,
    disp0_est_valid: Optional[ArrayLike] = None,
    disp1_est: Optional[ArrayLike] = None,
    disp1_gt: Optional[ArrayLike] = None,
    disp1_valid: Optional[ArrayLike] = None,
    disp1_est_valid: Optional[ArrayLike] = None,
    flow_est: Optional[ArrayLike] = None,
    flow_gt: Optional[ArrayLike] = None,
    flow_valid: Optional[ArrayLike] = None,
    flow_est_valid: Optional[ArrayLike] = None,
    obj_map: Optional[ArrayLike] = None,
    abs_thresh: float = ABS_THRESH,
    rel_thresh: float = REL_THRESH,
) -> Dict[str, torch.Tensor]:
    """Per-image outlier and valid-pixel counts.

    Any subset of D1 (disp0_*), D2 (disp1_*) and Fl (flow_*) can be given; SF is computed when all
    three are. Disparity GT validity defaults to ``gt > 0`` (the KITTI format); ``flow_valid`` is
    required with ``flow_gt`` (KITTI stores it as a separate channel). ``*_est_valid``: see the
    module docstring.

    Returns int64 [B] tensors ``{q}_{r}_outliers`` and ``{q}_{r}_pixels`` for each evaluated
    quantity q in (d1, d2, fl, sf) and region r in ("all",) or ("all", "bg", "fg") when an
    ``obj_map`` is given, plus float64 [B] ``fl_{r}_epe_sum`` (sum of end-point errors over the
    valid flow pixels; its denominator is ``fl_{r}_pixels``).
    """
    outl: Dict[str, torch.Tensor] = {}
    gt_ok: Dict[str, torch.Tensor] = {}
    epe: Optional[torch.Tensor] = None
    ref: Optional[torch.Tensor] = None

    for q, est, gt, gvalid, evalid in (("d1", disp0_est, disp0_gt, disp0_valid, disp0_est_valid),
                                       ("d2", disp1_est, disp1_gt, disp1_valid, disp1_est_valid)):
        if est is None and gt is None:
            continue
        if est is None or gt is None:
            raise ValueError(f"{q}: both the estimate and the ground truth are needed")
        e = _float(_as_map(est, 1, f"{q} estimate"))
        g = _float(_as_map(gt, 1, f"{q} ground truth")).to(device=e.device, dtype=e.dtype)
        _check_same(e, g, f"{q} estimate", f"{q} ground truth")
        ok = (g > 0) if gvalid is None else _as_map(gvalid, 1, f"{q} valid").to(e.device).bool()
        _check_same(ok, g, f"{q} valid", f"{q} ground truth")
        e = _prepare_estimate(e, evalid)
        outl[q] = disparity_outliers(e, g, abs_thresh, rel_thresh)
        gt_ok[q] = ok
        ref = g

    if flow_est is not None or flow_gt is not None:
        if flow_est is None or flow_gt is None:
            raise ValueError("fl: both the flow estimate and the flow ground truth are needed")
        if flow_valid is None:
            raise ValueError("flow_valid is required with flow_gt (the KITTI flow GT has an explicit valid channel)")
        e = _float(_as_map(flow_est, 2, "flow_est"))
        g = _float(_as_map(flow_gt, 2, "flow_gt")).to(device=e.device, dtype=e.dtype)
        _check_same(e, g, "flow_est", "flow_gt")
        ok = _as_map(flow_valid, 1, "flow_valid").to(e.device).bool()
        _check_same(ok, g, "flow_valid", "flow_gt")
        e = _prepare_estimate(e, flow_est_valid)
        epe = flow_end_point_error(e, g)
        outl["fl"] = _outlier(epe, torch.linalg.vector_norm(g, dim=1, keepdim=True), abs_thresh, rel_thresh)
        gt_ok["fl"] = ok
        ref = g

    if ref is None:
        raise ValueError("nothing to evaluate: give at least one of disp0, disp1 or flow estimate + ground truth")
    shapes = {k: (tuple(v.shape[:1]), tuple(v.shape[-2:])) for k, v in gt_ok.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"ground-truth maps disagree in batch size or image size: {shapes}")
    device = ref.device

    if all(q in outl for q in ("d1", "d2", "fl")):
        outl["sf"] = outl["d1"] | outl["d2"] | outl["fl"]
        gt_ok["sf"] = gt_ok["d1"] & gt_ok["d2"] & gt_ok["fl"]

    regions: Dict[str, Optional[torch.Tensor]] = {"all": None}
    if obj_map is not None:
        om = _as_map(obj_map, 1, "obj_map").to(device)
        _check_same(om, ref, "obj_map", "ground truth")
        regions["bg"] = om == 0
        regions["fg"] = om > 0

    out: Dict[str, torch.Tensor] = {}
    for q in QUANTITIES:
        if q not in outl:
            continue
        for r, rmask in regions.items():
            sel = gt_ok[q] if rmask is None else gt_ok[q] & rmask
            out[f"{q}_{r}_outliers"] = (outl[q] & sel).flatten(1).sum(1).cpu()
            out[f"{q}_{r}_pixels"] = sel.flatten(1).sum(1).cpu()
            if q == "fl":
                # where(): an error at an invalid pixel (possibly NaN) must not leak into the sum
                out[f"fl_{r}_epe_sum"] = torch.where(sel, epe, torch.zeros_like(epe)).flatten(1).sum(1, dtype=torch.float64).cpu()
    return out


def kitti_sceneflow_percentages(counts: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Per-image percentages from ``kitti_sceneflow_counts``: ``{q}_{r}`` = 100 * outliers / pixels and
    ``epe_{r}`` = EPE sum / pixels, float64 [B], NaN where an image has no valid pixel."""
    res: Dict[str, torch.Tensor] = {}
    for key, val in counts.items():
        if key.endswith("_outliers"):
            base = key[: -len("_outliers")]
            pix = counts[base + "_pixels"].to(torch.float64)
            pct = 100.0 * val.to(torch.float64) / pix.clamp(min=1.0)
            res[base] = torch.where(pix > 0, pct, torch.full_like(pct, float("nan")))
        elif key.endswith("_epe_sum"):
            r = key[len("fl_"): -len("_epe_sum")]
            pix = counts[f"fl_{r}_pixels"].to(torch.float64)
            e = val / pix.clamp(min=1.0)
            res[f"epe_{r}"] = torch.where(pix > 0, e, torch.full_like(e, float("nan")))
    return res


# ----------------------------------------------------------------------------------------------
# Depth from disparity
# ----------------------------------------------------------------------------------------------
def _per_batch(value: Union[float, ArrayLike], b: int, like: torch.Tensor, name: str) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device).flatten()
    if t.numel() == 1:
        t = t.expand(b)
    if t.numel() != b:
        raise ValueError(f"{name} must be a scalar or have one value per image ({b}), got {t.numel()}")
    return t.view(b, 1, 1, 1)


def disparity_depth_errors(
    disp_est: ArrayLike,
    disp_gt: ArrayLike,
    focal_length: Union[float, ArrayLike],
    baseline: Union[float, ArrayLike],
    valid: Optional[ArrayLike] = None,
    min_depth: Optional[float] = 1e-3,
    max_depth: Optional[float] = 80.0,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Depth metrics (METRIC_NAMES) per image on the valid GT-disparity pixels.

    depth = focal_length * baseline / disparity (focal in pixels at the GT resolution, baseline in
    metres; each a scalar or one value per image). The predicted depth is clamped to
    [min_depth, max_depth] (as multi-mono-sf does; None = no clamp; non-positive predicted
    disparities give the max depth); the GT depth is not. Valid defaults to ``disp_gt > 0``.
    Returns (metrics float64 [B, 7] with NaN for images without valid pixels, counts int64 [B]).
    """
    e = _float(_as_map(disp_est, 1, "disp_est"))
    g = _float(_as_map(disp_gt, 1, "disp_gt")).to(device=e.device, dtype=e.dtype)
    _check_same(e, g, "disp_est", "disp_gt")
    ok = (g > 0) if valid is None else _as_map(valid, 1, "valid").to(e.device).bool() & (g > 0)
    b = g.shape[0]
    fb = _per_batch(focal_length, b, e, "focal_length") * _per_batch(baseline, b, e, "baseline")
    gt_depth = fb / torch.where(ok, g, torch.ones_like(g))
    pred_depth = torch.where(e > 0, fb / torch.where(e > 0, e, torch.ones_like(e)), torch.full_like(e, float("inf")))
    lo = 1e-6 if min_depth is None else max(float(min_depth), 1e-6)
    hi = float("inf") if max_depth is None else float(max_depth)
    pred_depth = pred_depth.clamp(lo, hi)
    metrics = _masked_errors(pred_depth.flatten(1), gt_depth.flatten(1), ok.flatten(1))
    return metrics, ok.flatten(1).sum(1)


# ----------------------------------------------------------------------------------------------
# Accumulator
# ----------------------------------------------------------------------------------------------
def _state_keys() -> List[str]:
    keys = ["num_images", "obj_images"]
    for q in QUANTITIES:
        keys.append(f"{q}_images")
        for r in REGIONS:
            keys += [f"{q}_{r}_outliers", f"{q}_{r}_pixels"]
    keys += [f"fl_{r}_epe_sum" for r in REGIONS]
    keys += [f"depth_{m}_sum" for m in METRIC_NAMES] + ["depth_images"]
    return keys


_STATE_KEYS = _state_keys()
_STATE_INDEX = {k: i for i, k in enumerate(_STATE_KEYS)}


class KittiSceneFlowAccumulator:
    """Dataset-level KITTI 2015 scene flow figures with the benchmark's denominators.

    ``compute()`` returns percentages ``{q}_{r}`` = 100 * sum of outliers / sum of valid pixels
    over all images (q in d1, d2, fl, sf; r in all, and bg / fg when every image came with an
    object map), ``epe_{r}`` = sum of end-point errors / sum of valid flow pixels, and, when a focal
    length and baseline were given, the depth metrics (``abs_rel``, ``sq_rel``, ...) on the valid
    disp_0 pixels: the mean per image, averaged over images (as multi-mono-sf's d_abs / d_sq).

    The whole state is one float64 vector (``state()["sums"]``) that can be summed across DDP ranks
    (``merge`` or ``sync_distributed``).
    """

    def __init__(self, baseline: Optional[float] = None, min_depth: Optional[float] = 1e-3,
                 max_depth: Optional[float] = 80.0, abs_thresh: float = ABS_THRESH,
                 rel_thresh: float = REL_THRESH) -> None:
        self.baseline = baseline
        self.min_depth = min_depth
        self.max_depth = max_depth
        self.abs_thresh = float(abs_thresh)
        self.rel_thresh = float(rel_thresh)
        self.reset()

    def reset(self) -> None:
        self._sums = torch.zeros(len(_STATE_KEYS), dtype=torch.float64)

    def _add(self, key: str, value) -> None:
        self._sums[_STATE_INDEX[key]] += float(value)

    def state(self) -> Dict[str, object]:
        return {"sums": self._sums.clone(), "keys": list(_STATE_KEYS)}

    def load_state(self, state: Dict[str, object]) -> None:
        self._sums = torch.as_tensor(state["sums"], dtype=torch.float64).clone()

    def merge(self, other: Union["KittiSceneFlowAccumulator", Dict[str, object]]) -> None:
        st = other.state() if isinstance(other, KittiSceneFlowAccumulator) else other
        self._sums += torch.as_tensor(st["sums"], dtype=torch.float64).cpu()

    def sync_distributed(self, group=None) -> None:
        """All-reduces the state across ranks in place (no-op without torch.distributed)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        device = torch.device("cpu")
        if dist.get_backend(group) == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        t = self._sums.to(device)
        dist.all_reduce(t, group=group)
        self._sums = t.cpu()

    @torch.no_grad()
    def update(
        self,
        *,
        disp0_est=None, disp0_gt=None, disp0_valid=None, disp0_est_valid=None,
        disp1_est=None, disp1_gt=None, disp1_valid=None, disp1_est_valid=None,
        flow_est=None, flow_gt=None, flow_valid=None, flow_est_valid=None,
        obj_map=None,
        focal_length: Optional[Union[float, ArrayLike]] = None,
        baseline: Optional[Union[float, ArrayLike]] = None,
    ) -> Dict[str, torch.Tensor]:
        """Adds a batch (same arguments as ``kitti_sceneflow_counts``).

        ``focal_length`` (pixels, scalar or [B]) and ``baseline`` (metres; defaults to the
        constructor's) enable the depth metrics on disp_0. Returns the per-image counts and
        percentages (merged dict) for logging.
        """
        counts = kitti_sceneflow_counts(
            disp0_est=disp0_est, disp0_gt=disp0_gt, disp0_valid=disp0_valid, disp0_est_valid=disp0_est_valid,
            disp1_est=disp1_est, disp1_gt=disp1_gt, disp1_valid=disp1_valid, disp1_est_valid=disp1_est_valid,
            flow_est=flow_est, flow_gt=flow_gt, flow_valid=flow_valid, flow_est_valid=flow_est_valid,
            obj_map=obj_map, abs_thresh=self.abs_thresh, rel_thresh=self.rel_thresh)
        b = next(iter(counts.values())).shape[0]
        self._add("num_images", b)
        if obj_map is not None:
            self._add("obj_images", b)
        for q in QUANTITIES:
            if f"{q}_all_pixels" in counts:
                self._add(f"{q}_images", b)
        for key, val in counts.items():
            self._add(key, val.to(torch.float64).sum())

        result: Dict[str, torch.Tensor] = dict(counts)
        result.update(kitti_sceneflow_percentages(counts))

        baseline = self.baseline if baseline is None else baseline
        if focal_length is not None and baseline is not None and disp0_est is not None:
            d0 = _as_map(disp0_est, 1, "disp0_est")
            if disp0_est_valid is not None:
                d0 = _prepare_estimate(_float(d0), disp0_est_valid)
            metrics, n = disparity_depth_errors(d0, disp0_gt, focal_length, baseline, valid=disp0_valid,
                                                min_depth=self.min_depth, max_depth=self.max_depth)
            metrics, n = metrics.cpu(), n.cpu()
            has = n > 0
            for k, m in enumerate(METRIC_NAMES):
                self._add(f"depth_{m}_sum", metrics[has, k].sum())
                result[m] = metrics[:, k]
            self._add("depth_images", has.sum())
        return result

    def totals(self) -> Dict[str, float]:
        """The raw summed state as a dict of floats."""
        return {k: float(self._sums[i]) for k, i in _STATE_INDEX.items()}

    def compute(self) -> Dict[str, float]:
        s = self.totals()
        out: Dict[str, float] = {"num_images": int(s["num_images"])}
        n_img = s["num_images"]
        regions = ["all"] + (["bg", "fg"] if n_img > 0 and s["obj_images"] == n_img else [])
        for q in QUANTITIES:
            if s[f"{q}_images"] == 0:
                continue
            for r in regions:
                pix = s[f"{q}_{r}_pixels"]
                out[f"{q}_{r}"] = 100.0 * s[f"{q}_{r}_outliers"] / pix if pix > 0 else float("nan")
        if s["fl_images"] > 0:
            for r in regions:
                pix = s[f"fl_{r}_pixels"]
                out[f"epe_{r}"] = s[f"fl_{r}_epe_sum"] / pix if pix > 0 else float("nan")
        if s["depth_images"] > 0:
            for m in METRIC_NAMES:
                out[m] = s[f"depth_{m}_sum"] / s["depth_images"]
        return out

    def to_dict(self) -> Dict[str, object]:
        """JSON-ready: the figures (NaN -> None), the thresholds and the raw totals."""
        res = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in self.compute().items()}
        return {"metrics": res, "abs_thresh": self.abs_thresh, "rel_thresh": self.rel_thresh, "totals": self.totals()}

    def format_table(self, precision: int = 2) -> str:
        """Benchmark-style table: rows D1, D2, Fl, SF; columns bg / fg / all (%), then EPE and depth."""
        res = self.compute()
        regions = [r for r in ("bg", "fg", "all") if any(f"{q}_{r}" in res for q in QUANTITIES)]
        lines = [f"{'':<4} | " + " | ".join(f"{r + ' %':>8}" for r in regions)]
        lines.append("-" * len(lines[0]))
        for q, label in zip(QUANTITIES, ("D1", "D2", "Fl", "SF")):
            if f"{q}_all" not in res:
                continue
            lines.append(f"{label:<4} | " + " | ".join(f"{res.get(f'{q}_{r}', float('nan')):>8.{precision}f}" for r in regions))
        extra = []
        if "epe_all" in res:
            extra.append(f"EPE {res['epe_all']:.3f} px")
        for m in ("abs_rel", "sq_rel"):
            if m in res:
                extra.append(f"{m} {res[m]:.4f}")
        extra.append(f"images {res['num_images']}")
        lines.append(" | ".join(extra))
        return "\n".join(lines)
