"""Look at one sample of a config's dataset: what the loader really delivers, as JSON and a picture.

    python tools/inspect_dataset.py --config_file=configs/synthetic/ddad_surround_fusion.yaml \
        [--split train|val|eval] [--index I] [--out preview.png] [--max_width 1600] [KEY=VALUE ...]

Loads and validates the config, builds the dataset of the split (default val, so the ground truth
is there), takes sample I (default 0), checks it against the data contract (dataset/contract.py)
and prints a JSON summary on stdout: names, frame ids, shapes, per camera K, T_rig_cam, the mask's
valid fraction, the ground-truth depth (valid pixels, range) and the image value range; per frame
the ground-truth pose relative to the target frame; the KITTI 2015 ground truth when present; and
the sample's `meta`. It writes a preview PNG (default <data.log_path>/inspect/<split>_<index>.png):
one row per frame and one column per camera, plus a row with the target frame, the ego mask shaded
and the ground-truth depth drawn as dots coloured by inverse depth (near = warm). The preview's path
is printed on stderr at the end.

Exit status: 0 on success, 2 for a bad command line or config (bad key, wrong type, missing path,
index out of range), 1 when the dataset cannot be built or the sample breaks the contract.
"""

import argparse
import json
import math
import os
import sys
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from dataset.build import SPLITS, build_dataset  # noqa: E402
from dataset.contract import KITTI2015_KEYS, ContractError, check_sample  # noqa: E402
from utils.cli import DEFAULT_CONFIG  # noqa: E402
from utils.config import ConfigError, load_config  # noqa: E402
from utils.visualization import draw_sparse_depth, shade_mask, tile_images, to_uint8_rgb  # noqa: E402

KNOWN_KEYS = {"image", "image_aug", "K", "extrinsics", "mask", "frame_ids", "depth_gt", "pose_gt", "meta"}
COMPACT_WIDTH = 120     # JSON lists up to this many characters (and all numeric matrices) stay on one line


class InspectError(Exception):
    """A problem reported as `error: ...` with an exit status (no traceback)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.strip().splitlines()[0],
        epilog="Any config key can be overridden as KEY=VALUE, e.g. training.height=96; values are read as YAML.")
    parser.add_argument("--config_file", default=DEFAULT_CONFIG, help=f"experiment YAML (default {DEFAULT_CONFIG})")
    parser.add_argument("--split", default="val", choices=SPLITS, help="which split's dataset (default val)")
    parser.add_argument("--index", type=int, default=0, help="sample index (default 0; negative counts from the end)")
    parser.add_argument("--out", default=None, help="preview PNG (default <data.log_path>/inspect/<split>_<index>.png)")
    parser.add_argument("--max_width", type=int, default=1600, help="widest preview in pixels (default 1600)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    return parser.parse_intermixed_args(argv)


# ----------------------------------------------------------------------------------------------
# JSON helpers


def _num(x, digits: int = 4):
    """A rounded Python float (no -0.0; non-finite values become None, which JSON can hold)."""
    x = float(x)
    if not math.isfinite(x):
        return None
    return round(x, digits) + 0.0


def _matrix(t, digits: int = 6) -> List:
    return [[_num(v, digits) for v in row] for row in t.tolist()]


def json_safe(obj: Any) -> Any:
    """A JSON-serialisable copy of `obj`: tensors and numpy arrays become (nested) lists, numpy
    scalars Python numbers, paths and anything unknown strings, non-finite floats None."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return json_safe(obj.detach().cpu().tolist())
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    return str(obj)     # os.PathLike and anything else


def _is_numeric_nest(obj) -> bool:
    if isinstance(obj, list):
        return all(_is_numeric_nest(v) for v in obj)
    return obj is None or (isinstance(obj, (int, float)) and not isinstance(obj, bool))


def format_json(obj: Any, indent: int = 0) -> str:
    """JSON with nested dicts indented but matrices and short lists on one line each."""
    pad = " " * indent
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f'{pad}  {json.dumps(k)}: {format_json(v, indent + 2)}' for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(obj, list):
        flat = json.dumps(obj, allow_nan=False)
        if not obj or len(flat) <= COMPACT_WIDTH or _is_numeric_nest(obj):
            return flat
        items = [f"{pad}  {format_json(v, indent + 2)}" for v in obj]
        return "[\n" + ",\n".join(items) + f"\n{pad}]"
    return json.dumps(obj, allow_nan=False)


# ----------------------------------------------------------------------------------------------
# Summary


def target_position(frame_ids: torch.Tensor) -> int:
    """Position of the target frame (offset 0) in the frame dimension; the first frame if none."""
    hits = (frame_ids == 0).nonzero().flatten()
    return int(hits[0]) if hits.numel() else 0


