"""The multi-mono-sf network (network/sceneflow.py, network/correlation.py): the correlation against
the straightforward loop and its channel layout, the parameter count and names of the reference,
state propagation by forward splatting, scene flow -> optical flow, the 3D warping layer, flip
post-processing, and what the three reference_* switches change."""
import os

import pytest
import torch

from geometry import forward_splat, make_intrinsics, scene_flow_to_optical_flow, softmax_splat
from network import MonoSceneFlowNet, correlation, correlation_loop
from network.sceneflow import (REFERENCE_BASELINE, StatePropagation, flip_scene_flow, post_process,
                               warp_by_scene_flow)

REFERENCE_PARAMETERS = 7_536_920
REFERENCE_DEAD_LSTM = 746_978   # the level-0 ConvLSTM parts the reference builds and never uses
STATE_DICT_FILE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "spec", "multi-mono-sf_state_dict.txt")


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ----------------------------------------------------------------------------------- correlation
@pytest.mark.parametrize("shape, r", [((2, 16, 5, 7), 4), ((1, 8, 9, 33), 4), ((1, 4, 6, 20), 2), ((2, 3, 4, 5), 1)])
def test_correlation_matches_the_loop(shape, r):
    f1 = torch.randn(shape, requires_grad=True)
    f2 = torch.randn(shape, requires_grad=True)
    fast, slow = correlation(f1, f2, r), correlation_loop(f1, f2, r)
    assert fast.shape == (shape[0], (2 * r + 1) ** 2, *shape[2:])
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)
    weights = torch.randn_like(slow)
    grads_fast = torch.autograd.grad((fast * weights).sum(), (f1, f2))
    grads_slow = torch.autograd.grad((slow * weights).sum(), (f1, f2))
    for a, b in zip(grads_fast, grads_slow):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dy, dx", [(1, -2), (-4, 3), (0, 0)])
def test_correlation_channel_is_the_displacement(dy, dx):
    """f2 = f1 moved by (dy, dx): f1 at (y, x) reappears in f2 at (y + dy, x + dx), so the channel
    (dy + r)(2r + 1) + (dx + r) holds the largest value at the interior pixels."""
    r, h, w = 4, 12, 14
    f1 = torch.randn(1, 32, h, w)
    f2 = torch.roll(f1, shifts=(dy, dx), dims=(2, 3))
    cost = correlation(f1, f2, r)
    best = cost[0, :, r:h - r, r:w - r].argmax(dim=0)
    assert bool((best == (dy + r) * (2 * r + 1) + (dx + r)).all())
    # a channel is the mean over channels: f1 . f1 / C at the matching displacement
    torch.testing.assert_close(cost[0, (dy + r) * 9 + dx + r, r:h - r, r:w - r], (f1 * f1).mean(1)[0, r:h - r, r:w - r])


# ----------------------------------------------------------------------------------- parameters
def test_parameter_count_is_the_reference_minus_dead_weights():
    net = MonoSceneFlowNet()
    assert sum(p.numel() for p in net.parameters()) == REFERENCE_PARAMETERS - REFERENCE_DEAD_LSTM
    ours = {name: tuple(t.shape) for name, t in net.state_dict().items()}
    assert not any(name.startswith(("flow_estimators.0.conv_lstm", "flow_estimators.0.conv_c_init",
                                    "flow_estimators.0.featprop")) for name in ours)
    if os.path.isfile(STATE_DICT_FILE):   # the reference's names and shapes, for a converter
        reference = {}
        for line in open(STATE_DICT_FILE):
            if line.strip() and not line.startswith("#"):
                name, shape, _ = line.rstrip("\n").split("\t")
                reference[name] = tuple(int(v) for v in shape.strip("()").split(",") if v.strip())
        assert {k: reference.get(k) for k in ours} == ours
        dead = sum(torch.Size(s).numel() for k, s in reference.items() if k not in ours)
        assert dead == REFERENCE_DEAD_LSTM and sum(torch.Size(s).numel() for s in reference.values()) == REFERENCE_PARAMETERS


