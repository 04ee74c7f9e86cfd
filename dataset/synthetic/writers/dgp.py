"""DDAD / DGP writer: synthetic sequences -> TRI's DGP JSON scene dataset, as DDAD ships it.

Layout (``<out>`` = ``out_dir``; ``<scene>`` = the sequence name, e.g. ``000000``)::

    <out>/scene_dataset_v1.0.json            SceneDataset: metadata + scene_splits ("0" TRAIN, "1" VAL)
    <out>/ddad.json                          the same bytes, under the name DDAD uses
    <out>/<scene>/scene_<sha1>.json          Scene: samples (one per frame) and data (datums)
    <out>/<scene>/calibration/<sha1>.json    names / intrinsics / extrinsics (parallel lists)
    <out>/<scene>/rgb/CAMERA_xx/<ts>.png     8-bit RGB PNG, ts = timestamp in microseconds
    <out>/<scene>/point_cloud/LIDAR/<ts>.npz key "data": float64 [N, 4] X, Y, Z, INTENSITY

Everything follows the real DGP test scene field for field (proto field names only, sorted keys,
``index`` as a string, RFC 3339 timestamps, w-first quaternions):
- ``datum.image.pose`` is camera -> world (``T_world_rig @ T_rig_cam``), world being the scene's
  own frame; ``datum.point_cloud.pose`` is lidar -> world. The lidar datum is given in the vehicle
  (rig) frame with an identity extrinsic, as DDAD does (the rendered cloud is moved there).
- calibration: ``LIDAR`` first (zero intrinsics = "not a camera"), then the cameras in rig order;
  extrinsics are sensor -> vehicle. The file name is the sha1 of its bytes = ``calibration_key``.
- samples list datum keys LIDAR first, then the cameras; every sample has every datum. Datum
  keys are sha1s of the scene name and file name; ``prev_key`` / ``next_key`` chain each sensor.
- the scene file is named ``scene_<sha1 of its bytes>.json``, as DGP does.
- frames are at the rendered rate (10 Hz for the ddad preset); scene k starts at
  ``start_timestamp_us + k * 3600 s``.

Extra ground truth that real DDAD lacks, in folders a DGP reader never looks at:

    <out>/<scene>/depth/rendered/CAMERA_xx/<ts>.npz   key "depth": float32 [H, W], metres, z-depth of
                                                      every pixel (dense, rendered; no 0 holes)
    <out>/masks/<scene>/CAMERA_xx_mask.png            self-occlusion mask, uint8 0/255, 255 = the
                                                      pixel shows the scene, 0 = ego vehicle body
                                                      (the encoding of VFDepth's ddad_mask PNGs)

(packnet-sfm caches its lidar-projected depth next to these, in ``depth/lidar/``.)
"""
from __future__ import annotations

import os
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from dataset.synthetic.sequence import SyntheticSequence

from ._common import (
    FileLog,
    iterate_sequences,
    json_bytes,
    mask_png,
    pose_json,
    rfc3339,
    sha1_hex,
    train_val_split,
    transform_points,
    write_bytes,
    write_image_rgb,
    write_npz,
    write_png_gray,
    frame_timestamps_us,
)

__all__ = ["write_dgp", "DATASET_JSON", "DDAD_JSON", "LIDAR_NAME"]

DATASET_JSON = "scene_dataset_v1.0.json"
DDAD_JSON = "ddad.json"
LIDAR_NAME = "LIDAR"
DEFAULT_START_US = 1_600_000_000_000_000  # 2020-09-13T12:26:40Z
SCENE_SPACING_US = 3_600_000_000
_IDENTITY = np.eye(4)
_ZERO_INTRINSICS = {"cx": 0.0, "cy": 0.0, "fx": 0.0, "fy": 0.0, "skew": 0.0}


def _calibration(seq: SyntheticSequence) -> Dict:
    intrinsics = [dict(_ZERO_INTRINSICS)]
    extrinsics = [pose_json(_IDENTITY)]
    for n in range(seq.num_cameras):
        K = np.asarray(seq.K[n], dtype=np.float64)
        intrinsics.append({"cx": float(K[0, 2]), "cy": float(K[1, 2]), "fx": float(K[0, 0]),
                           "fy": float(K[1, 1]), "skew": float(K[0, 1])})
        extrinsics.append(pose_json(np.asarray(seq.T_rig_cam[n], dtype=np.float64)))
    return {"extrinsics": extrinsics, "intrinsics": intrinsics, "names": [LIDAR_NAME] + list(seq.camera_names)}


