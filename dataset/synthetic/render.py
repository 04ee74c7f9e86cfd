"""Render a synthetic drive: images, depth, object ids, scene and optical flow, lidar, self-occlusion.

One call of :func:`render_sequence` builds the world of (seed, scene_index), drives the rig along
the street and ray-casts every camera at every frame (all pixels of all cameras at once, in
chunks of tiles), plus a rotating lidar.  See ``sequence.py`` for the output contract.

Colour is the average of ``supersample``^2 sub-pixel rays; depth, object ids and flows come from
the pixel-centre ray.  The lidar sweep is treated as instantaneous at the frame time (no rolling
shutter / motion distortion), its points are expressed in the rig's lidar frame.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from . import materials as M
from .raycast import HIT_BOX, HIT_PLANE, HIT_SPHERE, Boxes, cast
from .rig import Rig, get_rig
from .sequence import SyntheticSequence
from .world import KIND_CAR, KIND_EGO, BoxSet, Scene, ego_boxes, generate_scene

TILE = 8                    # camera tile size in pixels (culling granularity)
RAYS_PER_CALL = 1 << 17     # rays per ray-casting call (bounds memory)
CULL_DISTANCE = 400.0       # boxes farther than this from a camera are not drawn
FOOTPRINT_SCALE = 0.8       # texture band limit relative to the pixel footprint
LIDAR_RING_BLOCK = 8
LIDAR_AZIMUTH_BLOCK = 32
LIDAR_SECTOR_BLOCKS = 8     # azimuth blocks per coarse culling sector
BEHIND_CAMERA_PIXEL = -1.0  # where flow sends points that end up behind the camera (as geometry.project)


# ----------------------------------------------------------------------------- helpers
def _inv(T: np.ndarray) -> np.ndarray:
    """Inverse of rigid transforms [..., 4, 4]."""
    R = T[..., :3, :3]
    t = T[..., :3, 3]
    out = np.zeros_like(T)
    Rt = np.swapaxes(R, -1, -2)
    out[..., :3, :3] = Rt
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", Rt, t)
    out[..., 3, 3] = 1.0
    return out


def _apply(T: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """T [4, 4] (float64) applied to points [..., 3], written out elementwise (fixed order)."""
    return torch.stack([T[i, 0] * p[..., 0] + T[i, 1] * p[..., 1] + T[i, 2] * p[..., 2] + T[i, 3]
                        for i in range(3)], dim=-1)


def _dot3(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1] + a[..., 2] * b[..., 2]


def _rotate(R: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.stack([R[i, 0] * v[..., 0] + R[i, 1] * v[..., 1] + R[i, 2] * v[..., 2] for i in range(3)], dim=-1)


@dataclass
class _Tables:
    """Per-box attributes as tensors, for shading."""

    kind: torch.Tensor
    object_id: torch.Tensor
    material: torch.Tensor
    half: torch.Tensor
    colour_a: torch.Tensor
    colour_b: torch.Tensor
    seed: torch.Tensor
    params: torch.Tensor

    @staticmethod
    def of(boxes: BoxSet) -> "_Tables":
        return _Tables(
            kind=torch.as_tensor(boxes.kind, dtype=torch.int64),
            object_id=torch.as_tensor(boxes.object_id, dtype=torch.int64),
            material=torch.as_tensor(boxes.material, dtype=torch.int64),
            half=torch.as_tensor(boxes.half, dtype=torch.float64),
            colour_a=torch.as_tensor(boxes.color_a, dtype=torch.float32),
            colour_b=torch.as_tensor(boxes.color_b, dtype=torch.float32),
            seed=torch.as_tensor(boxes.seed, dtype=torch.int64),
            params=torch.as_tensor(boxes.params, dtype=torch.float64),
        )


def _boxes_at(boxes: BoxSet, t: float, T_world_vehicle: np.ndarray) -> Boxes:
    centre, R = boxes.poses(t, T_world_vehicle)
    return Boxes(centre=torch.as_tensor(centre, dtype=torch.float64), R=torch.as_tensor(R, dtype=torch.float64),
                 half=torch.as_tensor(boxes.half, dtype=torch.float64))


def _albedo(kind, box, local, axis, sign, point, footprint, tables: _Tables, scene: Scene) -> torch.Tensor:
    """Albedo [n, 3] float32 of flat hits (n rays)."""
    n = kind.shape[0]
    material = torch.where(kind == HIT_BOX, tables.material[box.clamp(min=0)],
                           torch.where(kind == HIT_PLANE, torch.full_like(kind, M.GROUND), torch.full_like(kind, M.SKY)))
    out = torch.zeros((n, 3), dtype=torch.float32)
    for m in torch.unique(material).tolist():
        idx = torch.nonzero(material == m).flatten()
        fp = None if footprint is None else footprint[idx]
        if m == M.GROUND:
            surf = M.Surface(local=local[idx], axis=axis[idx], sign=sign[idx], half=torch.zeros_like(local[idx]),
                             colour_a=None, colour_b=None, seed=None, params=None, footprint=fp)
            out[idx] = M.ground(surf, scene.layout.as_dict(), scene.seeds["ground"]).to(torch.float32)
        elif m == M.SKY:
            centre = torch.as_tensor(scene.backdrop_centre, dtype=torch.float64)
            out[idx] = M.sky(point[idx], centre, scene.backdrop_radius, scene.seeds["sky"], fp).to(torch.float32)
        else:
            b = box[idx]
            surf = M.Surface(local=local[idx], axis=axis[idx], sign=sign[idx], half=tables.half[b],
                             colour_a=tables.colour_a[b], colour_b=tables.colour_b[b], seed=tables.seed[b],
                             params=tables.params[b], footprint=fp)
            out[idx] = M.BOX_SHADERS[m](surf).to(torch.float32)
    return out.clamp(0.0, 1.0)


# ----------------------------------------------------------------------------- camera rays
@dataclass
class _CameraRays:
    """Pixel coordinates of every ray, tiled: [tiles_per_camera, R] (shared by all cameras)."""

    u: torch.Tensor        # float64 continuous pixel coordinates (integer = pixel centre)
    v: torch.Tensor
    Kinv: torch.Tensor     # [N, 3, 3] float64
    colour_rays: int       # the first colour_rays of each tile are sub-pixel rays, the rest pixel centres
    n_ty: int
    n_tx: int
    ss: int
    separate_centre: bool

    @property
    def rays_per_tile(self) -> int:
        return self.u.shape[1]

    def directions(self, cams: torch.Tensor, tiles: torch.Tensor) -> torch.Tensor:
        """Camera-frame directions K^-1 (u, v, 1) [G, R, 3] of tiles (index within a camera) of cams."""
        Ki = self.Kinv[cams][:, None]                                      # [G, 1, 3, 3]
        u, v = self.u[tiles], self.v[tiles]
        return torch.stack([Ki[..., 0, 0] * u + Ki[..., 0, 1] * v + Ki[..., 0, 2],
                            Ki[..., 1, 0] * u + Ki[..., 1, 1] * v + Ki[..., 1, 2],
                            torch.ones_like(u)], dim=-1)


def _camera_rays(K: np.ndarray, image_hw: Tuple[int, int], ss: int) -> _CameraRays:
    H, W = image_hw
    n_ty, n_tx = -(-H // TILE), -(-W // TILE)
    offsets = (torch.arange(ss, dtype=torch.float64) + 0.5) / ss - 0.5

    def tiles_of(grid: torch.Tensor, per: int) -> torch.Tensor:
        s = TILE * per
        return grid.view(n_ty, s, n_tx, s).permute(0, 2, 1, 3).reshape(n_ty * n_tx, s * s)

    vs = torch.arange(n_ty * TILE, dtype=torch.float64)
    us = torch.arange(n_tx * TILE, dtype=torch.float64)
    gv, gu = torch.meshgrid((vs[:, None] + offsets[None, :]).flatten(), (us[:, None] + offsets[None, :]).flatten(),
                            indexing="ij")
    u, v = tiles_of(gu, ss), tiles_of(gv, ss)
    separate = ss > 1
    colour_rays = u.shape[1]
    if separate:
        cv, cu = torch.meshgrid(vs, us, indexing="ij")
        u = torch.cat([u, tiles_of(cu, 1)], dim=1)
        v = torch.cat([v, tiles_of(cv, 1)], dim=1)
    Kinv = torch.as_tensor(np.linalg.inv(K), dtype=torch.float64)
    return _CameraRays(u=u, v=v, Kinv=Kinv, colour_rays=colour_rays, n_ty=n_ty, n_tx=n_tx, ss=ss,
                       separate_centre=separate)


def _untile(x: torch.Tensor, N: int, rays: _CameraRays, image_hw, per: int = 1) -> torch.Tensor:
    """[N * tiles, (TILE*per)^2, C] -> [N, H, W, C] (cropped)."""
    s = TILE * per
    C = x.shape[-1]
    x = x.view(N, rays.n_ty, rays.n_tx, s, s, C).permute(0, 1, 3, 2, 4, 5).reshape(N, rays.n_ty * s, rays.n_tx * s, C)
    return x[:, : image_hw[0] * per, : image_hw[1] * per]


# ----------------------------------------------------------------------------- lidar rays
@dataclass
class _LidarRays:
    """Sensor-frame unit directions as tiles [G, R, 3] and per ray: valid (not padding), ring index
    (0 = top beam) and the firing order key (azimuth step major, ring minor); sector groups."""

    dirs: torch.Tensor
    valid: torch.Tensor
    ring: torch.Tensor
    order: torch.Tensor
    groups: List[Tuple[int, int]]


def _lidar_rays(rig: Rig) -> _LidarRays:
    """Tile order: azimuth block major, ring block minor, so a sector's tiles are contiguous."""
    rings, A = rig.lidar_rings, rig.lidar_azimuth_samples
    upper, lower = (math.radians(a) for a in rig.lidar_vfov_deg)
    rb = min(LIDAR_RING_BLOCK, rings)
    ab = LIDAR_AZIMUTH_BLOCK
    n_rb, n_ab = -(-rings // rb), -(-A // ab)
    ring = torch.arange(n_rb * rb)
    step = torch.arange(n_ab * ab)
    elevation = upper + (lower - upper) * ring.to(torch.float64) / max(rings - 1, 1)
    az = 2.0 * math.pi * step.to(torch.float64) / A
    valid = (ring[:, None] < rings) & (step[None, :] < A)
    el, azg = torch.meshgrid(elevation, az, indexing="ij")
    d = torch.stack([torch.cos(el) * torch.cos(azg), torch.cos(el) * torch.sin(azg), torch.sin(el)], dim=-1)
    ring_g, step_g = torch.meshgrid(ring, step, indexing="ij")

    def tiles(x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(n_rb, rb, n_ab, ab, -1).permute(2, 0, 1, 3, 4)
        return x.reshape(n_ab * n_rb, rb * ab, x.shape[-1])

    groups = []
    for s in range(0, n_ab, LIDAR_SECTOR_BLOCKS):
        e = min(n_ab, s + LIDAR_SECTOR_BLOCKS)
        groups.append((s * n_rb, e * n_rb))
    return _LidarRays(dirs=tiles(d), valid=tiles(valid[..., None])[..., 0], ring=tiles(ring_g[..., None])[..., 0],
                      order=tiles((step_g * (n_rb * rb) + ring_g)[..., None])[..., 0], groups=groups)


# ----------------------------------------------------------------------------- main entry
def render_sequence(
    preset: Union[str, Rig],
    num_frames: int,
    image_hw: Optional[Sequence[int]] = None,
    seed: int = 0,
    scene_index: int = 0,
    exposure_jitter: float = 0.0,
    noise_std: float = 0.0,
    self_occlusion: Optional[bool] = None,
    supersample: int = 2,
    progress: bool = False,
    num_threads: Optional[int] = None,
) -> SyntheticSequence:
    """Render ``num_frames`` frames of scene ``scene_index`` of world ``seed`` with a rig.

    Args:
        preset: "ddad", "nuscenes", "kitti" or a :class:`Rig`.
        num_frames: frames at the rig's frame rate, from t = 0.
        image_hw: (H, W); None = the preset's native size (K follows, half-pixel convention).
        exposure_jitter: per camera and frame gain uniform in [1 - j, 1 + j], applied after rendering.
        noise_std: Gaussian noise (intensity units in [0, 1]) added after the gain, before uint8.
        self_occlusion: render the ego body (None: the preset's default).
        supersample: sub-pixel rays per pixel side for the colour.
        progress: show a progress bar over frames.
        num_threads: torch intra-op threads while rendering (restored afterwards); None keeps the
            current setting.  1 is the fastest choice on a machine whose cores are busy with other
            work (many small parallel ops stall when a thread is descheduled).
    Deterministic: the same arguments give bit-identical arrays, whatever the thread count.
    """
    if num_threads is None:
        return _render_sequence(preset, num_frames, image_hw, seed, scene_index, exposure_jitter, noise_std,
                                self_occlusion, supersample, progress)
    previous = torch.get_num_threads()
    torch.set_num_threads(int(num_threads))
    try:
        return _render_sequence(preset, num_frames, image_hw, seed, scene_index, exposure_jitter, noise_std,
                                self_occlusion, supersample, progress)
    finally:
        torch.set_num_threads(previous)


def _render_sequence(preset, num_frames, image_hw, seed, scene_index, exposure_jitter, noise_std, self_occlusion,
                     supersample, progress) -> SyntheticSequence:
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if supersample < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    if not 0.0 <= exposure_jitter < 1.0:
        raise ValueError(f"exposure_jitter must be in [0, 1), got {exposure_jitter}")
    if noise_std < 0.0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    rig = get_rig(preset, image_hw)
    rig.validate()
    H, W = rig.image_hw
    N = rig.num_cameras
    dt = 1.0 / rig.frame_rate_hz
    times = np.arange(num_frames, dtype=np.float64) * dt
    scene = generate_scene(seed, scene_index, (times[0] - dt, times[-1] + dt))
    use_ego = rig.self_occlusion if self_occlusion is None else bool(self_occlusion)
    boxes = BoxSet.concat([scene.boxes, ego_boxes(rig.ego_boxes)]) if use_ego and len(rig.ego_boxes) else scene.boxes
    tables = _Tables.of(boxes)

    # Poses at every frame and one step beyond both ends.
    ext_times = np.concatenate([[times[0] - dt], times, [times[-1] + dt]])
    T_world_vehicle_ext = scene.trajectory.pose(ext_times)
    T_world_rig_ext = T_world_vehicle_ext @ rig.T_vehicle_rig
    T_world_cam_ext = T_world_rig_ext[:, None] @ rig.T_rig_cam[None]               # [T+2, N, 4, 4]
    T_cam_world_ext = _inv(T_world_cam_ext)

    cam_rays = _camera_rays(rig.K, (H, W), supersample)
    lidar_rays = _lidar_rays(rig)
    focal = np.sqrt(rig.K[:, 0, 0] * rig.K[:, 1, 1])

    images = np.zeros((num_frames, N, H, W, 3), dtype=np.uint8)
    depth = np.zeros((num_frames, N, H, W), dtype=np.float32)
    object_ids = np.zeros((num_frames, N, H, W), dtype=np.int32)
    sf = {d: np.zeros((num_frames, N, H, W, 3), dtype=np.float32) for d in ("fwd", "bwd")}
    of = {d: np.zeros((num_frames, N, H, W, 2), dtype=np.float32) for d in ("fwd", "bwd")}
    self_occ = np.ones((N, H, W), dtype=np.uint8)
    lidar_points: List[np.ndarray] = []
    lidar_rings: List[np.ndarray] = []
    gains = np.ones((num_frames, N))

    frames = range(num_frames)
    if progress:
        from tqdm import tqdm

        frames = tqdm(frames, desc=f"render {rig.name}", unit="frame")
    for k in frames:
        e = k + 1  # index into the extended pose arrays
        t = float(times[k])
        colour, geo = _render_cameras(rig, cam_rays, scene, boxes, tables, t, dt, T_world_vehicle_ext[e - 1:e + 2],
                                      T_world_cam_ext[e - 1:e + 2], T_cam_world_ext[e - 1:e + 2], focal)
        rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(scene_index) & 0xFFFFFFFF,
                                                            0xC0FFEE, k]))
        gain = rng.uniform(1.0 - exposure_jitter, 1.0 + exposure_jitter, N) if exposure_jitter > 0 else np.ones(N)
        gains[k] = gain
        img = colour * gain[:, None, None, None].astype(np.float32)
        if noise_std > 0:
            img = img + rng.normal(0.0, noise_std, img.shape).astype(np.float32)
        images[k] = np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
        depth[k] = geo["depth"]
        object_ids[k] = geo["object_id"]
        for d in ("fwd", "bwd"):
            sf[d][k] = geo["sf_" + d]
            of[d][k] = geo["of_" + d]
        if k == 0:
            self_occ = np.where(geo["ego"], 0, 1).astype(np.uint8)
        points, ring = _render_lidar(rig, lidar_rays, scene, boxes, tables, t, T_world_vehicle_ext[e],
                                     T_world_rig_ext[e])
        lidar_points.append(points)
        lidar_rings.append(ring)

    metadata = _metadata(rig, scene, seed, scene_index, supersample, exposure_jitter, noise_std, gains, use_ego, times)
    metadata["lidar_ring_index"] = lidar_rings
    return SyntheticSequence(
        name=f"{scene_index:06d}", camera_names=list(rig.camera_names), K=rig.K.astype(np.float64),
        T_rig_cam=rig.T_rig_cam.astype(np.float64), image_hw=(H, W), timestamps=times,
        T_world_rig=T_world_rig_ext[1:-1].copy(), images=images, depth=depth, object_ids=object_ids,
        scene_flow_fwd=sf["fwd"], scene_flow_bwd=sf["bwd"], optical_flow_fwd=of["fwd"], optical_flow_bwd=of["bwd"],
        T_rig_lidar=rig.T_rig_lidar.astype(np.float64), lidar_points=lidar_points, self_occlusion=self_occ,
        metadata=metadata,
    )


