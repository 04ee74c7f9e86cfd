"""Inference on one's own data: ``predict.py`` (README "Use on your own data").

    predict(cfg, weight_path, input_path, intrinsics=None, fov_deg=None, ...)

Inputs (``input_path``):

- an image file, a folder of images (one sequence, sorted by file name), a folder of such folders
  (one sequence per sub-folder) or a video file (OpenCV): read with
  :class:`dataset.image_folder.ImageFolderDataset`, so its intrinsics forms apply
  (``intrinsics``: a .json / .txt / .npy 3x3 in pixels or normalised); without a file the camera is
  assumed: ``fov_deg`` horizontal field of view, else ``data.assumed_focal_px`` (700 px);
- for a surround model (model.type surround_depth), a rig folder: one sub-folder per camera and a
  calibration JSON (:mod:`dataset.rig_folder`), predicted for all cameras at once.

Frames are resized to the model's input (training.height x training.width); every output is at
that resolution. Context frames: each frame is the target of one window of ``data.frame_ids``
(the scene-flow model's 5 frames [-3, -2, -1, 0, 1]); the surround models predict depth from the
target frame alone (their pose is not needed), so their window is [0]. At the ends of a sequence
the missing context frames are replaced by the nearest frame of the sequence (the first frame
repeated before it, the last after it), so every frame gets an output; the scene flow and optical
flow of the last frame are then measured against itself and mean nothing (about zero), and a
sequence of one image gives depth from a static window.

Outputs, under ``output`` (default results/<config name>/predict/<input name>/); one sequence
writes straight into it, several (a folder of folders) into one sub-folder each; a rig writes the
per-camera files into <camera>/ sub-folders and the fused cloud at the top:

    <frame>_depth.png        colourised depth (inverse-depth turbo, near = warm; per-frame range),
                             with a colour bar in metres on the right when ``colorbar``
    <frame>_depth16.png      raw depth, uint16 PNG, value = round(metres x 256), 0 = no depth
                             (KITTI's depth-map encoding; up to 255.99 m); or with
                             depth_format="npy" <frame>_depth.npy, float32 [H, W] metres
    <frame>_disparity.png    scene-flow model: its disparity (plasma)
    <frame>_flow.png         scene-flow model: optical flow t -> t+1 (Middlebury colour wheel)
    <frame>_sceneflow.png    scene-flow model: scene flow t -> t+1 (CIE-Lab coding, utils/flow_vis.py)
    <frame>.ply              coloured point cloud (binary PLY): one point per pixel with a finite
                             positive depth, X = depth K^-1 (u, v, 1); in the camera frame (OpenCV
                             axes, metres) for one camera, in the rig frame (T_rig_cam X) for a rig,
                             all cameras fused, camera by camera, pixels in row-major order
    depth.gif, depth.mp4     sequences of more than one frame: the input above its depth picture
                             (all cameras side by side for a rig), one frame per input frame; the
                             MP4 only where OpenCV's VideoWriter can write mp4v
                             (several sequences: <sequence>_depth.gif / .mp4)
"""

from __future__ import annotations

import os
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

# A camera at the rig origin looking along the rig's +x (x forward, y left, z up): T_rig_cam of a
# single camera given to a surround model, whose voxel grid lives in such a rig frame.
FORWARD_CAMERA_R = ((0.0, 0.0, 1.0), (-1.0, 0.0, 0.0), (0.0, -1.0, 0.0))
DEPTH_PNG_SCALE = 256.0
DEPTH_FORMATS = ("png16", "npy")
ANIMATION_FPS = 10


# ----------------------------------------------------------------------------------------------
# Data


