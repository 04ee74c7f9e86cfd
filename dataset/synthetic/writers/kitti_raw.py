"""KITTI raw writer: synthetic stereo sequences (the "kitti" preset) -> KITTI raw drives.

Layout (``<date>`` defaults to 2011_09_26; sequence k becomes drive k+1)::

    <out>/<date>/calib_cam_to_cam.txt  calib_velo_to_cam.txt  calib_imu_to_velo.txt
    <out>/<date>/<date>_drive_XXXX_sync/
        image_02/data/%010d.png   image_03/data/%010d.png     8-bit RGB, left / right
        image_02/timestamps.txt   image_03/timestamps.txt     "2011-09-26 12:00:00.100000000"
        image_02/cam.txt  image_03/cam.txt                    3x3 K (as packnet-sfm's KITTI_tiny)
        image_02/poses.txt  image_03/poses.txt                one line per frame: 3x4 row-major pose of
                                                              that camera in its first frame (T_cam(0)_cam(t))
        velodyne_points/data/%010d.bin                        float32 [N, 4]: x forward, y left, z up
                                                              (velodyne frame), reflectance in [0, 1]
        velodyne_points/timestamps.txt  timestamps_start.txt  timestamps_end.txt
        oxts/data/%010d.txt  oxts/dataformat.txt  oxts/timestamps.txt
        proj_depth/velodyne/image_02|image_03/%010d.npz       key "velodyne_depth": float32 [H, W], metres,
                                                              0 = no lidar return (nearest point per pixel)
    <out>/splits/train_files.txt  val_files.txt               monodepth2 style "<date>/<drive> <frame> l|r",
                                                              frames that have both temporal neighbours
    <out>/splits/test_files.txt                               eigen style, frame zero-padded, left only, all
                                                              frames of the validation drives
    <out>/splits/kitti_train_scenes.txt  kitti_valid_scenes.txt  kitti_train_scenes_all.txt
                                                              multi-mono-sf scene lists, one drive name per line

The calibration follows :mod:`.kitti_calib` (rectified rig; ``P_rect_03[0, 3] = -fx * baseline``
by default). The oxts packets are consistent with the rig poses under the usual Mercator
conversion (pykitti's ``pose_from_oxts_packet``): world x = east, y = north, z = up, the IMU at
the real car's offset from the velodyne. All drives share one date folder, so they must share
one calibration (same K, baseline and lidar mounting), as real KITTI drives of one day do.
"""
from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
import torch

from dataset.synthetic.sequence import SyntheticSequence
from geometry import matrix_to_axis_angle, points_to_depth_map

from ._common import (
    FileLog,
    invert,
    iterate_sequences,
    train_val_split,
    transform_points,
    write_bytes,
    write_image_rgb,
    write_npz,
    write_text,
)
from .kitti_calib import (
    StereoRig,
    calib_cam_to_cam_text,
    calib_imu_to_velo_text,
    calib_velo_to_cam_text,
    pose_lines,
    stereo_rig,
)

__all__ = ["write_kitti_raw", "drive_name", "OXTS_DATAFORMAT", "EARTH_RADIUS", "oxts_packets"]