# ----------------------------------------------------------------------------------- splatting
def test_forward_splatting_moves_a_feature_by_exactly_the_flow():
    feature = torch.zeros(1, 4, 8, 10)
    feature[0, :, 3, 2] = torch.tensor([1.0, -2.0, 3.0, 0.5])
    flow = torch.zeros(1, 2, 8, 10)
    flow[:, 0], flow[:, 1] = 5.0, 2.0
    for out in (forward_splat(feature, flow), softmax_splat(feature, flow, torch.zeros(1, 1, 8, 10))):
        expected = torch.zeros_like(feature)
        expected[0, :, 5, 7] = feature[0, :, 3, 2]
        torch.testing.assert_close(out, expected)


def test_state_propagation_carries_states_along_the_flow_and_resets_when_uncovered():
    prop = StatePropagation(frozen_gate=False)
    with torch.no_grad():                      # a gate that lets everything through
        prop.conv1x1[0].weight.fill_(0.0)
        prop.conv1x1[0].bias.fill_(50.0)
    h, w = 6, 9
    state = torch.randn(1, 3, h, w)
    flow = torch.zeros(1, 2, h, w)
    flow[:, 0] = 2.0                           # everything moves two pixels right
    disp = torch.full((1, 1, h, w), 0.1)
    feats = torch.randn(1, 5, h, w)
    (moved,) = prop([state], flow, disp, feats, feats)
    torch.testing.assert_close(moved[..., 2:], state[..., :-2])
    assert bool((moved[..., :2] == 0).all())  # nothing lands on the first two columns
    flow[:, 0] = 2.0 * w                       # everything leaves the image: the state resets
    (reset,) = prop([state], flow, disp, feats, feats)
    assert bool((reset == 0).all())


def test_frozen_gate_is_a_threshold_and_learnable_gate_gets_gradient():
    frozen, learnable = StatePropagation(frozen_gate=True), StatePropagation(frozen_gate=False)
    learnable.init_gate()
    assert not any(p.requires_grad for p in frozen.parameters())
    feats = torch.randn(1, 8, 5, 5)
    gate = frozen.gate(feats, feats)
    assert set(gate.unique().tolist()) <= {0.0, 1.0}
    soft = learnable.gate(feats, feats)
    assert 0 < float(soft.detach().min()) and float(soft.detach().max()) < 1    # sigmoid(4 * agreement - 2)
    soft.sum().backward()
    assert learnable.conv1x1[0].weight.grad is not None and float(learnable.conv1x1[0].weight.grad.abs()) > 0


# ----------------------------------------------------------------------------------- geometry
def test_scene_flow_to_optical_flow_agrees_with_projecting_moved_points():
    h, w = 5, 7
    K = make_intrinsics(60.0, 55.0, 3.2, 2.1)[None]
    depth = 4.0 + torch.rand(1, 1, h, w) * 10
    sf = torch.randn(1, 3, h, w) * 0.5
    flow = scene_flow_to_optical_flow(depth, sf, K)
    # per pixel, by hand: P = z K^-1 (u, v, 1), P' = P + sf, pixel' = (fx X'/Z' + cx, fy Y'/Z' + cy)
    fx, fy, cx, cy = 60.0, 55.0, 3.2, 2.1
    for v in range(h):
        for u in range(w):
            z = float(depth[0, 0, v, u])
            X, Y = (u - cx) / fx * z + float(sf[0, 0, v, u]), (v - cy) / fy * z + float(sf[0, 1, v, u])
            Z = z + float(sf[0, 2, v, u])
            assert float(flow[0, 0, v, u]) == pytest.approx(fx * X / Z + cx - u, abs=1e-4)
            assert float(flow[0, 1, v, u]) == pytest.approx(fy * Y / Z + cy - v, abs=1e-4)