class SlidingWindows(Dataset):
    """Windows of ``frame_ids`` over a dataset of single frames (``base``: samples with image
    [1, N, 3, H, W], in sequence order), the missing context frames at the ends replaced by the
    nearest frame (module docstring).

    sequences: (name, first base index, length) per sequence; ``only``: base indices to predict
    (default all)."""

    def __init__(self, base: Dataset, sequences: Sequence[tuple], frame_ids: Sequence[int],
                 only: Optional[Sequence[int]] = None, cache_size: int = 16):
        self.base = base
        self.frame_ids = [int(f) for f in frame_ids]
        if 0 not in self.frame_ids:
            raise ValueError(f"data.frame_ids {self.frame_ids} must contain the target frame 0")
        self.sequences = [(str(n), int(s), int(c)) for n, s, c in sequences]
        targets = []
        for q, (_, start, count) in enumerate(self.sequences):
            targets += [(q, i) for i in range(count) if only is None or start + i in only]
        self.targets = targets
        self._cache: "OrderedDict[int, Dict]" = OrderedDict()
        self._cache_size = max(cache_size, len(self.frame_ids) + 1)

    def __len__(self) -> int:
        return len(self.targets)

    def _frame(self, index: int) -> Dict:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        sample = self.base[index]
        self._cache[index] = sample
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return sample

    def __getitem__(self, k: int) -> Dict:
        q, i = self.targets[k]
        name, start, count = self.sequences[q]
        frames = [self._frame(start + min(max(i + off, 0), count - 1)) for off in self.frame_ids]
        target = frames[self.frame_ids.index(0)]
        return {
            "image": torch.cat([f["image"] for f in frames], dim=0),              # [T, N, 3, H, W]
            "K": target["K"], "extrinsics": target["extrinsics"], "mask": target["mask"],
            "frame_ids": torch.tensor(self.frame_ids, dtype=torch.int64),
            "meta": {"sequence": name, "name": str(target["meta"]["name"]), "frame": i},
        }


def _single_camera_data(cfg, input_path: Path, image_hw, intrinsics, fov_deg, frame_ids, surround: bool):
    from dataset.image_folder import IMAGE_EXTENSIONS, ImageFolderDataset

    only_file = None
    root = input_path
    if input_path.is_file() and input_path.suffix.lower() in IMAGE_EXTENSIONS:
        root, only_file = input_path.parent, input_path
    base = ImageFolderDataset(root, frame_ids=(0,), image_hw=image_hw, intrinsics=intrinsics,
                              assumed_focal_px=cfg.data.assumed_focal_px,
                              assumed_hfov_deg=fov_deg if fov_deg is not None else cfg.data.assumed_hfov_deg,
                              convention=cfg.data.intrinsics_convention)
    if surround:
        base = _ForwardCamera(base)
    sequences, start = [], 0
    for seq in (base.base if surround else base).sequences:
        sequences.append((seq.name, start, len(seq)))
        start += len(seq)
    only = None
    if only_file is not None:
        files = [Path(f).resolve() for f in (base.base if surround else base).sequences[0].files]
        only = [files.index(only_file.resolve())]
    return SlidingWindows(base, sequences, frame_ids, only=only)


class _ForwardCamera(Dataset):
    """One camera for a surround model: T_rig_cam = FORWARD_CAMERA_R at the rig origin."""

    def __init__(self, base: Dataset):
        self.base = base
        self.T = torch.eye(4)
        self.T[:3, :3] = torch.tensor(FORWARD_CAMERA_R)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> Dict:
        sample = dict(self.base[index])
        sample["extrinsics"] = self.T[None].clone()
        return sample


def build_predict_data(cfg, input_path, intrinsics=None, fov_deg: Optional[float] = None,
                       calibration=None) -> tuple:
    """(SlidingWindows, is_rig) for ``input_path`` (module docstring)."""
    from dataset.rig_folder import RigFolderDataset, is_rig_folder

    input_path = Path(input_path)
    if not input_path.exists():
        raise FileNotFoundError(f"--input: not found: {input_path}")
    image_hw = (int(cfg.training.height), int(cfg.training.width))
    surround = cfg.model.type == "surround_depth"
    frame_ids = [0] if surround else list(cfg.data.frame_ids)
    rig = surround and input_path.is_dir() and (calibration is not None or is_rig_folder(input_path))
    if rig:
        if intrinsics is not None or fov_deg is not None:
            raise ValueError(f"--intrinsics / --fov do not apply to the rig folder {input_path}: "
                             "its calibration file gives every camera's intrinsics")
        base = RigFolderDataset(input_path, image_hw=image_hw, calibration=calibration,
                                convention=cfg.data.intrinsics_convention)
        return SlidingWindows(base, [(base.name, 0, len(base))], frame_ids), True
    if calibration is not None:
        raise ValueError(f"--calibration is for rig folders and a surround model (model.type surround_depth); "
                         f"{cfg.source} has model.type {cfg.model.type}")
    if intrinsics is not None and fov_deg is not None:
        raise ValueError("give --intrinsics or --fov, not both")
    if fov_deg is not None and not 0.0 < fov_deg < 180.0:
        raise ValueError(f"--fov: the horizontal field of view must lie in (0, 180) degrees, got {fov_deg}")
    return _single_camera_data(cfg, input_path, image_hw, intrinsics, fov_deg, frame_ids, surround), False


