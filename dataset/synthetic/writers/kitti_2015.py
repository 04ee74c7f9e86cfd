"""KITTI 2015 scene flow writer: synthetic stereo sequences -> the KITTI 2015 benchmark folders.

Layout (sequence k is scene ``%06d`` = k; frame "10" is sequence frame ``frame10``, by default
the second to last, and "11" the frame after it)::

    <out>/data_scene_flow/{training,testing}/image_2|image_3/%06d_10.png  %06d_11.png
    <out>/data_scene_flow_multiview/{training,testing}/image_2|image_3/%06d_%02d.png
                         every rendered frame up to "11", numbered so that frame10 is 10 (those
                         that would get a negative number are left out)
    <out>/data_scene_flow/training/                     ground truth, training only, of frame 10:
        disp_occ_0/%06d_10.png  disp_noc_0/              disparity fx*b/z (16-bit, d = I/256, 0 = invalid)
        disp_occ_1/%06d_10.png  disp_noc_1/              disparity at frame 11 of the same surface point,
                                                         fx*b/(z + sf_z), stored at its frame-10 pixel
        flow_occ/%06d_10.png  flow_noc/                  optical flow 10 -> 11 (16-bit RGB, (I-2^15)/64,
                                                         B = valid)
        obj_map/%06d_10.png                              uint8: 0 background, 1..n the cars (numbered
                                                         by increasing object id)
    <out>/data_scene_flow_calib/{training,testing}/calib_cam_to_cam/%06d.txt
                                                   calib_velo_to_cam/%06d.txt  calib_imu_to_velo/%06d.txt
                                                         real KITTI text format (see .kitti_calib)

Validity: "occ" maps are valid wherever the surface is nearer than ``max_depth`` (the far
backdrop is invalid, like the sky in KITTI) and the value fits the PNG encoding; "noc" maps keep
the pixels whose correspondence is visible and inside the other image: the right image of frame
10 for disp_noc_0; the left image of frame 11 for flow_noc; both the left and the right image of
frame 11 for disp_noc_1. Visibility is a depth test against the rendered depth of that image
(visible unless every one of the 4 pixels around the projection is nearer than the point by more
than ``occlusion_tol``, relative). The disparity uses the exact rig baseline and fx.

The testing split holds images and calibration only. By default it re-uses the training scenes
(the synthetic world has no hidden test set; this only gives the submission path something to
read); pass ``testing_sequences`` for distinct ones.
"""
from __future__ import annotations

import os
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

from dataset.synthetic.sequence import SyntheticSequence
from utils.kitti_io import DISP_SCALE, FLOW_OFFSET, FLOW_SCALE, write_disparity_png, write_flow_png

from ._common import FileLog, invert, iterate_sequences, write_image_rgb, write_png_gray, write_text
from .kitti_calib import StereoRig, calib_cam_to_cam_text, calib_imu_to_velo_text, calib_velo_to_cam_text, stereo_rig

__all__ = ["write_kitti_2015", "kitti_2015_ground_truth"]

_MAX_DISP = 65535.0 / DISP_SCALE
_MAX_FLOW = (65535.0 - FLOW_OFFSET) / FLOW_SCALE
_MIN_DEPTH = 1e-3


def _pixel_grid(H: int, W: int) -> Tuple[np.ndarray, np.ndarray]:
    v, u = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64), indexing="ij")
    return u, v


def _visible(points: np.ndarray, K: np.ndarray, depth_map: np.ndarray, tol: float) -> np.ndarray:
    """Points [H, W, 3] in a camera frame -> bool [H, W]: in front, inside the image, and not hidden
    behind the surface rendered in ``depth_map`` (depth test on the 4 surrounding pixels)."""
    H, W = depth_map.shape
    z = points[..., 2]
    in_front = z > _MIN_DEPTH
    z_safe = np.where(in_front, z, 1.0)
    u = (K[0, 0] * points[..., 0] + K[0, 1] * points[..., 1]) / z_safe + K[0, 2]
    v = K[1, 1] * points[..., 1] / z_safe + K[1, 2]
    inside = in_front & (u >= 0) & (u <= W - 1) & (v >= 0) & (v <= H - 1)
    u0 = np.clip(np.floor(np.where(inside, u, 0.0)), 0, W - 1).astype(np.int64)
    v0 = np.clip(np.floor(np.where(inside, v, 0.0)), 0, H - 1).astype(np.int64)
    u1 = np.minimum(u0 + 1, W - 1)
    v1 = np.minimum(v0 + 1, H - 1)
    surface = np.maximum.reduce([depth_map[v0, u0], depth_map[v0, u1], depth_map[v1, u0], depth_map[v1, u1]])
    return inside & (z <= surface * (1.0 + tol))


