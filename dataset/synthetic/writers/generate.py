"""Render synthetic scenes and write them as one dataset; generate on first use only.

``generate_synthetic_dataset`` renders ``scenes`` sequences (scene_index 0..scenes-1) with the
format's preset and writes them with the format's writer, then writes the completion marker
``.sfdepth_synthetic.json`` (the generation parameters) last. ``ensure_synthetic_dataset`` does
that only when the marker is missing or records other parameters: it generates into a sibling
folder and renames it into place under a file lock, so concurrent callers (e.g. the ranks of a
DDP job) and interrupted runs never see a half-written dataset.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
from typing import Callable, Dict, Iterator, Optional

from utils.atomic import write_text_atomic

from . import PRESET_OF_FORMAT, WRITERS

__all__ = ["FORMATS", "DEFAULT_FRAMES", "MIN_FRAMES", "MARKER", "generate_synthetic_dataset", "ensure_synthetic_dataset",
           "read_marker"]

FORMATS = tuple(WRITERS)
MARKER = ".sfdepth_synthetic.json"
MARKER_VERSION = 1
DEFAULT_FRAMES = {"ddad": 10, "nuscenes": 13, "kitti_raw": 10, "kitti_2015": 6, "davis": 10}
# nuScenes: 2 key frames need 7 frames at 12 Hz; KITTI 2015: frames "10" and "11".
MIN_FRAMES = {"ddad": 1, "nuscenes": 7, "kitti_raw": 1, "kitti_2015": 2, "davis": 1}

RenderFn = Callable[..., object]


def _default_render(preset: str, num_frames: int, image_hw=None, seed: int = 0, scene_index: int = 0):
    from dataset.synthetic import render_sequence  # the renderer package, imported on use
    return render_sequence(preset, num_frames, image_hw=image_hw, seed=seed, scene_index=scene_index)


def _parameters(fmt: str, scenes: int, frames: int, height: Optional[int], width: Optional[int], seed: int) -> Dict:
    return {"format": fmt, "scenes": int(scenes), "frames": int(frames), "height": None if height is None else int(height),
            "width": None if width is None else int(width), "seed": int(seed), "marker_version": MARKER_VERSION}


def check_parameters(fmt: str, scenes: int, frames: Optional[int], height: Optional[int], width: Optional[int]) -> int:
    """Validates the generation parameters; returns the frame count (default for the format if None)."""
    if fmt not in WRITERS:
        raise ValueError(f"unknown format '{fmt}'; choose one of {', '.join(FORMATS)}")
    frames = DEFAULT_FRAMES[fmt] if frames is None else int(frames)
    if scenes < 1:
        raise ValueError(f"scenes must be >= 1, got {scenes}")
    if frames < MIN_FRAMES[fmt]:
        raise ValueError(f"format '{fmt}' needs at least {MIN_FRAMES[fmt]} frames, got {frames}"
                         + (" (2 key frames at 2 Hz from a 12 Hz render)" if fmt == "nuscenes" else ""))
    if (height is None) != (width is None):
        raise ValueError("give both height and width, or neither (the preset's size)")
    if height is not None and (height < 2 or width < 2):
        raise ValueError(f"image size must be at least 2x2, got {height}x{width}")
    return frames


def read_marker(out_dir: str) -> Optional[Dict]:
    try:
        with open(os.path.join(out_dir, MARKER)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def generate_synthetic_dataset(fmt: str, out_dir: str, scenes: int = 1, frames: Optional[int] = None,
                               height: Optional[int] = None, width: Optional[int] = None, seed: int = 0,
                               progress: bool = False, render_fn: Optional[RenderFn] = None) -> Dict:
    """Renders and writes the dataset into ``out_dir`` (always), then writes the marker. Returns
    the writer's summary."""
    frames = check_parameters(fmt, scenes, frames, height, width)
    render = render_fn or _default_render
    image_hw = None if height is None else (int(height), int(width))
    preset = PRESET_OF_FORMAT[fmt]

    def sequences() -> Iterator:
        indices = range(scenes)
        if progress:
            from tqdm import tqdm
            indices = tqdm(indices, desc=f"{fmt}: render + write", unit="scene")
        for index in indices:
            yield render(preset, frames, image_hw=image_hw, seed=seed, scene_index=index)

    os.makedirs(out_dir, exist_ok=True)
    marker = os.path.join(out_dir, MARKER)
    if os.path.exists(marker):
        os.remove(marker)  # the folder is about to change: it is no longer a finished dataset
    summary = WRITERS[fmt](sequences(), out_dir)
    write_text_atomic(marker, json.dumps(_parameters(fmt, scenes, frames, height, width, seed), indent=2,
                                         sort_keys=True) + "\n")
    return summary


def ensure_synthetic_dataset(fmt: str, out_dir: str, scenes: int = 1, frames: Optional[int] = None,
                             height: Optional[int] = None, width: Optional[int] = None, seed: int = 0,
                             progress: bool = False, render_fn: Optional[RenderFn] = None) -> str:
    """Returns ``out_dir`` after making sure it holds the synthetic dataset with these parameters.

    Generates only if the completion marker is missing or records different parameters. A folder
    that exists, is not empty and has no marker is not ours: it is left alone and an error raised.
    """
    frames = check_parameters(fmt, scenes, frames, height, width)
    wanted = _parameters(fmt, scenes, frames, height, width, seed)
    out_dir = os.path.abspath(out_dir)
    if read_marker(out_dir) == wanted:
        return out_dir
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    with open(out_dir + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if read_marker(out_dir) == wanted:  # another process finished it meanwhile
                return out_dir
            if os.path.isdir(out_dir) and os.listdir(out_dir) and read_marker(out_dir) is None:
                raise FileExistsError(
                    f"'{out_dir}' exists, is not empty and holds no {MARKER}: it was not generated here; "
                    f"refusing to overwrite it (remove it or choose another folder)")
            partial = out_dir + f".partial{os.getpid()}"
            shutil.rmtree(partial, ignore_errors=True)
            try:
                generate_synthetic_dataset(fmt, partial, scenes, frames, height, width, seed, progress, render_fn)
            except BaseException:
                shutil.rmtree(partial, ignore_errors=True)
                raise
            if os.path.isdir(out_dir):
                shutil.rmtree(out_dir)
            os.rename(partial, out_dir)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return out_dir
