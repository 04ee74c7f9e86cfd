"""The procedural street: layout, static boxes, cars with their motion, the ego trajectory.

World frame: z up, the street runs along x, its centre line is y = 0; traffic drives on the right
(the ego vehicle in the right lane towards +x).  Everything is an analytic function of time:
the ego pose (smooth speed changes, lane weaving, a little pitch and roll) and the cars (constant
velocity along their lane, constant heading), so poses one step beyond the rendered frames are
exact.

The street is generated outwards from x = 0 with one random stream per row of things (each
side's facades, poles, parked cars, each lane's traffic), so a longer sequence of the same seed
and scene extends the same street instead of drawing a new one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import numpy as np

from . import materials as M

# Box kinds: how a box moves.
KIND_STATIC, KIND_CAR, KIND_EGO = 0, 1, 2

BACKDROP_BASE_RADIUS = 1000.0   # metres from the street centre to the distant backdrop
STREET_MARGIN = 200.0           # street generated this far beyond the ego's path at both ends


@dataclass
class StreetLayout:
    lane_width: float
    parking_width: float
    sidewalk_width: float
    kerb_width: float = 0.25
    kerb_height: float = 0.15

    @property
    def road_edge(self) -> float:       # solid edge line, between the traffic lanes and the parking strip
        return 2.0 * self.lane_width

    @property
    def kerb_line(self) -> float:       # |y| where the kerb starts
        return 2.0 * self.lane_width + self.parking_width

    @property
    def sidewalk_outer(self) -> float:  # |y| where the sidewalk ends
        return self.kerb_line + self.sidewalk_width

    @property
    def ego_lane(self) -> float:        # right lane of our direction
        return -1.5 * self.lane_width

    def as_dict(self) -> Dict[str, float]:
        return {
            "lane_width": self.lane_width, "parking_width": self.parking_width,
            "sidewalk_width": self.sidewalk_width, "kerb_width": self.kerb_width,
            "kerb_height": self.kerb_height, "road_edge": self.road_edge, "kerb_line": self.kerb_line,
            "sidewalk_outer": self.sidewalk_outer,
        }


@dataclass
class Trajectory:
    """Ego vehicle pose T_world_vehicle(t): speed and lateral offset are sums of sinusoids."""

    v0: float
    speed_terms: List[Tuple[float, float, float]]    # (amplitude m/s, angular frequency rad/s, phase)
    y0: float
    lateral_terms: List[Tuple[float, float, float]]  # (amplitude m, angular frequency, phase)
    pitch_terms: List[Tuple[float, float, float]]    # (amplitude rad, angular frequency, phase)
    roll_terms: List[Tuple[float, float, float]]

    def position(self, t: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """x, y and their time derivatives at times t (float64 arrays)."""
        t = np.asarray(t, dtype=np.float64)
        x = self.v0 * t
        dx = np.full_like(t, self.v0)
        for a, w, p in self.speed_terms:
            # integral of a sin(w s + p) ds from 0 to t
            x = x + (a / w) * (math.cos(p) - np.cos(w * t + p))
            dx = dx + a * np.sin(w * t + p)
        y = np.full_like(t, self.y0)
        dy = np.zeros_like(t)
        for a, w, p in self.lateral_terms:
            y = y + a * (np.sin(w * t + p) - math.sin(p))
            dy = dy + a * w * np.cos(w * t + p)
        return x, y, dx, dy

    def speed(self, t: np.ndarray) -> np.ndarray:
        _, _, dx, dy = self.position(t)
        return np.hypot(dx, dy)

    def pose(self, t: np.ndarray) -> np.ndarray:
        """T_world_vehicle [len(t), 4, 4] float64: heading along the velocity, small pitch and roll."""
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        x, y, dx, dy = self.position(t)
        yaw = np.arctan2(dy, dx)
        pitch = sum(a * np.sin(w * t + p) for a, w, p in self.pitch_terms) + 0.0 * t
        roll = sum(a * np.sin(w * t + p) for a, w, p in self.roll_terms) + 0.0 * t
        cy, sy = np.cos(yaw), np.sin(yaw)
        cp, sp = np.cos(pitch), np.sin(pitch)
        cr, sr = np.cos(roll), np.sin(roll)
        # R = Rz(yaw) @ Ry(pitch) @ Rx(roll)
        R = np.empty((len(t), 3, 3))
        R[:, 0, 0] = cy * cp
        R[:, 0, 1] = cy * sp * sr - sy * cr
        R[:, 0, 2] = cy * sp * cr + sy * sr
        R[:, 1, 0] = sy * cp
        R[:, 1, 1] = sy * sp * sr + cy * cr
        R[:, 1, 2] = sy * sp * cr - cy * sr
        R[:, 2, 0] = -sp
        R[:, 2, 1] = cp * sr
        R[:, 2, 2] = cp * cr
        T = np.tile(np.eye(4), (len(t), 1, 1))
        T[:, :3, :3] = R
        T[:, 0, 3] = x
        T[:, 1, 3] = y
        return T


@dataclass
class BoxSet:
    """All boxes of a scene, as columns (numpy).  Poses at time t come from :meth:`poses`.

    centre/yaw are in the world at t = 0 for static boxes and cars, in the vehicle frame for the
    ego body.  Boxes rotate only about their z axis (the heading).
    """

    centre: np.ndarray      # [B, 3]
    yaw: np.ndarray         # [B]
    half: np.ndarray        # [B, 3] half sizes along the local x (length), y, z
    velocity: np.ndarray    # [B, 3] world m/s (cars)
    kind: np.ndarray        # [B] KIND_*
    object_id: np.ndarray   # [B] 0 static, k > 0 car k (the ego body is 0)
    material: np.ndarray    # [B] materials.*
    color_a: np.ndarray     # [B, 3]
    color_b: np.ndarray     # [B, 3]
    seed: np.ndarray        # [B] texture seed
    params: np.ndarray      # [B, 4] material parameters

    @property
    def count(self) -> int:
        return len(self.yaw)

    def select(self, index: np.ndarray) -> "BoxSet":
        return BoxSet(**{k: getattr(self, k)[index] for k in self.__dataclass_fields__})

    @staticmethod
    def concat(sets: List["BoxSet"]) -> "BoxSet":
        return BoxSet(**{k: np.concatenate([getattr(s, k) for s in sets]) for k in BoxSet.__dataclass_fields__})

    def poses(self, t: float, T_world_vehicle: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Box centres [B, 3] and rotations [B, 3, 3] (columns: local axes) in the world at time t."""
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        R = np.zeros((self.count, 3, 3))
        R[:, 0, 0], R[:, 0, 1], R[:, 1, 0], R[:, 1, 1], R[:, 2, 2] = c, -s, s, c, 1.0
        centre = self.centre + self.velocity * t
        ego = self.kind == KIND_EGO
        if ego.any():
            Rv, tv = T_world_vehicle[:3, :3], T_world_vehicle[:3, 3]
            centre[ego] = self.centre[ego] @ Rv.T + tv
            R[ego] = Rv[None] @ R[ego]
        return centre, R


