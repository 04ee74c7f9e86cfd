"""Pinhole intrinsics and how they follow image resizes, crops and flips.

A pinhole K maps a point (x, y, z) in the OpenCV camera frame to the pixel
u = fx * x / z + s * y / z + cx,  v = fy * y / z + cy,
where integer pixel coordinates are pixel centres (0..W-1).

Every function accepts K as [..., 3, 3] or as the padded [..., 4, 4] form (K in the top-left
block, identity bottom-right) and returns the same shape.  Nothing is hard-coded to a batch
size, device or dtype: scale factors and offsets may be Python numbers or tensors that
broadcast against the leading dimensions of K.

Resize conventions (``convention`` argument):

``"half_pixel"`` (default)
    Exact for a standard image resize (cv2.resize, PIL, ``F.interpolate(align_corners=False)``)
    whose pixel *areas* map onto each other: u' = (u + 0.5) * sx - 0.5, so fx' = fx * sx and
    cx' = (cx + 0.5) * sx - 0.5.  A horizontal flip maps u -> W - 1 - u.
``"reference"``
    What VFDepth and multi-mono-sf do: multiply rows (cx' = cx * sx) and flip with cx' = W - cx.
    Off by half a pixel (times 1 - sx) per resize and one pixel per flip, but it is what their
    released weights were trained with.
``"align_corners"``
    For resizes done with ``align_corners=True``: the corner pixel centres map onto each other,
    u' = u * (W' - 1) / (W - 1).  A flip is the same as for ``"half_pixel"``.
"""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import torch

Number = Union[float, int, torch.Tensor]

CONVENTIONS = ("half_pixel", "reference", "align_corners")


def check_convention(convention: str) -> str:
    """Return ``convention`` if it is one of :data:`CONVENTIONS`, else raise a ValueError."""
    if convention not in CONVENTIONS:
        raise ValueError(
            f"unknown intrinsics convention {convention!r}; allowed values: {', '.join(CONVENTIONS)}"
        )
    return convention


def _check_k(K: torch.Tensor) -> None:
    if K.dim() < 2 or K.shape[-2:] not in ((3, 3), (4, 4)):
        raise ValueError(f"K must have shape [..., 3, 3] or [..., 4, 4], got {tuple(K.shape)}")


def _as_tensor_like(x: Number, like: torch.Tensor) -> torch.Tensor:
    """``x`` as a tensor on ``like``'s device and dtype (a Python number becomes a 0-d tensor)."""
    return torch.as_tensor(x, device=like.device, dtype=like.dtype)


def make_intrinsics(fx: Number, fy: Number, cx: Number, cy: Number, skew: Number = 0.0) -> torch.Tensor:
    """Build K [..., 3, 3] from (broadcastable) focal lengths, principal point and skew, in pixels.

    The device and dtype come from the first tensor argument (default dtype if all are numbers).
    """
    values = (fx, fy, cx, cy, skew)
    ref = next((v for v in values if isinstance(v, torch.Tensor)), None)
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.get_default_dtype()
    device = ref.device if ref is not None else None
    fx, fy, cx, cy, skew = torch.broadcast_tensors(
        *(torch.as_tensor(v, dtype=dtype, device=device) for v in values)
    )
    zero, one = torch.zeros_like(fx), torch.ones_like(fx)
    rows = (
        torch.stack((fx, skew, cx), dim=-1),
        torch.stack((zero, fy, cy), dim=-1),
        torch.stack((zero, zero, one), dim=-1),
    )
    return torch.stack(rows, dim=-2)


def invert_intrinsics(K: torch.Tensor) -> torch.Tensor:
    """Analytic inverse of a pinhole K [..., 3, 3] (or [..., 4, 4]), skew included.

    Maps homogeneous pixels (u, v, 1) to rays (x/z, y/z, 1) in the camera frame.  Cheaper and
    better behaved than ``torch.linalg.inv`` (no LU, exact zeros, works in half precision).
    """
    _check_k(K)
    fx, s, cx = K[..., 0, 0], K[..., 0, 1], K[..., 0, 2]
    fy, cy = K[..., 1, 1], K[..., 1, 2]
    zero, one = torch.zeros_like(fx), torch.ones_like(fx)
    # [[1/fx, -s/(fx fy), (s cy - cx fy)/(fx fy)], [0, 1/fy, -cy/fy], [0, 0, 1]]
    rows = [
        torch.stack((1.0 / fx, -s / (fx * fy), (s * cy - cx * fy) / (fx * fy)), dim=-1),
        torch.stack((zero, 1.0 / fy, -cy / fy), dim=-1),
        torch.stack((zero, zero, one), dim=-1),
    ]
    K_inv = torch.stack(rows, dim=-2)
    if K.shape[-1] == 4:
        K_inv = _embed_4x4(K_inv, K)
    return K_inv