def test_3d_warping_layer_reads_the_other_frame_where_the_scene_flow_points():
    """A wall at constant depth moving sideways by sf_x metres appears shifted by fx * sf_x / z
    pixels: warping the next frame with that scene flow reproduces the current one."""
    h, w = 8, 24
    K = make_intrinsics(20.0, 20.0, 11.5, 3.5)[None]
    baseline = torch.tensor([REFERENCE_BASELINE])
    disp_px = 2.7                                 # depth = 20 * 0.54 / (2.7 + 1e-4) ~= 4 m
    depth = 20.0 * REFERENCE_BASELINE / (disp_px + 1e-4)
    shift = 2.0                                   # pixels
    sf = torch.zeros(1, 3, h, w)
    sf[:, 0] = shift * depth / 20.0
    current = torch.rand(1, 3, h, w)
    nxt = torch.zeros_like(current)
    nxt[..., 2:] = current[..., :-2]              # the wall moved two pixels right
    warped = warp_by_scene_flow(nxt, sf, torch.full((1, 1, h, w), disp_px / w), K, baseline)
    torch.testing.assert_close(warped[..., :-3], current[..., :-3], atol=1e-4, rtol=0)
    assert bool((warped[..., -2:] == 0).all())    # sampled outside the image: zeroed


def test_flip_post_processing():
    x = torch.rand(2, 3, 4, 40)
    torch.testing.assert_close(post_process(x, x), x)
    torch.testing.assert_close(flip_scene_flow(flip_scene_flow(x)), x)
    assert float(flip_scene_flow(torch.ones(1, 3, 1, 2))[0, 0, 0, 0]) == -1.0
    other = torch.rand_like(x)
    pp = post_process(x, other)
    torch.testing.assert_close(pp[..., 0], other[..., 0])     # leftmost column: the flipped pass
    torch.testing.assert_close(pp[..., -1], x[..., -1])       # rightmost: the plain pass
    torch.testing.assert_close(pp[..., 20], (x[..., 20] + other[..., 20]) / 2)


# ----------------------------------------------------------------------------------- switches
SWITCHES = ("unscaled_state_flow", "shared_cell_state", "frozen_validity_gate")


@pytest.fixture(scope="module")
def sequence():
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(1, 4, 3, 32, 64, generator=generator)
    K = make_intrinsics(40.0, 40.0, 31.5, 15.5)[None]
    return images, K, torch.tensor([REFERENCE_BASELINE])


def _run(net, images, K, baseline):
    with torch.no_grad():
        return net(images, K, baseline)


def test_reference_switches_change_only_the_recurrence(sequence):
    images, K, baseline = sequence
    torch.manual_seed(3)
    default = MonoSceneFlowNet().eval()
    with torch.no_grad():
        # A propagation that actually carries state: the random network's scene flow is scaled
        # down so that the flow keeps most pixels covered, and the reference gate opens.
        for module in default.modules():
            if isinstance(module, StatePropagation):
                module.conv1x1[0].weight.fill_(1.0)
                module.conv1x1[0].bias.fill_(1.0)
        for decoder in default.flow_estimators:
            decoder.conv_sf[2][0].weight.mul_(0.02)
    base = _run(default, images, K, baseline)
    assert len(base["sf_f"]) == 2 and len(base["sf_f"][0]) == 4
    assert base["sf_f"][0][0].shape == (1, 3, 32, 64) and base["disp"][1][3].shape == (1, 1, 4, 8)
    for switch in SWITCHES:
        variant = MonoSceneFlowNet(**{switch: True}).eval()
        variant.load_state_dict(default.state_dict())
        out = _run(variant, images, K, baseline)
        # The first centre frame has no previous state: identical. The second carries the state
        # over, and each switch changes how.
        for key in ("sf_f", "sf_b", "disp"):
            for a, b in zip(base[key][0], out[key][0]):
                torch.testing.assert_close(a, b)
        assert not torch.allclose(base["sf_f"][1][0], out["sf_f"][1][0]), switch
