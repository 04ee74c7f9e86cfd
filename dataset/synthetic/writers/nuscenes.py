"""nuScenes writer: synthetic surround sequences (the "nuscenes" preset, 12 Hz) -> a nuScenes
``v1.0-mini``-style data root that nuscenes-devkit's ``NuScenes`` loads.

Layout (``<log>`` = the scene's logfile, ``<ts>`` = microseconds)::

    <out>/<version>/*.json                      the 13 tables the devkit requires: scene, sample,
                                                sample_data, calibrated_sensor, ego_pose, sensor, log,
                                                map, and empty category, attribute, visibility,
                                                instance, sample_annotation
    <out>/maps/<token>.png                      one small map mask shared by all logs
    <out>/samples/<CAM>/<log>__<CAM>__<ts>.jpg  key frames (every ``keyframe_every``-th frame: 2 Hz)
    <out>/sweeps/<CAM>/<log>__<CAM>__<ts>.jpg   the frames between key frames
    <out>/samples|sweeps/LIDAR_TOP/<log>__LIDAR_TOP__<ts>.pcd.bin
                                                float32 [N, 5]: x y z intensity (0..255) ring, in the
                                                LIDAR_TOP sensor frame, one cloud per camera frame

Records: one sample per key frame; one sample_data per sensor and frame, with ``prev``/``next``
chaining each channel across key frames and sweeps, ``is_key_frame``, and ``sample_token`` = the
key frame's sample (for sweeps the next one, as nuScenes does); one ego_pose per sample_data (same
token, the rig pose ego -> global at its timestamp); calibrated_sensor per scene and channel
(sensor -> ego, w-first quaternion, K for cameras). Frames after the scene's last key frame are
not written (a sweep needs a following sample). Tokens are 32 hex digits derived from names.

Extra files a devkit reader never opens:

    <out>/depth/rendered/<CAM>/<log>__<CAM>__<ts>.npz  key "depth": float32 [H, W] dense z-depth, metres,
                                                       for every camera frame written
    <out>/masks/<scene name>/<CAM>_mask.png            self-occlusion, uint8 0/255, 255 = scene
    <out>/splits/train.txt  val.txt                    key-frame sample tokens, one per line (VFDepth style);
                                                       train.txt leaves out each scene's first and last key
                                                       frame, which lack a previous / next camera sweep
    <out>/splits/train_scenes.txt  val_scenes.txt      scene names, one per line
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from dataset.synthetic.sequence import SyntheticSequence

from ._common import (
    FileLog,
    iterate_sequences,
    mask_png,
    rotation_to_quaternion,
    scene_number,
    sha1_hex,
    train_val_split,
    write_bytes,
    write_jpeg_rgb,
    write_json,
    write_npz,
    write_png_gray,
    write_text,
    frame_timestamps_us,
    JPEG_QUALITY,
)

__all__ = ["write_nuscenes", "TABLES", "LIDAR_CHANNEL"]

TABLES = ("attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map", "sample",
          "sample_annotation", "sample_data", "scene", "sensor", "visibility")
LIDAR_CHANNEL = "LIDAR_TOP"
DEFAULT_START_US = 1_532_402_927_000_000  # 2018-07-24, the day of the nuScenes mini logs
SCENE_SPACING_US = 3_600_000_000
# HDL-32E: 32 rings from -30.67 deg to +10.67 deg elevation.
_RING_MIN, _RING_MAX, _RINGS = np.radians(-30.67), np.radians(10.67), 32


def _token(*parts) -> str:
    return sha1_hex("/".join(str(p) for p in parts))[:32]


def _pose_record(T: np.ndarray) -> Dict:
    return {"rotation": [float(q) for q in rotation_to_quaternion(T[:3, :3])],
            "translation": [float(x) for x in T[:3, 3]]}


def _nuscenes_cloud(points: np.ndarray) -> np.ndarray:
    """[N, 4] x y z intensity (0..1) -> float32 [N, 5] x y z intensity (0..255) ring."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 4)
    elevation = np.arctan2(points[:, 2], np.hypot(points[:, 0], points[:, 1]))
    ring = np.clip(np.rint((elevation - _RING_MIN) / (_RING_MAX - _RING_MIN) * (_RINGS - 1)), 0, _RINGS - 1)
    out = np.empty((len(points), 5), dtype=np.float32)
    out[:, :3] = points[:, :3]
    out[:, 3] = np.clip(points[:, 3], 0.0, 1.0) * 255.0
    out[:, 4] = ring
    return out


