"""Exact ray casting against a ground plane, oriented boxes and the backdrop sphere.

Rays come in *tiles*: small bundles that share an origin (one camera or lidar, a block of
pixels or beams), laid out as ``dirs [num_tiles, rays_per_tile, 3]`` (world frame, float64, not
necessarily unit length; the hit parameter t is in units of the direction's length, so for
camera rays with direction K^-1 (u, v, 1) t is the z-depth).

Culling, vectorised: each *group* of tiles (a camera, a lidar sector) gets a bounding frustum of
its rays; boxes that are outside it (separating-plane test of the oriented box against the
frustum's planes) or farther than ``cull_distance`` are dropped; each tile of the group then
tests the surviving boxes against its own frustum.  The (tile, box) pairs that survive are
intersected with all rays of their tile in one batched slab test (float32, in chunks), and the
nearest box per ray is kept with a deterministic ``scatter_reduce(amin)`` on a key that packs the
hit distance and the box index.  The winning box is then re-intersected in float64, so
depths and hit points are exact to double precision.  Culling is conservative (a margin that
rounding cannot beat), so the result does not depend on which extra boxes got through.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch

# Hit kinds.
HIT_PLANE, HIT_BOX, HIT_SPHERE = 0, 1, 2

_BOX_BITS = 21
_EPS_T = 1e-4
PAIR_RAY_BUDGET = 1 << 20  # (pair, ray) elements per intersection chunk: ~60 MB of temporaries


@dataclass
class Boxes:
    """Boxes at one instant: centre [B, 3], R [B, 3, 3] (columns = local axes in the world),
    half sizes [B, 3]; all float64."""

    centre: torch.Tensor
    R: torch.Tensor
    half: torch.Tensor

    @property
    def count(self) -> int:
        return self.centre.shape[0]


@dataclass
class Hits:
    """Nearest hit per ray, everything [num_tiles, rays_per_tile, ...]."""

    t: torch.Tensor        # float64 ray parameter
    kind: torch.Tensor     # int64 HIT_*
    box: torch.Tensor      # int64 box index (-1 unless kind == HIT_BOX)
    point: torch.Tensor    # [..., 3] float64 world point
    local: torch.Tensor    # [..., 3] float64 box-local point (world point for plane and sphere)
    axis: torch.Tensor     # int64 local axis of the face normal (boxes), 2 otherwise
    sign: torch.Tensor     # float64 +-1 side of the face
    normal: torch.Tensor   # [..., 3] float64 world normal (towards the ray origin)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Dot product over the last dim (size 3), written out so the sum order is fixed."""
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1] + a[..., 2] * b[..., 2]


def _normalise(v: torch.Tensor) -> torch.Tensor:
    return v / torch.sqrt(_dot(v, v)).clamp(min=1e-300)[..., None]


def frustum_planes(dirs: torch.Tensor) -> torch.Tensor:
    """Inward normals [G, 5, 3] of a frustum (through the rays' common origin) containing all
    directions dirs [G, R, 3]: four side planes and one 'in front' plane.

    Built from the bundle's mean direction a and the bounding rectangle of the directions
    projected onto the plane a . d = 1.  Bundles wider than a half space get no side planes.
    """
    unit = _normalise(dirs)
    a = _normalise(unit.sum(dim=1))
    up = torch.zeros_like(a)
    up[:, 2] = 1.0
    e1 = torch.cross(a, up, dim=-1)
    bad = _dot(e1, e1) < 1e-8
    alt = torch.zeros_like(a)
    alt[:, 0] = 1.0
    e1 = torch.where(bad[:, None], torch.cross(a, alt, dim=-1), e1)
    e1 = _normalise(e1)
    e2 = torch.cross(a, e1, dim=-1)
    along = _dot(unit, a[:, None, :])
    wide = (along.amin(dim=1) < 1e-3)
    along = along.clamp(min=1e-3)
    x = _dot(unit, e1[:, None, :]) / along
    y = _dot(unit, e2[:, None, :]) / along
    margin = 1e-6
    x0, x1 = x.amin(dim=1) - margin, x.amax(dim=1) + margin
    y0, y1 = y.amin(dim=1) - margin, y.amax(dim=1) + margin
    planes = torch.stack((
        e1 - x0[:, None] * a,
        -e1 + x1[:, None] * a,
        e2 - y0[:, None] * a,
        -e2 + y1[:, None] * a,
        a,
    ), dim=1)
    # A bundle too wide for a frustum: keep only a harmless plane (everything passes).
    planes = torch.where(wide[:, None, None], torch.zeros_like(planes), planes)
    return planes


