"""SE(3) transforms and rotation parameterisations, against pyquaternion and hand-built matrices."""
import math

import numpy as np
import pytest
import torch
from pyquaternion import Quaternion

from geometry import (
    EULER_ORDERS,
    axis_angle_to_matrix,
    axis_angle_to_quaternion,
    compose,
    euler_to_matrix,
    invert_transform,
    make_transform,
    matrix_to_axis_angle,
    matrix_to_euler,
    matrix_to_quaternion,
    pose_from_axis_angle_translation,
    quaternion_to_axis_angle,
    quaternion_to_matrix,
    quaternion_translation_to_transform,
    relative_transform,
    transform_point_map,
    transform_points,
    transform_points_nx3,
)

# Angles that stress every branch: exactly 0, deep in the Taylor branch, at its edge, generic,
# and close to / at pi.
ANGLES = [0.0, 1e-9, 1e-5, 0.00999, 0.01001, 0.3, 2.0, math.pi - 1e-4, math.pi - 1e-7, math.pi]


def random_transforms(*batch, dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    axis_angle = torch.randn(*batch, 3, generator=generator, dtype=dtype)
    t = torch.randn(*batch, 3, generator=generator, dtype=dtype)
    return make_transform(axis_angle_to_matrix(axis_angle), t)


def unit_axis(seed):
    axis = np.random.default_rng(seed).normal(size=3)
    return axis / np.linalg.norm(axis)


# ----------------------------------------------------------------------------- SE(3)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compose_with_inverse_is_identity(dtype):
    T = random_transforms(2, 3, dtype=dtype)
    eye = torch.eye(4, dtype=dtype).expand(2, 3, 4, 4)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for product in (compose(T, invert_transform(T)), compose(invert_transform(T), T)):
        assert product.dtype == dtype
        torch.testing.assert_close(product, eye, atol=tol, rtol=0)
    torch.testing.assert_close(invert_transform(T), torch.linalg.inv(T), atol=tol, rtol=0)


def test_transform_round_trip_and_layouts():
    T_a_b = random_transforms(2, 3)
    points_b = torch.randn(2, 3, 3, 10, dtype=torch.float64)  # [B, N_cams, 3, N]
    points_a = transform_points(T_a_b, points_b)
    torch.testing.assert_close(transform_points(invert_transform(T_a_b), points_a), points_b)
    # Same as multiplying homogeneous points by the 4x4 matrix.
    homogeneous = torch.cat((points_b, torch.ones_like(points_b[..., :1, :])), dim=-2)
    torch.testing.assert_close(points_a, (T_a_b @ homogeneous)[..., :3, :])
    # Row layout [..., N, 3] and channel-first point maps [..., 3, H, W] agree.
    torch.testing.assert_close(transform_points_nx3(T_a_b, points_b.transpose(-1, -2)), points_a.transpose(-1, -2))
    point_map_b = points_b.unflatten(-1, (2, 5))
    torch.testing.assert_close(transform_point_map(T_a_b, point_map_b), points_a.unflatten(-1, (2, 5)))


def test_compose_chain_and_relative_transform_direction():
    T_world_a, T_world_b, T_world_c = random_transforms(3).unbind(0)
    T_a_b = relative_transform(T_world_a, T_world_b)
    p_b = torch.tensor([[0.3], [-1.0], [2.0]], dtype=torch.float64)
    # p_b seen from a is the same world point as p_b seen from the world through b.
    torch.testing.assert_close(
        transform_points(T_world_a, transform_points(T_a_b, p_b)), transform_points(T_world_b, p_b)
    )
    T_b_c = relative_transform(T_world_b, T_world_c)
    T_a_c = compose(invert_transform(T_world_a), T_world_b, T_b_c)
    torch.testing.assert_close(T_a_c, relative_transform(T_world_a, T_world_c))


def test_make_transform_broadcasts():
    R = torch.eye(3).expand(4, 3, 3)
    t = torch.tensor([1.0, 2.0, 3.0])
    T = make_transform(R, t)
    assert T.shape == (4, 4, 4)
    torch.testing.assert_close(T[:, 3], torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(4, 4))
    torch.testing.assert_close(T[:, :3, 3], t.expand(4, 3))


# ----------------------------------------------------------------------------- quaternions vs pyquaternion
@pytest.mark.parametrize("angle", ANGLES)
def test_axis_angle_and_quaternion_agree_with_pyquaternion(angle):
    axis = unit_axis(int(angle * 1000))
    expected = Quaternion(axis=axis, angle=angle)
    axis_angle = torch.tensor(axis * angle)
    R = torch.tensor(expected.rotation_matrix)
    torch.testing.assert_close(axis_angle_to_matrix(axis_angle), R, atol=1e-12, rtol=0)
    q = torch.tensor(expected.elements)  # (w, x, y, z)
    torch.testing.assert_close(quaternion_to_matrix(q), R, atol=1e-12, rtol=0)
    torch.testing.assert_close(axis_angle_to_quaternion(axis_angle), q, atol=1e-12, rtol=0)


@pytest.mark.parametrize("seed", range(5))
def test_matrix_to_quaternion_matches_pyquaternion_up_to_sign(seed):
    R = Quaternion.random().rotation_matrix if seed else np.diag([1.0, -1.0, -1.0])  # seed 0: w = 0
    q = matrix_to_quaternion(torch.tensor(R))
    expected = torch.tensor(Quaternion(matrix=R).elements)
    assert q[0] >= 0
    sign = 1.0 if torch.dot(q, expected) > 0 else -1.0
    torch.testing.assert_close(q, sign * expected, atol=1e-12, rtol=0)


def test_matrix_to_quaternion_picks_stable_branch_for_every_dominant_component():
    # Rotations by pi about x, y, z (w = 0) and the identity: each makes a different component largest.
    Rs = torch.stack([torch.eye(3, dtype=torch.float64)] + [torch.diag(torch.tensor(d, dtype=torch.float64)) for d in
                      ([1.0, -1, -1], [-1.0, 1, -1], [-1.0, -1, 1])])
    q = matrix_to_quaternion(Rs)
    torch.testing.assert_close(q, torch.eye(4, dtype=torch.float64))
    torch.testing.assert_close(quaternion_to_matrix(q), Rs)


def test_quaternion_translation_to_transform_matches_pyquaternion():
    quaternion = Quaternion(axis=[0.2, -0.5, 0.8], angle=1.1)
    t = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    T = quaternion_translation_to_transform(torch.tensor(quaternion.elements), t)
    expected = quaternion.transformation_matrix
    expected[:3, 3] = t.numpy()
    torch.testing.assert_close(T, torch.tensor(expected))


# ----------------------------------------------------------------------------- axis-angle round trips
@pytest.mark.parametrize("angle", ANGLES)
def test_axis_angle_round_trip(angle):
    axis = unit_axis(int(angle * 1000) + 7)
    axis_angle = torch.tensor(axis * angle)
    R = axis_angle_to_matrix(axis_angle)
    recovered = matrix_to_axis_angle(R)
    torch.testing.assert_close(axis_angle_to_matrix(recovered), R, atol=1e-12, rtol=0)
    assert recovered.norm().item() == pytest.approx(angle, abs=1e-9)
    if angle < math.pi - 1e-3:  # near pi, axis and -axis are (almost) the same rotation
        torch.testing.assert_close(recovered, axis_angle, atol=1e-12, rtol=1e-9)
    else:
        sign = 1.0 if torch.dot(recovered, axis_angle) > 0 else -1.0
        torch.testing.assert_close(sign * recovered, axis_angle, atol=1e-6, rtol=0)


def test_quaternion_to_axis_angle_small_angle_is_accurate():
    axis_angle = torch.tensor([[3e-9, -1e-9, 2e-9], [1e-4, 2e-4, -3e-4]], dtype=torch.float64)
    recovered = quaternion_to_axis_angle(axis_angle_to_quaternion(axis_angle))
    torch.testing.assert_close(recovered, axis_angle, rtol=1e-10, atol=0)


@pytest.mark.parametrize(
    "axis_angle",
    [[0.0, 0.0, 0.0], [1e-7, -2e-7, 3e-8], [4e-3, 5e-3, -6e-3], [0.3, -0.8, 1.1], [2.0, 1.0, -1.5]],
)
def test_axis_angle_to_matrix_gradcheck(axis_angle):
    x = torch.tensor(axis_angle, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (x,), eps=1e-7, atol=1e-7)


def test_axis_angle_derivative_at_zero_is_the_rotation_generator():
    jacobian = torch.autograd.functional.jacobian(axis_angle_to_matrix, torch.zeros(3, dtype=torch.float64))
    generators = torch.tensor(
        [[[0, 0, 0], [0, 0, -1], [0, 1, 0]], [[0, 0, 1], [0, 0, 0], [-1, 0, 0]], [[0, -1, 0], [1, 0, 0], [0, 0, 0]]],
        dtype=torch.float64,
    )
    torch.testing.assert_close(jacobian.permute(2, 0, 1), generators)


# ----------------------------------------------------------------------------- Euler angles
def rotation_about(axis, angle):
    c, s = math.cos(angle), math.sin(angle)
    return {
        "X": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
        "Y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
        "Z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]),
    }[axis]


@pytest.mark.parametrize("order", EULER_ORDERS)
def test_euler_multiplies_in_the_stated_order(order):
    angles = [0.3, -0.7, 1.2]
    first, second, third = (rotation_about(axis, angle) for axis, angle in zip(order, angles))
    R = euler_to_matrix(torch.tensor(angles, dtype=torch.float64), order)
    torch.testing.assert_close(R, torch.tensor(first @ second @ third))


def test_euler_xyz_is_rx_ry_rz():
    # Hand-checked entry of Rx(a) Ry(b) Rz(c): R[0, 2] = sin b, R[1, 2] = -sin a cos b.
    a, b, c = 0.4, 0.25, -1.0
    R = euler_to_matrix(torch.tensor([a, b, c], dtype=torch.float64))
    assert R[0, 2].item() == pytest.approx(math.sin(b))
    assert R[1, 2].item() == pytest.approx(-math.sin(a) * math.cos(b))
    assert R[0, 0].item() == pytest.approx(math.cos(b) * math.cos(c))


@pytest.mark.parametrize("order", EULER_ORDERS)
def test_euler_round_trip(order):
    generator = torch.Generator().manual_seed(3)
    angles = (torch.rand(50, 3, generator=generator, dtype=torch.float64) * 2 - 1) * torch.tensor(
        [math.pi * 0.999, math.pi / 2 * 0.999, math.pi * 0.999], dtype=torch.float64
    )
    torch.testing.assert_close(matrix_to_euler(euler_to_matrix(angles, order), order), angles)
    R = quaternion_to_matrix(torch.randn(50, 4, generator=generator, dtype=torch.float64))
    torch.testing.assert_close(euler_to_matrix(matrix_to_euler(R, order), order), R)


@pytest.mark.parametrize("order", EULER_ORDERS)
@pytest.mark.parametrize("middle", [math.pi / 2, -math.pi / 2])
def test_euler_gimbal_lock_still_reproduces_the_matrix(order, middle):
    R = euler_to_matrix(torch.tensor([0.4, middle, -0.9], dtype=torch.float64), order)
    angles = matrix_to_euler(R, order)
    assert angles[2] == 0.0
    torch.testing.assert_close(euler_to_matrix(angles, order), R)


def test_unknown_euler_order_raises():
    with pytest.raises(ValueError, match="XYZ"):
        euler_to_matrix(torch.zeros(3), "XYX")


# ----------------------------------------------------------------------------- pose-net helper
def test_pose_from_axis_angle_translation():
    axis_angle = torch.tensor([[0.1, -0.2, 0.3], [0.0, 0.0, 0.0]], dtype=torch.float64)
    t = torch.tensor([[1.0, 2.0, -0.5], [0.3, 0.0, 0.1]], dtype=torch.float64)
    T = pose_from_axis_angle_translation(axis_angle, t)
    p = torch.tensor([0.5, -1.0, 4.0], dtype=torch.float64)
    # Trans(t) @ Rot: rotate first, then translate.
    torch.testing.assert_close(transform_points_nx3(T, p[None])[:, 0], (axis_angle_to_matrix(axis_angle) @ p) + t)
    T_inv = pose_from_axis_angle_translation(axis_angle, t, invert=True)
    torch.testing.assert_close(compose(T, T_inv), torch.eye(4, dtype=torch.float64).expand(2, 4, 4))
