"""The per-camera (FSM-style) surround baseline: registry, shapes, depth/pose conventions, losses,
wiring against the synthetic world's ground truth, one-batch overfitting and gradients.

Tiny data: the synthetic DDAD world rendered at 48x80 (2 scenes x 4 frames) through the real
dataset adapter, and one 3-frame sequence rendered in memory for the ground-truth checks.
"""
import math

import pytest
import torch

from torch.utils.data import default_collate

from dataset.build import build_dataset
from dataset.transforms import apply_batch_color_jitter
from dataset.synthetic import render_sequence
from geometry import compose, invert_transform, pose_from_axis_angle_translation, relative_transform
from models import Predictions, SurroundBaseline, build_model, registered_models, view_synthesis_losses
from network import MonoDepthNet, MonoPoseNet
from utils.config import load_config

CONFIG = "configs/synthetic/ddad_baseline.yaml"
H, W = 48, 80
ALL_TERMS = {"temporal", "spatial", "spatio_temporal", "smoothness", "pose_consistency"}
CAMERA_KEYS = {"image": 2, "image_aug": 2, "K": 1, "extrinsics": 1, "mask": 1}  # key -> camera dim


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def make_cfg(tmp_path_factory):
    root = tmp_path_factory.mktemp("baseline_world")
    base = [f"data.data_path={root}/ddad/ddad.json", f"data.mask_path={root}/ddad/masks",
            f"data.synthetic_hw=[{H}, {W}]", f"training.height={H}", f"training.width={W}",
            "data.synthetic_frames=4", "data.synthetic_scenes=2", "model.weights_init=false"]

    def make(*overrides):
        return load_config(CONFIG, base + list(overrides))
    return make


@pytest.fixture(scope="module")
def train_batch(make_cfg):
    """Two training samples (B = 2, T = 3, N = 6) of the synthetic world, collated and colour-jittered
    as the trainer does (the jitter draws come from the loader, image_aug is made on the device)."""
    dataset = build_dataset(make_cfg(), "train")
    batch = apply_batch_color_jitter(default_collate([dataset[i] for i in range(2)]))
    return {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}


def select_cameras(batch, cams):
    out = dict(batch)
    index = torch.tensor(cams)
    for key, dim in CAMERA_KEYS.items():
        if key in out:
            out[key] = out[key].index_select(dim, index)
    return out


def n_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def gt_scene():
    """One 3-frame drive rendered in memory: a batch (B = 1, frames [0, -1, 1]) plus the dense
    ground-truth depth of the target frame and the true per-camera motions T_c(t+f)_c(t)."""
    seq = render_sequence("ddad", 3, image_hw=(H, W), seed=0, supersample=1)
    frame_ids, target = [0, -1, 1], 1
    images = torch.from_numpy(seq.images[[target + f for f in frame_ids]]).float().div(255)
    E = torch.from_numpy(seq.T_rig_cam).float()[None]
    batch = {
        "image": images.permute(0, 1, 4, 2, 3)[None].contiguous(),  # [1, T, N, 3, H, W]
        "K": torch.from_numpy(seq.K).float()[None],
        "extrinsics": E,
        "mask": torch.from_numpy(seq.self_occlusion).float()[None, :, None],
        "frame_ids": torch.tensor([frame_ids]),
    }
    depth = torch.from_numpy(seq.depth[target]).float()[None, :, None]  # [1, N, 1, H, W]
    T_world_rig = torch.from_numpy(seq.T_world_rig)  # float64
    poses = {}
    for f in (-1, 1):
        T_rig_motion = relative_transform(T_world_rig[target + f], T_world_rig[target]).float()  # rig t -> rig t+f
        poses[f] = compose(invert_transform(E), T_rig_motion, E)  # E^-1 T E: camera t -> camera t+f
    return batch, depth, poses