def write_nuscenes(
    sequences: Iterable[SyntheticSequence],
    out_dir: str,
    version: str = "v1.0-mini",
    keyframe_every: int = 6,
    val_scenes: Optional[Sequence] = None,
    jpeg_quality: int = JPEG_QUALITY,
    write_depth: bool = True,
    write_masks: bool = True,
    location: str = "singapore-onenorth",
    start_timestamp_us: int = DEFAULT_START_US,
) -> Dict:
    """Writes ``sequences`` (list or generator) as a nuScenes data root with table folder ``version``.

    Args:
        keyframe_every: key frame period in rendered frames (6 at 12 Hz = nuScenes' 2 Hz samples).
        val_scenes: scene names or list positions for the validation split files (default: the
            last scene; a single scene is in both).
    Returns:
        {"format": "nuscenes", "root", "files", "version", "scenes": [scene names],
         "samples": {scene name: [sample tokens]}, "train", "val"}
    """
    if keyframe_every < 1:
        raise ValueError(f"keyframe_every must be >= 1, got {keyframe_every}")
    log = FileLog(out_dir)
    tables: Dict[str, List[Dict]] = {name: [] for name in TABLES}
    sensors: Dict[str, Dict] = {}
    map_token = _token("map", "synthetic")
    scene_names: List[str] = []
    by_sequence_name: Dict[str, str] = {}
    scene_samples: Dict[str, List[str]] = {}

    for position, seq in iterate_sequences(sequences):
        number = scene_number(seq, position)
        scene_name = f"scene-{number:04d}"
        scene_token = _token("scene", scene_name)
        logfile = f"n000-2018-07-24-{11 + position // 60 % 12:02d}-{position % 60:02d}-00+0800"
        log_token = _token("log", logfile)
        tables["log"].append({"token": log_token, "logfile": logfile, "vehicle": "n000",
                              "date_captured": "2018-07-24", "location": location})
        timestamps = frame_timestamps_us(seq, int(start_timestamp_us) + position * SCENE_SPACING_US)
        last = (seq.num_frames - 1) // keyframe_every * keyframe_every
        keyframes = list(range(0, last + 1, keyframe_every))
        sample_tokens = [_token("sample", scene_name, t) for t in keyframes]

        channels = list(seq.camera_names) + [LIDAR_CHANNEL]
        calib_tokens = {}
        for n, channel in enumerate(channels):
            is_camera = channel != LIDAR_CHANNEL
            if channel not in sensors:
                sensors[channel] = {"token": _token("sensor", channel), "channel": channel,
                                    "modality": "camera" if is_camera else "lidar"}
            T = np.asarray(seq.T_rig_cam[n] if is_camera else seq.T_rig_lidar, dtype=np.float64)
            calib_tokens[channel] = _token("calibrated_sensor", scene_name, channel)
            record = {"token": calib_tokens[channel], "sensor_token": sensors[channel]["token"],
                      "camera_intrinsic": np.asarray(seq.K[n], dtype=np.float64).tolist() if is_camera else []}
            record.update(_pose_record(T))
            tables["calibrated_sensor"].append(record)
            if is_camera and write_masks:
                write_png_gray(log.path("masks", scene_name, f"{channel}_mask.png"), mask_png(seq.self_occlusion[n]))

        for k, t in enumerate(keyframes):
            tables["sample"].append({
                "token": sample_tokens[k], "timestamp": int(timestamps[t]), "scene_token": scene_token,
                "prev": sample_tokens[k - 1] if k > 0 else "",
                "next": sample_tokens[k + 1] if k + 1 < len(keyframes) else "",
            })

        H, W = seq.image_hw
        for n, channel in enumerate(channels):
            is_camera = channel != LIDAR_CHANNEL
            tokens = [_token("sample_data", scene_name, channel, t) for t in range(last + 1)]
            for t in range(last + 1):
                ts = int(timestamps[t])
                key = t % keyframe_every == 0
                folder = "samples" if key else "sweeps"
                stem = f"{logfile}__{channel}__{ts}"
                if is_camera:
                    filename = f"{folder}/{channel}/{stem}.jpg"
                    write_jpeg_rgb(log.path(filename), seq.images[t, n], jpeg_quality)
                    if write_depth:
                        write_npz(log.path("depth", "rendered", channel, f"{stem}.npz"),
                                  depth=np.asarray(seq.depth[t, n], dtype=np.float32))
                else:
                    filename = f"{folder}/{channel}/{stem}.pcd.bin"
                    write_bytes(log.path(filename), _nuscenes_cloud(seq.lidar_points[t]).tobytes())
                ego = {"token": tokens[t], "timestamp": ts}
                ego.update(_pose_record(np.asarray(seq.T_world_rig[t], dtype=np.float64)))
                tables["ego_pose"].append(ego)
                tables["sample_data"].append({
                    "token": tokens[t],
                    "sample_token": sample_tokens[-(-t // keyframe_every)],  # this or the next key frame
                    "ego_pose_token": tokens[t],
                    "calibrated_sensor_token": calib_tokens[channel],
                    "timestamp": ts,
                    "fileformat": "jpg" if is_camera else "pcd",
                    "is_key_frame": bool(key),
                    "height": int(H) if is_camera else 0,
                    "width": int(W) if is_camera else 0,
                    "filename": filename,
                    "prev": tokens[t - 1] if t > 0 else "",
                    "next": tokens[t + 1] if t < last else "",
                })

        tables["scene"].append({
            "token": scene_token, "log_token": log_token, "nbr_samples": len(keyframes),
            "first_sample_token": sample_tokens[0], "last_sample_token": sample_tokens[-1],
            "name": scene_name, "description": f"synthetic drive {seq.name}",
        })
        scene_names.append(scene_name)
        by_sequence_name[seq.name] = scene_name
        scene_samples[scene_name] = sample_tokens

    tables["sensor"] = [sensors[c] for c in sorted(sensors)]
    map_file = f"maps/{map_token}.png"
    write_png_gray(log.path(map_file), np.full((8, 8), 255, dtype=np.uint8))
    tables["map"] = [{"token": map_token, "log_tokens": [r["token"] for r in tables["log"]],
                      "category": "semantic_prior", "filename": map_file}]
    for name in TABLES:
        write_json(log.path(version, f"{name}.json"), tables[name])

    if val_scenes is not None:  # sequence names ("000001") stand for their scenes ("scene-0001")
        val_scenes = [by_sequence_name.get(v, v) if isinstance(v, str) else v for v in val_scenes]
    train, val = train_val_split(scene_names, val_scenes)
    # Training takes the neighbouring camera sweeps as context: only key frames that have both.
    write_text(log.path("splits", "train.txt"), "".join(tok + "\n" for s in train for tok in scene_samples[s][1:-1]))
    write_text(log.path("splits", "val.txt"), "".join(tok + "\n" for s in val for tok in scene_samples[s]))
    write_text(log.path("splits", "train_scenes.txt"), "".join(s + "\n" for s in train))
    write_text(log.path("splits", "val_scenes.txt"), "".join(s + "\n" for s in val))
    return log.summary("nuscenes", version=version, scenes=scene_names, samples=scene_samples, train=train, val=val)
