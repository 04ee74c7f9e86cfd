"""The one data contract every dataset adapter returns (DESIGN.md, "Conventions").

A sample is a dict of tensors with the frames and cameras as explicit dimensions; the default
collate adds the batch dimension B in front of each. T frames are ordered as `frame_ids` (the
target frame 0 first by default), N cameras as `data.cameras`.

| key          | shape (per sample)   | meaning                                                        |
|--------------|----------------------|----------------------------------------------------------------|
| image        | [T, N, 3, H, W]      | float32 RGB in [0, 1]                                          |
| image_aug    | [T, N, 3, H, W]      | optional: colour-jittered copy (one draw per sample)           |
| color_jitter | dict, see below      | optional: the jitter draws for the device to apply instead     |
| K            | [N, 3, 3]            | float32 intrinsics at the image resolution                     |
| extrinsics   | [N, 4, 4]            | float32 T_rig_cam (camera -> rig)                              |
| mask         | [N, 1, H, W]         | float32, 1 = pixel shows the scene, 0 = ego vehicle            |
| frame_ids    | [T]                  | int64 frame offsets                                            |
| depth_gt     | [N, 1, Hg, Wg]       | optional float32 metres of the target frame, 0 = no measurement |
| pose_gt      | [T, 4, 4]            | optional float32 T_rig(target)_rig(frame t): maps points from the rig at frame t into the rig at the target frame; identity for offset 0 |
| kitti2015_*  | see KITTI2015_KEYS   | optional KITTI 2015 ground truth of the target frame           |
| meta         | dict                 | strings/numbers: dataset, scene, index, camera names, files    |

`color_jitter` (training samples of ddad / nuscenes with `data.color_aug_on_device`): one
colour-jitter draw per camera, as `dataset.transforms.sample_color_jitter` returns them:
brightness, contrast, saturation [N] float32 factors >= 0, hue [N] float32 in [-0.5, 0.5], order
[N, 4] int64 (a permutation of the four operations per camera). It replaces `image_aug`: the
trainer moves the batch to its device and then makes `image_aug` from `image` and these draws
(`dataset.transforms.apply_batch_color_jitter`), so the models see exactly what the loader would
have made. Anything else that feeds training batches to a model must do the same.

A stereo pair is a rig of two cameras (left first). Geometry conventions: OpenCV camera frame,
`T_a_b` maps points from frame b into frame a, integer pixel coordinates are pixel centres.
"""

from typing import Dict, Optional, Sequence

import torch

REQUIRED_KEYS = ("image", "K", "extrinsics", "mask", "frame_ids")
# The draws under `color_jitter`: name -> trailing shape after the camera dimension.
COLOR_JITTER_FIELDS = {"brightness": (), "contrast": (), "saturation": (), "hue": (), "order": (4,)}
# KITTI 2015 ground truth at the original resolution (Hg, Wg), with the original intrinsics.
KITTI2015_KEYS = {
    "kitti2015_disp0": 3,        # [1, Hg, Wg] disparity of frame 10 in pixels (disp_occ_0), 0 = invalid
    "kitti2015_disp1": 3,        # [1, Hg, Wg] disparity of frame 11 mapped into frame 10 (disp_occ_1)
    "kitti2015_flow": 3,         # [2, Hg, Wg] optical flow 10 -> 11 in pixels (flow_occ)
    "kitti2015_flow_valid": 3,   # [1, Hg, Wg] 1 where the flow is valid
    "kitti2015_obj_map": 3,      # [1, Hg, Wg] 0 background, > 0 object id
    "kitti2015_K": 2,            # [3, 3] left intrinsics at the original resolution
}


class ContractError(ValueError):
    """A sample that does not follow the data contract."""