def check_rigid(T, atol=1e-4):
    R = T[..., :3, :3]
    eye = torch.eye(3).expand_as(R)
    assert torch.allclose(R.transpose(-1, -2) @ R, eye, atol=atol)
    assert torch.allclose(torch.linalg.det(R), torch.ones(R.shape[:-2]), atol=atol)
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(*T.shape[:-2], 4)
    assert torch.equal(T[..., 3, :], bottom)
    assert torch.isfinite(T).all()


# ---------------------------------------------------------------------------------------- registry
def test_build_model_gives_the_baseline_with_its_two_networks(make_cfg):
    assert "surround_depth" in registered_models()
    cfg = make_cfg("training.scales=[0, 1, 2, 3]")
    model = build_model(cfg)
    assert isinstance(model, SurroundBaseline)
    assert list(model.networks()) == ["depth_net", "pose_net"]
    expected_depth = n_params(MonoDepthNet(18, False, scales=[0, 1, 2, 3], use_skips=True))
    expected_pose = n_params(MonoPoseNet(18, False))
    assert n_params(model.depth_net) == expected_depth
    assert n_params(model.pose_net) == expected_pose
    assert n_params(model) == expected_depth + expected_pose


# ---------------------------------------------------------------------------------------- forward
def test_forward_shapes_depth_range_poses_and_predict(make_cfg, train_batch):
    cfg = make_cfg("training.scales=[0, 1, 2, 3]")
    model = build_model(cfg)
    with torch.no_grad():
        out = model(train_batch)
    B, T, N = train_batch["image"].shape[:3]
    assert sorted(out["depth"]) == sorted(out["disp"]) == [0, 1, 2, 3]
    lo = cfg.training.min_depth * train_batch["K"][..., 0, 0] / cfg.training.focal_length_scale  # [B, N]
    hi = cfg.training.max_depth * train_batch["K"][..., 0, 0] / cfg.training.focal_length_scale
    for s in range(4):
        assert out["disp"][s].shape == (B, N, 1, math.ceil(H / 2 ** s), math.ceil(W / 2 ** s))
        depth = out["depth"][s]
        assert depth.shape == (B, N, 1, H, W)
        assert (depth > 0).all()
        assert (depth.amin(dim=(2, 3, 4)) >= lo * (1 - 1e-5)).all()
        assert (depth.amax(dim=(2, 3, 4)) <= hi * (1 + 1e-5)).all()
    assert sorted(out["poses"]) == [-1, 1]
    for T_f in out["poses"].values():
        assert T_f.shape == (B, N, 4, 4)
        check_rigid(T_f)
    pred = model.predict(train_batch, out)
    assert isinstance(pred, Predictions)
    assert pred.depth is out["depth"][0]
    assert set(pred.poses) == {-1, 1} and all(pred.poses[f] is out["poses"][f] for f in (-1, 1))
    assert pred.extras["disp"].shape == (B, N, 1, H, W)


def test_depth_is_focal_scaled_per_camera(make_cfg, train_batch):
    """The same image in every camera gives the same sigmoid, so depth scales with each camera's fx."""
    model = build_model(make_cfg()).eval()
    batch = dict(train_batch)
    batch["image_aug"] = train_batch["image_aug"][:, :, :1].expand_as(train_batch["image_aug"]).contiguous()
    with torch.no_grad():
        depth = model(batch)["depth"][0]
    fx = batch["K"][..., 0, 0]
    ratio = depth / depth[:, :1]
    expected = (fx / fx[:, :1])[..., None, None, None].expand_as(ratio)
    assert torch.allclose(ratio, expected, rtol=1e-4)
    assert fx[0].max() / fx[0].min() > 1.5  # the DDAD rig really has different focal lengths