EARTH_RADIUS = 6378137.0
ORIGIN_LAT_LON_ALT = (49.011, 8.4225, 112.0)  # Karlsruhe
# oxts/dataformat.txt, line for line as KITTI ships it (including its second "ay:").
OXTS_DATAFORMAT = (
    'lat:   latitude of the oxts-unit (deg)\n'
    'lon:   longitude of the oxts-unit (deg)\n'
    'alt:   altitude of the oxts-unit (m)\n'
    'roll:  roll angle (rad),    0 = level, positive = left side up,      range: -pi   .. +pi\n'
    'pitch: pitch angle (rad),   0 = level, positive = front down,        range: -pi/2 .. +pi/2\n'
    'yaw:   heading (rad),       0 = east,  positive = counter clockwise, range: -pi   .. +pi\n'
    'vn:    velocity towards north (m/s)\n'
    've:    velocity towards east (m/s)\n'
    'vf:    forward velocity, i.e. parallel to earth-surface (m/s)\n'
    'vl:    leftward velocity, i.e. parallel to earth-surface (m/s)\n'
    'vu:    upward velocity, i.e. perpendicular to earth-surface (m/s)\n'
    'ax:    acceleration in x, i.e. in direction of vehicle front (m/s^2)\n'
    'ay:    acceleration in y, i.e. in direction of vehicle left (m/s^2)\n'
    'ay:    acceleration in z, i.e. in direction of vehicle top (m/s^2)\n'
    'af:    forward acceleration (m/s^2)\n'
    'al:    leftward acceleration (m/s^2)\n'
    'au:    upward acceleration (m/s^2)\n'
    'wx:    angular rate around x (rad/s)\n'
    'wy:    angular rate around y (rad/s)\n'
    'wz:    angular rate around z (rad/s)\n'
    'wf:    angular rate around forward axis (rad/s)\n'
    'wl:    angular rate around leftward axis (rad/s)\n'
    'wu:    angular rate around upward axis (rad/s)\n'
    'pos_accuracy:  velocity accuracy (north/east in m)\n'
    'vel_accuracy:  velocity accuracy (north/east in m/s)\n'
    'navstat:       navigation status (see navstat_to_string)\n'
    'numsats:       number of satellites tracked by primary GPS receiver\n'
    'posmode:       position mode of primary GPS receiver (see gps_mode_to_string)\n'
    'velmode:       velocity mode of primary GPS receiver (see gps_mode_to_string)\n'
    'orimode:       orientation mode of primary GPS receiver (see gps_mode_to_string)\n'
)
_GRAVITY = 9.81
_DRIVE_SPACING = timedelta(minutes=10)


def drive_name(date: str, number: int) -> str:
    return f"{date}_drive_{number:04d}_sync"