def _write_scene_files(seq: SyntheticSequence, start_us: int, log: FileLog, image_ext: str,
                       write_depth: bool, write_masks: bool) -> Dict:
    """Writes a scene's sensor files and calibration; returns its Scene JSON (without description)."""
    scene = seq.name
    log_name = f"synthetic_{scene}"
    timestamps = frame_timestamps_us(seq, start_us)
    H, W = seq.image_hw

    calib_bytes = json_bytes(_calibration(seq))
    calib_key = sha1_hex(calib_bytes)
    write_bytes(log.path(scene, "calibration", f"{calib_key}.json"), calib_bytes)

    if write_masks:
        for n, cam in enumerate(seq.camera_names):
            write_png_gray(log.path("masks", scene, f"{cam}_mask.png"), mask_png(seq.self_occlusion[n]))

    T_rig_lidar = np.asarray(seq.T_rig_lidar, dtype=np.float64)
    datum_names = [LIDAR_NAME] + list(seq.camera_names)
    keys = {name: [] for name in datum_names}
    datums = {name: [] for name in datum_names}
    for t in range(seq.num_frames):
        ts = int(timestamps[t])
        stamp = rfc3339(ts)
        T_world_rig = np.asarray(seq.T_world_rig[t], dtype=np.float64)

        # Lidar: moved into the vehicle frame (identity extrinsic, as DDAD).
        filename = f"point_cloud/{LIDAR_NAME}/{ts}.npz"
        cloud = np.asarray(seq.lidar_points[t], dtype=np.float64).reshape(-1, 4)
        data = np.empty_like(cloud)
        data[:, :3] = transform_points(T_rig_lidar, cloud[:, :3])
        data[:, 3] = cloud[:, 3]
        write_npz(log.path(scene, filename), data=data)
        key = sha1_hex(f"{scene}/{filename}")
        keys[LIDAR_NAME].append(key)
        datums[LIDAR_NAME].append({
            "datum": {"point_cloud": {
                "filename": filename,
                "metadata": {},
                "point_fields": [],
                "point_format": ["X", "Y", "Z", "INTENSITY"],
                "pose": pose_json(T_world_rig),
            }},
            "id": {"index": str(t), "log": log_name, "name": LIDAR_NAME, "timestamp": stamp},
            "key": key,
        })

        for n, cam in enumerate(seq.camera_names):
            filename = f"rgb/{cam}/{ts}{image_ext}"
            write_image_rgb(log.path(scene, filename), seq.images[t, n])
            if write_depth:
                write_npz(log.path(scene, "depth", "rendered", cam, f"{ts}.npz"),
                          depth=np.asarray(seq.depth[t, n], dtype=np.float32))
            key = sha1_hex(f"{scene}/{filename}")
            keys[cam].append(key)
            datums[cam].append({
                "datum": {"image": {
                    "channels": 3,
                    "filename": filename,
                    "height": int(H),
                    "metadata": {},
                    "pose": pose_json(T_world_rig @ np.asarray(seq.T_rig_cam[n], dtype=np.float64)),
                    "width": int(W),
                }},
                "id": {"index": str(t), "log": log_name, "name": cam, "timestamp": stamp},
                "key": key,
            })

    samples, data = [], []
    for t in range(seq.num_frames):
        for name in datum_names:
            datum = datums[name][t]
            datum["prev_key"] = keys[name][t - 1] if t > 0 else ""
            datum["next_key"] = keys[name][t + 1] if t + 1 < seq.num_frames else ""
            data.append(datum)
        samples.append({
            "calibration_key": calib_key,
            "datum_keys": [keys[name][t] for name in datum_names],
            "id": {"index": str(t), "log": log_name, "name": "", "timestamp": rfc3339(int(timestamps[t]))},
            "metadata": {},
        })
    return {"data": data, "log": log_name, "metadata": {}, "name": scene, "ontologies": {}, "samples": samples}


def write_dgp(
    sequences: Iterable[SyntheticSequence],
    out_dir: str,
    val_scenes: Optional[Sequence] = None,
    dataset_name: str = "DDAD",
    image_ext: str = ".png",
    write_depth: bool = True,
    write_masks: bool = True,
    start_timestamp_us: int = DEFAULT_START_US,
) -> Dict:
    """Writes ``sequences`` (a list, or a generator consumed once) as a DGP scene dataset.

    Args:
        val_scenes: scene names or list positions for the VAL split ("1"); the others go to TRAIN
            ("0"). Default: the last scene is VAL, or with a single scene that scene is in both.
        image_ext: ".png" (DDAD) or ".jpg" (the DGP test data).
        write_depth / write_masks: the extra dense depth npz and self-occlusion PNGs.
    Returns:
        {"format": "dgp", "root", "files": sorted relative paths, "dataset_json", "scenes",
         "train", "val"}
    """
    if image_ext not in (".png", ".jpg"):
        raise ValueError(f"image_ext must be '.png' or '.jpg', got '{image_ext}'")
    log = FileLog(out_dir)
    scenes: List[Dict] = []
    for position, seq in iterate_sequences(sequences):
        start = int(start_timestamp_us) + position * SCENE_SPACING_US
        scenes.append(_write_scene_files(seq, start, log, image_ext, write_depth, write_masks))

    names = [scene["name"] for scene in scenes]
    train, val = train_val_split(names, val_scenes)
    scene_files = {}
    for scene in scenes:
        scene["description"] = "ddad_val" if scene["name"] in val and scene["name"] not in train else "ddad_train"
        content = json_bytes(scene)
        rel = f"{scene['name']}/scene_{sha1_hex(content)}.json"
        write_bytes(log.path(rel), content)
        scene_files[scene["name"]] = rel

    dataset = {
        "metadata": {
            "available_annotation_types": [],
            "creation_date": "2021-01-01",
            "creator": "sfdepth synthetic world",
            "description": "Synthetic driving scenes rendered by dataset/synthetic, in DDAD's DGP format",
            "name": dataset_name,
            "origin": "PUBLIC",
            "version": "1.0",
        },
        "scene_splits": {
            "0": {"filenames": [scene_files[n] for n in train]},
            "1": {"filenames": [scene_files[n] for n in val]},
        },
    }
    content = json_bytes(dataset)
    write_bytes(log.path(DATASET_JSON), content)
    write_bytes(log.path(DDAD_JSON), content)
    return log.summary("dgp", dataset_json=os.path.join(log.root, DDAD_JSON), scenes=names, train=train, val=val)