def test_pose_pairs_are_in_temporal_order_and_inverted_for_past_frames(make_cfg, train_batch):
    """poses[f] = Trans(t)R(aa) of the pair [I_0, I_f] for f > 0, and the inverse of that of [I_f, I_0]
    for f < 0, from the network input image_aug, per camera (eval mode: BN does not mix items)."""
    model = build_model(make_cfg()).eval()
    with torch.no_grad():
        poses = model(train_batch)["poses"]
        images = train_batch["image_aug"]  # frames [0, -1, 1]
        b, c = 1, 4
        I0, Im, Ip = images[b:b + 1, 0, c], images[b:b + 1, 1, c], images[b:b + 1, 2, c]
        aa, t = model.pose_net(Im, I0)
        expected_past = pose_from_axis_angle_translation(aa.reshape(3), t.reshape(3), invert=True)
        aa, t = model.pose_net(I0, Ip)
        expected_future = pose_from_axis_angle_translation(aa.reshape(3), t.reshape(3))
    assert torch.allclose(poses[-1][b, c], expected_past, atol=1e-5)
    assert torch.allclose(poses[1][b, c], expected_future, atol=1e-5)
    assert not torch.allclose(poses[-1][b, c], invert_transform(expected_future), atol=1e-6)


# ---------------------------------------------------------------------------------------- losses
def test_loss_terms_switch_with_the_config_and_sum_to_the_total(make_cfg, train_batch):
    model = build_model(make_cfg("training.scales=[0, 1]"))
    out = model(train_batch)
    cases = {
        (): ALL_TERMS,
        ("training.spatio=false",): ALL_TERMS - {"spatial"},
        ("training.spatio_temporal=false",): ALL_TERMS - {"spatio_temporal"},
        ("loss.pose_loss_coeff=0",): ALL_TERMS - {"pose_consistency"},
        ("training.spatio=false", "training.spatio_temporal=false", "loss.pose_loss_coeff=0"):
            {"temporal", "smoothness"},
    }
    reference = None
    for overrides, terms in cases.items():
        scorer = build_model(make_cfg("training.scales=[0, 1]", *overrides))
        torch.manual_seed(1)  # the auto-mask's tie-breaking noise
        losses = scorer.compute_losses(train_batch, out)
        assert set(losses) == terms | {"total"}, overrides
        for name in terms:
            assert losses[name].dim() == 0 and torch.isfinite(losses[name]) and losses[name] >= 0
        assert torch.allclose(losses["total"], sum(losses[name] for name in terms))
        if reference is None:
            reference = losses
        else:  # switching one term off leaves the others unchanged
            for name in terms:
                assert torch.allclose(losses[name], reference[name], rtol=1e-5), (overrides, name)
    assert reference["temporal"] > 0 and reference["spatial"] > 0 and reference["spatio_temporal"] > 0


def test_rigs_without_neighbours_skip_the_spatial_terms(make_cfg, train_batch):
    one_camera = select_cameras(train_batch, [0])
    model = build_model(make_cfg("data.cameras=[camera_01]", "data.rel_cam_list=[[]]"))
    losses = model.compute_losses(one_camera, model(one_camera))
    assert set(losses) == {"temporal", "smoothness", "pose_consistency", "total"}
    assert losses["pose_consistency"] == 0  # no other camera to compare camera 0 with
    two_cameras = select_cameras(train_batch, [0, 1])
    model = build_model(make_cfg("data.cameras=[camera_01, camera_05]", "data.rel_cam_list=[[1], [0]]"))
    losses = model.compute_losses(two_cameras, model(two_cameras))
    assert ALL_TERMS <= set(losses) and torch.isfinite(losses["total"])


def test_camera_without_neighbours_is_left_out_of_the_spatial_average(gt_scene):
    batch, depth, poses = gt_scene
    args = (batch["image"], batch["mask"], batch["K"], batch["extrinsics"], depth, poses, [0, -1, 1])
    full = [[1, 2], [0, 3], [0, 4], [1, 5], [2, 5], [3, 4]]
    only_front = [[1, 2], [], [], [], [], []]
    torch.manual_seed(0)
    per_camera = [view_synthesis_losses(*args, [row if c == k else [] for c, row in enumerate(full)])
                  for k in range(6)]
    torch.manual_seed(0)
    average = view_synthesis_losses(*args, full)
    torch.manual_seed(0)
    front = view_synthesis_losses(*args, only_front)
    assert torch.allclose(front["spatial"], per_camera[0]["spatial"])
    assert torch.allclose(average["spatial"], torch.stack([p["spatial"] for p in per_camera]).mean(), rtol=1e-5)
    assert set(view_synthesis_losses(*args, None)) == {"temporal"}