def kitti_2015_ground_truth(seq: SyntheticSequence, rig: StereoRig, frame10: int, max_depth: float = 80.0,
                            occlusion_tol: float = 0.02) -> Dict[str, np.ndarray]:
    """The KITTI 2015 ground truth of one scene, before encoding.

    Returns float64 maps ``disp0``, ``disp1`` [H, W], ``flow`` [H, W, 2], int ``obj_map`` [H, W]
    and bool masks ``disp_occ_0``, ``disp_noc_0``, ``disp_occ_1``, ``disp_noc_1``, ``flow_occ``,
    ``flow_noc`` [H, W].
    """
    f10, f11 = frame10, frame10 + 1
    left, right = rig.left, rig.right
    H, W = seq.image_hw
    K = rig.K2
    fb = K[0, 0] * rig.baseline
    depth0 = np.asarray(seq.depth[f10, left], dtype=np.float64)
    sf = np.asarray(seq.scene_flow_fwd[f10, left], dtype=np.float64)
    flow = np.asarray(seq.optical_flow_fwd[f10, left], dtype=np.float64)

    valid0 = np.isfinite(depth0) & (depth0 > _MIN_DEPTH) & (depth0 < max_depth)
    d0 = np.where(valid0, depth0, 1.0)
    disp0 = fb / d0
    z1 = d0 + sf[..., 2]
    valid1 = valid0 & np.isfinite(z1) & (z1 > _MIN_DEPTH) & (z1 < max_depth)
    disp1 = fb / np.where(valid1, z1, 1.0)
    flow_ok = valid0 & np.isfinite(flow).all(-1) & (np.abs(flow) < _MAX_FLOW).all(-1)

    # Surface points at frame 10 (X0) and frame 11 (X1), in the left camera of each frame.
    u, v = _pixel_grid(H, W)
    K_inv = np.linalg.inv(K)
    rays = np.stack([u, v, np.ones_like(u)], -1) @ K_inv.T
    X0 = rays * d0[..., None]
    X1 = X0 + sf
    T_right_left = invert(np.asarray(seq.T_rig_cam[right], dtype=np.float64)) @ np.asarray(seq.T_rig_cam[left], dtype=np.float64)

    def to_right(X: np.ndarray) -> np.ndarray:
        return X @ T_right_left[:3, :3].T + T_right_left[:3, 3]

    seen_right_10 = _visible(to_right(X0), rig.K3, np.asarray(seq.depth[f10, right], dtype=np.float64), occlusion_tol)
    seen_left_11 = _visible(X1, K, np.asarray(seq.depth[f11, left], dtype=np.float64), occlusion_tol)
    seen_right_11 = _visible(to_right(X1), rig.K3, np.asarray(seq.depth[f11, right], dtype=np.float64), occlusion_tol)
    # The flow's end point, as written, must also land inside the image for flow_noc.
    target_u, target_v = u + flow[..., 0], v + flow[..., 1]
    flow_inside = (target_u >= 0) & (target_u <= W - 1) & (target_v >= 0) & (target_v <= H - 1)

    disp_occ_0 = valid0 & (disp0 < _MAX_DISP)
    disp_occ_1 = valid1 & (disp1 < _MAX_DISP)
    flow_occ = flow_ok
    ids = np.asarray(seq.object_ids[f10, left])
    obj_map = np.zeros((H, W), dtype=np.int64)
    for label, obj in enumerate(np.unique(ids[ids > 0]), start=1):
        obj_map[ids == obj] = label
    return {
        "disp0": disp0, "disp1": disp1, "flow": flow, "obj_map": obj_map,
        "disp_occ_0": disp_occ_0,
        "disp_noc_0": disp_occ_0 & seen_right_10,
        "disp_occ_1": disp_occ_1,
        "disp_noc_1": disp_occ_1 & seen_left_11 & seen_right_11 & flow_inside,
        "flow_occ": flow_occ,
        "flow_noc": flow_occ & seen_left_11 & flow_inside,
    }


