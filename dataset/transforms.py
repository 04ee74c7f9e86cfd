"""Shared image transforms for every dataset adapter: resize, crop, flip, stereo swap, colour jitter,
sparse depth resize.

Pure functions on torch tensors, batched over any leading dimensions (frames, cameras, batch), so
they run unchanged in a worker or on the device. Every geometric step returns the images *and* the
intrinsics that describe them; ``convention`` is passed to ``geometry`` (see geometry/intrinsics.py:
``"half_pixel"`` is exact for the resizes done here, ``"reference"`` reproduces VFDepth /
multi-mono-sf).

Resizing filters (all half-pixel consistent: output pixel i is centred on input position
(i + 0.5) * H / H' - 0.5, which is what ``resize_intrinsics(..., "half_pixel")`` assumes):
- tensors: ``F.interpolate(mode="bilinear", align_corners=False, antialias=True)`` when shrinking
  (a triangle filter widened to the scale, like PIL's ANTIALIAS that VFDepth uses; exact for any
  ratio, unlike ``mode="area"`` = adaptive average pooling, whose bins are only approximately
  centred for non-integer ratios), plain bilinear when enlarging;
- uint8 numpy images (straight from :mod:`dataset.image_io`): cv2 INTER_AREA when shrinking (an
  exact box filter at any ratio), INTER_LINEAR when enlarging.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from geometry import compose, crop_intrinsics, flip_intrinsics, invert_transform, resize_intrinsics

from .image_io import resize_rgb

ImagesLike = Union[torch.Tensor, Sequence[np.ndarray]]

# Keys of a contract sample whose camera dimension is the one just before the last three
# (image [T, N, 3, H, W]: dim -4; K [N, 3, 3]: dim -3; ...). Value = number of trailing dims after N.
CAMERA_KEYS = {
    "image": 3,
    "image_aug": 3,
    "K": 2,
    "extrinsics": 2,
    "mask": 3,
    "depth_gt": 3,
}
# Per-camera image-like keys that a horizontal flip mirrors.
IMAGE_LIKE_KEYS = ("image", "image_aug", "mask", "depth_gt")


# ----------------------------------------------------------------------------- helpers
def _as_float_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [0, 1]; floating tensors unchanged."""
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    if not images.is_floating_point():
        return images.float()
    return images


def _interpolate(x: torch.Tensor, out_hw: Sequence[int]) -> torch.Tensor:
    """Half-pixel-consistent resize of [..., C, H, W] (antialiased bilinear down, bilinear up)."""
    h, w = x.shape[-2:]
    oh, ow = int(out_hw[0]), int(out_hw[1])
    if (h, w) == (oh, ow):
        return x
    lead = x.shape[:-3]
    flat = x.reshape(-1, *x.shape[-3:])
    shrink = oh < h or ow < w
    if flat.shape[0] == 0:
        out = flat.new_zeros(0, x.shape[-3], oh, ow)
    else:
        out = F.interpolate(flat, size=(oh, ow), mode="bilinear", align_corners=False, antialias=shrink)
        # Both filters are convex combinations: only float rounding can leave the input's range
        # (e.g. 1.0000001 for an image in [0, 1]), so clamp it back.
        out = out.clamp_(flat.min(), flat.max())
    return out.reshape(*lead, x.shape[-3], oh, ow)


def _check_hw(name: str, hw: Sequence[int]) -> Tuple[int, int]:
    if len(hw) != 2 or int(hw[0]) <= 0 or int(hw[1]) <= 0:
        raise ValueError(f"{name} must be a positive (height, width), got {tuple(hw)}")
    return int(hw[0]), int(hw[1])