class _BoxBuilder:
    def __init__(self):
        self.rows: List[dict] = []

    def add(self, centre, half, material, color_a, color_b=None, seed=0, params=(0, 0, 0, 0), yaw=0.0,
            velocity=(0.0, 0.0, 0.0), kind=KIND_STATIC, object_id=0):
        self.rows.append(dict(
            centre=np.asarray(centre, float), yaw=float(yaw), half=np.asarray(half, float),
            velocity=np.asarray(velocity, float), kind=int(kind), object_id=int(object_id),
            material=int(material), color_a=np.asarray(color_a, float),
            color_b=np.asarray(color_a if color_b is None else color_b, float), seed=int(seed),
            params=np.asarray(params, float),
        ))

    def build(self) -> BoxSet:
        if not self.rows:
            return BoxSet(
                centre=np.zeros((0, 3)), yaw=np.zeros(0), half=np.zeros((0, 3)), velocity=np.zeros((0, 3)),
                kind=np.zeros(0, np.int64), object_id=np.zeros(0, np.int64), material=np.zeros(0, np.int64),
                color_a=np.zeros((0, 3)), color_b=np.zeros((0, 3)), seed=np.zeros(0, np.int64),
                params=np.zeros((0, 4)),
            )
        cols = {k: np.stack([r[k] for r in self.rows]) for k in self.rows[0]}
        for k in ("kind", "object_id", "material", "seed"):
            cols[k] = cols[k].astype(np.int64)
        return BoxSet(**cols)


@dataclass
class Scene:
    layout: StreetLayout
    trajectory: Trajectory
    boxes: BoxSet              # static boxes and cars (ego body added by the renderer if wanted)
    cars: List[dict]           # id, velocity, size, lane, parked
    sun_direction: np.ndarray  # unit vector towards the sun (world)
    backdrop_centre: np.ndarray
    backdrop_radius: float
    x_range: Tuple[float, float]
    seeds: Dict[str, int] = field(default_factory=dict)