def _write_images(seq: SyntheticSequence, rig: StereoRig, split: str, index: int, frame10: int,
                  log: FileLog, image_ext: str) -> None:
    for folder, n in (("image_2", rig.left), ("image_3", rig.right)):
        for kitti_frame, t in ((10, frame10), (11, frame10 + 1)):
            write_image_rgb(log.path("data_scene_flow", split, folder, f"{index:06d}_{kitti_frame}{image_ext}"), seq.images[t, n])
        for t in range(frame10 + 2):
            kitti_frame = 10 - frame10 + t
            if kitti_frame >= 0:
                write_image_rgb(log.path("data_scene_flow_multiview", split, folder, f"{index:06d}_{kitti_frame:02d}{image_ext}"),
                                seq.images[t, n])
    base = ("data_scene_flow_calib", split)
    write_text(log.path(*base, "calib_cam_to_cam", f"{index:06d}.txt"), calib_cam_to_cam_text(rig))
    write_text(log.path(*base, "calib_velo_to_cam", f"{index:06d}.txt"), calib_velo_to_cam_text(rig))
    write_text(log.path(*base, "calib_imu_to_velo", f"{index:06d}.txt"), calib_imu_to_velo_text(rig))


def _atomic_png(path: str, write, *args, **kwargs) -> None:
    """Runs a kitti_io writer on a temporary .png beside ``path``, then renames it into place."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.tmp{os.getpid()}.png")
    write(tmp, *args, **kwargs)
    os.replace(tmp, path)


def _write_ground_truth(gt: Dict[str, np.ndarray], index: int, log: FileLog) -> None:
    name = f"{index:06d}_10.png"
    base = ("data_scene_flow", "training")
    for key, values in (("disp_occ_0", "disp0"), ("disp_noc_0", "disp0"), ("disp_occ_1", "disp1"), ("disp_noc_1", "disp1")):
        _atomic_png(log.path(*base, key, name), write_disparity_png, gt[values], valid=gt[key])
    for key in ("flow_occ", "flow_noc"):
        _atomic_png(log.path(*base, key, name), write_flow_png, gt["flow"], valid=gt[key])
    if gt["obj_map"].max() > 255:
        raise ValueError(f"scene {index:06d}: {gt['obj_map'].max()} objects do not fit the uint8 obj_map")
    write_png_gray(log.path(*base, "obj_map", name), gt["obj_map"].astype(np.uint8))


def _frame10(seq: SyntheticSequence, frame10: Optional[int]) -> int:
    f10 = seq.num_frames - 2 if frame10 is None else int(frame10)
    if f10 < 0:
        f10 += seq.num_frames
    if not 0 <= f10 < seq.num_frames - 1:
        raise ValueError(f"sequence '{seq.name}': frame10={frame10} needs a following frame; it has {seq.num_frames} frames")
    return f10


def write_kitti_2015(
    sequences: Iterable[SyntheticSequence],
    out_dir: str,
    frame10: Optional[int] = None,
    testing_sequences: Optional[Iterable[SyntheticSequence]] = None,
    max_depth: float = 80.0,
    occlusion_tol: float = 0.02,
    image_ext: str = ".png",
    cam0_offset_m: float = 0.0,
) -> Dict:
    """Writes stereo ``sequences`` as KITTI 2015 training scenes (with ground truth) and testing scenes.

    Args:
        frame10: the sequence frame that becomes KITTI frame 10 (negative counts from the end);
            default: the second to last, so that frame 11 is the last.
        testing_sequences: the testing split's scenes; default: the training scenes' images again.
        max_depth: ground truth is invalid beyond this depth (metres).
        occlusion_tol: relative depth tolerance of the visibility test behind the "noc" maps.
        image_ext: ".png" (as KITTI ships it) or ".jpg".
    Returns:
        {"format": "kitti_2015", "root", "files", "training": [scene names], "testing": [...],
         "frame10": {scene: sequence frame}}
    """
    if image_ext not in (".png", ".jpg"):
        raise ValueError(f"image_ext must be '.png' or '.jpg', got '{image_ext}'")
    log = FileLog(out_dir)
    training: List[str] = []
    testing: List[str] = []
    chosen: Dict[str, int] = {}
    for index, seq in iterate_sequences(sequences, min_frames=2):
        rig = stereo_rig(seq, cam0_offset_m)
        f10 = _frame10(seq, frame10)
        chosen[seq.name] = f10
        _write_images(seq, rig, "training", index, f10, log, image_ext)
        _write_ground_truth(kitti_2015_ground_truth(seq, rig, f10, max_depth, occlusion_tol), index, log)
        training.append(seq.name)
        if testing_sequences is None:
            _write_images(seq, rig, "testing", index, f10, log, image_ext)
            testing.append(seq.name)
    if testing_sequences is not None:
        for index, seq in iterate_sequences(testing_sequences, min_frames=2, allow_empty=True):
            _write_images(seq, stereo_rig(seq, cam0_offset_m), "testing", index, _frame10(seq, frame10), log, image_ext)
            testing.append(seq.name)
    return log.summary("kitti_2015", training=training, testing=testing, frame10=chosen)