def _embed_4x4(K3: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Pad K3 [..., 3, 3] to [..., 4, 4] with an identity bottom-right block."""
    K4 = torch.eye(4, dtype=K3.dtype, device=K3.device).expand(*K3.shape[:-2], 4, 4).clone()
    K4[..., :3, :3] = K3
    return K4


def apply_pixel_affine(K: torch.Tensor, ax: Number, bx: Number, ay: Number, by: Number) -> torch.Tensor:
    """K of the image whose pixels are u' = ax * u + bx, v' = ay * v + by (in the old pixels).

    This is the one primitive behind scale, crop and flip: it left-multiplies K by the 3x3
    pixel map [[ax, 0, bx], [0, ay, by], [0, 0, 1]].  Because K's third row is (0, 0, 1), the
    offsets only reach cx and cy.  ``ax`` etc. broadcast against K's leading dims.
    """
    _check_k(K)
    ax, bx, ay, by = (_as_tensor_like(x, K) for x in (ax, bx, ay, by))
    row2 = K[..., 2, :]
    row0 = ax[..., None] * K[..., 0, :] + bx[..., None] * row2
    row1 = ay[..., None] * K[..., 1, :] + by[..., None] * row2
    batch = torch.broadcast_shapes(row0.shape[:-1], row1.shape[:-1], K.shape[:-2])
    rows = [r.expand(*batch, K.shape[-1]) for r in (row0, row1)]
    rest = K[..., 2:, :].expand(*batch, K.shape[-2] - 2, K.shape[-1])
    return torch.cat((torch.stack(rows, dim=-2), rest), dim=-2)


def scale_intrinsics(K: torch.Tensor, sx: Number, sy: Number, convention: str = "half_pixel") -> torch.Tensor:
    """K after resizing the image by the size ratios sx = W'/W, sy = H'/H.

    ``"half_pixel"``: cx' = (cx + 0.5) sx - 0.5; ``"reference"``: cx' = cx sx.  The
    ``"align_corners"`` convention depends on the sizes themselves, not only on their ratio:
    use :func:`resize_intrinsics` for it.
    """
    check_convention(convention)
    if convention == "align_corners":
        raise ValueError(
            "scale_intrinsics cannot apply the 'align_corners' convention (it needs the image "
            "sizes, not only their ratio); use resize_intrinsics(K, in_hw, out_hw, 'align_corners')"
        )
    sx, sy = _as_tensor_like(sx, K), _as_tensor_like(sy, K)
    if convention == "half_pixel":
        # Pixel centre u sits at continuous position u + 0.5; scale that, then shift back.
        return apply_pixel_affine(K, sx, 0.5 * sx - 0.5, sy, 0.5 * sy - 0.5)
    return apply_pixel_affine(K, sx, 0.0, sy, 0.0)


def resize_intrinsics(
    K: torch.Tensor,
    in_hw: Sequence[int],
    out_hw: Sequence[int],
    convention: str = "half_pixel",
) -> torch.Tensor:
    """K after resizing an image of size ``in_hw`` = (H, W) to ``out_hw`` = (H', W')."""
    check_convention(convention)
    (h, w), (h2, w2) = in_hw, out_hw
    if convention == "align_corners":
        # Corner pixel centres stay on corner pixel centres: u' = u (W'-1)/(W-1).
        ax = (w2 - 1) / (w - 1) if w > 1 else 1.0
        ay = (h2 - 1) / (h - 1) if h > 1 else 1.0
        return apply_pixel_affine(K, ax, 0.0, ay, 0.0)
    return scale_intrinsics(K, w2 / w, h2 / h, convention)


def crop_intrinsics(K: torch.Tensor, x0: Number, y0: Number) -> torch.Tensor:
    """K after cropping the image so that old pixel (x0, y0) becomes new pixel (0, 0)."""
    return apply_pixel_affine(K, 1.0, -_as_tensor_like(x0, K), 1.0, -_as_tensor_like(y0, K))


def flip_intrinsics(K: torch.Tensor, width: Number, convention: str = "half_pixel") -> torch.Tensor:
    """K of the horizontally flipped image (pixel u -> W - 1 - u), for an image ``width`` wide.

    A flipped image is what a *mirrored* camera sees: a point (x, y, z) appears in the flipped
    image where the point (-x, y, z) projects with the returned K.  fx stays positive (the
    x-axis is mirrored instead), so only cx changes: cx' = W - 1 - cx (``"reference"``:
    W - cx); a skew term changes sign.
    """
    check_convention(convention)
    width = _as_tensor_like(width, K)
    offset = width if convention == "reference" else width - 1.0
    # u' = offset - u on the *image*; with x mirrored, fx keeps its sign and cx' = offset - cx.
    K_flipped = apply_pixel_affine(K, -1.0, offset, 1.0, 0.0)
    sign = torch.ones(K.shape[-1], dtype=K.dtype, device=K.device)
    sign[0] = -1.0
    # Undo the sign flip on the x column (the mirrored x-axis): fx back to positive.
    return K_flipped * sign


def intrinsics_pyramid(
    K: torch.Tensor,
    image_hw: Sequence[int],
    num_scales: int,
    convention: str = "half_pixel",
) -> torch.Tensor:
    """K for each scale s of an image pyramid with sizes (H // 2**s, W // 2**s).

    Args:
        K: [..., 3, 3] (or [..., 4, 4]) for the full-resolution image of size ``image_hw``.
    Returns:
        [..., S, 3, 3] (or [..., S, 4, 4]) with S = ``num_scales``; scale 0 is K itself.
    """
    h, w = image_hw
    levels = [resize_intrinsics(K, (h, w), (h // 2**s, w // 2**s), convention) for s in range(num_scales)]
    return torch.stack(levels, dim=-3)


def image_size_pyramid(image_hw: Sequence[int], num_scales: int) -> Tuple[Tuple[int, int], ...]:
    """The sizes (H // 2**s, W // 2**s) used by :func:`intrinsics_pyramid`."""
    h, w = image_hw
    return tuple((h // 2**s, w // 2**s) for s in range(num_scales))