# ----------------------------------------------------------------------------- generation
_FACADE_COLOURS = np.array([
    [0.62, 0.34, 0.26], [0.72, 0.62, 0.48], [0.55, 0.55, 0.55], [0.80, 0.76, 0.66], [0.45, 0.30, 0.24],
    [0.66, 0.66, 0.72], [0.78, 0.70, 0.52], [0.50, 0.56, 0.50], [0.70, 0.52, 0.42], [0.38, 0.40, 0.46],
])
_CAR_COLOURS = np.array([
    [0.80, 0.80, 0.82], [0.12, 0.12, 0.14], [0.60, 0.08, 0.07], [0.10, 0.20, 0.50], [0.45, 0.47, 0.50],
    [0.85, 0.75, 0.20], [0.15, 0.38, 0.20], [0.70, 0.35, 0.10], [0.30, 0.55, 0.75], [0.55, 0.55, 0.40],
])


def _vary(rng: np.random.Generator, colour: np.ndarray, amount: float) -> np.ndarray:
    return np.clip(colour * (1.0 + amount * rng.uniform(-1, 1, 3)), 0.03, 0.9)


def _texture_seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**24))


def _row(rng_pos: np.random.Generator, rng_neg: np.random.Generator, x_lo: float, x_hi: float, step_fn):
    """Walk outwards from x = 0 in both directions, calling step_fn(rng, x_start, direction) -> advance."""
    for rng, direction, limit in ((rng_pos, 1.0, x_hi), (rng_neg, -1.0, -x_lo)):
        travelled = 0.0
        while travelled < limit:
            travelled += step_fn(rng, travelled, direction)


def _buildings(b: _BoxBuilder, layout: StreetLayout, side: float, x_lo, x_hi, rng_pos, rng_neg):
    base = layout.sidewalk_outer

    def step(rng, s, d):
        if rng.uniform() < 0.18:  # gap
            return rng.uniform(4.0, 14.0)
        length = rng.uniform(8.0, 30.0)
        x_centre = d * (s + 0.5 * length)
        setback = rng.uniform(0.3, 5.0)
        if rng.uniform() < 0.15:  # a wall instead of a building
            height = rng.uniform(1.3, 2.8)
            thickness = 0.35
            y = side * (base + setback + 0.5 * thickness)
            colour = _vary(rng, _FACADE_COLOURS[rng.integers(len(_FACADE_COLOURS))], 0.15)
            b.add((x_centre, y, 0.5 * height), (0.5 * length, 0.5 * thickness, 0.5 * height), M.WALL, colour,
                  _vary(rng, colour * 0.75, 0.1), _texture_seed(rng), (rng.uniform(0.4, 0.9), rng.uniform(0.2, 0.45), 0, 0))
            return length + rng.uniform(0.0, 3.0)
        depth = rng.uniform(8.0, 16.0)
        height = rng.uniform(6.0, 26.0)
        y = side * (base + setback + 0.5 * depth)
        colour = _vary(rng, _FACADE_COLOURS[rng.integers(len(_FACADE_COLOURS))], 0.12)
        trim = _vary(rng, colour * rng.uniform(0.55, 1.25), 0.1)
        style = float(rng.integers(0, 3))          # 0 plaster, 1 stone blocks, 2 panels
        params = (rng.uniform(2.4, 4.0), rng.uniform(2.9, 3.6), style, rng.uniform(0.35, 0.6))
        b.add((x_centre, y, 0.5 * height), (0.5 * length, 0.5 * depth, 0.5 * height), M.FACADE, colour, trim,
              _texture_seed(rng), params)
        if rng.uniform() < 0.3 and height > 9.0:   # a set-back upper storey
            top_h = rng.uniform(3.0, 8.0)
            shrink = rng.uniform(1.0, 3.0)
            b.add((x_centre, y + side * 0.5 * shrink, height + 0.5 * top_h),
                  (0.5 * length - shrink, 0.5 * (depth - shrink), 0.5 * top_h), M.FACADE,
                  _vary(rng, colour, 0.1), trim, _texture_seed(rng), params)
        return length + rng.uniform(0.0, 1.5)

    _row(rng_pos, rng_neg, x_lo, x_hi, step)