def boxes_in_frustum(
    origin: torch.Tensor,
    planes: torch.Tensor,
    boxes: Boxes,
    box_index: Optional[torch.Tensor] = None,
    cull_distance: Optional[float] = None,
) -> torch.Tensor:
    """Bool [G, B']: box (of ``box_index``, default all) may intersect frustum g (origin [G, 3], planes [G, 5, 3])."""
    centre, R, half = boxes.centre, boxes.R, boxes.half
    if box_index is not None:
        centre, R, half = centre[box_index], R[box_index], half[box_index]
    rel = centre[None, :, :] - origin[:, None, :]                      # [G, B, 3]
    axes = R.transpose(1, 2)                                           # [B, 3(axis), 3(xyz)]
    keep = torch.ones(rel.shape[:2], dtype=torch.bool, device=rel.device)
    radius = torch.sqrt(_dot(half, half))                              # [B]
    dist = torch.sqrt(_dot(rel, rel))                                  # [G, B]
    for k in range(planes.shape[1]):
        n = planes[:, k, :]                                            # [G, 3]
        reach = (half[None, :, 0] * _dot(n[:, None, :], axes[None, :, 0, :]).abs()
                 + half[None, :, 1] * _dot(n[:, None, :], axes[None, :, 1, :]).abs()
                 + half[None, :, 2] * _dot(n[:, None, :], axes[None, :, 2, :]).abs())
        side = _dot(n[:, None, :], rel) + reach
        norm_n = torch.sqrt(_dot(n, n))[:, None]
        keep &= side >= -1e-6 * norm_n * (1.0 + dist + radius[None])
    if cull_distance is not None:
        keep &= dist - radius[None] <= cull_distance
    return keep


def _slab32(o: torch.Tensor, d: torch.Tensor, half: torch.Tensor) -> torch.Tensor:
    """Entry distance [P, R] of rays o [P, 1, 3] + t d [P, R, 3] into boxes [-half, half] ([P, 1, 3]); inf on a miss."""
    tiny = 1e-20
    d = torch.where(d.abs() < tiny, torch.full_like(d, tiny), d)
    inv = 1.0 / d
    t1 = (-half - o) * inv
    t2 = (half - o) * inv
    tmin = torch.minimum(t1, t2)
    tmax = torch.maximum(t1, t2)
    near = torch.maximum(torch.maximum(tmin[..., 0], tmin[..., 1]), tmin[..., 2])
    far = torch.minimum(torch.minimum(tmax[..., 0], tmax[..., 1]), tmax[..., 2])
    hit = (far >= near) & (near > _EPS_T)
    return torch.where(hit, near, torch.full_like(near, float("inf")))


