"""Rigid transforms (SE(3)) as 4x4 matrices, and rotation parameterisations.

Naming: ``T_a_b`` [..., 4, 4] maps points from frame b into frame a: p_a = R p_b + t.
Hence ``compose(T_a_b, T_b_c) = T_a_c`` and ``invert_transform(T_a_b) = T_b_a``.

Rotations act on column vectors (p' = R p).  Quaternions are (w, x, y, z), w first, as in
pyquaternion, DGP and nuScenes.  Every function takes arbitrary leading batch dims ``...``
and keeps the device and dtype of its input.
"""
from __future__ import annotations

from typing import Tuple

import torch

# Below this angle (rad) the Rodrigues coefficients use their Taylor series: exact to double
# precision there (next term ~ theta^6 / 5040) and differentiable through theta = 0.
_SMALL_ANGLE = 1e-2

EULER_ORDERS = ("XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX")


# ----------------------------------------------------------------------------- SE(3) matrices
def make_transform(R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """T [..., 4, 4] = [[R, t], [0, 1]] from R [..., 3, 3] and t [..., 3] (broadcast)."""
    batch = torch.broadcast_shapes(R.shape[:-2], t.shape[:-1])
    top = torch.cat((R.expand(*batch, 3, 3), t.expand(*batch, 3)[..., None]), dim=-1)
    bottom = torch.zeros(4, dtype=top.dtype, device=top.device)
    bottom[3] = 1.0
    return torch.cat((top, bottom.expand(*batch, 1, 4)), dim=-2)


def rotation_part(T: torch.Tensor) -> torch.Tensor:
    """R [..., 3, 3] of T [..., 4, 4]."""
    return T[..., :3, :3]


def translation_part(T: torch.Tensor) -> torch.Tensor:
    """t [..., 3] of T [..., 4, 4]."""
    return T[..., :3, 3]


def invert_transform(T_a_b: torch.Tensor) -> torch.Tensor:
    """T_b_a [..., 4, 4] = [R^T, -R^T t]: exact for rigid transforms, no general matrix inverse."""
    R_t = rotation_part(T_a_b).transpose(-1, -2)
    t = translation_part(T_a_b)
    return make_transform(R_t, -(R_t @ t[..., None])[..., 0])


def compose(T_a_b: torch.Tensor, T_b_c: torch.Tensor, *more: torch.Tensor) -> torch.Tensor:
    """T_a_c = T_a_b @ T_b_c (further transforms chain on the right: T_a_b, T_b_c, T_c_d -> T_a_d)."""
    out = T_a_b @ T_b_c
    for T in more:
        out = out @ T
    return out


def relative_transform(T_world_a: torch.Tensor, T_world_b: torch.Tensor) -> torch.Tensor:
    """T_a_b = T_world_a^-1 @ T_world_b: maps points from frame b into frame a.

    E.g. with rig poses T_world_rig at times t and t+1, ``relative_transform(pose_t1, pose_t)``
    maps points of the rig at t into the rig at t+1.
    """
    return compose(invert_transform(T_world_a), T_world_b)


def transform_points(T_a_b: torch.Tensor, points_b: torch.Tensor) -> torch.Tensor:
    """Points [..., 3, N] in frame b -> [..., 3, N] in frame a (p_a = R p_b + t).

    Channels first, like a flattened point map.  Leading dims broadcast with T's.
    """
    return rotation_part(T_a_b) @ points_b + translation_part(T_a_b)[..., None]


def transform_point_map(T_a_b: torch.Tensor, points_b: torch.Tensor) -> torch.Tensor:
    """Point map [..., 3, H, W] in frame b -> [..., 3, H, W] in frame a; T_a_b is [..., 4, 4]."""
    h, w = points_b.shape[-2:]
    flat = transform_points(T_a_b, points_b.flatten(-2))
    return flat.unflatten(-1, (h, w))


def transform_points_nx3(T_a_b: torch.Tensor, points_b: torch.Tensor) -> torch.Tensor:
    """Points [..., N, 3] (one point per row, e.g. a lidar scan) in frame b -> [..., N, 3] in frame a."""
    return points_b @ rotation_part(T_a_b).transpose(-1, -2) + translation_part(T_a_b)[..., None, :]


# ----------------------------------------------------------------------------- axis-angle
def skew_symmetric(v: torch.Tensor) -> torch.Tensor:
    """[v]_x [..., 3, 3] such that [v]_x @ p = v x p, for v [..., 3]."""
    x, y, z = v.unbind(-1)
    zero = torch.zeros_like(x)
    rows = (
        torch.stack((zero, -z, y), dim=-1),
        torch.stack((z, zero, -x), dim=-1),
        torch.stack((-y, x, zero), dim=-1),
    )
    return torch.stack(rows, dim=-2)


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues: rotation vector [..., 3] (axis * angle, rad) -> R [..., 3, 3].

    R = I + a [v]_x + b [v]_x^2 with a = sin(theta)/theta, b = (1 - cos(theta))/theta^2.
    b is evaluated as 0.5 (sin(theta/2) / (theta/2))^2, which avoids the cancellation in
    1 - cos; near theta = 0 both use their Taylor series, so values and gradients are exact.
    """
    theta_sq = (axis_angle * axis_angle).sum(-1)
    small = theta_sq < _SMALL_ANGLE**2
    # torch.where differentiates both branches: feed the unused one a harmless theta.
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta_sq), theta_sq))
    half = 0.5 * theta
    a_exact = torch.sin(theta) / theta
    b_exact = 0.5 * (torch.sin(half) / half) ** 2
    a_taylor = 1.0 - theta_sq / 6.0 + theta_sq**2 / 120.0
    b_taylor = 0.5 - theta_sq / 24.0 + theta_sq**2 / 720.0
    a = torch.where(small, a_taylor, a_exact)[..., None, None]
    b = torch.where(small, b_taylor, b_exact)[..., None, None]
    K = skew_symmetric(axis_angle)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return eye + a * K + b * (K @ K)


def quaternion_to_axis_angle(q: torch.Tensor) -> torch.Tensor:
    """Quaternion [..., 4] (w, x, y, z) -> rotation vector [..., 3] with angle in [0, pi].

    angle = 2 atan2(|v|, w) after choosing w >= 0; stable near 0 (Taylor) and near pi (atan2).
    """
    q = q / q.norm(dim=-1, keepdim=True)
    q = torch.where(q[..., :1] < 0, -q, q)
    w, v = q[..., 0], q[..., 1:]
    n_sq = (v * v).sum(-1)
    small = n_sq < 1e-8
    n = torch.sqrt(torch.where(small, torch.ones_like(n_sq), n_sq))
    # angle / |v|: exact form, or its series 2/w - 2|v|^2/(3 w^3) when |v| -> 0 (then w -> 1).
    factor = torch.where(small, 2.0 / w - 2.0 * n_sq / (3.0 * w**3), 2.0 * torch.atan2(n, w) / n)
    return v * factor[..., None]


def axis_angle_to_quaternion(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rotation vector [..., 3] -> unit quaternion [..., 4] (w, x, y, z)."""
    theta_sq = (axis_angle * axis_angle).sum(-1)
    small = theta_sq < _SMALL_ANGLE**2
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta_sq), theta_sq))
    # sin(theta/2)/theta with its Taylor series near 0.
    s = torch.where(small, 0.5 - theta_sq / 48.0 + theta_sq**2 / 3840.0, torch.sin(0.5 * theta) / theta)
    w = torch.where(small, 1.0 - theta_sq / 8.0 + theta_sq**2 / 384.0, torch.cos(0.5 * theta))
    return torch.cat((w[..., None], axis_angle * s[..., None]), dim=-1)