def rotation_angle_deg(R: torch.Tensor) -> float:
    """Angle of the rotation `R` (3x3) in degrees."""
    cos = (float(torch.diagonal(R.double()).sum()) - 1.0) / 2.0
    return math.degrees(math.acos(min(1.0, max(-1.0, cos))))


def _range(values: torch.Tensor, digits: int = 4):
    if values.numel() == 0:
        return None
    return [_num(values.min(), digits), _num(values.max(), digits)]


def summarize_kitti2015(sample: Dict) -> Optional[Dict]:
    """Valid pixel counts and ranges of the KITTI 2015 ground truth in `sample` (None if absent)."""
    keys = [k for k in KITTI2015_KEYS if k in sample]
    if not keys:
        return None
    out = {}
    for key in keys:
        x = sample[key]
        entry: Dict[str, Any] = {"shape": list(x.shape)}
        if key in ("kitti2015_disp0", "kitti2015_disp1"):
            valid = x[x > 0]
            entry.update(valid_pixels=int(valid.numel()), range_px=_range(valid))
        elif key == "kitti2015_flow":
            if "kitti2015_flow_valid" in sample:
                valid = sample["kitti2015_flow_valid"][0] > 0
                magnitude = x.float().norm(dim=0)[valid]
                entry.update(valid_pixels=int(valid.sum()), magnitude_range_px=_range(magnitude))
        elif key == "kitti2015_flow_valid":
            entry.update(valid_pixels=int((x > 0).sum()))
        elif key == "kitti2015_obj_map":
            ids = torch.unique(x[x > 0])
            entry.update(object_pixels=int((x > 0).sum()), objects=int(ids.numel()))
        elif key == "kitti2015_K":
            entry["matrix"] = _matrix(x, 4)
        out[key] = entry
    return out


def summarize_sample(sample: Dict, cfg, split: str, length: int, index: int) -> Dict:
    """The JSON-safe summary of one contract sample (see the module docstring)."""
    image, frame_ids = sample["image"], sample["frame_ids"]
    num_frames, num_cams = image.shape[:2]
    cameras = list(cfg.data.cameras)
    depth = sample.get("depth_gt")
    summary: Dict[str, Any] = {
        "dataset": cfg.data.dataset,
        "config": cfg.name,
        "config_file": cfg.source,
        "split": split,
        "length": length,
        "index": index,
        "cameras": cameras,
        "frame_ids": frame_ids.tolist(),
        "target_frame_position": target_position(frame_ids),
        "image_shape": list(image.shape),
        "depth_gt_shape": list(depth.shape) if depth is not None else None,
        "keys": sorted(sample),
        "image_range": _range(image),
    }
    if "image_aug" in sample:
        summary["image_aug_range"] = _range(sample["image_aug"])
    per_camera = {}
    for n in range(num_cams):
        name = cameras[n] if n < len(cameras) else f"camera_{n}"
        entry: Dict[str, Any] = {
            "K": _matrix(sample["K"][n], 4),
            "extrinsics": _matrix(sample["extrinsics"][n], 6),
            "mask_valid_fraction": _num((sample["mask"][n] > 0.5).float().mean(), 4),
            "image_range": _range(image[:, n]),
            "image_mean": _num(image[:, n].mean(), 4),
        }
        if depth is not None:
            valid = depth[n][depth[n] > 0]
            entry["depth_gt_valid_pixels"] = int(valid.numel())
            entry["depth_gt_range_m"] = _range(valid, 3)
        per_camera[name] = entry
    summary["per_camera"] = per_camera
    if "pose_gt" in sample:
        poses = []
        for t in range(num_frames):
            T = sample["pose_gt"][t]
            poses.append({"frame_id": int(frame_ids[t]),
                          "translation_m": _num(T[:3, 3].double().norm(), 4),
                          "rotation_deg": _num(rotation_angle_deg(T[:3, :3]), 4),
                          "T_target_frame": _matrix(T, 6)})
        summary["pose_gt"] = poses
    else:
        summary["pose_gt"] = None
    kitti = summarize_kitti2015(sample)
    if kitti is not None:
        summary["kitti2015"] = kitti
    other = {k: list(v.shape) for k, v in sample.items()
             if k not in KNOWN_KEYS and k not in KITTI2015_KEYS and isinstance(v, torch.Tensor)}
    if other:
        summary["other_tensors"] = other
    summary["meta"] = json_safe(sample.get("meta", {}))
    return summary


# ----------------------------------------------------------------------------------------------
# Preview