def _street_furniture(b: _BoxBuilder, layout: StreetLayout, side: float, x_lo, x_hi, rng_pos, rng_neg):
    """Poles (some with a lamp arm) near the kerb and trees further back on the sidewalk."""
    y_pole = side * (layout.kerb_line + 0.55)
    y_tree = side * (layout.kerb_line + max(1.2, 0.6 * layout.sidewalk_width))
    top = layout.kerb_height

    def step(rng, s, d):
        advance = rng.uniform(12.0, 28.0)
        x = d * (s + 0.5 * advance)
        if rng.uniform() < 0.75:
            height = rng.uniform(4.5, 8.0)
            grey = _vary(rng, np.array([0.42, 0.43, 0.45]), 0.2)
            b.add((x, y_pole, top + 0.5 * height), (0.09, 0.09, 0.5 * height), M.POLE, grey, grey * 0.6,
                  _texture_seed(rng), (rng.uniform(0.4, 1.2), 0, 0, 0))
            if rng.uniform() < 0.5:  # lamp arm over the road
                arm = rng.uniform(1.2, 2.2)
                b.add((x, y_pole - side * 0.5 * arm, top + height - 0.15), (0.08, 0.5 * arm, 0.07), M.POLE, grey,
                      grey * 0.6, _texture_seed(rng), (0.8, 0, 0, 0))
        if rng.uniform() < 0.6:
            xt = x + d * rng.uniform(3.0, 0.4 * advance + 3.0)
            trunk_h = rng.uniform(2.0, 3.2)
            crown = rng.uniform(1.1, 1.9)
            bark = _vary(rng, np.array([0.32, 0.24, 0.17]), 0.2)
            leaf = _vary(rng, np.array([0.22, 0.42, 0.16]), 0.25)
            b.add((xt, y_tree, top + 0.5 * trunk_h), (0.14, 0.14, 0.5 * trunk_h), M.TRUNK, bark, bark * 0.6,
                  _texture_seed(rng))
            b.add((xt, y_tree, top + trunk_h + crown * 0.9), (crown, crown, crown), M.FOLIAGE, leaf,
                  _vary(rng, leaf * 1.6, 0.2), _texture_seed(rng), yaw=rng.uniform(0, math.pi / 2))
        return advance

    _row(rng_pos, rng_neg, x_lo, x_hi, step)


def _kerbs_and_sidewalks(b: _BoxBuilder, layout: StreetLayout, x_lo, x_hi, rng: np.random.Generator):
    segment = 10.0
    start = math.floor(x_lo / segment) * segment
    n = int(math.ceil((x_hi - start) / segment))
    kerb_colour = np.array([0.62, 0.61, 0.58])
    walk_colours = (_vary(rng, np.array([0.55, 0.52, 0.48]), 0.15), _vary(rng, np.array([0.55, 0.52, 0.48]), 0.15))
    seeds = (_texture_seed(rng), _texture_seed(rng))
    tile = (rng.uniform(0.4, 0.8), rng.uniform(0.4, 0.8))
    h = layout.kerb_height
    for side_index, side in enumerate((-1.0, 1.0)):
        y_kerb = side * (layout.kerb_line + 0.5 * layout.kerb_width)
        walk_w = layout.sidewalk_width - layout.kerb_width
        y_walk = side * (layout.kerb_line + layout.kerb_width + 0.5 * walk_w)
        for i in range(n):
            xc = start + (i + 0.5) * segment
            # Textures use the world-aligned local frame of each segment: keep them continuous by
            # passing the segment's x offset as a parameter.
            b.add((xc, y_kerb, 0.5 * h), (0.5 * segment, 0.5 * layout.kerb_width, 0.5 * h), M.KERB, kerb_colour,
                  kerb_colour * 0.8, seeds[side_index] + 1, (xc, 0, 0, 0))
            b.add((xc, y_walk, 0.5 * h), (0.5 * segment, 0.5 * walk_w, 0.5 * h), M.SIDEWALK,
                  walk_colours[side_index], walk_colours[side_index] * 0.8, seeds[side_index], (xc, y_walk, tile[side_index], 0))


