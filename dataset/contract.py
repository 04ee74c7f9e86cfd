"""The one data contract every dataset adapter returns (DESIGN.md, "Conventions").

A sample is a dict of tensors with the frames and cameras as explicit dimensions; the default
collate adds the batch dimension B in front of each. T frames are ordered as `frame_ids` (the
target frame 0 first by default), N cameras as `data.cameras`.

| key          | shape (per sample)   | meaning                                                        |
|--------------|----------------------|----------------------------------------------------------------|
| image        | [T, N, 3, H, W]      | float32 RGB in [0, 1]                                          |
| image_aug    | [T, N, 3, H, W]      | optional: colour-jittered copy (one draw per sample)           |
| K            | [N, 3, 3]            | float32 intrinsics at the image resolution                     |
| extrinsics   | [N, 4, 4]            | float32 T_rig_cam (camera -> rig)                              |
| mask         | [N, 1, H, W]         | float32, 1 = pixel shows the scene, 0 = ego vehicle            |
| frame_ids    | [T]                  | int64 frame offsets                                            |
| depth_gt     | [N, 1, Hg, Wg]       | optional float32 metres of the target frame, 0 = no measurement |
| pose_gt      | [T, 4, 4]            | optional float32 T_rig(target)_rig(frame t): maps points from the rig at frame t into the rig at the target frame; identity for offset 0 |
| kitti2015_*  | see KITTI2015_KEYS   | optional KITTI 2015 ground truth of the target frame           |
| meta         | dict                 | strings/numbers: dataset, scene, index, camera names, files    |

A stereo pair is a rig of two cameras (left first). Geometry conventions: OpenCV camera frame,
`T_a_b` maps points from frame b into frame a, integer pixel coordinates are pixel centres.
"""

from typing import Dict, Optional, Sequence

import torch

REQUIRED_KEYS = ("image", "K", "extrinsics", "mask", "frame_ids")
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


def _expect(x, name: str, dims: int, dtype) -> None:
    if not isinstance(x, torch.Tensor):
        raise ContractError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != dims:
        raise ContractError(f"{name}: expected {dims} dimensions, got shape {tuple(x.shape)}")
    if dtype is not None and x.dtype != dtype:
        raise ContractError(f"{name}: expected dtype {dtype}, got {x.dtype}")


def _expect_shape(sample: Dict, name: str, shape: Sequence[int], dtype) -> None:
    x = sample[name]
    _expect(x, name, len(shape), dtype)
    if tuple(x.shape) != tuple(shape):
        raise ContractError(f"{name}: expected shape {tuple(shape)}, got {tuple(x.shape)}")