def _timestamp_lines(start: datetime, seconds: np.ndarray) -> List[str]:
    """KITTI timestamps ('2011-09-26 13:17:59.287203584', nanoseconds) of ``start + seconds``."""
    lines = []
    for s in seconds:
        ns = int(round(float(s) * 1e9))
        stamp = start + timedelta(seconds=ns // 1_000_000_000)
        lines.append(stamp.strftime("%Y-%m-%d %H:%M:%S") + ".%09d" % (ns % 1_000_000_000))
    return lines


def _gradient(values: np.ndarray, times: np.ndarray) -> np.ndarray:
    if len(times) < 2:
        return np.zeros_like(values)
    return np.gradient(values, times, axis=0)


def oxts_packets(T_world_imu: np.ndarray, times: np.ndarray) -> np.ndarray:
    """IMU poses [T, 4, 4] in a z-up world (x east, y north) -> oxts packets [T, 30].

    Inverse of pykitti's Mercator conversion with the scale taken at the first packet, so that
    ``pose_from_oxts_packet`` gives back the poses relative to the first one exactly.
    """
    lat0, lon0, alt0 = ORIGIN_LAT_LON_ALT
    scale = math.cos(math.radians(lat0))
    mx0 = scale * lon0 * math.pi * EARTH_RADIUS / 180.0
    my0 = scale * EARTH_RADIUS * math.log(math.tan((90.0 + lat0) * math.pi / 360.0))
    p = T_world_imu[:, :3, 3]
    R = T_world_imu[:, :3, :3]
    rel = p - p[0]
    lon = (mx0 + rel[:, 0]) * 180.0 / (scale * math.pi * EARTH_RADIUS)
    lat = 360.0 / math.pi * np.arctan(np.exp((my0 + rel[:, 1]) / (scale * EARTH_RADIUS))) - 90.0
    alt = alt0 + rel[:, 2]
    roll = np.arctan2(R[:, 2, 1], R[:, 2, 2])
    pitch = -np.arcsin(np.clip(R[:, 2, 0], -1.0, 1.0))
    yaw = np.arctan2(R[:, 1, 0], R[:, 0, 0])

    velocity = _gradient(p, times)                               # world frame
    v_body = np.einsum("tji,tj->ti", R, velocity)                # R^T v
    accel = _gradient(velocity, times) + np.array([0.0, 0.0, _GRAVITY])  # specific force, world
    a_body = np.einsum("tji,tj->ti", R, accel)
    omega = np.zeros_like(p)
    if len(times) > 1:
        R_step = np.swapaxes(R[:-1], -1, -2) @ R[1:]
        step = matrix_to_axis_angle(torch.as_tensor(R_step)).numpy()
        omega[:-1] = step / np.diff(times)[:, None]
        omega[-1] = omega[-2]
    count = len(times)
    packets = np.column_stack([
        lat, lon, alt, roll, pitch, yaw,
        velocity[:, 1], velocity[:, 0], v_body[:, 0], v_body[:, 1], v_body[:, 2],
        a_body, a_body, omega, omega,
        np.full(count, 0.17), np.full(count, 0.03),
        np.full(count, 4), np.full(count, 10), np.full(count, 5), np.full(count, 5), np.zeros(count),
    ])
    return packets


def _oxts_line(packet: np.ndarray) -> str:
    floats = " ".join("%.15g" % (float(v) + 0.0) for v in packet[:25])
    ints = " ".join(str(int(v)) for v in packet[25:])
    return f"{floats} {ints}"


def _same_calibration(a: StereoRig, b: StereoRig) -> bool:
    return (a.image_hw == b.image_hw and np.allclose(a.K2, b.K2) and np.isclose(a.baseline, b.baseline)
            and np.allclose(a.T_cam2_velo, b.T_cam2_velo))


def _write_drive(seq: SyntheticSequence, rig: StereoRig, date: str, drive: str, start: datetime,
                 log: FileLog, image_ext: str, write_velodyne: bool, write_oxts: bool, write_proj_depth: bool) -> None:
    base = (date, drive)
    times = np.asarray(seq.timestamps, dtype=np.float64) - float(seq.timestamps[0])
    stamps = _timestamp_lines(start, times)
    T_world_rig = np.asarray(seq.T_world_rig, dtype=np.float64)
    T_rig_cam = np.asarray(seq.T_rig_cam, dtype=np.float64)
    T_rig_lidar = np.asarray(seq.T_rig_lidar, dtype=np.float64)
    H, W = seq.image_hw

    for folder, n in (("image_02", rig.left), ("image_03", rig.right)):
        for t in range(seq.num_frames):
            write_image_rgb(log.path(*base, folder, "data", f"{t:010d}{image_ext}"), seq.images[t, n])
        write_text(log.path(*base, folder, "timestamps.txt"), "\n".join(stamps) + "\n")
        K = np.asarray(seq.K[n], dtype=np.float64)
        write_text(log.path(*base, folder, "cam.txt"), "\n".join(" ".join("%.18e" % (v + 0.0) for v in row) for row in K) + "\n")
        T_world_cam = T_world_rig @ T_rig_cam[n]
        write_text(log.path(*base, folder, "poses.txt"), "\n".join(pose_lines(invert(T_world_cam[0]) @ T_world_cam)) + "\n")

    if write_velodyne:
        for t in range(seq.num_frames):
            cloud = np.asarray(seq.lidar_points[t], dtype=np.float64).reshape(-1, 4)
            velo = np.empty((len(cloud), 4), dtype=np.float32)
            velo[:, :3] = transform_points(rig.T_velo_lidar, cloud[:, :3])
            velo[:, 3] = cloud[:, 3]
            write_bytes(log.path(*base, "velodyne_points", "data", f"{t:010d}.bin"), velo.tobytes())
        write_text(log.path(*base, "velodyne_points", "timestamps.txt"), "\n".join(stamps) + "\n")
        half_sweep = 0.05
        write_text(log.path(*base, "velodyne_points", "timestamps_start.txt"),
                   "\n".join(_timestamp_lines(start, times - half_sweep)) + "\n")
        write_text(log.path(*base, "velodyne_points", "timestamps_end.txt"),
                   "\n".join(_timestamp_lines(start, times + half_sweep)) + "\n")

    if write_proj_depth:
        for folder, n in (("image_02", rig.left), ("image_03", rig.right)):
            T_cam_lidar = invert(T_rig_cam[n]) @ T_rig_lidar
            for t in range(seq.num_frames):
                cloud = np.asarray(seq.lidar_points[t], dtype=np.float64).reshape(-1, 4)
                depth = points_to_depth_map(torch.as_tensor(cloud[:, :3]), seq.K[n], T_cam_lidar, (H, W))
                write_npz(log.path(*base, "proj_depth", "velodyne", folder, f"{t:010d}.npz"),
                          velodyne_depth=depth[0].numpy().astype(np.float32))

    if write_oxts:
        T_world_imu = T_world_rig @ T_rig_cam[rig.left] @ rig.T_cam2_velo @ rig.T_velo_imu
        packets = oxts_packets(T_world_imu, times)
        for t in range(seq.num_frames):
            write_text(log.path(*base, "oxts", "data", f"{t:010d}.txt"), _oxts_line(packets[t]) + "\n")
        write_text(log.path(*base, "oxts", "timestamps.txt"), "\n".join(stamps) + "\n")
        write_text(log.path(*base, "oxts", "dataformat.txt"), OXTS_DATAFORMAT)


def write_kitti_raw(
    sequences: Iterable[SyntheticSequence],
    out_dir: str,
    date: str = "2011_09_26",
    val_scenes: Optional[Sequence] = None,
    image_ext: str = ".png",
    write_velodyne: bool = True,
    write_oxts: bool = True,
    write_proj_depth: bool = True,
    cam0_offset_m: float = 0.0,
) -> Dict:
    """Writes stereo ``sequences`` (list or generator) as KITTI raw drives of one date.

    Args:
        date: the date folder, ``YYYY_MM_DD``.
        val_scenes: scene names or list positions of the validation drives (default: the last
            one; a single drive is in both splits).
        image_ext: ".png" (real KITTI raw) or ".jpg" (the copies monodepth2 / multi-mono-sf read).
        cam0_offset_m: how far camera 2 sits left of the (unrendered) reference camera 0; see
            :mod:`.kitti_calib`. 0 puts camera 0 at camera 2.
    Returns:
        {"format": "kitti_raw", "root", "files", "drives", "train", "val"}
    """
    if image_ext not in (".png", ".jpg"):
        raise ValueError(f"image_ext must be '.png' or '.jpg', got '{image_ext}'")
    try:
        day = datetime.strptime(date, "%Y_%m_%d")
    except ValueError:
        raise ValueError(f"date must look like 2011_09_26, got '{date}'") from None
    log = FileLog(out_dir)
    drives: List[str] = []
    scene_names: List[str] = []
    frame_counts: List[int] = []
    first_rig: Optional[StereoRig] = None
    for position, seq in iterate_sequences(sequences):
        rig = stereo_rig(seq, cam0_offset_m)
        if first_rig is None:
            first_rig = rig
        elif not _same_calibration(first_rig, rig):
            raise ValueError(f"sequence '{seq.name}': all drives of one date share one calibration "
                             f"(K, baseline, lidar mounting, image size); render them with the same rig")
        drive = drive_name(date, position + 1)
        start = day + timedelta(hours=12) + position * _DRIVE_SPACING
        _write_drive(seq, rig, date, drive, start, log, image_ext, write_velodyne, write_oxts, write_proj_depth)
        drives.append(drive)
        scene_names.append(seq.name)
        frame_counts.append(seq.num_frames)

    write_text(log.path(date, "calib_cam_to_cam.txt"), calib_cam_to_cam_text(first_rig))
    write_text(log.path(date, "calib_velo_to_cam.txt"), calib_velo_to_cam_text(first_rig))
    write_text(log.path(date, "calib_imu_to_velo.txt"), calib_imu_to_velo_text(first_rig))

    train_names, val_names = train_val_split(scene_names, val_scenes)
    by_name = dict(zip(scene_names, zip(drives, frame_counts)))
    train = [by_name[n][0] for n in train_names]
    val = [by_name[n][0] for n in val_names]

    def frame_lines(names: List[str]) -> str:
        lines = []
        for name in names:
            drive, count = by_name[name]
            for frame in range(1, count - 1):
                for side in ("l", "r"):
                    lines.append(f"{date}/{drive} {frame} {side}")
        return "".join(line + "\n" for line in lines)

    write_text(log.path("splits", "train_files.txt"), frame_lines(train_names))
    write_text(log.path("splits", "val_files.txt"), frame_lines(val_names))
    test_lines = [f"{date}/{by_name[n][0]} {frame:010d} l" for n in val_names for frame in range(by_name[n][1])]
    write_text(log.path("splits", "test_files.txt"), "".join(line + "\n" for line in test_lines))
    write_text(log.path("splits", "kitti_train_scenes.txt"), "".join(d + "\n" for d in train))
    write_text(log.path("splits", "kitti_valid_scenes.txt"), "".join(d + "\n" for d in val))
    write_text(log.path("splits", "kitti_train_scenes_all.txt"), "".join(d + "\n" for d in drives))
    return log.summary("kitti_raw", date=date, drives=drives, train=train, val=val,
                       baseline=first_rig.baseline)