# ----------------------------------------------------------------------------------------------
# Geometry


def point_clouds(depth: torch.Tensor, K: torch.Tensor, T_rig_cam: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Depth [B, N, 1, H, W] (metres), K [B, N, 3, 3] (pixels of that size), optional T_rig_cam
    [B, N, 4, 4] -> points [B, N, 3, H, W]: X = depth K^-1 (u, v, 1) in each camera frame, mapped
    into the rig frame when T_rig_cam is given."""
    from geometry import backproject, invert_intrinsics

    points = backproject(depth.float(), invert_intrinsics(K.float()))               # [B, N, 3, H, W]
    if T_rig_cam is None:
        return points
    T = T_rig_cam.float()
    return torch.einsum("bnij,bnjhw->bnihw", T[..., :3, :3], points) + T[..., :3, 3, None, None]


# ----------------------------------------------------------------------------------------------
# Pictures


def add_colorbar(picture: np.ndarray, min_depth: float, max_depth: float, cmap: str = "turbo",
                 ticks: int = 5) -> np.ndarray:
    """``picture`` (colorize_depth's, [H, W, 3]) with a colour bar to its right: the colours of
    colorize_depth's inverse-depth scale from min_depth (top) to max_depth (bottom), labelled in
    metres."""
    import cv2

    from utils.visualization import colormap_lut

    h = picture.shape[0]
    lo, hi = max(float(min_depth), 1e-6), max(float(max_depth), float(min_depth), 1e-6)
    bar_w, label_w = max(8, h // 24), 58
    t = np.linspace(1.0, 0.0, h)                                                   # top: near
    bar = np.repeat(colormap_lut(cmap)[np.round(t * 255).astype(np.intp)][:, None], bar_w, axis=1)
    panel = np.full((h, bar_w + label_w, 3), 255, np.uint8)
    panel[:, :bar_w] = bar
    inv_near, inv_far = 1.0 / lo, 1.0 / hi
    for k in range(ticks):
        row = int(round(k * (h - 1) / max(ticks - 1, 1)))
        inv = inv_near + (inv_far - inv_near) * row / max(h - 1, 1)
        metres = 1.0 / inv if inv > 0 else float("inf")
        y = min(max(row + 4, 10), h - 2)
        cv2.putText(panel, f"{metres:.1f}m", (bar_w + 3, y), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([picture, panel], axis=1)


def _write_png(path: str, picture: np.ndarray) -> None:
    """RGB uint8 [H, W, 3] or single-channel uint16 [H, W] as a PNG, atomically."""
    import cv2

    from utils.atomic import write_bytes_atomic

    data = picture if picture.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(picture), cv2.COLOR_RGB2BGR)
    ok, png = cv2.imencode(".png", data)
    if not ok:
        raise RuntimeError(f"could not encode {path} as PNG")
    write_bytes_atomic(path, png.tobytes())


def depth_to_png16(depth: np.ndarray) -> np.ndarray:
    """Depth [H, W] metres -> uint16 round(depth x 256), 0 where the depth is not finite or <= 0,
    saturated at 65535 (255.996 m)."""
    depth = np.asarray(depth, dtype=np.float64)
    ok = np.isfinite(depth) & (depth > 0)
    return np.where(ok, np.clip(np.rint(np.where(ok, depth, 0.0) * DEPTH_PNG_SCALE), 1, 65535), 0).astype(np.uint16)


def write_animation(path_stem: str, frames: List[np.ndarray], fps: int = ANIMATION_FPS) -> List[str]:
    """<path_stem>.gif (PIL) and, where OpenCV can encode mp4v, <path_stem>.mp4 of RGB frames;
    returns the files written."""
    from PIL import Image

    from utils.atomic import atomic_open

    written = []
    images = [Image.fromarray(f) for f in frames]
    with atomic_open(path_stem + ".gif", "wb") as f:
        images[0].save(f, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    written.append(path_stem + ".gif")
    try:
        import cv2
        h, w = frames[0].shape[:2]
        tmp = f"{path_stem}.{os.getpid()}.tmp.mp4"
        writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w - w % 2, h - h % 2))
        if writer.isOpened():
            for frame in frames:
                writer.write(cv2.cvtColor(np.ascontiguousarray(frame[: h - h % 2, : w - w % 2]), cv2.COLOR_RGB2BGR))
            writer.release()
            if os.path.getsize(tmp) > 0:
                os.replace(tmp, path_stem + ".mp4")
                written.append(path_stem + ".mp4")
        if os.path.exists(tmp):
            os.remove(tmp)
    except (ImportError, cv2.error):  # no encoder: the GIF stands alone
        pass
    return written


# ----------------------------------------------------------------------------------------------
# Running


class _Outputs:
    """Writes the files of the module docstring for batches of predictions."""

    def __init__(self, cfg, root: str, camera_names: Optional[List[str]], multi_sequence: bool,
                 colorbar: bool, depth_format: str, animate: bool):
        self.cfg, self.root = cfg, root
        self.camera_names = camera_names            # None: one camera, no sub-folders
        self.multi_sequence = multi_sequence
        self.colorbar, self.depth_format, self.animate = colorbar, depth_format, animate
        self.animation: "OrderedDict[str, List[np.ndarray]]" = OrderedDict()
        self.count = 0

    def _folder(self, sequence: str, camera: Optional[str]) -> str:
        parts = [self.root] + ([sequence] if self.multi_sequence else []) + ([camera] if camera else [])
        folder = os.path.join(*parts)
        os.makedirs(folder, exist_ok=True)
        return folder

    def write(self, batch: Dict, predictions) -> None:
        from trainer.evaluate_sceneflow import prediction_maps
        from utils.flow_vis import colorize_disparity, flow_to_color, sceneflow_to_color
        from utils.ply import write_ply
        from utils.visualization import colorize_depth, depth_range

        depth = predictions.depth.float()                                          # [B, N, 1, H, W]
        rig = self.camera_names is not None
        points = point_clouds(depth, batch["K"], batch["extrinsics"] if rig else None)
        target = batch["frame_ids"][0].tolist().index(0)
        images = batch["image"][:, target].float()                                 # [B, N, 3, H, W]
        maps = prediction_maps(predictions) if predictions.extras or predictions.scene_flow else {}
        valid_all = torch.isfinite(depth) & (depth > 0)
        depth_np = depth.cpu().numpy()
        meta = batch["meta"]
        for b in range(depth.shape[0]):
            sequence, frame = str(meta["sequence"][b]), str(meta["name"][b])
            tiles = []
            for n in range(depth.shape[1]):
                folder = self._folder(sequence, self.camera_names[n] if rig else None)
                d = depth_np[b, n, 0]
                picture = colorize_depth(d)
                if self.colorbar:
                    lo, hi = depth_range(d)
                    picture = add_colorbar(picture, lo, hi)
                _write_png(os.path.join(folder, f"{frame}_depth.png"), picture)
                if self.depth_format == "npy":
                    from utils.atomic import atomic_open
                    with atomic_open(os.path.join(folder, f"{frame}_depth.npy"), "wb") as f:
                        np.save(f, d.astype(np.float32))
                else:
                    _write_png(os.path.join(folder, f"{frame}_depth16.png"), depth_to_png16(d))
                if n == 0 and "disparity" in maps:
                    _write_png(os.path.join(folder, f"{frame}_disparity.png"), colorize_disparity(maps["disparity"][b].cpu()))
                if n == 0 and "optical_flow" in maps:
                    _write_png(os.path.join(folder, f"{frame}_flow.png"), flow_to_color(maps["optical_flow"][b].cpu()))
                if n == 0 and "scene_flow" in maps:
                    _write_png(os.path.join(folder, f"{frame}_sceneflow.png"), sceneflow_to_color(maps["scene_flow"][b].cpu()))
                if self.animate:
                    rgb = (images[b, n].permute(1, 2, 0).clamp(0, 1) * 255).round().byte().cpu().numpy()
                    tiles.append(np.concatenate([rgb, colorize_depth(d)], axis=0))
            valid = valid_all[b, :, 0]                                             # [N, H, W]
            xyz = points[b].permute(0, 2, 3, 1)[valid]                            # [M, 3], camera by camera
            rgb = images[b].permute(0, 2, 3, 1)[valid]
            frame_of = "rig frame (T_rig_cam), cameras " + ", ".join(self.camera_names) if rig else "camera frame (OpenCV axes)"
            write_ply(os.path.join(self._folder(sequence, None), f"{frame}.ply"), xyz.cpu().numpy(), rgb.cpu().numpy(),
                      comments=(f"{self.cfg.name}: {sequence} frame {frame}; {frame_of}; metres",))
            if self.animate:
                self.animation.setdefault(sequence, []).append(np.concatenate(tiles, axis=1))
            self.count += 1

    def finish(self) -> List[str]:
        written = []
        for sequence, frames in self.animation.items():
            if len(frames) < 2:
                continue
            stem = os.path.join(self.root, f"{sequence}_depth" if self.multi_sequence else "depth")
            written += write_animation(stem, frames)
        return written


def default_output(cfg, input_path) -> str:
    """results/<config name>/predict/<input name>/ (data.log_path is results/<config name>)."""
    name = Path(input_path).resolve()
    stem = name.stem if name.is_file() else name.name
    return os.path.join(cfg.data.log_path, "predict", stem)


def pick_device(name: Optional[str] = None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def predict(cfg, weight_path: Optional[str], input_path, intrinsics=None, fov_deg: Optional[float] = None,
            calibration=None, output: Optional[str] = None, colorbar: bool = False, depth_format: str = "png16",
            batch_size: int = 4, device: Optional[str] = None, animate: bool = True, num_workers: int = 0,
            progress: bool = True) -> Dict:
    """Run the model of ``cfg`` with the networks of ``weight_path`` (a checkpoint folder of
    <network>.pth files) over ``input_path`` and write the module docstring's files. Returns
    {"output": folder, "frames": count, "animations": [files]}."""
    from tqdm import tqdm

    from trainer.evaluate import autocast, load_model_for_eval, to_device

    if depth_format not in DEPTH_FORMATS:
        raise ValueError(f"--depth_format must be one of {list(DEPTH_FORMATS)}, got {depth_format!r}")
    if batch_size < 1:
        raise ValueError(f"--batch_size must be at least 1, got {batch_size}")
    weight_path = weight_path or cfg.data.load_weights_dir
    if not weight_path or not os.path.isdir(weight_path):
        raise FileNotFoundError(f"--weight_path: checkpoint folder not found: '{weight_path}' "
                                "(a folder of <network>.pth files, e.g. results/<name>/models/weights_<epoch>)")
    data, rig = build_predict_data(cfg, input_path, intrinsics, fov_deg, calibration)
    dev = pick_device(device)
    model = load_model_for_eval(cfg, weight_path, dev)
    output = output or default_output(cfg, input_path)
    cameras = list(data.base.camera_names) if rig else None
    writer = _Outputs(cfg, output, cameras, multi_sequence=len(data.sequences) > 1 and not rig,
                      colorbar=colorbar, depth_format=depth_format, animate=animate)
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=dev.type == "cuda")
    bar = tqdm(total=len(data), desc=f"predict {cfg.name}", unit="frame", dynamic_ncols=True,
               disable=not progress, file=sys.stderr)
    try:
        for batch in loader:
            batch = to_device(batch, dev)
            with torch.no_grad(), autocast(cfg, dev):
                predictions = model.predict(batch, model(batch))
            writer.write(batch, predictions)
            bar.update(int(batch["image"].shape[0]))
    finally:
        bar.close()
    animations = writer.finish()
    print(f"{cfg.name}: {writer.count} frame(s) on {dev.type}, weights {weight_path}; written to {output}")
    return {"output": output, "frames": writer.count, "animations": animations}
