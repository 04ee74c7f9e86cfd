"""Depth evaluation metrics: the standard seven error measures, batched over images and cameras.

Protocol (switchable through the arguments, never hard-coded to a dataset):

1. The predicted depth ``[B, N, 1, H, W]`` is resized bilinearly to the ground-truth size
   ``[B, N, 1, Hg, Wg]`` (``align_corners=False`` by default, i.e. what ``cv2.resize`` and
   monodepth2 do; pass ``align_corners=True`` to match code that resizes that way).
2. A pixel is valid when ``min_depth < gt < max_depth``, the optional evaluation mask is non-zero
   (resized with nearest neighbour to the GT size if needed) and it lies inside the optional crop
   (``crop="garg"`` is the KITTI Garg crop, or ``(top, bottom, left, right)`` as fractions of the
   GT height / width; rows ``[int(top*H), int(bottom*H))``, columns likewise).
3. ``"metric"`` mode: the resized prediction clamped to ``[min_depth, max_depth]``.
   ``"median"`` mode: per image *and* camera, ``s = median(gt[valid]) / median(pred[valid])``
   computed on the raw resized prediction, then ``clamp(pred * s, min_depth, max_depth)``.
   The median of an even number of values is the mean of the two middle ones (numpy's and
   monodepth2's convention). VFDepth's released code instead pools the pixels of a whole batch per
   camera, takes ``torch.median`` (the lower middle value) of the *clamped* prediction and averages
   over batches; we scale per image and average over images, so the result does not depend on the
   batch size.
4. The lower clamp is at least ``1e-6`` even when ``min_depth = 0`` (DDAD caps are 0-200 m), so that
   ``log`` and the ratio ``gt / pred`` stay finite.

An image/camera pair with no valid pixel yields NaN metrics and is skipped by the accumulator; no
division by zero happens anywhere. A NaN coming from a bad prediction (NaN depth) is *not*
skipped: it propagates, so that a broken model cannot hide.

Everything runs on the device of the inputs; accumulation is in float64 on the CPU.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

__all__ = [
    "METRIC_NAMES",
    "MODES",
    "GARG_CROP",
    "EIGEN_CROP",
    "compute_depth_errors",
    "masked_median",
    "crop_mask",
    "depth_metrics_per_image",
    "resolve_modes",
    "DepthMetricsAccumulator",
]

METRIC_NAMES: Tuple[str, ...] = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")
MODES: Tuple[str, ...] = ("metric", "median")

#: KITTI Garg crop as (top, bottom, left, right) fractions of the image height / width.
#: For 375x1242 this is rows 153:371 and columns 44:1197.
GARG_CROP: Tuple[float, float, float, float] = (0.40810811, 0.99189189, 0.03594771, 0.96405229)
#: Eigen crop (same convention), used by some KITTI evaluations.
EIGEN_CROP: Tuple[float, float, float, float] = (0.3324324, 0.91351351, 0.0359477, 0.96405229)

_NAMED_CROPS = {"garg": GARG_CROP, "eigen": EIGEN_CROP}
_MIN_PRED = 1e-6

CropSpec = Union[None, str, Sequence[float]]


# ----------------------------------------------------------------------------------------------
# Core, on flattened pixels
# ----------------------------------------------------------------------------------------------
def _segment_errors(pred: torch.Tensor, gt: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Seven metrics per item from 1-D tensors of valid pixels stored item-major.

    ``counts`` [M]: number of pixels of each item; item i owns a contiguous slice. ``pred`` and
    ``gt`` must be > 0. Per-pixel terms are computed once, vectorised, and summed per slice in
    float64 (a loop over the M = B*N items, not over pixels), so only valid pixels are touched:
    cheap for sparse lidar GT. Returns float64 [M, 7]; NaN for items without pixels.
    """
    dev = pred.device
    sizes = counts.tolist()  # one host sync
    count = counts.to(device=dev, dtype=torch.float64)
    g = gt.to(pred.dtype)
    p = pred
    diff = p - g
    sq = diff * diff
    ratio = g / p
    thresh = torch.maximum(ratio, 1.0 / ratio)
    terms = (
        diff.abs() / g,
        sq / g,
        sq,
        torch.log(ratio) ** 2,  # (log g - log p)^2
        thresh < 1.25,
        thresh < 1.25 ** 2,
        thresh < 1.25 ** 3,
    )
    zero = torch.zeros((), dtype=torch.float64, device=dev)
    cols = []
    for term in terms:
        sums = [seg.sum(dtype=torch.float64) if seg.numel() else zero for seg in term.split(sizes)]
        cols.append(torch.stack(sums) / count.clamp(min=1.0))
    out = torch.stack(cols, dim=-1)
    out[:, 2] = out[:, 2].sqrt()
    out[:, 3] = out[:, 3].sqrt()
    return torch.where((count > 0).unsqueeze(-1), out, torch.full_like(out, float("nan")))