# ---------------------------------------------------------------------------------------- wiring
def test_true_depth_and_poses_explain_the_views(make_cfg, gt_scene):
    """Through the model's own loss path: the true motion explains the context frames far better
    than no motion, and the true depth explains the neighbouring cameras better than a wrong one."""
    batch, depth, poses = gt_scene
    model = build_model(make_cfg())
    identity = {f: torch.eye(4).expand_as(T).clone() for f, T in poses.items()}

    def score(d, p):
        torch.manual_seed(0)
        return model.view_losses(batch, d, p)

    true = score(depth, poses)
    no_motion = score(depth, identity)
    wrong_depth = score(2 * depth, poses)
    assert true["temporal"] < 0.5 * no_motion["temporal"]
    assert true["spatio_temporal"] < 0.75 * no_motion["spatio_temporal"]
    assert true["spatial"] < 0.8 * wrong_depth["spatial"]
    assert true["spatio_temporal"] < wrong_depth["spatio_temporal"]
    # the whole loss with ground truth: a rigid rig's true motions are perfectly consistent
    outputs = {"depth": {0: depth}, "disp": {0: 1.0 / depth}, "poses": poses}
    torch.manual_seed(0)
    losses = model.compute_losses(batch, outputs)
    assert torch.allclose(losses["temporal"], true["temporal"])
    assert losses["pose_consistency"] < 1e-3 * model.cfg.loss.pose_loss_coeff


# ---------------------------------------------------------------------------------------- training
def test_one_batch_overfits(make_cfg, train_batch):
    """50 Adam steps on one fixed batch (one sample, the whole 6-camera rig) cut the loss, and not
    only by escaping it: the temporal photometric term falls too and the depth is not constant.

    From scratch at 48x80 the networks can also lower the spatial terms by driving the depth to
    its minimum (the points leave the neighbours' views and the overlap masks empty); with the
    whole rig and lr 2e-4 that does not happen within these steps (seeds 0-2: total x0.58-0.76,
    temporal x0.51-0.77, disparity std 0.07-0.2)."""
    batch = {k: v[:1] for k, v in train_batch.items()}
    torch.manual_seed(0)
    model = build_model(make_cfg())
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    history = []
    for _ in range(50):
        optimizer.zero_grad()
        losses = model.compute_losses(batch, model(batch))
        losses["total"].backward()
        optimizer.step()
        history.append({name: value.item() for name, value in losses.items()})
    total = [h["total"] for h in history]
    assert all(math.isfinite(x) for x in total)
    assert total[-1] < 0.8 * total[0], total
    assert sum(total[-5:]) / 5 < 0.8 * total[0], total
    assert history[-1]["temporal"] < 0.85 * history[0]["temporal"], history[-1]
    with torch.no_grad():
        disp = model(batch)["disp"][0]
    assert disp.std() > 0.02  # not collapsed to a constant depth


def test_gradients_reach_both_networks(make_cfg, train_batch):
    model = build_model(make_cfg())
    losses = model.compute_losses(train_batch, model(train_batch))
    losses["total"].backward()
    for name, net in model.networks().items():
        grads = [p.grad for p in net.parameters()]
        assert all(g is not None for g in grads), name
        assert sum(bool(g.abs().sum() > 0) for g in grads) > 0.9 * len(grads), name
        assert all(torch.isfinite(g).all() for g in grads), name
    decoder_out = model.pose_net.pose_decoder
    assert any(p.grad.abs().sum() > 0 for p in decoder_out.parameters())