def _render_cameras(rig, cam_rays: _CameraRays, scene: Scene, boxes: BoxSet, tables: _Tables, t: float, dt: float,
                    T_world_vehicle3: np.ndarray, T_world_cam3: np.ndarray, T_cam_world3: np.ndarray, focal):
    """Colour [N, H, W, 3] float32 and geometry maps of all cameras at time t (poses at t - dt, t, t + dt)."""
    N = rig.num_cameras
    H, W = rig.image_hw
    tiles_per_cam = cam_rays.u.shape[0]
    R = cam_rays.rays_per_tile
    CR = cam_rays.colour_rays
    ss = cam_rays.ss
    box_now = _boxes_at(boxes, t, T_world_vehicle3[1])
    box_prev = _boxes_at(boxes, t - dt, T_world_vehicle3[0])
    box_next = _boxes_at(boxes, t + dt, T_world_vehicle3[2])
    sun = torch.as_tensor(scene.sun_direction, dtype=torch.float64)
    T_wc = torch.as_tensor(T_world_cam3, dtype=torch.float64)
    T_cw = torch.as_tensor(T_cam_world3, dtype=torch.float64)
    K = torch.as_tensor(rig.K, dtype=torch.float64)

    total = N * tiles_per_cam
    cam_of_tile = torch.arange(N).repeat_interleave(tiles_per_cam)
    colour_tiles = torch.zeros((total, TILE * TILE, 3), dtype=torch.float32)
    centre_px = TILE * TILE
    geo_tiles = {
        "depth": torch.zeros((total, centre_px, 1), dtype=torch.float32),
        "object_id": torch.zeros((total, centre_px, 1), dtype=torch.int32),
        "ego": torch.zeros((total, centre_px, 1), dtype=torch.bool),
        "sf_fwd": torch.zeros((total, centre_px, 3), dtype=torch.float32),
        "sf_bwd": torch.zeros((total, centre_px, 3), dtype=torch.float32),
        "of_fwd": torch.zeros((total, centre_px, 2), dtype=torch.float32),
        "of_bwd": torch.zeros((total, centre_px, 2), dtype=torch.float32),
    }
    # Pixel coordinates of the centre rays of each tile (for the optical flow).
    ty = torch.arange(cam_rays.n_ty).repeat_interleave(cam_rays.n_tx)
    tx = torch.arange(cam_rays.n_tx).repeat(cam_rays.n_ty)
    py = torch.arange(TILE).repeat_interleave(TILE)
    px = torch.arange(TILE).repeat(TILE)
    pix_v = (ty[:, None] * TILE + py[None, :]).to(torch.float64)                  # [tiles_per_cam, 64]
    pix_u = (tx[:, None] * TILE + px[None, :]).to(torch.float64)

    step = max(1, RAYS_PER_CALL // R)
    for s in range(0, total, step):
        e = min(total, s + step)
        cams = cam_of_tile[s:e]
        Rwc = T_wc[1, cams, :3, :3]                                                # [G, 3, 3]
        d_cam = cam_rays.directions(cams, torch.arange(s, e) % tiles_per_cam)
        d_world = torch.stack([Rwc[:, None, i, 0] * d_cam[..., 0] + Rwc[:, None, i, 1] * d_cam[..., 1]
                               + Rwc[:, None, i, 2] * d_cam[..., 2] for i in range(3)], dim=-1)
        origins = T_wc[1, cams, :3, 3]
        groups = []
        for c in torch.unique_consecutive(cams).tolist():
            idx = torch.nonzero(cams == c).flatten()
            groups.append((int(idx[0]), int(idx[-1]) + 1))
        hits = cast(origins, d_world, groups, box_now, torch.as_tensor(scene.backdrop_centre, dtype=torch.float64),
                    scene.backdrop_radius, ground=True, cull_distance=CULL_DISTANCE)

        # ---- colour from the sub-pixel rays
        sl = slice(0, CR)
        kind = hits.kind[:, sl].flatten()
        box = hits.box[:, sl].flatten()
        dw = d_world[:, sl].reshape(-1, 3)
        normal = hits.normal[:, sl].reshape(-1, 3)
        cos = (_dot3(normal, dw) / torch.sqrt(_dot3(dw, dw))).abs().clamp(min=0.03)
        f = torch.as_tensor(focal, dtype=torch.float64)[cams][:, None].expand(-1, CR).flatten()
        footprint = (hits.t[:, sl].flatten() / f / torch.sqrt(cos) * FOOTPRINT_SCALE).to(torch.float32)
        alb = _albedo(kind, box, hits.local[:, sl].reshape(-1, 3), hits.axis[:, sl].flatten(),
                      hits.sign[:, sl].flatten(), hits.point[:, sl].reshape(-1, 3), footprint, tables, scene)
        lit = M.lambert(alb, normal, sun)
        lit = torch.where((kind == HIT_SPHERE)[:, None], alb, lit)
        lit = lit.view(e - s, TILE, ss, TILE, ss, 3)
        acc = None
        for i in range(ss):
            for j in range(ss):
                acc = lit[:, :, i, :, j] if acc is None else acc + lit[:, :, i, :, j]
        colour_tiles[s:e] = (acc / float(ss * ss)).reshape(e - s, TILE * TILE, 3)

        # ---- geometry from the pixel-centre rays
        if cam_rays.separate_centre:
            csl = slice(CR, R)
            c_t, c_kind, c_box, c_point, c_local = (hits.t[:, csl], hits.kind[:, csl], hits.box[:, csl],
                                                    hits.point[:, csl], hits.local[:, csl])
            c_dcam = d_cam[:, csl]
        else:
            # One ray per pixel: reorder the (ss=1) colour rays into pixel order (identical layout).
            c_t, c_kind, c_box, c_point, c_local = hits.t, hits.kind, hits.box, hits.point, hits.local
            c_dcam = d_cam
        geo = _geometry(c_t, c_kind, c_box, c_point, c_local, c_dcam, cams, tables, box_now, box_prev, box_next,
                        T_cw, K, pix_u[torch.arange(s, e) % tiles_per_cam], pix_v[torch.arange(s, e) % tiles_per_cam])
        for name, value in geo.items():
            geo_tiles[name][s:e] = value.to(geo_tiles[name].dtype)

    colour = _untile(colour_tiles, N, cam_rays, (H, W)).numpy()
    maps = {}
    for name, value in geo_tiles.items():
        m = _untile(value, N, cam_rays, (H, W))
        maps[name] = m[..., 0].numpy() if m.shape[-1] == 1 else m.numpy()
    return colour, maps


def _geometry(t, kind, box, point, local, d_cam, cams, tables: _Tables, box_now: Boxes, box_prev: Boxes,
              box_next: Boxes, T_cw: torch.Tensor, K: torch.Tensor, pix_u, pix_v) -> Dict[str, torch.Tensor]:
    """Depth, ids and flows of the pixel-centre hits [G, P] of cameras ``cams`` [G]."""
    is_box = kind == HIT_BOX
    b = box.clamp(min=0)
    box_kind = torch.where(is_box, tables.kind[b], torch.full_like(b, -1))
    ego = box_kind == KIND_EGO
    moving = box_kind == KIND_CAR
    obj = torch.where(is_box & ~ego, tables.object_id[b], torch.zeros_like(b))
    X_cam = t[..., None] * d_cam                           # exactly depth * K^-1 (u, v, 1)
    out = {"depth": t[..., None], "object_id": obj[..., None], "ego": ego[..., None]}
    Kc = K[cams]                                           # [G, 3, 3]
    for name, T_index, bx in (("fwd", 2, box_next), ("bwd", 0, box_prev)):
        # The hit point at the other time: static points stay, car points follow their box.
        c_other = bx.centre[b]
        R_other = bx.R[b]
        moved = torch.stack([R_other[..., i, 0] * local[..., 0] + R_other[..., i, 1] * local[..., 1]
                             + R_other[..., i, 2] * local[..., 2] for i in range(3)], dim=-1) + c_other
        X_other = torch.where(moving[..., None], moved, point)
        Tc = T_cw[T_index, cams]                           # [G, 4, 4] world -> camera at the other time
        Xc = torch.stack([Tc[:, None, i, 0] * X_other[..., 0] + Tc[:, None, i, 1] * X_other[..., 1]
                          + Tc[:, None, i, 2] * X_other[..., 2] + Tc[:, None, i, 3] for i in range(3)], dim=-1)
        flow3 = Xc - X_cam
        flow3 = torch.where(ego[..., None], torch.zeros_like(flow3), flow3)
        Y = X_cam + flow3
        z = Y[..., 2]
        front = z > 1e-7
        zs = torch.where(front, z, torch.ones_like(z))
        u = (Kc[:, None, 0, 0] * Y[..., 0] + Kc[:, None, 0, 1] * Y[..., 1] + Kc[:, None, 0, 2] * z) / zs
        v = (Kc[:, None, 1, 1] * Y[..., 1] + Kc[:, None, 1, 2] * z) / zs
        u = torch.where(front, u, torch.full_like(u, BEHIND_CAMERA_PIXEL))
        v = torch.where(front, v, torch.full_like(v, BEHIND_CAMERA_PIXEL))
        out["sf_" + name] = flow3
        flow2 = torch.stack([u - pix_u, v - pix_v], dim=-1)
        out["of_" + name] = torch.where(ego[..., None], torch.zeros_like(flow2), flow2)
    return out


def _render_lidar(rig: Rig, lidar: _LidarRays, scene: Scene, boxes: BoxSet, tables: _Tables, t: float,
                  T_world_vehicle: np.ndarray, T_world_rig: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Lidar points [M, 4] float32 (x, y, z in the lidar frame, intensity) at time t, in firing
    order (azimuth step, then ring from the top), and their ring indices [M] int32 (0 = top beam)."""
    T_world_sensor = torch.as_tensor(T_world_rig @ rig.T_rig_lidar @ rig.T_lidar_sensor, dtype=torch.float64)
    T_lidar_sensor = torch.as_tensor(rig.T_lidar_sensor, dtype=torch.float64)
    box_now = _boxes_at(boxes, t, T_world_vehicle)
    centre = torch.as_tensor(scene.backdrop_centre, dtype=torch.float64)
    G, R = lidar.dirs.shape[:2]
    points, rings, orders = [], [], []
    step = max(1, RAYS_PER_CALL // R)
    for s in range(0, G, step):
        e = min(G, s + step)
        dirs = lidar.dirs[s:e]
        d_world = _rotate(T_world_sensor[:3, :3], dirs)
        origins = T_world_sensor[:3, 3].expand(e - s, 3)
        chunk_groups = [(max(a, s) - s, min(b, e) - s) for a, b in lidar.groups if b > s and a < e]
        hits = cast(origins, d_world, chunk_groups, box_now, centre, scene.backdrop_radius, ground=True,
                    cull_distance=rig.lidar_max_range + 10.0)
        b = hits.box.clamp(min=0)
        ego = (hits.kind == HIT_BOX) & (tables.kind[b] == KIND_EGO)
        keep = lidar.valid[s:e] & (hits.kind != HIT_SPHERE) & ~ego & (hits.t <= rig.lidar_max_range)
        if not keep.any():
            continue
        distance = hits.t[keep]
        p_lidar = _apply(T_lidar_sensor, dirs[keep] * distance[:, None])
        footprint = (distance * 0.002).to(torch.float32)  # ~2 mrad beam divergence
        alb = _albedo(hits.kind[keep], hits.box[keep], hits.local[keep], hits.axis[keep], hits.sign[keep],
                      hits.point[keep], footprint, tables, scene)
        intensity = (0.3 * alb[:, 0] + 0.59 * alb[:, 1] + 0.11 * alb[:, 2]).clamp(0.0, 1.0)
        points.append(torch.cat([p_lidar.to(torch.float32), intensity[:, None]], dim=1))
        rings.append(lidar.ring[s:e][keep])
        orders.append(lidar.order[s:e][keep])
    if not points:
        return np.zeros((0, 4), dtype=np.float32), np.zeros(0, dtype=np.int32)
    order = torch.argsort(torch.cat(orders))  # keys are unique: a deterministic permutation
    return torch.cat(points)[order].numpy(), torch.cat(rings)[order].numpy().astype(np.int32)


def _metadata(rig: Rig, scene: Scene, seed, scene_index, supersample, exposure_jitter, noise_std, gains, use_ego,
              times) -> Dict:
    speeds = scene.trajectory.speed(times)
    return {
        "preset": rig.name,
        "seed": int(seed),
        "scene_index": int(scene_index),
        "frame_rate_hz": float(rig.frame_rate_hz),
        "native_hw": tuple(rig.native_hw),
        "supersample": int(supersample),
        "sun_direction": scene.sun_direction.tolist(),
        "lighting": {"ambient": M.AMBIENT, "diffuse": M.DIFFUSE},
        "cars": scene.cars,
        "car_velocities": {c["id"]: c["velocity"] for c in scene.cars},
        "street_layout": scene.layout.as_dict(),
        "street_x_range": list(scene.x_range),
        "backdrop": {"centre": scene.backdrop_centre.tolist(), "radius": float(scene.backdrop_radius)},
        "ego_speed_mps": speeds.tolist(),
        "self_occlusion_rendered": bool(use_ego),
        "ego_boxes_vehicle": np.asarray(rig.ego_boxes).tolist() if use_ego else [],
        "T_vehicle_rig": rig.T_vehicle_rig.tolist(),
        "exposure_jitter": float(exposure_jitter),
        "exposure_gains": gains.tolist(),
        "noise_std": float(noise_std),
        "lidar": {
            "rings": int(rig.lidar_rings), "vfov_deg": list(rig.lidar_vfov_deg),
            "azimuth_samples": int(rig.lidar_azimuth_samples), "max_range_m": float(rig.lidar_max_range),
            "T_lidar_sensor": rig.T_lidar_sensor.tolist(),
            "sweep": "instantaneous at the frame time (no motion distortion); backdrop and ego-body hits dropped",
        },
        "object_ids": "0 static world (and the ego body, see self_occlusion), k > 0 car k",
        "optical_flow_behind_camera": "points behind the camera at t+-1 get the pixel (-1, -1)",
    }