def check_sample(sample: Dict, num_frames: Optional[int] = None, num_cams: Optional[int] = None,
                 batched: bool = False) -> None:
    """Raise ContractError naming the key and the expected shape/dtype when `sample` (or a batch
    of samples when `batched`) breaks the contract. Cheap: shapes and dtypes only, plus ranges of
    the image."""
    lead = 1 if batched else 0
    missing = [k for k in REQUIRED_KEYS if k not in sample]
    if missing:
        raise ContractError(f"sample lacks required key(s) {missing}; it has {sorted(sample)}")
    image = sample["image"]
    _expect(image, "image", lead + 5, torch.float32)
    t, n, c, h, w = image.shape[lead:]
    if c != 3:
        raise ContractError(f"image: expected 3 colour channels, got shape {tuple(image.shape)}")
    for name, expected in (("frames", num_frames), ("cameras", num_cams)):
        got = t if name == "frames" else n
        if expected is not None and got != expected:
            raise ContractError(f"image: expected {expected} {name}, got {got} (shape {tuple(image.shape)})")
    if image.numel() and (image.min() < 0 or image.max() > 1):
        raise ContractError(f"image: values must lie in [0, 1], got [{image.min():.3f}, {image.max():.3f}]")
    batch = tuple(image.shape[:lead])
    _expect_shape(sample, "K", batch + (n, 3, 3), torch.float32)
    _expect_shape(sample, "extrinsics", batch + (n, 4, 4), torch.float32)
    _expect_shape(sample, "mask", batch + (n, 1, h, w), torch.float32)
    _expect_shape(sample, "frame_ids", batch + (t,), torch.int64)
    if "image_aug" in sample:
        _expect_shape(sample, "image_aug", tuple(image.shape), torch.float32)
    if "color_jitter" in sample:
        _check_color_jitter(sample["color_jitter"], batch + (n,))
    if "pose_gt" in sample:
        _expect_shape(sample, "pose_gt", batch + (t, 4, 4), torch.float32)
    if "depth_gt" in sample:
        depth = sample["depth_gt"]
        _expect(depth, "depth_gt", lead + 4, torch.float32)
        if tuple(depth.shape[:lead + 2]) != batch + (n, 1):
            raise ContractError(f"depth_gt: expected shape {batch + (n, 1)} + (Hg, Wg), got {tuple(depth.shape)}")
    for key, dims in KITTI2015_KEYS.items():
        if key in sample:
            _expect(sample[key], key, lead + dims, None)


def _check_color_jitter(params, lead: Sequence[int]) -> None:
    """The `color_jitter` draws: the fields of COLOR_JITTER_FIELDS with shape lead (+ (4,) for
    order), factors >= 0, hue in [-0.5, 0.5], each order row a permutation of 0..3."""
    if not isinstance(params, dict):
        raise ContractError(f"color_jitter: expected a dict of tensors, got {type(params).__name__}")
    missing = [k for k in COLOR_JITTER_FIELDS if k not in params]
    if missing:
        raise ContractError(f"color_jitter lacks {missing}; it has {sorted(params)}")
    for name, trailing in COLOR_JITTER_FIELDS.items():
        dtype = torch.int64 if name == "order" else torch.float32
        _expect_shape(params, name, tuple(lead) + trailing, dtype, prefix="color_jitter.")
    factors = torch.stack([params[k] for k in ("brightness", "contrast", "saturation")])
    if factors.numel() and factors.min() < 0:
        raise ContractError(f"color_jitter: brightness, contrast and saturation factors must be >= 0, "
                            f"got {factors.min():.3f}")
    if params["hue"].numel() and params["hue"].abs().max() > 0.5:
        raise ContractError(f"color_jitter.hue: shifts must lie in [-0.5, 0.5], got {params['hue'].abs().max():.3f}")
    order = params["order"]
    permutation = torch.arange(4, device=order.device).expand_as(order)
    if order.numel() and not torch.equal(order.sort(dim=-1).values, permutation):
        raise ContractError("color_jitter.order: every row must be a permutation of 0, 1, 2, 3")


def _expect(x, name: str, dims: int, dtype) -> None:
    if not isinstance(x, torch.Tensor):
        raise ContractError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != dims:
        raise ContractError(f"{name}: expected {dims} dimensions, got shape {tuple(x.shape)}")
    if dtype is not None and x.dtype != dtype:
        raise ContractError(f"{name}: expected dtype {dtype}, got {x.dtype}")


def _expect_shape(sample: Dict, name: str, shape: Sequence[int], dtype, prefix: str = "") -> None:
    x = sample[name]
    _expect(x, prefix + name, len(shape), dtype)
    if tuple(x.shape) != tuple(shape):
        raise ContractError(f"{prefix}{name}: expected shape {tuple(shape)}, got {tuple(x.shape)}")