def _to_local(R: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """R^T v for R [..., 3, 3] and v [..., 3] (local coordinates = dot with each axis column)."""
    return torch.stack([R[..., 0, i] * v[..., 0] + R[..., 1, i] * v[..., 1] + R[..., 2, i] * v[..., 2]
                        for i in range(3)], dim=-1)


def _candidate_pairs(
    origins: torch.Tensor,
    dirs: torch.Tensor,
    groups: Sequence[Tuple[int, int]],
    boxes: Boxes,
    cull_distance: Optional[float],
) -> Tuple[torch.Tensor, torch.Tensor]:
    tiles_out, boxes_out = [], []
    tile_planes = frustum_planes(dirs)
    for start, stop in groups:
        group_dirs = dirs[start:stop].reshape(1, -1, 3)
        planes = frustum_planes(group_dirs)
        keep = boxes_in_frustum(origins[start:start + 1], planes, boxes, cull_distance=cull_distance)[0]
        candidates = torch.nonzero(keep).flatten()
        if candidates.numel() == 0:
            continue
        # Tiles of one group share its origin; test them in slices to bound memory.
        step = max(1, (1 << 22) // max(1, candidates.numel() * 15))
        for s in range(start, stop, step):
            e = min(stop, s + step)
            mask = boxes_in_frustum(origins[s:e], tile_planes[s:e], boxes, box_index=candidates)
            t_idx, b_idx = torch.nonzero(mask, as_tuple=True)
            tiles_out.append(t_idx + s)
            boxes_out.append(candidates[b_idx])
    if not tiles_out:
        empty = torch.zeros(0, dtype=torch.int64, device=dirs.device)
        return empty, empty
    return torch.cat(tiles_out), torch.cat(boxes_out)


def cast(
    origins: torch.Tensor,
    dirs: torch.Tensor,
    groups: Sequence[Tuple[int, int]],
    boxes: Boxes,
    sphere_centre: torch.Tensor,
    sphere_radius: float,
    ground: bool = True,
    cull_distance: Optional[float] = None,
) -> Hits:
    """Nearest hit of every ray (see the module docstring).

    Args:
        origins: [G, 3] float64 origin of each tile's rays (world).
        dirs: [G, R, 3] float64 ray directions (world).
        groups: (start, stop) tile ranges sharing one origin, for the coarse culling.
        boxes: the boxes at this instant.
        sphere_centre, sphere_radius: the backdrop (every ray starts inside it).
        ground: intersect the plane z = 0 as well.
    """
    num_tiles, rays = dirs.shape[:2]
    device = dirs.device
    if boxes.count >= (1 << _BOX_BITS):
        raise ValueError(f"too many boxes ({boxes.count})")
    inf_key = (torch.tensor(float("inf"), dtype=torch.float32).view(torch.int32).to(torch.int64) << _BOX_BITS)
    best = torch.full((num_tiles * rays,), int(inf_key), dtype=torch.int64, device=device)

    if boxes.count:
        pair_tile, pair_box = _candidate_pairs(origins, dirs, groups, boxes, cull_distance)
        dirs32 = dirs.to(torch.float32)
        R32 = boxes.R.to(torch.float32)
        half32 = boxes.half.to(torch.float32)
        ray_ids = torch.arange(rays, device=device)
        chunk = max(1, PAIR_RAY_BUDGET // rays)
        for s in range(0, pair_tile.numel(), chunk):
            pt, pb = pair_tile[s:s + chunk], pair_box[s:s + chunk]
            Rb = boxes.R[pb]
            o_local = _to_local(Rb, origins[pt] - boxes.centre[pb]).to(torch.float32)   # [P, 3]
            d_local = _to_local(R32[pb][:, None], dirs32[pt])                             # [P, R, 3]
            t = _slab32(o_local[:, None, :], d_local, half32[pb][:, None, :])            # [P, R]
            key = (t.view(torch.int32).to(torch.int64) << _BOX_BITS) | pb[:, None]
            index = (pt[:, None] * rays + ray_ids[None, :]).flatten()
            best.scatter_reduce_(0, index, key.flatten(), reduce="amin", include_self=True)

    best = best.view(num_tiles, rays)
    has_box = best < inf_key
    box = torch.where(has_box, best & ((1 << _BOX_BITS) - 1), torch.full_like(best, -1))

    o = origins[:, None, :].expand(num_tiles, rays, 3)
    inf = torch.full((num_tiles, rays), float("inf"), dtype=dirs.dtype, device=device)

    # Exact (float64) entry into the winning box.
    t_box = inf.clone()
    axis = torch.full((num_tiles, rays), 2, dtype=torch.int64, device=device)
    sign = torch.ones((num_tiles, rays), dtype=dirs.dtype, device=device)
    local = torch.zeros_like(dirs)
    if has_box.any():
        sel = has_box
        b = box[sel]
        Rb, cb, hb = boxes.R[b], boxes.centre[b], boxes.half[b]
        ol = _to_local(Rb, o[sel] - cb)
        dl = _to_local(Rb, dirs[sel])
        dl_safe = torch.where(dl.abs() < 1e-300, torch.full_like(dl, 1e-300), dl)
        t1 = (-hb - ol) / dl_safe
        t2 = (hb - ol) / dl_safe
        tmin = torch.minimum(t1, t2)
        near, face = tmin.max(dim=-1)
        t_box[sel] = near
        axis[sel] = face
        dface = torch.gather(dl, 1, face[:, None])[:, 0]
        sign[sel] = torch.where(dface > 0, -1.0, 1.0).to(dirs.dtype)
        p = ol + near[:, None] * dl
        local[sel] = torch.maximum(torch.minimum(p, hb), -hb)

    # Ground plane z = 0 (from above).
    if ground:
        dz = dirs[..., 2]
        t_plane = torch.where(dz < -1e-12, -o[..., 2] / torch.where(dz < -1e-12, dz, -torch.ones_like(dz)), inf)
        t_plane = torch.where(t_plane > _EPS_T, t_plane, inf)
    else:
        t_plane = inf

    # Backdrop sphere: the far root of |o + t d - c|^2 = r^2 (the origin is inside).  Only rays
    # whose nearest plane/box hit lies beyond a lower bound of the sphere distance need it.
    t_near = torch.minimum(t_box, t_plane)
    oc_max = torch.sqrt(_dot(origins - sphere_centre, origins - sphere_centre)).max()
    d_len_max = torch.sqrt(_dot(dirs, dirs).max())
    lower = (sphere_radius - oc_max) / d_len_max
    far = t_near >= lower * (1.0 - 1e-9)
    t = t_near.clone()
    kind = torch.where(t_box < t_plane, torch.full_like(box, HIT_BOX), torch.full_like(box, HIT_PLANE))
    if far.any():
        of, df = o[far], dirs[far]
        oc = of - sphere_centre
        a = _dot(df, df)
        bq = _dot(oc, df)
        cq = _dot(oc, oc) - sphere_radius**2
        t_sphere = (-bq + torch.sqrt(torch.clamp(bq * bq - a * cq, min=0.0))) / a
        sphere_wins = t_sphere < t_near[far]
        t[far] = torch.where(sphere_wins, t_sphere, t_near[far])
        kind[far] = torch.where(sphere_wins, torch.full_like(sphere_wins, HIT_SPHERE, dtype=torch.int64), kind[far])
    is_box = kind == HIT_BOX
    box = torch.where(is_box, box, torch.full_like(box, -1))

    point = o + t[..., None] * dirs
    if ground:
        point[..., 2] = torch.where(kind == HIT_PLANE, torch.zeros_like(t), point[..., 2])
    local = torch.where(is_box[..., None], local, point)
    axis = torch.where(is_box, axis, torch.full_like(axis, 2))
    sign = torch.where(is_box, sign, torch.ones_like(sign))

    normal = torch.zeros_like(dirs)
    normal[..., 2] = 1.0
    if is_box.any():
        Rsel = boxes.R[box[is_box]]                                                # [n, 3, 3]
        col = torch.gather(Rsel, 2, axis[is_box][:, None, None].expand(-1, 3, 1))[..., 0]
        normal[is_box] = col * sign[is_box][:, None]
    on_sphere = kind == HIT_SPHERE
    if on_sphere.any():
        normal[on_sphere] = _normalise(sphere_centre - point[on_sphere])
    return Hits(t=t, kind=kind, box=box, point=point, local=local, axis=axis, sign=sign, normal=normal)
