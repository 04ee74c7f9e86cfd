"""Surface materials: procedural albedo in each object's local surface coordinates, and shading.

colour = albedo * (AMBIENT + DIFFUSE * max(0, n . sun)), no specular term and no shadows, so a
surface point has the same colour from every viewpoint and at every time (objects only
translate).  The backdrop (sky, distant hills and fields) is emissive: its colour is its albedo.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import torch

from .texture import cell_random, fbm, hash_unit, mix, pulse, value_noise

GROUND, SIDEWALK, KERB, FACADE, WALL, POLE, TRUNK, FOLIAGE, CAR_BODY, CAR_CABIN, EGO, SKY = range(12)
NAMES = ("ground", "sidewalk", "kerb", "facade", "wall", "pole", "trunk", "foliage", "car_body", "car_cabin",
         "ego", "sky")

AMBIENT = 0.45
DIFFUSE = 0.55


@dataclass
class Surface:
    """Hit points of one material, everything per ray (n rays).

    local: [n, 3] float64 point in the object's local frame (world frame for the ground and sky).
    axis: [n] int64 local axis of the face normal (0, 1, 2), sign: [n] float64 +-1 (boxes only).
    half: [n, 3] float64 box half sizes; colour_a, colour_b: [n, 3] float32; seed: [n] int64;
    params: [n, 4] float64; footprint: [n] float32 pixel footprint in metres, or None.
    """

    local: torch.Tensor
    axis: torch.Tensor
    sign: torch.Tensor
    half: torch.Tensor
    colour_a: torch.Tensor
    colour_b: torch.Tensor
    seed: torch.Tensor
    params: torch.Tensor
    footprint: Optional[torch.Tensor]


def _rgb(values, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=like.device)


def _face_uv(s: Surface):
    """2D coordinates (metres, from the face's lower-left corner) on a box face, and the height."""
    p = s.local + s.half  # from the min corner
    x, y, z = p.unbind(-1)
    u = torch.where(s.axis == 0, y, x)
    v = torch.where(s.axis == 2, y, z)
    return u, v


def _fp(s: Surface, scale: float = 1.0):
    return None if s.footprint is None else s.footprint * scale


# ----------------------------------------------------------------------------- ground (road)
def _subsets(mask: torch.Tensor, fn_true, fn_false, channels: int = 3) -> torch.Tensor:
    """Evaluate fn_true(index) where mask holds and fn_false(index) elsewhere, only on those rays."""
    out = torch.zeros((mask.shape[0], channels), dtype=torch.float32, device=mask.device)
    for fn, sel in ((fn_true, mask), (fn_false, ~mask)):
        idx = torch.nonzero(sel).flatten()
        if idx.numel():
            out[idx] = fn(idx).to(torch.float32)
    return out


def _take(fp: Optional[torch.Tensor], idx: torch.Tensor) -> Optional[torch.Tensor]:
    return None if fp is None else fp[idx]


def ground(s: Surface, layout: Dict[str, float], seed: int) -> torch.Tensor:
    lw, edge, kerb = layout["lane_width"], layout["road_edge"], layout["kerb_line"]

    def road(idx):
        x, y = s.local[idx, 0], s.local[idx, 1]
        fp = _take(s.footprint, idx)
        patches = fbm(x, y, seed, 0.12, 3, fp)
        grain = fbm(x, y, seed + 1, 1.3, 4, fp)
        speckle = value_noise(x, y, seed + 2, 9.0)
        w_speckle = 1.0 if fp is None else torch.clamp(2.0 - 2.0 * 9.0 * fp, 0.0, 1.0)
        grey = 0.30 + 0.05 * patches + 0.06 * grain + 0.04 * speckle * w_speckle
        # Worn wheel tracks: a little darker in every lane.
        lane_pos = torch.remainder(y, lw) - 0.5 * lw
        tracks = pulse(lane_pos.abs(), float("inf"), 0.55, 0.5, fp)
        grey = grey * (1.0 - 0.10 * tracks)
        parking = y.abs() > edge
        grey = torch.where(parking, grey * 1.08 + 0.02, grey)
        asphalt = torch.stack((grey, grey, grey * 1.04), -1)
        # Lane paint: dashed centre line and lane dividers, solid edge lines, parking bays.
        inf = float("inf")
        paint = pulse(y, inf, -0.08, 0.16, fp) * pulse(x, 9.0, 0.0, 3.0, fp)
        dash = pulse(x + 4.0, 12.0, 0.0, 3.0, fp)
        paint = paint + (pulse(y, inf, lw - 0.06, 0.12, fp) + pulse(y, inf, -lw - 0.06, 0.12, fp)) * dash
        paint = paint + pulse(y, inf, edge - 0.08, 0.16, fp) + pulse(y, inf, -edge - 0.08, 0.16, fp)
        paint = paint + pulse(x, 6.5, 0.0, 0.12, fp) * parking.to(torch.float32)
        paint = torch.clamp(paint, 0.0, 1.0)
        wear = 0.85 + 0.15 * fbm(x, y, seed + 3, 0.7, 2, fp)
        white = _rgb([0.86, 0.86, 0.80], grey) * wear[:, None]
        return mix(asphalt, white, paint * 0.92)

    def grass(idx):
        # Off the road (behind the sidewalks, in the gaps between buildings): grass and dirt.
        x, y = s.local[idx, 0], s.local[idx, 1]
        fp = _take(s.footprint, idx)
        g1 = fbm(x, y, seed + 10, 0.25, 3, fp)
        g2 = fbm(x, y, seed + 11, 2.0, 3, fp)
        colour = mix(_rgb([0.24, 0.36, 0.14], g1), _rgb([0.42, 0.36, 0.22], g1), torch.clamp(0.5 + 0.9 * g1, 0, 1))
        return colour * (1.0 + 0.25 * g2)[:, None]

    return _subsets(s.local[:, 1].abs() > kerb, grass, road)


# ----------------------------------------------------------------------------- static boxes
def sidewalk(s: Surface) -> torch.Tensor:
    fp = s.footprint
    # Continuous world-aligned paving across segments: world x = offset + local x.
    wx = s.params[:, 0] + s.local[:, 0]
    wy = s.params[:, 1] + s.local[:, 1]
    tile = s.params[:, 2]
    joint = 0.035
    ju = pulse(wx, tile, 0.0, joint, fp)
    jv = pulse(wy, tile, 0.0, joint, fp)
    joints = torch.clamp(ju + jv, 0.0, 1.0)
    shade = 0.85 + 0.3 * cell_random(wx, wy, s.seed, tile, tile)
    grain = fbm(wx, wy, s.seed + 5, 1.5, 4, fp)
    top = s.colour_a * (shade * (1.0 + 0.12 * grain))[:, None]
    top = mix(top, s.colour_b * 0.6, joints * 0.8)
    side_noise = fbm(wx, s.local[:, 2], s.seed + 6, 2.0, 3, fp)
    side = s.colour_b * (1.0 + 0.15 * side_noise)[:, None]
    return torch.where((s.axis == 2)[:, None], top, side)


def kerb(s: Surface) -> torch.Tensor:
    fp = s.footprint
    wx = s.params[:, 0] + s.local[:, 0]
    u = torch.where(s.axis == 0, s.local[:, 1], wx)
    v = torch.where(s.axis == 2, s.local[:, 1], s.local[:, 2])
    blocks = pulse(wx, 1.0, 0.0, 0.03, fp)
    shade = 0.9 + 0.2 * cell_random(wx, torch.zeros_like(wx), s.seed, 1.0, 1.0)
    grain = fbm(u, v, s.seed + 3, 2.5, 3, fp)
    colour = s.colour_a * (shade * (1.0 + 0.12 * grain))[:, None]
    return mix(colour, s.colour_b * 0.55, blocks * 0.8)


def facade(s: Surface) -> torch.Tensor:
    fp = s.footprint
    u, v = _face_uv(s)
    spacing, floor_h, style, ratio = (s.params[:, i] for i in range(4))
    # Roofs: gravel.
    roof = s.colour_b * 0.5 + 0.12 * fbm(u, v, s.seed + 9, 0.8, 4, fp)[:, None]
    roof = torch.clamp(roof, 0.02, 0.9)

    # Wall material by style: plaster (0), stone blocks (1), panels (2), each on its own rays.
    def plaster(u, v, seed, fp):
        return 1.0 + 0.10 * fbm(u, v, seed, 0.35, 5, fp)

    def stone(u, v, seed, fp):
        row = torch.floor(v / 0.5)
        stagger = torch.remainder(row, 2.0) * 0.55
        block_shade = 0.88 + 0.24 * cell_random(u + stagger, v, seed + 1, 1.1, 0.5)
        mortar = torch.clamp(pulse(v, 0.5, 0.0, 0.04, fp) + pulse(u + stagger, 1.1, 0.0, 0.04, fp), 0.0, 1.0)
        return block_shade * (1.0 - 0.35 * mortar) * (1.0 + 0.06 * fbm(u, v, seed + 2, 1.2, 3, fp))

    def panels(u, v, seed, fp):
        joint = torch.clamp(pulse(u, 1.6, 0.0, 0.05, fp) + pulse(v, 1.6, 0.0, 0.05, fp), 0.0, 1.0)
        return (0.9 + 0.2 * cell_random(u, v, seed + 3, 1.6, 1.6)) * (1.0 - 0.3 * joint)

    wall_shade = torch.ones(u.shape, dtype=torch.float32)
    for index, fn in enumerate((plaster, stone, panels)):
        idx = torch.nonzero((style - index).abs() < 0.5).flatten()
        if idx.numel():
            wall_shade[idx] = fn(u[idx], v[idx], s.seed[idx], None if fp is None else fp[idx]).to(torch.float32)
    wall = s.colour_a * wall_shade[:, None]

    # Floor bands in the trim colour.
    floor_pos = torch.remainder(v, floor_h)
    band = pulse(floor_pos, float("inf"), 0.0, 0.18, fp) * (v > 1.0).to(torch.float32)
    wall = mix(wall, s.colour_b, band)

    # Windows: a grid, spacing x floor height; bigger shop windows on the ground floor.
    ground_floor = v < floor_h
    win_w = spacing * ratio
    win_h = torch.where(ground_floor, floor_h * 0.62, floor_h * 0.5)
    u_in = torch.remainder(u - 0.5 * (spacing - win_w), spacing)
    v_in = torch.remainder(v, floor_h) - torch.where(ground_floor, floor_h * 0.12, floor_h * 0.3)
    # Box-filtered window rectangles (coverage in [0, 1]) and their frames.
    def rect(a, lo, size, f):
        if f is None:
            return ((a >= lo) & (a < lo + size)).to(torch.float32)
        half = 0.5 * torch.clamp(f, min=1e-6)
        return torch.clamp((torch.minimum(a + half, lo + size) - torch.maximum(a - half, lo)) / (2 * half), 0.0, 1.0).to(torch.float32)

    zero = torch.zeros_like(u)
    frame_w = 0.09
    outer = rect(u_in, zero - frame_w, win_w + 2 * frame_w, fp) * rect(v_in, zero - frame_w, win_h + 2 * frame_w, fp)
    glass = rect(u_in, zero, win_w, fp) * rect(v_in, zero, win_h, fp)
    # Keep windows away from the facade's vertical edges.
    face_w = torch.where(s.axis == 0, 2 * s.half[:, 1], 2 * s.half[:, 0])
    face_h = 2 * s.half[:, 2]
    inside = ((u > 0.6) & (u < face_w - 0.6) & (v < face_h - 0.5)).to(torch.float32)
    outer, glass = outer * inside, glass * inside
    cell_u = torch.floor((u - 0.5 * (spacing - win_w)) / spacing)
    cell_v = torch.floor(v / floor_h)
    lit = hash_unit(cell_u.to(torch.int64), cell_v.to(torch.int64), s.seed + 4)
    glass_base = mix(_rgb([0.10, 0.13, 0.18], u), _rgb([0.42, 0.48, 0.55], u), lit * 0.8)
    # A fixed gradient and curtains inside each window (texture for matching, not a reflection).
    grad = (v_in / torch.clamp(win_h, min=1e-3)).to(torch.float32).clamp(0, 1)
    curtain = (lit > 0.6).to(torch.float32) * pulse(u_in, float("inf"), 0.0, 0.35, fp) * 0.5
    glass_col = glass_base * (0.8 + 0.4 * grad)[:, None]
    glass_col = mix(glass_col, _rgb([0.75, 0.70, 0.60], u), curtain)
    wall = mix(wall, s.colour_b * 0.9, outer)
    wall = mix(wall, glass_col, glass)
    return torch.clamp(torch.where((s.axis == 2)[:, None], roof, wall), 0.0, 0.92)


def wall(s: Surface) -> torch.Tensor:
    fp = s.footprint
    u, v = _face_uv(s)
    block_l, block_h = s.params[:, 0], s.params[:, 1]
    row = torch.floor(v / block_h)
    stagger = torch.remainder(row, 2.0) * 0.5 * block_l
    shade = 0.85 + 0.3 * hash_unit(torch.floor((u + stagger) / block_l).to(torch.int64), row.to(torch.int64), s.seed)
    ju = torch.remainder(u + stagger, block_l)
    jv = torch.remainder(v, block_h)
    mortar = torch.clamp(pulse(ju, float("inf"), 0.0, 0.025, fp) + pulse(jv, float("inf"), 0.0, 0.025, fp), 0, 1)
    colour = mix(s.colour_a, s.colour_b, torch.clamp(0.5 + fbm(u, v, s.seed + 1, 0.3, 3, fp), 0, 1))
    colour = colour * (shade * (1.0 + 0.08 * fbm(u, v, s.seed + 2, 2.0, 3, fp)))[:, None]
    return mix(colour, s.colour_b * 0.5, mortar * 0.7)


def pole(s: Surface) -> torch.Tensor:
    fp = s.footprint
    u, v = _face_uv(s)
    rings = pulse(v, 1.0, 0.0, 0.12, fp) * 0.6
    streak = fbm(u * 0.2, v, s.seed, 1.5, 3, fp)
    colour = s.colour_a * (1.0 + 0.2 * streak)[:, None]
    return mix(colour, s.colour_b, rings)


def trunk(s: Surface) -> torch.Tensor:
    u, v = _face_uv(s)
    bark = fbm(u * 4.0, v * 0.8, s.seed, 1.5, 3, _fp(s, 4.0))
    return mix(s.colour_a, s.colour_b, torch.clamp(0.5 + bark, 0, 1))


def foliage(s: Surface) -> torch.Tensor:
    fp = s.footprint
    u, v = _face_uv(s)
    w = s.axis.to(torch.float64) * 17.0  # decorrelate faces
    blobs = fbm(u + w, v, s.seed, 0.8, 5, fp)
    colour = mix(s.colour_a, s.colour_b, torch.clamp(0.45 + 0.9 * blobs, 0, 1))
    return colour * (0.85 + 0.3 * (0.5 + 0.5 * value_noise(u + w, v, s.seed + 1, 0.5)))[:, None]


# ----------------------------------------------------------------------------- cars
def car_body(s: Surface) -> torch.Tensor:
    fp = s.footprint
    x, y, z = (s.local + s.half).unbind(-1)   # from the rear-right-bottom corner
    length, width, height = (2 * s.half).unbind(-1)
    pattern, van = s.params[:, 0], s.params[:, 3]
    paint = s.colour_a * (1.0 + 0.06 * fbm(x, y + z, s.seed, 0.8, 3, fp))[:, None]
    # Side faces (axis 1): stripe / two-tone / dots, wheels, sills.
    stripe = pulse(z - 0.55 * height, float("inf"), 0.0, 0.12, fp)
    two_tone = pulse(z, float("inf"), 0.0, 0.45 * height, fp)
    dots_cell = cell_random(x, z, s.seed + 2, 0.5, 0.5)
    dx = torch.remainder(x, 0.5) - 0.25
    dz = torch.remainder(z, 0.5) - 0.25
    dots = ((dx * dx + dz * dz) < 0.012).to(torch.float32) * (dots_cell > 0.5).to(torch.float32)
    decor = torch.where(pattern < 0.5, stripe, torch.where(pattern < 1.5, two_tone, dots))
    side = mix(paint, s.colour_b, decor)
    wheel_r = 0.34
    wheel_x = torch.minimum(x - 0.85, length - 0.85 - x)  # distance to nearest axle along x
    wdist2 = wheel_x * wheel_x + (z - 0.08) ** 2
    tyre = (wdist2 < wheel_r**2).to(torch.float32)
    rim = (wdist2 < (0.55 * wheel_r) ** 2).to(torch.float32)
    side = mix(side, _rgb([0.05, 0.05, 0.06], x), tyre)
    side = mix(side, _rgb([0.55, 0.56, 0.58], x), rim)
    sill = pulse(z, float("inf"), 0.0, 0.1, fp)
    side = mix(side, _rgb([0.08, 0.08, 0.09], x), sill * 0.9)
    van_windows = (van > 0.5).to(torch.float32) * pulse(z, float("inf"), height * 0.62, height * 0.28, fp) * \
        pulse(x, float("inf"), length * 0.72, length * 0.22, fp)
    side = mix(side, _rgb([0.10, 0.12, 0.15], x), van_windows)

    # Front/back faces (axis 0): lights, bumper, plate.
    front = s.sign > 0
    lights = pulse(z, float("inf"), height * 0.55, height * 0.22, fp) * (
        pulse(y, float("inf"), 0.12, 0.35, fp) + pulse(y, float("inf"), width - 0.47, 0.35, fp))
    light_col = torch.where(front[:, None], _rgb([0.92, 0.90, 0.78], x), _rgb([0.75, 0.08, 0.06], x))
    bumper = pulse(z, float("inf"), 0.0, 0.2, fp)
    plate = pulse(z, float("inf"), 0.25, 0.12, fp) * pulse(y, float("inf"), 0.5 * width - 0.26, 0.52, fp)
    end = mix(paint, _rgb([0.07, 0.07, 0.08], x), bumper * 0.9)
    end = mix(end, light_col, lights)
    end = mix(end, _rgb([0.88, 0.88, 0.86], x), plate)
    # Top (hood and boot): paint with a soft sheen pattern.
    top = paint * (0.95 + 0.1 * value_noise(x, y, s.seed + 3, 0.7))[:, None]
    out = torch.where((s.axis == 1)[:, None], side, torch.where((s.axis == 0)[:, None], end, top))
    return torch.clamp(out, 0.02, 0.92)


def car_cabin(s: Surface) -> torch.Tensor:
    fp = s.footprint
    x, y, z = (s.local + s.half).unbind(-1)
    length, width, height = (2 * s.half).unbind(-1)
    paint = s.colour_a * (1.0 + 0.05 * fbm(x, y + z, s.seed, 0.8, 3, fp))[:, None]
    glass = _rgb([0.09, 0.11, 0.14], x) * (0.8 + 0.5 * torch.clamp(z / torch.clamp(height, min=1e-3), 0, 1))[:, None]
    glass = glass * (1.0 + 0.2 * fbm(x, z, s.seed + 1, 1.0, 2, fp))[:, None]
    band = pulse(z, float("inf"), 0.08, height - 0.16, fp)
    # Side windows with two pillars.
    pillars = pulse(x, float("inf"), 0.42 * length, 0.12, fp) + pulse(x, float("inf"), 0.0, 0.12, fp) + \
        pulse(x, float("inf"), length - 0.12, 0.12, fp)
    side_glass = band * (1.0 - torch.clamp(pillars, 0, 1))
    side = mix(paint, glass, side_glass)
    screen = band * pulse(y, float("inf"), 0.1, width - 0.2, fp)
    end = mix(paint, glass, screen)
    top = paint * (0.95 + 0.1 * value_noise(x, y, s.seed + 2, 0.9))[:, None]
    out = torch.where((s.axis == 1)[:, None], side, torch.where((s.axis == 0)[:, None], end, top))
    return torch.clamp(out, 0.02, 0.92)


def ego(s: Surface) -> torch.Tensor:
    u, v = _face_uv(s)
    return s.colour_a * (1.0 + 0.2 * fbm(u, v, s.seed, 1.0, 3, s.footprint))[:, None]


# ----------------------------------------------------------------------------- backdrop
def sky(points: torch.Tensor, centre: torch.Tensor, radius: float, seed: int,
        footprint: Optional[torch.Tensor]) -> torch.Tensor:
    """Backdrop colour at points [n, 3] on the sphere (world frame): sky, clouds, hills, fields."""
    rel = points - centre
    horizontal = torch.sqrt(rel[:, 0] ** 2 + rel[:, 1] ** 2)
    elevation = torch.atan2(rel[:, 2], horizontal)
    azimuth = torch.atan2(rel[:, 1], rel[:, 0])
    ridge_max = 0.061  # radians: the hills never rise above this

    def above(idx):
        el64, az = elevation[idx], azimuth[idx]
        fp = _take(footprint, idx)
        el = el64.to(torch.float32)
        base = mix(_rgb([0.78, 0.84, 0.90], el), _rgb([0.30, 0.50, 0.82], el), torch.clamp(el / 0.6, 0.0, 1.0) ** 0.7)
        # Clouds on a virtual ceiling: the direction projected onto a horizontal plane.
        plane_scale = radius * 0.5 / torch.clamp(torch.sin(el64), min=0.05)
        cu = torch.cos(az) * torch.cos(el64) * plane_scale
        cv = torch.sin(az) * torch.cos(el64) * plane_scale
        cloud_fp = None if fp is None else fp * (plane_scale / radius).to(torch.float32) * 4.0
        density = fbm(cu, cv, seed, 1.0 / 180.0, 5, cloud_fp)
        cover = torch.clamp((density + 0.05) * 2.5, 0.0, 1.0)
        cloud = _rgb([0.93, 0.93, 0.95], el) * (0.85 + 0.15 * density)[:, None]
        colour = mix(base, cloud, cover * 0.85)
        low = torch.nonzero(el64 < ridge_max).flatten()
        if low.numel():
            # Hills on the horizon, silhouette from 1D noise of the azimuth (metres along the sphere).
            arc_u, arc_v = az[low] * radius, el64[low] * radius
            fpl = _take(fp, low)
            ridge = 0.025 + 0.035 * (0.5 + 0.5 * fbm(arc_u, torch.zeros_like(arc_u), seed + 1, 1.0 / 120.0, 4, fpl))
            angle_fp = 1e-4 if fpl is None else torch.clamp(fpl.to(torch.float64) / radius, min=1e-5)
            amount = torch.clamp((ridge.to(torch.float64) - el64[low]) / angle_fp + 0.5, 0.0, 1.0)
            tex = fbm(arc_u, arc_v, seed + 2, 1.0 / 40.0, 4, fpl)
            hills = mix(_rgb([0.42, 0.50, 0.52], tex), _rgb([0.30, 0.40, 0.34], tex), torch.clamp(0.5 + tex, 0, 1))
            colour[low] = mix(colour[low], hills, amount.to(torch.float32))
        return colour

    def below(idx):
        # Below the horizon: distant fields.
        arc_u, arc_v = azimuth[idx] * radius, elevation[idx] * radius
        tex = fbm(arc_u, arc_v * 4.0, seed + 3, 1.0 / 25.0, 4, _take(footprint, idx))
        return mix(_rgb([0.33, 0.40, 0.22], tex), _rgb([0.45, 0.40, 0.28], tex), torch.clamp(0.5 + tex, 0, 1))

    return _subsets(elevation >= 0, above, below)


BOX_SHADERS = {
    SIDEWALK: sidewalk, KERB: kerb, FACADE: facade, WALL: wall, POLE: pole, TRUNK: trunk, FOLIAGE: foliage,
    CAR_BODY: car_body, CAR_CABIN: car_cabin, EGO: ego,
}


def lambert(albedo: torch.Tensor, normal: torch.Tensor, sun: torch.Tensor) -> torch.Tensor:
    """albedo [n, 3] * (AMBIENT + DIFFUSE * max(0, n . sun)) with normals [n, 3] (world)."""
    cos = (normal[:, 0] * sun[0] + normal[:, 1] * sun[1] + normal[:, 2] * sun[2]).clamp(min=0.0)
    return albedo * (AMBIENT + DIFFUSE * cos.to(albedo.dtype))[:, None]
