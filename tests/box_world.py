"""Exactly known synthetic data for the dataset tests: a closed box "street" ray-cast with numpy
(every pixel static, depth and poses known in closed form), seen by the project's rig presets and
written by its writers; plus independent numpy helpers to check loaders against."""
import numpy as np


def quat_to_matrix(q):
    """Hamilton unit quaternion (w, x, y, z) -> 3x3 rotation (textbook formula, numpy)."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


# A closed box "street" rendered exactly with numpy (fast), written by the project's own DGP /
# nuScenes writers: every pixel is static, depth and poses are known exactly.
BOX_LO = np.array([-80.0, -9.0, 0.0])
BOX_HI = np.array([150.0, 11.0, 8.0])
LIDAR_ORIGIN_RIG = np.array([1.0, 0.0, 1.95])


def _box_hits(origins, dirs):
    """Exit distance t of rays (inside the box) along dirs: min over axes of the plane ahead."""
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = np.where(dirs > 0, BOX_HI, BOX_LO)
        t = (bound - origins) / dirs
    t = np.where(np.abs(dirs) > 1e-12, t, np.inf)
    return t.min(-1)


def _box_texture(points):
    """Smooth RGB in [0.1, 0.9] of world points (periods of metres; no aliasing at tiny sizes)."""
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    channels = [
        0.5 + 0.2 * np.sin(2 * np.pi * (x / 5.3 + y / 7.1)) + 0.2 * np.sin(2 * np.pi * z / 3.7),
        0.5 + 0.2 * np.sin(2 * np.pi * (x / 4.1 - z / 6.3)) + 0.2 * np.cos(2 * np.pi * y / 4.9),
        0.5 + 0.2 * np.cos(2 * np.pi * (y / 3.9 + z / 5.1)) + 0.2 * np.sin(2 * np.pi * x / 6.7),
    ]
    return np.stack(channels, -1)


def box_world_sequence(preset, num_frames, image_hw, name="000000", supersample=3):
    """A SyntheticSequence of the box world seen by a preset rig driving and turning slowly."""
    from dataset.synthetic import SyntheticSequence, get_rig

    rig = get_rig(preset, image_hw)
    N, (H, W) = rig.num_cameras, rig.image_hw
    times = np.arange(num_frames) / rig.frame_rate_hz
    T_world_rig = np.repeat(np.eye(4)[None], num_frames, 0)
    for t, s in enumerate(times):
        yaw = 0.15 * s
        T_world_rig[t, :3, :3] = [[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]]
        T_world_rig[t, :3, 3] = [8.0 * s, 0.6 * s * s, 0.0]
    images = np.zeros((num_frames, N, H, W, 3), np.uint8)
    depth = np.zeros((num_frames, N, H, W), np.float32)
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    for t in range(num_frames):
        for n in range(N):
            T_world_cam = T_world_rig[t] @ rig.T_rig_cam[n]
            K_inv = np.linalg.inv(rig.K[n])

            def cast(du, dv):
                v, u = np.mgrid[0:H, 0:W].astype(np.float64)
                rays = np.stack([u + du, v + dv, np.ones_like(u)], -1) @ K_inv.T  # z = 1 in the camera
                dirs = rays @ T_world_cam[:3, :3].T
                origin = np.broadcast_to(T_world_cam[:3, 3], dirs.shape)
                tz = _box_hits(origin, dirs)  # ray parameter = z-depth since rays have z = 1
                return tz, origin + tz[..., None] * dirs

            depth[t, n] = cast(0.0, 0.0)[0]
            colour = np.mean([_box_texture(cast(du, dv)[1]) for du in offsets for dv in offsets], 0)
            images[t, n] = np.clip(np.rint(colour * 255), 0, 255).astype(np.uint8)
    # Lidar: a spinning sensor on the roof; points in the lidar frame (T_rig_lidar).
    az, el = np.meshgrid(np.radians(np.arange(0, 360, 0.5)), np.radians(np.arange(-25, 10, 0.7)))
    dirs_rig = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1).reshape(-1, 3)
    lidar = []
    for t in range(num_frames):
        T_world_lidar = T_world_rig[t] @ rig.T_rig_lidar
        origin = T_world_rig[t, :3, :3] @ LIDAR_ORIGIN_RIG + T_world_rig[t, :3, 3]
        dirs = dirs_rig @ T_world_rig[t, :3, :3].T
        hits = origin + _box_hits(np.broadcast_to(origin, dirs.shape), dirs)[:, None] * dirs
        local = (hits - T_world_lidar[:3, 3]) @ T_world_lidar[:3, :3]
        lidar.append(np.column_stack([local, np.full(len(local), 0.5)]).astype(np.float32))
    self_occlusion = np.ones((N, H, W), np.uint8)
    self_occlusion[-1, -3:, :] = 0  # the last camera sees a strip of "ego body"
    zeros3 = np.zeros((num_frames, N, H, W, 3), np.float32)
    zeros2 = np.zeros((num_frames, N, H, W, 2), np.float32)
    return SyntheticSequence(
        name=name, camera_names=list(rig.camera_names), K=rig.K, T_rig_cam=rig.T_rig_cam, image_hw=(H, W),
        timestamps=times, T_world_rig=T_world_rig, images=images, depth=depth,
        object_ids=np.zeros((num_frames, N, H, W), np.int32), scene_flow_fwd=zeros3, scene_flow_bwd=zeros3.copy(),
        optical_flow_fwd=zeros2, optical_flow_bwd=zeros2.copy(), T_rig_lidar=np.asarray(rig.T_rig_lidar, np.float64),
        lidar_points=lidar, self_occlusion=self_occlusion, metadata={"preset": f"box-{preset}"},
    )


def compare_depth_at_lidar_pixels(depth_gt, rendered, tol=1e-3, scene_mask=None):
    """(number of lidar pixels, fraction of them whose lidar depth lies within the range of the
    dense rendered depth over the pixel's 3x3 neighbourhood). A lidar point lands up to half a
    pixel from the pixel centre; on a continuous surface its depth is bracketed by the depths at
    the surrounding pixel centres (inverse depth is affine in the pixel coordinates on a plane, so
    depth is monotonic between them). On grazing surfaces far away a pixel spans metres, so a
    plain comparison at the pixel centre would not be exact. Border pixels are left out (their
    points may lie outside the outermost pixel centres, where nothing brackets them)."""
    H, W = rendered.shape
    pad = np.pad(rendered, 1, mode="edge")
    stack = np.stack([pad[dy:dy + H, dx:dx + W] for dy in range(3) for dx in range(3)])
    lo, hi = stack.min(0), stack.max(0)
    valid = depth_gt > 0
    valid[0, :] = valid[-1, :] = valid[:, 0] = valid[:, -1] = False
    if scene_mask is not None:  # leave out the ego body and its edge (the roof lidar sees past it)
        pad = np.pad(scene_mask, 1, mode="edge")
        valid &= np.stack([pad[dy:dy + H, dx:dx + W] for dy in range(3) for dx in range(3)]).min(0) > 0
    z = depth_gt[valid]
    inside = (z >= lo[valid] * (1 - tol)) & (z <= hi[valid] * (1 + tol))
    return int(valid.sum()), float(inside.mean())