def _car_boxes(b: _BoxBuilder, rng: np.random.Generator, object_id: int, x: float, y: float, yaw: float,
               velocity: Tuple[float, float, float]) -> dict:
    """One car (body + cabin, or a van) centred at (x, y) on the road; returns its description."""
    colour = _vary(rng, _CAR_COLOURS[rng.integers(len(_CAR_COLOURS))], 0.1)
    accent = _vary(rng, _CAR_COLOURS[rng.integers(len(_CAR_COLOURS))], 0.2)
    seed = _texture_seed(rng)
    pattern = float(rng.integers(0, 3))
    ground = 0.22
    c, s = math.cos(yaw), math.sin(yaw)
    if rng.uniform() < 0.18:  # van / small truck: one tall box
        length, width, height = rng.uniform(4.8, 6.5), rng.uniform(1.9, 2.1), rng.uniform(1.9, 2.6)
        b.add((x, y, ground + 0.5 * height), (0.5 * length, 0.5 * width, 0.5 * height), M.CAR_BODY, colour, accent,
              seed, (pattern, length, height, 1.0), yaw, velocity, KIND_CAR, object_id)
        kind = "van"
    else:
        length, width = rng.uniform(3.9, 4.9), rng.uniform(1.72, 1.95)
        body_h = rng.uniform(0.62, 0.85)
        cabin_h = rng.uniform(0.45, 0.62)
        cabin_l = length * rng.uniform(0.45, 0.6)
        cabin_off = -length * rng.uniform(0.0, 0.1)  # cabin a little towards the rear
        b.add((x, y, ground + 0.5 * body_h), (0.5 * length, 0.5 * width, 0.5 * body_h), M.CAR_BODY, colour,
              accent, seed, (pattern, length, body_h, 0.0), yaw, velocity, KIND_CAR, object_id)
        b.add((x + c * cabin_off, y + s * cabin_off, ground + body_h + 0.5 * cabin_h),
              (0.5 * cabin_l, 0.5 * width * 0.9, 0.5 * cabin_h), M.CAR_CABIN, colour, accent, seed + 1,
              (pattern, cabin_l, cabin_h, 0.0), yaw, velocity, KIND_CAR, object_id)
        height = ground + body_h + cabin_h
        kind = "car"
    return {"id": object_id, "type": kind, "length": length, "width": width, "height": height,
            "velocity": [float(v) for v in velocity], "yaw": yaw, "position_t0": [x, y, 0.0]}