def build_preview(sample: Dict, cameras: List[str], max_width: int = 1600) -> np.ndarray:
    """uint8 RGB grid: one row per frame, one column per camera, and a last row with the target
    frame, the ego mask shaded and the ground-truth depth as dots (inverse-depth colours, one
    range for all cameras). Without depth_gt the KITTI 2015 disparity is drawn on camera 0."""
    image, frame_ids, mask = sample["image"], sample["frame_ids"], sample["mask"]
    num_frames, num_cams = image.shape[:2]
    names = [cameras[n] if n < len(cameras) else f"camera_{n}" for n in range(num_cams)]
    rows, labels = [], []
    for t in range(num_frames):
        rows.append([to_uint8_rgb(image[t, n]) for n in range(num_cams)])
        labels.append([f"{names[n]} f{int(frame_ids[t]):+d}" for n in range(num_cams)])
    target = target_position(frame_ids)
    overlay_depth = [None] * num_cams
    what = "depth_gt"
    if "depth_gt" in sample:
        overlay_depth = [sample["depth_gt"][n, 0] for n in range(num_cams)]
    elif "kitti2015_disp0" in sample:
        disp = sample["kitti2015_disp0"][0]           # inverse depth up to a scale: same colours
        overlay_depth[0] = torch.where(disp > 0, 1.0 / disp.clamp(min=1e-6), torch.zeros_like(disp))
        what = "disp_occ_0"
    valid = [d[d > 0] for d in overlay_depth if d is not None]
    valid = torch.cat([v.flatten() for v in valid]) if valid else torch.zeros(0)
    lo, hi = (float(valid.min()), float(valid.max())) if valid.numel() else (None, None)
    row, row_labels = [], []
    for n in range(num_cams):
        tile = shade_mask(to_uint8_rgb(image[target, n]), mask[n])
        if overlay_depth[n] is not None and lo is not None:
            tile = draw_sparse_depth(tile, overlay_depth[n], radius=1, min_depth=lo, max_depth=hi)
            row_labels.append(f"{names[n]} f{int(frame_ids[target]):+d} {what}")
        else:
            row_labels.append(f"{names[n]} f{int(frame_ids[target]):+d} mask")
        row.append(tile)
    rows.append(row)
    labels.append(row_labels)
    return tile_images(rows, labels, max_width=max_width)


def write_png(path: str, image_rgb: np.ndarray) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    try:
        ok = cv2.imwrite(path, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
    except cv2.error as err:
        raise InspectError(f"cannot write the preview {path}: {err}", 1) from None
    if not ok:
        raise InspectError(f"cannot write the preview {path} (is the extension .png?)", 1)


# ----------------------------------------------------------------------------------------------
# Entry point


def inspect(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config_file, args.overrides, mode="train", check_paths=True)
    except ConfigError as err:
        raise InspectError(str(err), 2) from None
    try:
        dataset = build_dataset(cfg, args.split)
    except (ValueError, OSError) as err:
        raise InspectError(f"cannot build the {args.split} dataset of {cfg.name} ({cfg.data.dataset}): {err}", 1) from None
    length = len(dataset)
    if not -length <= args.index < length:
        span = f"indices 0..{length - 1}" if length else "it is empty"
        raise InspectError(f"--index {args.index} is out of range: the {args.split} split of {cfg.name} "
                           f"({cfg.data.dataset}) has {length} samples ({span})", 2)
    index = args.index % length
    sample = dataset[index]
    try:
        check_sample(sample, num_frames=len(cfg.data.frame_ids), num_cams=cfg.data.num_cams)
    except ContractError as err:
        raise InspectError(f"sample {index} of the {args.split} split of {cfg.name} breaks the data contract: "
                           f"{err}", 1) from None
    summary = summarize_sample(sample, cfg, args.split, length, index)
    out = args.out or os.path.join(cfg.data.log_path, "inspect", f"{args.split}_{index}.png")
    preview = build_preview(sample, list(cfg.data.cameras), max_width=args.max_width)
    write_png(out, preview)
    summary["preview"] = {"path": out, "height": int(preview.shape[0]), "width": int(preview.shape[1]),
                          "rows": int(sample["image"].shape[0]) + 1, "columns": int(sample["image"].shape[1])}
    print(format_json(summary))
    sys.stdout.flush()
    print(f"preview: {out}", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as exit_:            # argparse: --help (0) or a usage error (2)
        return exit_.code if isinstance(exit_.code, int) else 2
    if args.max_width < 16:
        print("error: --max_width must be at least 16 pixels", file=sys.stderr)
        return 2
    try:
        return inspect(args)
    except InspectError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.status


if __name__ == "__main__":
    try:
        status = main()
        sys.stdout.flush()
    except BrokenPipeError:                  # piped into `head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = 0
    sys.exit(status)