def _gather_valid(x: torch.Tensor, valid: torch.Tensor):
    """Valid entries of x [M, P] (item-major), their item index [K] and the counts [M]."""
    sel = valid.reshape(-1).nonzero().squeeze(1)
    return x.reshape(-1)[sel], sel // x.shape[-1], valid.sum(-1)


def _masked_errors(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Seven metrics over the last dimension of [..., P] tensors, counting only ``valid`` pixels
    (``pred`` and ``gt`` > 0 there). Returns float64 [..., 7], NaN where an item has no valid pixel."""
    lead = pred.shape[:-1]
    p2, g2, v2 = pred.reshape(-1, pred.shape[-1]), gt.reshape(-1, gt.shape[-1]), valid.reshape(-1, valid.shape[-1]).bool()
    pv, _, counts = _gather_valid(p2, v2)
    gv = g2.reshape(-1)[v2.reshape(-1)]
    return _segment_errors(pv, gv, counts).reshape(*lead, len(METRIC_NAMES))


def compute_depth_errors(pred: torch.Tensor, gt: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Standard depth errors on 1-D tensors of valid pixels (no masking, no clamping).

    abs_rel = mean(|p-g|/g), sq_rel = mean((p-g)^2/g), rmse = sqrt(mean((p-g)^2)),
    rmse_log = sqrt(mean((log g - log p)^2)), a_k = mean(max(g/p, p/g) < 1.25**k).
    Returns a dict of 0-dim float64 tensors (NaN for empty input).
    """
    pred = torch.as_tensor(pred)
    gt = torch.as_tensor(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt must have the same shape, got {tuple(pred.shape)} and {tuple(gt.shape)}")
    if not pred.is_floating_point():
        pred = pred.float()
    pred = pred.reshape(-1)
    gt = gt.reshape(-1).to(pred.dtype)
    counts = torch.tensor([pred.shape[0]], device=pred.device)
    values = _segment_errors(pred, gt, counts)[0]
    return {name: values[i] for i, name in enumerate(METRIC_NAMES)}


def _segment_median(values: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Median per item of 1-D ``values`` stored item-major (``counts`` [M] values per item).

    Each item's values are a contiguous slice, so this loops over the M items (B*N image/camera
    pairs: a handful) and selects the middle order statistics with ``kthvalue`` (linear time, no
    full sort). An even count gives the mean of the two middle values.
    """
    m = counts.shape[0]
    result = torch.full((m,), float("nan"), dtype=values.dtype, device=values.device)
    start = 0
    for i, c in enumerate(counts.tolist()):  # one host sync for all items
        if c > 0:
            seg = values[start:start + c]
            lo = torch.kthvalue(seg, (c + 1) // 2).values
            hi = lo if c % 2 == 1 else torch.kthvalue(seg, c // 2 + 1).values
            result[i] = 0.5 * (lo + hi)
        start += c
    return result


def masked_median(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Median over the last dimension of the entries where ``valid`` is true.

    The valid values of all items are gathered item-major (one vectorised gather), then a loop
    over the items (B*N, small) selects the middle order statistics with ``kthvalue``; no per-pixel
    loop and no full sort. An even count gives the mean of the two middle values (numpy's
    convention). Items without valid entries give NaN. Returns [...] in x's dtype.
    """
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    v2 = valid.reshape(-1, valid.shape[-1]).bool()
    values, _, counts = _gather_valid(x2, v2)
    return _segment_median(values, counts).reshape(lead)


def _resolve_crop(crop: CropSpec) -> Optional[Tuple[float, float, float, float]]:
    if crop is None:
        return None
    if isinstance(crop, str):
        key = crop.lower()
        if key in ("none", ""):
            return None
        if key not in _NAMED_CROPS:
            raise ValueError(f"unknown crop {crop!r}; expected one of {sorted(_NAMED_CROPS)} or (top, bottom, left, right) fractions")
        return _NAMED_CROPS[key]
    vals = tuple(float(c) for c in crop)
    if len(vals) != 4:
        raise ValueError(f"crop must be (top, bottom, left, right) fractions, got {crop!r}")
    top, bottom, left, right = vals
    if not (0.0 <= top < bottom <= 1.0 and 0.0 <= left < right <= 1.0):
        raise ValueError(f"crop fractions must satisfy 0 <= top < bottom <= 1 and 0 <= left < right <= 1, got {crop!r}")
    return vals


def crop_mask(height: int, width: int, crop: CropSpec, device=None) -> Optional[torch.Tensor]:
    """Boolean [height, width] mask of the crop (``None`` if no crop).

    Rows ``[int(top*H), int(bottom*H))`` and columns ``[int(left*W), int(right*W))``, as the
    monodepth2 / packnet-sfm Garg crop (``np.array(...).astype(np.int32)``).
    """
    fr = _resolve_crop(crop)
    if fr is None:
        return None
    top, bottom, left, right = fr
    r0, r1 = int(top * height), int(bottom * height)
    c0, c1 = int(left * width), int(right * width)
    m = torch.zeros(height, width, dtype=torch.bool, device=device)
    m[r0:r1, c0:c1] = True
    return m


def _as_bn1hw(x: torch.Tensor, name: str) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.dim() == 5:
        if x.shape[2] != 1:
            raise ValueError(f"{name} must be [B, N, 1, H, W], got {tuple(x.shape)}")
        return x
    if x.dim() == 4 and x.shape[1] == 1:  # single camera [B, 1, H, W]
        return x.unsqueeze(1)
    raise ValueError(f"{name} must be [B, N, 1, H, W] (or [B, 1, H, W] for one camera), got {tuple(x.shape)}")


def depth_metrics_per_image(
    pred: torch.Tensor,
    gt: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
    *,
    min_depth: float = 1e-3,
    max_depth: float = 80.0,
    crop: CropSpec = None,
    align_corners: bool = False,
) -> Dict[str, torch.Tensor]:
    """Metrics for every image and camera of a batch.

    Args:
        pred: predicted depth [B, N, 1, H, W] (metres; any size).
        gt: ground-truth depth [B, N, 1, Hg, Wg], 0 = no measurement.
        mask: optional evaluation mask [B, N, 1, Hm, Wm] (non-zero = evaluate), broadcastable over
            B and N (size 1 there); resized with nearest neighbour to the GT size if needed.
        min_depth, max_depth: caps (valid = min < gt < max; predictions clamped to [min, max]).
        crop: None, "garg", "eigen", or (top, bottom, left, right) fractions.
        align_corners: passed to the bilinear resize of the prediction.

    Returns a dict of tensors on the input device:
        "metric", "median": float64 [B, N, 7] (order METRIC_NAMES; NaN where no valid pixel),
        "scale": float64 [B, N] median-scaling ratio median(gt)/median(pred) (NaN if no valid pixel),
        "num_valid": int64 [B, N].
    """
    pred = _as_bn1hw(pred, "pred")
    gt = _as_bn1hw(gt, "gt")
    if not pred.is_floating_point() or pred.dtype in (torch.float16, torch.bfloat16):
        pred = pred.float()  # half precision (AMP outputs) is evaluated in float32
    gt = gt.to(device=pred.device, dtype=pred.dtype)
    if pred.shape[:2] != gt.shape[:2]:
        raise ValueError(f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} disagree on batch / camera dimensions")
    if not max_depth > min_depth:
        raise ValueError(f"max_depth ({max_depth}) must exceed min_depth ({min_depth})")
    b, n = gt.shape[:2]
    hg, wg = gt.shape[-2:]

    if pred.shape[-2:] != (hg, wg):
        p = F.interpolate(pred.flatten(0, 1), size=(hg, wg), mode="bilinear", align_corners=align_corners)
        pred = p.view(b, n, 1, hg, wg)

    valid = (gt > min_depth) & (gt < max_depth)
    if mask is not None:
        m = _as_bn1hw(mask, "mask").to(pred.device)
        if m.shape[0] not in (1, b) or m.shape[1] not in (1, n):
            raise ValueError(f"mask {tuple(m.shape)} does not match batch/cameras of gt {tuple(gt.shape)}")
        if m.shape[-2:] != (hg, wg):
            mb, mn = m.shape[:2]
            m = F.interpolate(m.flatten(0, 1).float(), size=(hg, wg), mode="nearest").view(mb, mn, 1, hg, wg)
        valid = valid & (m != 0)
    cm = crop_mask(hg, wg, crop, device=pred.device)
    if cm is not None:
        valid = valid & cm

    lo = max(float(min_depth), _MIN_PRED)
    hi = float(max_depth)
    # Only the valid pixels are gathered (item-major, item = b * N + n) and reduced per item.
    vf = valid.reshape(b * n, -1)
    pv, item, counts = _gather_valid(pred.reshape(b * n, -1), vf)
    gv = gt.reshape(-1)[vf.reshape(-1)]

    metric = _segment_errors(pv.clamp(lo, hi), gv, counts)
    scale = _segment_median(gv, counts).to(torch.float64) / _segment_median(pv, counts).to(torch.float64)
    scaled = (pv * scale.to(pv.dtype)[item]).clamp(lo, hi)
    median = _segment_errors(scaled, gv, counts)
    return {"metric": metric.view(b, n, -1), "median": median.view(b, n, -1), "scale": scale.view(b, n),
            "num_valid": counts.view(b, n)}


# ----------------------------------------------------------------------------------------------
# Accumulator
# ----------------------------------------------------------------------------------------------
def resolve_modes(modes: Optional[Sequence[str]]) -> List[str]:
    """The scaling modes to report (eval.scale_modes) in the given order, once each; None: all of
    MODES. Unknown modes or an empty list are an error: a table without rows would read like a
    model without results."""
    if modes is None:
        return list(MODES)
    chosen = list(dict.fromkeys(modes))
    unknown = [m for m in chosen if m not in MODES]
    if unknown or not chosen:
        raise ValueError(f"scale modes {list(modes)}: choose one or more of {list(MODES)}")
    return chosen


def _nan_to_none(x: float) -> Optional[float]:
    return None if (x is None or not math.isfinite(x)) else float(x)


class DepthMetricsAccumulator:
    """Accumulates per-image, per-camera depth metrics over a dataset.

    The result is the mean over *images* (each image/camera pair with at least one valid pixel
    counts once), so it does not depend on how the dataset is split into batches. The "all" row is
    the mean of the per-camera means (cameras without any valid image excluded), like the
    reference's mean over cameras.

    The state is a handful of tensors (``state()``): ``sums`` [2, N, 7] and ``counts`` [N] can be
    summed across DDP ranks (``all_reduce``); the per-image median-scale ratios ``scales`` [M, N]
    are concatenated (``merge`` / ``sync_distributed``).
    """

    def __init__(
        self,
        camera_names: Optional[Sequence[str]] = None,
        min_depth: float = 1e-3,
        max_depth: float = 80.0,
        crop: CropSpec = None,
        align_corners: bool = False,
    ) -> None:
        self.camera_names: Optional[List[str]] = list(camera_names) if camera_names is not None else None
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        _resolve_crop(crop)  # validate early
        self.crop = crop
        self.align_corners = bool(align_corners)
        self.reset()

    # -- state --------------------------------------------------------------------------------
    def reset(self) -> None:
        n = len(self.camera_names) if self.camera_names is not None else 0
        self._sums = torch.zeros(len(MODES), n, len(METRIC_NAMES), dtype=torch.float64)
        self._counts = torch.zeros(n, dtype=torch.float64)
        self._scales = torch.zeros(0, n, dtype=torch.float64)

    @property
    def num_cameras(self) -> int:
        return int(self._counts.shape[0])

    def _ensure_cameras(self, n: int) -> None:
        if self.num_cameras == n:
            return
        if self.num_cameras == 0 and self._scales.shape[0] == 0:
            self._sums = torch.zeros(len(MODES), n, len(METRIC_NAMES), dtype=torch.float64)
            self._counts = torch.zeros(n, dtype=torch.float64)
            self._scales = torch.zeros(0, n, dtype=torch.float64)
            return
        raise ValueError(f"got {n} cameras but the accumulator holds {self.num_cameras}"
                         + (f" ({self.camera_names})" if self.camera_names else ""))

    def state(self) -> Dict[str, torch.Tensor]:
        """Copies of the state tensors: sums [2, N, 7], counts [N] (sum-reducible), scales [M, N]."""
        return {"sums": self._sums.clone(), "counts": self._counts.clone(), "scales": self._scales.clone()}

    def load_state(self, state: Dict[str, torch.Tensor]) -> None:
        self._sums = state["sums"].detach().to("cpu", torch.float64).clone()
        self._counts = state["counts"].detach().to("cpu", torch.float64).clone()
        self._scales = state["scales"].detach().to("cpu", torch.float64).clone()

    def merge(self, other: Union["DepthMetricsAccumulator", Dict[str, torch.Tensor]]) -> None:
        """Adds another accumulator's state (e.g. from another DDP rank) to this one."""
        st = other.state() if isinstance(other, DepthMetricsAccumulator) else other
        n = int(st["counts"].shape[0])
        if n == 0:
            return
        self._ensure_cameras(n)
        self._sums += st["sums"].to("cpu", torch.float64)
        self._counts += st["counts"].to("cpu", torch.float64)
        self._scales = torch.cat([self._scales, st["scales"].to("cpu", torch.float64)], 0)

    def sync_distributed(self, group=None) -> None:
        """Combines the states of all ranks in place (call on every rank, collectively).

        Does nothing when torch.distributed is not initialised. Sums and counts are all-reduced;
        scale ratios are all-gathered as objects (any backend, including gloo).
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        world = dist.get_world_size(group)
        n_all: List[int] = [0] * world
        dist.all_gather_object(n_all, self.num_cameras, group=group)
        n = max(n_all)
        if n == 0:
            return
        self._ensure_cameras(n)
        device = torch.device("cpu")
        if dist.get_backend(group) == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        packed = torch.cat([self._sums.flatten(), self._counts]).to(device)
        dist.all_reduce(packed, group=group)
        packed = packed.cpu()
        k = self._sums.numel()
        self._sums = packed[:k].view_as(self._sums).clone()
        self._counts = packed[k:].clone()
        gathered: List[Optional[torch.Tensor]] = [None] * world
        dist.all_gather_object(gathered, self._scales, group=group)
        self._scales = torch.cat([g.reshape(-1, n) for g in gathered if g is not None and g.numel() > 0]
                                 or [torch.zeros(0, n, dtype=torch.float64)], 0)

    # -- update -------------------------------------------------------------------------------
    @torch.no_grad()
    def update(self, pred: torch.Tensor, gt: torch.Tensor, mask: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Adds one batch: pred [B, N, 1, H, W], gt [B, N, 1, Hg, Wg] (0 = invalid), mask optional.

        Returns the per-image results of ``depth_metrics_per_image`` for logging.
        """
        res = depth_metrics_per_image(pred, gt, mask, min_depth=self.min_depth, max_depth=self.max_depth,
                                      crop=self.crop, align_corners=self.align_corners)
        b, n = res["num_valid"].shape
        self._ensure_cameras(n)
        has = (res["num_valid"] > 0).cpu()  # [B, N]
        for i, mode in enumerate(MODES):
            vals = res[mode].detach().cpu()
            self._sums[i] += torch.where(has.unsqueeze(-1), vals, torch.zeros_like(vals)).sum(0)
        self._counts += has.to(torch.float64).sum(0)
        scales = res["scale"].detach().cpu()
        self._scales = torch.cat([self._scales, torch.where(has, scales, torch.full_like(scales, float("nan")))], 0)
        return res

    # -- results ------------------------------------------------------------------------------
    def _names(self) -> List[str]:
        if self.camera_names is not None:
            return list(self.camera_names)
        return [f"cam{i}" for i in range(self.num_cameras)]

    def compute(self) -> Dict[str, object]:
        """Returns ``{"metric": {...}, "median": {...}, "scale": {...}, "num_images": {...}}``.

        For each mode: ``per_camera`` [N, 7] float64 tensor (NaN for a camera with no valid
        image), ``all`` [7] (mean over cameras with data) and ``names``. ``scale`` holds per camera
        the median, the population std, and the std of ratio/median (monodepth2's printed figure)
        of the per-image median-scaling ratios, plus the same pooled over all cameras ("all").
        """
        counts = self._counts
        out: Dict[str, object] = {"names": self._names()}
        have = counts > 0
        for i, mode in enumerate(MODES):
            per_cam = self._sums[i] / counts.clamp(min=1.0).unsqueeze(-1)
            per_cam = torch.where(have.unsqueeze(-1), per_cam, torch.full_like(per_cam, float("nan")))
            if bool(have.any()):
                overall = per_cam[have].mean(0)
            else:
                overall = torch.full((len(METRIC_NAMES),), float("nan"), dtype=torch.float64)
            out[mode] = {"per_camera": per_cam, "all": overall}

        def stats(r: torch.Tensor) -> Dict[str, float]:
            r = r[torch.isfinite(r)]
            if r.numel() == 0:
                return {"median": float("nan"), "std": float("nan"), "std_rel": float("nan"), "count": 0}
            med = float(masked_median(r, torch.ones_like(r, dtype=torch.bool)))
            std = float(r.std(correction=0))
            return {"median": med, "std": std, "std_rel": std / med if med != 0 else float("nan"), "count": int(r.numel())}

        names = self._names()
        scale = {name: stats(self._scales[:, j]) for j, name in enumerate(names)}
        scale["all"] = stats(self._scales.flatten())
        out["scale"] = scale
        out["num_images"] = {name: int(counts[j]) for j, name in enumerate(names)}
        return out

    def to_dict(self, modes: Optional[Sequence[str]] = None) -> Dict[str, object]:
        """JSON-ready nested dict (floats, NaN written as None) with a block per mode of `modes`
        (eval.scale_modes; None: all). "scale" (the median-scaling ratios) is always there: it
        says how far the raw prediction is from metric scale, whichever modes are reported."""
        chosen = resolve_modes(modes)
        res = self.compute()
        names = res["names"]
        d: Dict[str, object] = {
            "settings": {"min_depth": self.min_depth, "max_depth": self.max_depth,
                         "crop": self.crop if (self.crop is None or isinstance(self.crop, str)) else list(self.crop),
                         "align_corners": self.align_corners},
            "num_images": res["num_images"],
        }
        for mode in chosen:
            block = res[mode]
            d[mode] = {
                "per_camera": {name: {m: _nan_to_none(float(block["per_camera"][j, k])) for k, m in enumerate(METRIC_NAMES)}
                               for j, name in enumerate(names)},
                "all": {m: _nan_to_none(float(block["all"][k])) for k, m in enumerate(METRIC_NAMES)},
            }
        d["scale"] = {name: {k: (_nan_to_none(v) if isinstance(v, float) else v) for k, v in s.items()}
                      for name, s in res["scale"].items()}
        return d

    def format_table(self, precision: int = 3, modes: Optional[Sequence[str]] = None) -> str:
        """The printed table: for each mode of `modes` (eval.scale_modes; None: all), one row per
        camera plus "all"; then the median-scaling ratios (see to_dict)."""
        chosen = resolve_modes(modes)
        res = self.compute()
        names = list(res["names"]) + ["all"]
        width = max([len(n) for n in names] + [8])
        lines: List[str] = []
        for mode in chosen:
            block = res[mode]
            header = f"{mode:<{width}} | " + " | ".join(f"{m:>8}" for m in METRIC_NAMES)
            lines.append(header)
            lines.append("-" * len(header))
            rows = [block["per_camera"][j] for j in range(len(names) - 1)] + [block["all"]]
            for name, row in zip(names, rows):
                cells = " | ".join(f"{float(v):>8.{precision}f}" for v in row)
                lines.append(f"{name:<{width}} | {cells}")
            lines.append("")
        sc = res["scale"]
        lines.append(f"{'scale':<{width}} | {'median':>8} | {'std':>8} | {'std_rel':>8}")
        for name in names:
            s = sc[name]
            lines.append(f"{name:<{width}} | {s['median']:>8.{precision}f} | {s['std']:>8.{precision}f} | {s['std_rel']:>8.{precision}f}")
        return "\n".join(lines)

    def __str__(self) -> str:  # pragma: no cover - convenience
        return self.format_table()