def matrix_to_axis_angle(R: torch.Tensor) -> torch.Tensor:
    """R [..., 3, 3] -> rotation vector [..., 3], angle in [0, pi].

    Goes through the quaternion, whose robust branch selection keeps the axis accurate near
    pi, where the usual (R - R^T) / (2 sin theta) formula loses it.
    """
    return quaternion_to_axis_angle(matrix_to_quaternion(R))


# ----------------------------------------------------------------------------- quaternions
def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Quaternion [..., 4] (w, x, y, z) -> R [..., 3, 3]; q is normalised first."""
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rows = (
        torch.stack((1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)), dim=-1),
        torch.stack((2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)), dim=-1),
        torch.stack((2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)), dim=-1),
    )
    return torch.stack(rows, dim=-2)


def matrix_to_quaternion(R: torch.Tensor) -> torch.Tensor:
    """R [..., 3, 3] -> unit quaternion [..., 4] (w, x, y, z) with w >= 0.

    Each of w, x, y, z can be recovered from a different combination of R's entries, divided by
    that component; we use the largest component (>= 1/2 for a rotation) so the division is
    always well conditioned (Shepperd's method), vectorised by computing all four candidates.
    """
    r = R.unbind(-1)
    r00, r10, r20 = r[0].unbind(-1)
    r01, r11, r21 = r[1].unbind(-1)
    r02, r12, r22 = r[2].unbind(-1)
    four_sq = torch.stack(
        (
            1 + r00 + r11 + r22,  # 4 w^2
            1 + r00 - r11 - r22,  # 4 x^2
            1 - r00 + r11 - r22,  # 4 y^2
            1 - r00 - r11 + r22,  # 4 z^2
        ),
        dim=-1,
    )
    # The chosen component has 4 q_i^2 >= 1; the clamp only keeps unused candidates finite.
    four_abs = torch.sqrt(torch.clamp(four_sq, min=1e-3))
    candidates = torch.stack(
        (
            torch.stack((four_sq[..., 0], r21 - r12, r02 - r20, r10 - r01), dim=-1),
            torch.stack((r21 - r12, four_sq[..., 1], r01 + r10, r02 + r20), dim=-1),
            torch.stack((r02 - r20, r01 + r10, four_sq[..., 2], r12 + r21), dim=-1),
            torch.stack((r10 - r01, r02 + r20, r12 + r21, four_sq[..., 3]), dim=-1),
        ),
        dim=-2,
    ) / (2.0 * four_abs[..., None])  # row i is 4 q_i * q / (4 |q_i|)
    best = four_sq.argmax(dim=-1)
    index = best[..., None, None].expand(*best.shape, 1, 4)
    q = torch.gather(candidates, -2, index)[..., 0, :]
    q = q / q.norm(dim=-1, keepdim=True)  # tolerate slightly non-orthonormal input
    return torch.where(q[..., :1] < 0, -q, q)


def quaternion_translation_to_transform(q: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """T [..., 4, 4] from a quaternion [..., 4] (w, x, y, z) and a translation [..., 3].

    This is how DGP and nuScenes store poses: with q, t of frame b in frame a, T is T_a_b.
    """
    return make_transform(quaternion_to_matrix(q), t)


# ----------------------------------------------------------------------------- Euler angles
def _axis_rotation(axis: str, angle: torch.Tensor) -> torch.Tensor:
    """Elementary rotation [..., 3, 3] by ``angle`` [...] (rad) about the named axis."""
    c, s = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(angle), torch.zeros_like(angle)
    if axis == "X":
        rows = ((one, zero, zero), (zero, c, -s), (zero, s, c))
    elif axis == "Y":
        rows = ((c, zero, s), (zero, one, zero), (-s, zero, c))
    else:
        rows = ((c, -s, zero), (s, c, zero), (zero, zero, one))
    return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)


def _check_order(order: str) -> Tuple[int, int, int]:
    if order not in EULER_ORDERS:
        raise ValueError(f"unknown Euler order {order!r}; allowed values: {', '.join(EULER_ORDERS)}")
    return tuple("XYZ".index(a) for a in order)


def euler_to_matrix(angles: torch.Tensor, order: str = "XYZ") -> torch.Tensor:
    """Euler angles [..., 3] (rad) -> R [..., 3, 3].

    ``angles[..., k]`` is the angle about axis ``order[k]`` and the matrices multiply in that
    order: "XYZ" means R = Rx(a0) @ Ry(a1) @ Rz(a2) (packnet-sfm's ``from_vec(..., 'euler')``).
    """
    _check_order(order)
    a0, a1, a2 = angles.unbind(-1)
    return _axis_rotation(order[0], a0) @ _axis_rotation(order[1], a1) @ _axis_rotation(order[2], a2)


def matrix_to_euler(R: torch.Tensor, order: str = "XYZ") -> torch.Tensor:
    """Inverse of :func:`euler_to_matrix`: R [..., 3, 3] -> angles [..., 3].

    The middle angle is in [-pi/2, pi/2], the others in (-pi, pi].  At gimbal lock (middle angle
    +-pi/2) only a sum/difference of the outer angles is defined: the last one is set to 0.
    """
    i, j, k = _check_order(order)
    # s = +1 for cyclic orders (XYZ, YZX, ZXY), -1 otherwise; then for R = Ri(a) Rj(b) Rk(c):
    # R[i,k] = s sin b, R[j,k] = -s sin a cos b, R[k,k] = cos a cos b,
    # R[i,j] = -s cos b sin c, R[i,i] = cos b cos c.
    s = 1.0 if (j - i) % 3 == 1 else -1.0
    cos_b = torch.sqrt(R[..., i, i] ** 2 + R[..., i, j] ** 2)
    b = torch.atan2(s * R[..., i, k], cos_b)
    locked = cos_b < 1e-6
    a_free = torch.atan2(-s * R[..., j, k], R[..., k, k])
    c_free = torch.atan2(-s * R[..., i, j], R[..., i, i])
    # With c = 0, R = Ri(a) Rj(b), whose column j is (cos a) e_j + s (sin a) e_k.
    a_locked = torch.atan2(s * R[..., k, j], R[..., j, j])
    a = torch.where(locked, a_locked, a_free)
    c = torch.where(locked, torch.zeros_like(c_free), c_free)
    return torch.stack((a, b, c), dim=-1)


# ----------------------------------------------------------------------------- pose-net outputs
def pose_from_axis_angle_translation(
    axis_angle: torch.Tensor, translation: torch.Tensor, invert: bool = False
) -> torch.Tensor:
    """T [..., 4, 4] = Trans(t) @ Rot(axis_angle), or its inverse Rot^T @ Trans(-t) if ``invert``.

    This is how VFDepth turns its pose decoder's output (axis_angle [..., 3], translation
    [..., 3]) into a transform; it inverts it for the backward frame pair.
    """
    T = make_transform(axis_angle_to_matrix(axis_angle), translation)
    return invert_transform(T) if invert else T
