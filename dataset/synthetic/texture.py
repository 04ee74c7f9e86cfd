"""Procedural texture building blocks: integer hashing, value noise, fractal noise, filtered pulses.

Everything is a pure function of surface coordinates (metres in an object's local frame) and an
integer seed, evaluated elementwise on torch tensors, so it is deterministic whatever the thread
count and needs no global random state.

Anti-aliasing: every function that makes fine detail takes ``footprint``, the size (metres) of a
pixel's footprint on the surface.  Octaves of noise whose period is shorter than about two
footprints are faded out and periodic pulses (lane paint, mortar, window frames) are box-filtered
over the footprint analytically.  This approximates the area integral a real pixel performs (and
which the sub-pixel supersampling estimates); it is the same for the same surface point seen at
the same distance, so brightness constancy between neighbouring frames holds up to the small
change of footprint.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

_MASK32 = 0xFFFFFFFF
# Odd multipliers below 2**31 so that (value < 2**32) * multiplier never overflows int64.
_PRIME_U = 0x6C8E9CF5 & 0x7FFFFFFF
_PRIME_V = 0x2F6B4A8B & 0x7FFFFFFF
_PRIME_S = 0x1B873593
_MIX_A = 0x7FEB352D
_MIX_B = 0x046B4F93 | 1


def _finalise(h: torch.Tensor) -> torch.Tensor:
    """xorshift-multiply finaliser (one round, enough for textures) of a 32-bit value held in int64."""
    h = h ^ (h >> 15)
    h = (h * _MIX_A) & _MASK32
    return h ^ (h >> 13)


def _seed_term(seed, device) -> torch.Tensor:
    seed = torch.as_tensor(seed, dtype=torch.int64, device=device)
    return ((seed & _MASK32) * _PRIME_S) & _MASK32


def hash_u32(ix: torch.Tensor, iy: torch.Tensor, seed) -> torch.Tensor:
    """A well-mixed 32-bit hash (int64 tensor in [0, 2**32)) of integer lattice coordinates and a seed.

    ``ix``, ``iy`` are int64 tensors (any sign); ``seed`` an int or int64 tensor broadcasting with them.
    """
    h = ((ix & _MASK32) * _PRIME_U) & _MASK32
    h = h ^ (((iy & _MASK32) * _PRIME_V) & _MASK32)
    return _finalise(h ^ _seed_term(seed, ix.device))


def hash_unit(ix: torch.Tensor, iy: torch.Tensor, seed) -> torch.Tensor:
    """Hash of integer coordinates mapped to float32 in [0, 1)."""
    return _to_unit(hash_u32(ix, iy, seed))


def _to_unit(h: torch.Tensor) -> torch.Tensor:
    return (h >> 8).to(torch.float32) * (1.0 / 16777216.0)


def cell_random(u: torch.Tensor, v: torch.Tensor, seed, cell_u: float, cell_v: float) -> torch.Tensor:
    """One random value in [0, 1) per rectangular cell of size (cell_u, cell_v) (tiles, bricks, windows)."""
    iu = torch.floor(u / cell_u).to(torch.int64)
    iv = torch.floor(v / cell_v).to(torch.int64)
    return hash_unit(iu, iv, seed)


def _smooth(t: torch.Tensor) -> torch.Tensor:
    return t * t * (3.0 - 2.0 * t)


def value_noise(u: torch.Tensor, v: torch.Tensor, seed, frequency: float) -> torch.Tensor:
    """2D value noise in [-1, 1] (float32) at ``frequency`` cycles per metre.

    The integer lattice split happens in the input precision (float64 for world coordinates of
    hundreds of metres); only the fractional part is interpolated in float32.
    """
    x = u * frequency
    y = v * frequency
    fx = torch.floor(x)
    fy = torch.floor(y)
    ix = fx.to(torch.int64)
    iy = fy.to(torch.int64)
    tx = _smooth((x - fx).to(torch.float32))
    ty = _smooth((y - fy).to(torch.float32))
    # The four corner hashes share their per-axis products: (i + 1) * P = i * P + P (mod 2**32).
    hu0 = ((ix & _MASK32) * _PRIME_U) & _MASK32
    hu1 = (hu0 + _PRIME_U) & _MASK32
    hv0 = ((iy & _MASK32) * _PRIME_V) & _MASK32 ^ _seed_term(seed, ix.device)
    hv1 = ((((iy + 1) & _MASK32) * _PRIME_V) & _MASK32) ^ _seed_term(seed, ix.device)
    a = _to_unit(_finalise(hu0 ^ hv0))
    b = _to_unit(_finalise(hu1 ^ hv0))
    c = _to_unit(_finalise(hu0 ^ hv1))
    d = _to_unit(_finalise(hu1 ^ hv1))
    top = a + (b - a) * tx
    bottom = c + (d - c) * tx
    return 2.0 * (top + (bottom - top) * ty) - 1.0


def octave_weight(frequency: float, footprint: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Fade an octave out as its period approaches the pixel footprint (1 below 0.5 cycles/pixel, 0 above 1)."""
    if footprint is None:
        return None
    cycles = frequency * footprint
    return torch.clamp(2.0 - 2.0 * cycles, 0.0, 1.0)