# ----------------------------------------------------------------------------- geometric transforms
def resize_views(
    images: ImagesLike,
    K: torch.Tensor,
    out_hw: Sequence[int],
    convention: str = "half_pixel",
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Resize images and make K follow.

    Args:
        images: a tensor [..., 3, H, W] (uint8 or float), or a sequence of n uint8 numpy images
            [H_i, W_i, 3] (sizes may differ, e.g. reduced decodes of different cameras).
        K: [..., 3, 3] at the input resolution; for a sequence of n images, [n, 3, 3] (or [3, 3],
            shared). For a tensor, its leading dims broadcast against the images' leading dims.
        out_hw: (H', W').
    Returns:
        (images float32 [..., 3, H', W'] in [0, 1] for uint8 input (float input keeps its values
        and dtype), K' [..., 3, 3]); a sequence gives [n, 3, H', W'].
    """
    out_hw = _check_hw("out_hw", out_hw)
    if isinstance(images, torch.Tensor):
        in_hw = tuple(images.shape[-2:])
        resized = _interpolate(_as_float_images(images), out_hw)
        return resized, resize_intrinsics(K, in_hw, out_hw, convention)
    images = list(images)
    K = torch.as_tensor(K)
    if not K.is_floating_point():
        K = K.float()
    if K.dim() == 2:
        K = K.expand(len(images), 3, 3)
    if K.shape[0] != len(images):
        raise ValueError(f"resize_views: {len(images)} images but K has shape {tuple(K.shape)}")
    out_images, out_K = [], []
    for image, k in zip(images, K):
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"resize_views: expected numpy images [H, W, 3], got shape {image.shape}")
        in_hw = image.shape[:2]
        resized = resize_rgb(np.ascontiguousarray(image), out_hw)
        tensor = torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1)
        out_images.append(_as_float_images(tensor))
        out_K.append(resize_intrinsics(k, in_hw, out_hw, convention))
    if not out_images:
        return torch.zeros(0, 3, *out_hw), K.reshape(0, 3, 3)
    return torch.stack(out_images), torch.stack(out_K)


def crop_views(
    images: torch.Tensor, K: torch.Tensor, top: int, left: int, out_hw: Sequence[int]
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Crop [..., C, H, W] to rows top..top+H'-1 and columns left..left+W'-1; K' = K with cx, cy
    shifted by (left, top). The crop must lie inside the image."""
    oh, ow = _check_hw("out_hw", out_hw)
    h, w = images.shape[-2:]
    top, left = int(top), int(left)
    if top < 0 or left < 0 or top + oh > h or left + ow > w:
        raise ValueError(
            f"crop_views: crop rows {top}..{top + oh - 1}, columns {left}..{left + ow - 1} "
            f"does not lie inside the {h}x{w} image"
        )
    return images[..., top:top + oh, left:left + ow], crop_intrinsics(K, left, top)


def flip_views(
    images: torch.Tensor, K: torch.Tensor, convention: str = "half_pixel"
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Horizontal flip of [..., C, H, W]: pixel u -> W - 1 - u; K' has cx' = W - 1 - cx
    (``"reference"``: W - cx). The flipped image is what a mirrored camera sees (a point
    (x, y, z) appears where (-x, y, z) projects with K'), see geometry.flip_intrinsics."""
    width = images.shape[-1]
    return images.flip(-1), flip_intrinsics(K, width, convention)


_MIRROR_X = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0]))


def mirror_transform(T: torch.Tensor) -> torch.Tensor:
    """A rigid transform [..., 4, 4] re-expressed in the mirrored world x -> -x (every frame
    mirrored along its x-axis): M T M with M = diag(-1, 1, 1, 1). Still a proper rotation."""
    M = _MIRROR_X.to(dtype=T.dtype, device=T.device)
    return M @ T @ M


def swap_stereo(sample: Dict, single_view_keys: str = "raise") -> Dict:
    """Swap the two cameras of a horizontally flipped stereo sample (left first) so that it is a
    valid stereo sample again. Returns a new dict; ``sample`` is not modified.

    Call it after flipping every per-camera image, mask and depth map and K with
    :func:`flip_views` (or use :func:`flip_sample`, which does both).

    Why: the flipped left image is what a mirrored left camera sees, and in the mirrored world
    that camera sits to the *right* of the mirrored right camera (the baseline changes sign). So
    the flipped left image looks like a right image and the flipped right image like a left
    one; a model that expects the left camera first (the disparity direction, the stereo loss)
    needs them swapped. Image, image_aug, K, mask, depth_gt and extrinsics swap along the camera
    dimension.

    Extrinsics: each T_rig_cam is mirrored (M T M) and swapped. If the rig frame is camera 0
    (extrinsics[0] is the identity, as for KITTI), the rig is re-anchored on the new camera 0:
    for a rectified pair T_rig_cam1 = [I | (b, 0, 0)] this gives back exactly [I | (b, 0, 0)]
    (mirroring alone would give -b, i.e. the right camera on the left; the swap restores +b).
    Otherwise the mirrored rig frame is kept. ``pose_gt`` (rig motion) is mirrored and, when
    re-anchored, expressed in the new rig frame.

    single_view_keys: per-target ground truth of only one camera (``kitti2015_*``) cannot be
    swapped; "raise" (default) refuses such a sample, "drop" removes those keys.
    """
    image = sample["image"]
    num_cams = image.shape[-4]
    if num_cams != 2:
        raise ValueError(f"swap_stereo needs a two-camera rig, got {num_cams} cameras (image {tuple(image.shape)})")
    out = dict(sample)
    single = [k for k in sample if k.startswith("kitti2015_")]
    if single:
        if single_view_keys == "raise":
            raise ValueError(
                f"swap_stereo: keys {single} hold ground truth of the left camera only and cannot follow "
                "the left/right swap; flip before attaching them, or pass single_view_keys='drop'"
            )
        if single_view_keys != "drop":
            raise ValueError(f"single_view_keys must be 'raise' or 'drop', got {single_view_keys!r}")
        for key in single:
            out.pop(key)
    order = torch.tensor([1, 0])
    for key, trailing in CAMERA_KEYS.items():
        if key in sample and key != "extrinsics":
            x = sample[key]
            out[key] = x.index_select(x.dim() - 1 - trailing, order.to(x.device))
    if "extrinsics" in sample:
        E = sample["extrinsics"]
        mirrored = mirror_transform(E).index_select(E.dim() - 3, order.to(E.device))
        eye = torch.eye(4, dtype=E.dtype, device=E.device)
        rig_is_cam0 = bool(torch.allclose(E[..., 0, :, :], eye.expand_as(E[..., 0, :, :]), atol=1e-6))
        T_rig_newrig = mirrored[..., 0:1, :, :]
        if rig_is_cam0:
            mirrored = compose(invert_transform(T_rig_newrig), mirrored)
        out["extrinsics"] = mirrored
        if "pose_gt" in sample:
            pose = mirror_transform(sample["pose_gt"])
            if rig_is_cam0:
                # The new rig frame is the mirrored right camera: P' = inv(E) P E.
                pose = compose(invert_transform(T_rig_newrig), pose, T_rig_newrig)
            out["pose_gt"] = pose
    elif "pose_gt" in sample:
        out["pose_gt"] = mirror_transform(sample["pose_gt"])
    return out


def flip_sample(sample: Dict, convention: str = "half_pixel", swap: bool = True,
                single_view_keys: str = "raise") -> Dict:
    """Horizontally flip every per-camera image-like tensor of a contract sample (image,
    image_aug, mask, depth_gt) and K; for a two-camera rig with ``swap``, then :func:`swap_stereo`.
    Without a swap, extrinsics and pose_gt are mirrored (M T M) so that the sample stays
    geometrically consistent."""
    out = dict(sample)
    width = sample["image"].shape[-1]
    for key in IMAGE_LIKE_KEYS:
        if key in sample:
            out[key] = sample[key].flip(-1)
    out["K"] = flip_intrinsics(sample["K"], width, convention)
    if swap and sample["image"].shape[-4] == 2:
        return swap_stereo(out, single_view_keys)
    for key in ("extrinsics", "pose_gt"):
        if key in sample:
            out[key] = mirror_transform(sample[key])
    return out


# ----------------------------------------------------------------------------- colour jitter
def sample_color_jitter(
    generator: Optional[torch.Generator] = None,
    strengths: Sequence[float] = (0.2, 0.2, 0.2, 0.05),
    num: int = 1,
) -> Dict[str, torch.Tensor]:
    """Draw ``num`` independent colour-jitter parameter sets with torchvision ColorJitter semantics.

    strengths = (brightness, contrast, saturation, hue): factors uniform in [max(0, 1 - s), 1 + s],
    hue shift uniform in [-h, h] (h <= 0.5, a fraction of the hue circle); the four operations are
    applied in a random order per draw. A strength of 0 gives the identity (factor exactly 1,
    shift exactly 0).

    Returns a dict of CPU tensors: brightness, contrast, saturation, hue [num] float32 and
    order [num, 4] int64 (a permutation of 0 brightness, 1 contrast, 2 saturation, 3 hue).
    """
    if len(strengths) != 4:
        raise ValueError(f"strengths must be (brightness, contrast, saturation, hue), got {tuple(strengths)}")
    b, c, s, h = (float(x) for x in strengths)
    if min(b, c, s, h) < 0 or h > 0.5:
        raise ValueError(f"colour jitter strengths must be >= 0 and hue <= 0.5, got {tuple(strengths)}")

    def factor(strength: float) -> torch.Tensor:
        u = torch.rand(num, generator=generator)
        if strength == 0:
            return torch.ones(num)
        low, high = max(0.0, 1.0 - strength), 1.0 + strength
        return low + (high - low) * u

    params = {"brightness": factor(b), "contrast": factor(c), "saturation": factor(s)}
    u = torch.rand(num, generator=generator)
    params["hue"] = (2.0 * u - 1.0) * h if h > 0 else torch.zeros(num)
    params["order"] = torch.argsort(torch.rand(num, 4, generator=generator), dim=-1)
    return params


def _gray(img: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma of [..., 3, H, W] -> [..., 1, H, W] (torchvision's rgb_to_grayscale)."""
    r, g, b = img.unbind(-3)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(-3)


def _blend(img: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (factor * img + (1.0 - factor) * other).clamp(0.0, 1.0)


def _rgb_to_hsv(img: torch.Tensor) -> torch.Tensor:
    """[..., 3, H, W] RGB in [0, 1] -> HSV with h in [0, 1) (torchvision's formulas; h = 0 for grey)."""
    r, g, b = img.unbind(-3)
    maxc = torch.maximum(torch.maximum(r, g), b)
    minc = torch.minimum(torch.minimum(r, g), b)
    delta = maxc - minc
    grey = delta == 0
    s = delta / torch.where(maxc == 0, torch.ones_like(maxc), maxc)
    d = torch.where(grey, torch.ones_like(delta), delta)
    # Hue sector by which channel is the maximum (r first, then g, as torchvision breaks ties).
    h = torch.where(maxc == r, (g - b) / d,
                    torch.where(maxc == g, 2.0 + (b - r) / d, 4.0 + (r - g) / d))
    h = torch.where(grey, torch.zeros_like(h), torch.remainder(h / 6.0, 1.0))
    return torch.stack((h, s, maxc), dim=-3)


def _hsv_to_rgb(img: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_rgb_to_hsv`: channel c = v - v s clamp(min(k, 4 - k), 0, 1) with
    k = (n + 6 h) mod 6 and n = 5, 3, 1 for r, g, b (the closed form of the six-sector table)."""
    h, s, v = img.unbind(-3)
    h6 = h * 6.0
    vs = v * s
    channels = []
    for n in (5.0, 3.0, 1.0):
        k = torch.remainder(h6 + n, 6.0)
        channels.append(v - vs * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0))
    return torch.stack(channels, dim=-3)


def _adjust(op: int, img: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """One torchvision-style operation on [..., n, 3, H, W] with per-view values [n, 1, 1, 1]."""
    if op == 0:  # brightness
        return (img * value).clamp(0.0, 1.0)
    if op == 1:  # contrast: blend with the mean grey level of each image
        mean = _gray(img).mean(dim=(-3, -2, -1), keepdim=True)
        return _blend(img, mean, value)
    if op == 2:  # saturation: blend with the grey image
        return _blend(img, _gray(img), value)
    hsv = _rgb_to_hsv(img)
    h, s, v = hsv.unbind(-3)
    h = torch.remainder(h + value.squeeze(-3), 1.0)
    return _hsv_to_rgb(torch.stack((h, s, v), dim=-3))


_OPS = ("brightness", "contrast", "saturation", "hue")


def apply_color_jitter(images: torch.Tensor, params: Dict[str, torch.Tensor], per_camera: bool = True) -> torch.Tensor:
    """Apply colour-jitter parameters from :func:`sample_color_jitter` to images [..., N, 3, H, W]
    (e.g. [T, N, 3, H, W]: every frame of a camera gets the same draw).

    per_camera=True: ``params`` hold one draw per camera (num = N), as VFDepth does;
    per_camera=False: one draw (num = 1) shared by all cameras, as multi-mono-sf does for its
    stereo pair. Values are clamped to [0, 1] after each operation (torchvision semantics for
    float images). Vectorised over frames, cameras and pixels; the loop is over the four
    operations in each draw's order. Identity factors leave the pixels bit-identical.
    """
    if images.dim() < 4 or images.shape[-3] != 3:
        raise ValueError(f"apply_color_jitter: expected images [..., N, 3, H, W], got {tuple(images.shape)}")
    num_cams = images.shape[-4]
    num = params["brightness"].shape[0]
    expected = num_cams if per_camera else 1
    if num != expected:
        raise ValueError(
            f"apply_color_jitter: per_camera={per_camera} needs {expected} parameter draw(s) for "
            f"{num_cams} cameras, got {num}"
        )
    img = _as_float_images(images)
    device, dtype = img.device, img.dtype
    values = {k: params[k].to(device=device, dtype=dtype).view(num, 1, 1, 1) for k in _OPS}
    # Which cameras do what is decided where the parameters are (the CPU, as the loader sends
    # them), so that applying them on a GPU never waits for it to answer those questions.
    identity = {k: params[k].to(dtype).view(num, 1, 1, 1) == (0.0 if k == "hue" else 1.0) for k in _OPS}
    order = params["order"]
    if num == 1 and num_cams > 1:
        values = {k: v.expand(num_cams, 1, 1, 1) for k, v in values.items()}
        identity = {k: v.expand(num_cams, 1, 1, 1) for k, v in identity.items()}
        order = order.expand(num_cams, 4)
    cam_dim = img.dim() - 4
    for position in range(4):
        for op, name in enumerate(_OPS):
            # The cameras that do this operation at this position and whose factor is not identity.
            selected = (order[:, position] == op) & ~identity[name].view(-1)
            if not bool(selected.any()):
                continue
            idx = torch.nonzero(selected, as_tuple=False).squeeze(1).to(device)
            if idx.numel() == img.shape[cam_dim]:
                img = _adjust(op, img, values[name])
            else:
                adjusted = _adjust(op, img.index_select(cam_dim, idx), values[name].index_select(0, idx))
                img = img.index_copy(cam_dim, idx, adjusted)
    return img


# Sample / batch key of the colour-jitter draws that the loader leaves to the training device
# (data.color_aug_on_device; dataset/contract.py).
COLOR_JITTER_KEY = "color_jitter"


def apply_batch_color_jitter(batch: Dict) -> Dict:
    """The device half of ``data.color_aug_on_device``: a sample or batch that carries colour-jitter
    draws (``color_jitter``: one per camera, as :func:`sample_color_jitter` returns them, with the
    batch dimension in front after collation) gets ``image_aug``, those draws applied to ``image``
    where ``image`` is: call it after moving the batch to the training device. The draws are
    removed from the returned dict; a batch without them is returned as it is.

    The batch is jittered one sample at a time, the computation a loader worker would have done
    (bit-identical on the CPU; a batch holds few samples of many pixels, so the loop costs nothing).
    """
    params = batch.get(COLOR_JITTER_KEY)
    if params is None:
        return batch
    out = {key: value for key, value in batch.items() if key != COLOR_JITTER_KEY}
    images = batch["image"]
    if images.dim() == 5:                                     # one sample [T, N, 3, H, W]
        out["image_aug"] = apply_color_jitter(images, params, per_camera=True)
        return out
    dtype = images.dtype if images.is_floating_point() else torch.float32
    augmented = torch.empty(images.shape, dtype=dtype, device=images.device)
    for b in range(images.shape[0]):
        augmented[b] = apply_color_jitter(images[b], {k: v[b] for k, v in params.items()}, per_camera=True)
    out["image_aug"] = augmented
    return out


# ----------------------------------------------------------------------------- sparse depth
def resize_sparse_depth(depth: torch.Tensor, out_hw: Sequence[int]) -> torch.Tensor:
    """Resize a sparse depth map [..., 1, H, W] (0 = no measurement) to ``out_hw`` without
    interpolating across holes: every measurement moves to the pixel of the new grid whose centre
    is nearest its own (half-pixel mapping u' = (u + 0.5) W'/W - 0.5, rounded); where several
    land on one pixel, the nearest depth wins. Values are kept exactly."""
    oh, ow = _check_hw("out_hw", out_hw)
    h, w = depth.shape[-2:]
    if depth.dim() < 3 or depth.shape[-3] != 1:
        raise ValueError(f"resize_sparse_depth: expected depth [..., 1, H, W], got {tuple(depth.shape)}")
    lead = depth.shape[:-3]
    flat = depth.reshape(-1, h * w)
    n = flat.shape[0]
    valid = flat > 0
    index = torch.nonzero(valid, as_tuple=False)  # [M, 2]: (map, pixel)
    values = flat[valid]
    v = torch.div(index[:, 1], w, rounding_mode="floor")
    u = index[:, 1] - v * w
    dtype = torch.float64
    u2 = torch.floor((u.to(dtype) + 0.5) * (ow / w) - 0.5 + 0.5).long().clamp(0, ow - 1)
    v2 = torch.floor((v.to(dtype) + 0.5) * (oh / h) - 0.5 + 0.5).long().clamp(0, oh - 1)
    target = index[:, 0] * (oh * ow) + v2 * ow + u2
    out = torch.full((n * oh * ow,), float("inf"), dtype=depth.dtype, device=depth.device)
    out = out.scatter_reduce(0, target, values, reduce="amin", include_self=True)
    out = torch.where(torch.isinf(out), torch.zeros_like(out), out)
    return out.reshape(*lead, 1, oh, ow)


def draw_crop_box(hw: Sequence[int], crop_hw: Optional[Sequence[int]], crop_scale: Sequence[float],
                  rng: np.random.Generator) -> Tuple[int, int, Tuple[int, int]]:
    """Random crop box of an image of size hw, drawn from `rng` in a fixed order (fixed-size crop
    offset, scale, scale-crop offset) so that augmentation is reproducible: first an optional
    crop to crop_hw at a random place, then a crop of a uniform fraction in crop_scale of that
    (the multi-mono-sf scale-crop). Returns (top, left, (height, width))."""
    H, W = int(hw[0]), int(hw[1])
    top = left = 0
    if crop_hw is not None:
        ch, cw = min(int(crop_hw[0]), H), min(int(crop_hw[1]), W)
        top, left = int(rng.integers(0, H - ch + 1)), int(rng.integers(0, W - cw + 1))
        H, W = ch, cw
    scale = rng.uniform(*crop_scale)
    ch, cw = max(1, int(np.floor(H * scale))), max(1, int(np.floor(W * scale)))
    top += int(rng.integers(0, H - ch + 1))
    left += int(rng.integers(0, W - cw + 1))
    return top, left, (ch, cw)


def draw_color_jitter(rng: np.random.Generator, probability: float, strengths: Sequence[float]):
    """With the given probability, one colour-jitter draw (sample_color_jitter, num=1) seeded from
    `rng`; otherwise None."""
    if rng.random() >= probability:
        return None
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    return sample_color_jitter(generator, strengths, num=1)