def generate_scene(seed: int, scene_index: int, t_span: Tuple[float, float]) -> Scene:
    """Build the world of (seed, scene_index) for times in ``t_span`` = (t_first, t_last) seconds."""
    root = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(scene_index) & 0xFFFFFFFF, 0x5EED])
    streams = dict(zip(
        ("layout", "trajectory", "kerbs", "bld_r+", "bld_r-", "bld_l+", "bld_l-", "fur_r+", "fur_r-",
         "fur_l+", "fur_l-", "park_r+", "park_r-", "park_l+", "park_l-", "lane0", "lane1", "lane2", "lane3"),
        root.spawn(19),
    ))
    rngs = {k: np.random.default_rng(v) for k, v in streams.items()}

    r = rngs["layout"]
    layout = StreetLayout(lane_width=r.uniform(3.2, 3.6), parking_width=r.uniform(2.2, 2.6),
                          sidewalk_width=r.uniform(2.8, 4.8))
    sun_azimuth = r.uniform(-math.pi, math.pi)
    sun_elevation = r.uniform(math.radians(30), math.radians(60))
    sun = np.array([math.cos(sun_elevation) * math.cos(sun_azimuth),
                    math.cos(sun_elevation) * math.sin(sun_azimuth), math.sin(sun_elevation)])

    r = rngs["trajectory"]
    trajectory = Trajectory(
        v0=r.uniform(8.0, 10.0),
        speed_terms=[(r.uniform(1.0, 1.6), 2 * math.pi / r.uniform(8.0, 14.0), r.uniform(0, 2 * math.pi)),
                     (r.uniform(0.3, 0.6), 2 * math.pi / r.uniform(3.0, 5.0), r.uniform(0, 2 * math.pi))],
        y0=layout.ego_lane + r.uniform(-0.15, 0.15),
        lateral_terms=[(r.uniform(0.12, 0.25), 2 * math.pi / r.uniform(6.0, 10.0), r.uniform(0, 2 * math.pi)),
                       (r.uniform(0.03, 0.07), 2 * math.pi / r.uniform(2.5, 4.0), r.uniform(0, 2 * math.pi))],
        pitch_terms=[(math.radians(r.uniform(0.15, 0.35)), 2 * math.pi / r.uniform(1.5, 3.0), r.uniform(0, 2 * math.pi))],
        roll_terms=[(math.radians(r.uniform(0.1, 0.25)), 2 * math.pi / r.uniform(2.0, 4.0), r.uniform(0, 2 * math.pi))],
    )

    t_first, t_last = t_span
    xs, _, _, _ = trajectory.position(np.linspace(t_first, t_last, 64))
    x_lo = min(float(xs.min()), 0.0) - STREET_MARGIN
    x_hi = max(float(xs.max()), 0.0) + STREET_MARGIN
    duration = max(abs(t_first), abs(t_last))

    b = _BoxBuilder()
    _kerbs_and_sidewalks(b, layout, x_lo, x_hi, rngs["kerbs"])
    for side, tag in ((-1.0, "r"), (1.0, "l")):
        _buildings(b, layout, side, x_lo, x_hi, rngs[f"bld_{tag}+"], rngs[f"bld_{tag}-"])
        _street_furniture(b, layout, side, x_lo, x_hi, rngs[f"fur_{tag}+"], rngs[f"fur_{tag}-"])

    cars: List[dict] = []
    next_id = [1]

    def add_car(rng, x, y, yaw, velocity, lane, parked):
        info = _car_boxes(b, rng, next_id[0], x, y, yaw, velocity)
        info.update(lane=lane, parked=parked)
        cars.append(info)
        next_id[0] += 1

    # Parked cars in the parking strips (static, but cars: object ids > 0, zero velocity).
    for side, tag in ((-1.0, "r"), (1.0, "l")):
        y = side * (layout.road_edge + 0.5 * layout.parking_width)
        yaw0 = 0.0 if side < 0 else math.pi

        def park(rng, s, d, y=y, yaw0=yaw0, side=side):
            slot = rng.uniform(5.8, 7.5)
            if rng.uniform() < 0.55:
                add_car(rng, d * (s + 0.5 * slot), y + rng.uniform(-0.1, 0.1),
                        yaw0 + math.radians(rng.uniform(-1.5, 1.5)), (0.0, 0.0, 0.0), "parking_" + tag, True)
            return slot

        _row(rngs[f"park_{tag}+"], rngs[f"park_{tag}-"], x_lo, x_hi, park)

    # Moving traffic: one speed per lane (no overtaking inside a lane, so cars never collide).
    lanes = (
        ("same_left", -0.5 * layout.lane_width, 1.0, "lane0"),
        ("oncoming_inner", 0.5 * layout.lane_width, -1.0, "lane1"),
        ("oncoming_outer", 1.5 * layout.lane_width, -1.0, "lane2"),
    )
    for name, y_lane, direction, tag in lanes:
        lane_seq = streams[tag]
        speed_rng, pos_rng, neg_rng = (np.random.default_rng(s) for s in lane_seq.spawn(3))
        speed = speed_rng.uniform(5.0, 14.0) if direction > 0 else speed_rng.uniform(6.0, 13.0)
        vx = direction * speed
        reach = speed * duration + 60.0
        yaw = 0.0 if direction > 0 else math.pi
        offset = speed_rng.uniform(0.0, 20.0)

        def drive(rng, s, d, y_lane=y_lane, vx=vx, yaw=yaw, name=name, offset=offset):
            # Slots of at least 7 m (longer than any car), so cars of one lane never overlap.
            slot = 7.0 + rng.uniform(6.0, 45.0)
            add_car(rng, d * (s + offset) if d > 0 else -(s + slot - offset), y_lane + rng.uniform(-0.15, 0.15),
                    yaw, (vx, 0.0, 0.0), name, False)
            return slot

        _row(pos_rng, neg_rng, x_lo - reach, x_hi + reach, drive)

    boxes = b.build()
    # The backdrop is fixed in the world: centred on the start, 1 km away unless the drive is long
    # (then it grows so the street stays inside).  A longer sequence keeps the same world.
    centre = np.array([0.0, 0.0, 0.0])
    radius = max(BACKDROP_BASE_RADIUS, max(abs(x_lo), abs(x_hi)) + 500.0)
    return Scene(layout=layout, trajectory=trajectory, boxes=boxes, cars=cars, sun_direction=sun,
                 backdrop_centre=centre, backdrop_radius=radius, x_range=(x_lo, x_hi),
                 seeds={"ground": int(rngs["layout"].integers(0, 2**24)), "sky": int(rngs["layout"].integers(0, 2**24))})


def ego_boxes(rig_ego_boxes: np.ndarray, rng_seed: int = 7) -> BoxSet:
    """The ego body (boxes fixed in the vehicle frame) as a BoxSet of KIND_EGO."""
    b = _BoxBuilder()
    for row in np.asarray(rig_ego_boxes, float):
        b.add(row[:3], row[3:], M.EGO, (0.16, 0.17, 0.19), (0.30, 0.31, 0.33), rng_seed, kind=KIND_EGO)
    return b.build()