def fbm(
    u: torch.Tensor,
    v: torch.Tensor,
    seed,
    base_frequency: float,
    octaves: int,
    footprint: Optional[torch.Tensor] = None,
    gain: float = 0.5,
    lacunarity: float = 2.0,
) -> torch.Tensor:
    """Fractal (multi-scale) value noise, roughly in [-1, 1], float32, band-limited by ``footprint``.

    A faded octave contributes its mean (0) instead of aliasing.
    """
    total = None
    amplitude = 1.0
    norm = 0.0
    frequency = base_frequency
    for octave in range(octaves):
        layer = value_noise(u, v, torch.as_tensor(seed, dtype=torch.int64) * 31 + octave * 977 + 13, frequency)
        weight = octave_weight(frequency, footprint)
        if weight is not None:
            layer = layer * weight
        layer = layer * amplitude
        total = layer if total is None else total + layer
        norm += amplitude
        amplitude *= gain
        frequency *= lacunarity
    return total / norm


def _is_inf(period) -> bool:
    return not isinstance(period, torch.Tensor) and math.isinf(period)


def _pulse_integral(x: torch.Tensor, period, width) -> torch.Tensor:
    """Integral from 0 to x of the pulse train that is 1 on [k P, k P + width) for all integers k."""
    k = torch.floor(x / period)
    return k * width + torch.clamp(x - k * period, 0.0, width)


def pulse(
    x: torch.Tensor,
    period,
    start,
    width,
    footprint: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Coverage (float32 in [0, 1]) of the pulse train 1 on [start + k P, start + k P + width).

    With ``footprint`` the pulse train is box-filtered over an interval of that length centred on
    x (exact area coverage); ``period=inf`` gives a single pulse.  ``period`` (finite), ``start``
    and ``width`` may be numbers or tensors broadcasting with x.
    """
    y = x - start
    if _is_inf(period):
        if footprint is None:
            return ((y >= 0) & (y < width)).to(torch.float32)
        half = 0.5 * torch.clamp(footprint, min=1e-6)
        lo = torch.clamp(y - half, min=0.0)
        hi = torch.clamp(y + half, max=width)
        return torch.clamp((hi - lo) / (2.0 * half), 0.0, 1.0).to(torch.float32)
    if footprint is None:
        return ((y - torch.floor(y / period) * period) < width).to(torch.float32)
    half = 0.5 * torch.clamp(footprint, min=1e-6)
    covered = _pulse_integral(y + half, period, width) - _pulse_integral(y - half, period, width)
    return torch.clamp(covered / (2.0 * half), 0.0, 1.0).to(torch.float32)


def mix(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Linear blend of colours a, b ([..., 3] or broadcastable) by t [...] in [0, 1]."""
    return a + (b - a) * t[..., None]
