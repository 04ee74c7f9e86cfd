"""The VFDepth fusion model (models/surround_fusion.py): registry and reference parameter counts,
shapes and gradients for rigs of 1, 2 and 6 cameras, the canonical rig motion, novel-view
rendering, and the spatial warp between synthetic cameras with the true depth.

Tiny data: the synthetic DDAD world at 48x80 through the real adapter, a coarse voxel grid."""
import json
import math

import pytest
import torch

import eval as eval_entry
import train as train_entry

from torch.utils.data import default_collate

from dataset.build import build_dataset
from dataset.transforms import apply_batch_color_jitter
from dataset.synthetic import render_sequence
from geometry import compose, invert_transform, pose_from_axis_angle_translation, relative_transform
from models import SurroundBaseline, SurroundFusion, build_model
from models.losses import warp_views
from models.losses.photometric import l1_error
from models.surround_fusion import canonical_to_cameras
from utils.config import load_config

CONFIG = "configs/synthetic/ddad_surround_fusion.yaml"
H, W = 48, 80
TINY_GRID = ["model.voxel_size=[16, 16, 4]", "model.voxel_unit_size=[4.0, 4.0, 2.0]",
             "model.voxel_str_p=[-30.0, -30.0, -3.0]", "model.proj_d_bins=6", "model.proj_d_end=30"]
CAMERA_KEYS = {"image": 2, "image_aug": 2, "K": 1, "extrinsics": 1, "mask": 1}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


@pytest.fixture(scope="module")
def world_overrides(tmp_path_factory):
    root = tmp_path_factory.mktemp("fusion_world")
    return [f"data.data_path={root}/ddad/ddad.json", f"data.mask_path={root}/ddad/masks",
            f"data.synthetic_hw=[{H}, {W}]", f"training.height={H}", f"training.width={W}",
            "data.synthetic_frames=4", "data.synthetic_scenes=2", "model.weights_init=false",
            "training.num_workers=0", "eval.eval_num_workers=0"] + TINY_GRID


@pytest.fixture(scope="module")
def make_cfg(world_overrides):
    def make(*overrides):
        return load_config(CONFIG, world_overrides + list(overrides))
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
    for key, dim in CAMERA_KEYS.items():
        out[key] = out[key].index_select(dim, torch.tensor(cams))
    return out


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_fusion_configs_build_the_fusion_model_with_the_reference_parameter_counts(make_cfg):
    reference_grid = ["model.voxel_size=[100, 100, 20]", "model.voxel_unit_size=[1.0, 1.0, 1.5]",
                      "model.voxel_str_p=[-50.0, -50.0, -15.0]", "model.proj_d_bins=50", "model.proj_d_end=50"]
    model = build_model(make_cfg(*reference_grid))
    assert isinstance(model, SurroundFusion) and list(model.networks()) == ["depth_net", "pose_net"]
    # spec/vfdepth_state_dict.txt: the released depth_net and pose_net
    assert n_params(model.depth_net) == 19_269_233
    assert n_params(model.pose_net) == 24_768_134
    assert isinstance(build_model(make_cfg("model.depth_model=fsm", "model.pose_model=fsm")), SurroundBaseline)
    mixed = build_model(make_cfg("model.pose_model=fsm"))
    assert mixed.fused_depth and not mixed.fused_pose
    with pytest.raises(ValueError, match="training.scales"):
        build_model(make_cfg("training.scales=[0, 1]"))


@pytest.mark.parametrize("cams", [[0], [0, 1], [0, 1, 2, 3, 4, 5]])
def test_shapes_and_gradients_for_one_two_and_six_cameras(make_cfg, train_batch, cams):
    n = len(cams)
    neighbours = {1: "null", 2: "[[1], [0]]", 6: "[[1, 2], [0, 3], [0, 4], [1, 5], [2, 5], [3, 4]]"}[n]
    model = build_model(make_cfg(f"data.rel_cam_list={neighbours}",
                                 f"data.cameras={['camera_01', 'camera_05', 'camera_06', 'camera_07', 'camera_08', 'camera_09'][:n]}"))
    batch = select_cameras(train_batch, cams)
    out = model(batch)
    assert out["disp"][0].shape == out["depth"][0].shape == (2, n, 1, H, W)
    assert out["volume"].shape == (2, 64, 4, 16, 16)
    assert set(out["poses"]) == {-1, 1} and out["poses"][1].shape == (2, n, 4, 4)
    losses = model.compute_losses(batch, out)
    expected = {"temporal", "smoothness", "total"} | ({"spatial", "spatio_temporal"} if n > 1 else set())
    assert set(losses) == expected and torch.isfinite(losses["total"])
    losses["total"].backward()
    for name, net in model.networks().items():
        grads = [p.grad for p in net.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name
    # the encoders, the fused volume and the decoders all receive gradient
    assert model.depth_net.encoder.encoder.conv1.weight.grad.abs().sum() > 0
    assert model.depth_net.fusion_net.conv_non_overlap[0].weight.grad.abs().sum() > 0
    assert model.pose_net.fusion_net.reduce_dim[0].weight.grad.abs().sum() > 0
    prediction = model.predict(batch, out)
    assert prediction.depth.shape == (2, n, 1, H, W) and set(prediction.poses) == {-1, 1}


def test_canonical_motion_in_every_camera_equals_the_motion_from_the_rig_poses():
    seq = render_sequence("ddad", 3, image_hw=(H, W), seed=0, supersample=1)
    E = torch.from_numpy(seq.T_rig_cam)[None]                                         # float64
    T_world_rig = torch.from_numpy(seq.T_world_rig)
    T_rig_motion = relative_transform(T_world_rig[2], T_world_rig[1])                  # rig t -> rig t+1
    assert T_rig_motion[:3, 3].norm() > 0.3                                           # the rig does move
    canonical = compose(invert_transform(E[:, 0]), T_rig_motion[None], E[:, 0])        # camera 0's frame
    per_camera = canonical_to_cameras(canonical, E)
    for c in range(E.shape[1]):
        # a point fixed in the world, seen from camera c at t and at t+1
        X_world = torch.tensor([12.0, -3.0, 1.0, 1.0], dtype=torch.float64)
        cam_t = invert_transform(T_world_rig[1] @ E[0, c]) @ X_world
        cam_t1 = invert_transform(T_world_rig[2] @ E[0, c]) @ X_world
        assert torch.allclose(per_camera[0, c] @ cam_t, cam_t1, atol=1e-9)


def test_fused_poses_follow_the_pose_network_and_invert_for_past_frames(make_cfg, train_batch):
    model = build_model(make_cfg()).eval()
    calls = []

    def fake_pose_net(first, second, K, E, masks):
        calls.append(first.shape[0])
        b = first.shape[0]
        return torch.tensor([[0.0, 0.0, 0.1]]).repeat(b, 1), torch.tensor([[0.0, 0.0, 1.0]]).repeat(b, 1)
    model.pose_net.forward = fake_pose_net
    with torch.no_grad():
        poses = model(train_batch)["poses"]
    assert calls == [4]                                 # both frame pairs of both samples in one pass
    T = pose_from_axis_angle_translation(torch.tensor([0.0, 0.0, 0.1]), torch.tensor([0.0, 0.0, 1.0]))
    E = train_batch["extrinsics"]
    assert torch.allclose(poses[1], canonical_to_cameras(T.expand(2, 4, 4), E), atol=1e-5)
    assert torch.allclose(poses[-1], canonical_to_cameras(invert_transform(T).expand(2, 4, 4), E), atol=1e-5)
    assert torch.allclose(poses[1][:, 0], T.expand(2, 4, 4), atol=1e-5)     # camera 0 moves by T itself


def test_rendering_the_volume_from_the_real_cameras_gives_the_forward_depth(make_cfg, train_batch):
    model = build_model(make_cfg()).eval()
    with torch.no_grad():
        out = model(train_batch)
        disp, depth = model.render_depth(out["volume"], train_batch["K"], train_batch["extrinsics"], (H, W))
        turned = compose(pose_from_axis_angle_translation(torch.tensor([0.0, 0.0, 0.3]), torch.zeros(3)),
                         train_batch["extrinsics"])
        fusion, feature_hw = model.depth_net.fusion_net, model.depth_net.feature_size((H, W))
        K_feat = train_batch["K"] * torch.tensor([feature_hw[1] / W, feature_hw[0] / H, 1.0])[:, None]
        real = fusion.sample_views(out["volume"], K_feat, train_batch["extrinsics"], feature_hw)
        novel = fusion.sample_views(out["volume"], K_feat, turned, feature_hw, use_cache=False)
    assert torch.allclose(disp, out["disp"][0], atol=1e-6)
    assert torch.allclose(depth, out["depth"][0], atol=1e-4)
    # a camera turned by 0.3 rad looks at other voxels (a random network's depth barely shows it)
    assert (novel - real).abs().mean() > 0.2 * real.abs().mean()


def test_spatial_warp_between_two_synthetic_cameras_with_the_true_depth_reproduces_the_overlap():
    seq = render_sequence("ddad", 1, image_hw=(96, 160), seed=3, supersample=2)
    images = torch.from_numpy(seq.images[0]).float().div(255).permute(0, 3, 1, 2)      # [N, 3, H, W]
    depth = torch.from_numpy(seq.depth[0]).float()[:, None]
    masks = torch.from_numpy(seq.self_occlusion).float()[:, None]
    K, E = torch.from_numpy(seq.K).float(), torch.from_numpy(seq.T_rig_cam).float()
    # the front-right camera (2) rendered from the rear-right camera (4): 0.44 m apart
    T_4_2 = compose(invert_transform(E[4]), E[2])
    warped, valid = warp_views(images[4], masks[4], depth[2], K[2], K[4], T_4_2)
    near, near_valid = warp_views(images[4], masks[4], 0.5 * depth[2], K[2], K[4], T_4_2)
    overlap = (valid[0] > 0) & (masks[2, 0] > 0)
    assert 0.05 < float(overlap.float().mean()) < 0.6                                # the cameras do overlap
    # L1: at 96x160 SSIM is dominated by the resampling blur of a warp, not by its geometry
    error = l1_error(warped[None], images[2][None])[0, 0]
    wrong = l1_error(near[None], images[2][None])[0, 0]
    both = overlap & (near_valid[0] > 0)
    # medians: a few pixels are occluded in one camera and not in the other (cars, kerbs)
    assert float(error[overlap].median()) < 0.005
    assert float(error[both].median()) < 0.25 * float(wrong[both].median())


def test_depth_synthesis_branch_trains_novel_views_from_the_same_volume(make_cfg, train_batch):
    # focal_length_scale 0: at 48x80 (fx ~ 40 px) the focal scaling would put every depth of a random
    # network below min_depth, where no synthesis target is valid
    model = build_model(make_cfg("training.aug_depth=true", "training.focal_length_scale=0")).train()
    out = model(train_batch)
    aug = out["aug"]
    assert aug["depth"].shape == aug["disp"].shape == (2, 6, 1, H, W)
    # the novel cameras are the real ones turned about the rig origin: same centre height, other axes
    E, E_aug = train_batch["extrinsics"], aug["E"]
    assert torch.allclose(E_aug[..., :3, 3].norm(dim=-1), E[..., :3, 3].norm(dim=-1), atol=1e-5)
    assert not torch.allclose(E_aug, E, atol=1e-3)
    losses = model.compute_losses(train_batch, out)
    assert {"depth_consistency", "depth_smoothness"} <= set(losses)
    assert losses["depth_consistency"] > 0
    total = sum(v for k, v in losses.items() if k != "total")
    assert torch.allclose(losses["total"], total)
    grads = torch.autograd.grad(losses["depth_consistency"], [model.depth_net.decoder.decoder[-1][0].weight,
                                                              model.depth_net.fusion_net.conv_non_overlap[0].weight])
    assert all(g.abs().sum() > 0 for g in grads)
    assert "aug" not in model.eval()(train_batch)                   # evaluation renders the real cameras only


def test_train_then_eval_with_the_synthesis_sweep_leaves_the_metrics_unchanged(world_overrides, tmp_path, capsys):
    common = world_overrides + [f"data.log_dir={tmp_path}", "data.cameras=[camera_01, camera_05, camera_06]",
                                "data.rel_cam_list=[[1, 2], [0], [0]]"]
    assert train_entry.main(["--config_file", CONFIG, *common, "training.max_steps=2", "training.aug_depth=true",
                             "logging.log_frequency=1"]) == 0
    run = tmp_path / "ddad_surround_fusion"
    weights = run / "models" / "weights_0"
    assert (weights / "depth_net.pth").is_file() and (weights / "pose_net.pth").is_file()
    metrics = []
    for sweep in ("false", "true"):
        capsys.readouterr()
        assert eval_entry.main(["--config_file", CONFIG, "--weight_path", str(weights), *common,
                                f"eval.syn_visualize={sweep}", "eval.syn_stride=100", "eval.syn_idx=1"]) == 0
        metrics.append(json.loads((run / "eval" / "metrics.json").read_text()))
    assert "novel-view synthesis of sample 1" in capsys.readouterr().out
    assert metrics[0]["metric"] == metrics[1]["metric"] and metrics[0]["num_samples"] == metrics[1]["num_samples"] > 0
    pictures = sorted(p.name for p in (run / "syn_results").glob("*_syndepth.png"))
    assert pictures == [f"{i:03d}_syndepth.png" for i in range(0, 767, 100)]
    assert (run / "syn_results" / "synthesis.gif").is_file()
    with pytest.raises(ValueError, match="syn_idx"):
        from trainer.evaluate import render_synthesis_sweep
        cfg = load_config(CONFIG, common + ["eval.syn_idx=99"], mode="eval")
        render_synthesis_sweep(cfg, build_model(cfg).eval(), build_dataset(cfg, "eval"), torch.device("cpu"))


def test_one_batch_overfits(make_cfg, train_batch):
    """30 Adam steps on one fixed sample (the whole 6-camera rig) cut the loss and its temporal
    photometric term: the volume, the projection and the canonical pose all learn.

    From scratch at 48x80 this depends on the initialisation (seeds 0, 1, 2: total x0.73, x1.39,
    x0.71): the rotation outputs of the pose net get gradients ~20x the translation's and move
    first, and the auto-masked temporal term is not monotone while the mask changes. The next test
    checks the pose path itself: the loss does fall toward the true motion."""
    batch = {k: v[:1] for k, v in train_batch.items()}
    torch.manual_seed(0)
    model = build_model(make_cfg())
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    history = []
    for _ in range(30):
        optimizer.zero_grad()
        losses = model.compute_losses(batch, model(batch))
        losses["total"].backward()
        optimizer.step()
        history.append({name: value.item() for name, value in losses.items()})
    total = [h["total"] for h in history]
    assert all(math.isfinite(x) for x in total)
    assert sum(total[-5:]) / 5 < 0.85 * total[0], total
    temporal = [h["temporal"] for h in history]
    # both as means of the last five steps: single steps swing by ±10 % while the auto-mask changes
    assert sum(temporal[-5:]) / 5 < 0.9 * temporal[0], temporal


def test_temporal_loss_falls_toward_the_true_rig_motion_along_the_canonical_translation(make_cfg):
    """With the true depth, the temporal loss of canonical motions T(t) (camera 0's frame) falls
    monotonically from a reversed motion through none to the true forward motion, and its
    gradient at no motion points toward the truth."""
    seq = render_sequence("ddad", 3, image_hw=(H, W), seed=0, supersample=1)
    frame_ids = [0, -1, 1]
    images = torch.from_numpy(seq.images[[1, 0, 2]]).float().div(255).permute(0, 1, 4, 2, 3)[None]
    E = torch.from_numpy(seq.T_rig_cam).float()[None]
    batch = {"image": images.contiguous(), "K": torch.from_numpy(seq.K).float()[None], "extrinsics": E,
             "mask": torch.from_numpy(seq.self_occlusion).float()[None, :, None], "frame_ids": torch.tensor([frame_ids])}
    depth = torch.from_numpy(seq.depth[1]).float()[None, :, None]
    T_world_rig = torch.from_numpy(seq.T_world_rig)
    truth = compose(invert_transform(E[0, 0]), relative_transform(T_world_rig[2], T_world_rig[1]).float(), E[0, 0])
    model = build_model(make_cfg())

    def loss(translation):
        T = pose_from_axis_angle_translation(torch.zeros(1, 3), translation[None])
        poses = {1: canonical_to_cameras(T, E), -1: canonical_to_cameras(invert_transform(T), E)}
        torch.manual_seed(0)
        return model.view_losses(batch, depth, poses)["temporal"]

    t_true = truth[:3, 3]
    assert t_true.norm() > 0.5
    values = [float(loss(a * t_true)) for a in (-1.0, -0.5, 0.0, 0.5, 1.0)]
    assert all(x > y for x, y in zip(values, values[1:])), values
    assert values[-1] < 0.5 * values[2]
    step = torch.zeros(3, requires_grad=True)
    loss(step).backward()
    assert float(step.grad @ t_true) < 0                 # descent moves toward the true translation


def test_activation_checkpointing_gives_the_same_losses_gradients_and_batchnorm_statistics(make_cfg, train_batch):
    """training.activation_checkpointing recomputes the encoders, the decoder and the loss terms in
    the backward pass: every loss, every gradient and every BatchNorm running statistic must be what
    the plain step gives (BatchNorm layers must not count the recomputation as a second batch)."""
    results = []
    for enabled in (False, True):
        torch.manual_seed(0)
        model = build_model(make_cfg(f"training.activation_checkpointing={str(enabled).lower()}")).train()
        torch.manual_seed(1)                     # the same auto-mask noise in both runs
        losses = model.compute_losses(train_batch, model(train_batch))
        losses["total"].backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        buffers = {name: b.clone() for name, b in model.named_buffers() if "running" in name or "tracked" in name}
        results.append(({k: v.item() for k, v in losses.items()}, grads, buffers))
    (plain_losses, plain_grads, plain_buffers), (re_losses, re_grads, re_buffers) = results
    assert model.depth_net.recompute and model.pose_net.recompute
    assert plain_losses.keys() == re_losses.keys() and {"temporal", "spatial", "spatio_temporal"} <= plain_losses.keys()
    for name in plain_losses:
        assert math.isclose(plain_losses[name], re_losses[name], rel_tol=1e-6, abs_tol=1e-9), name
    assert plain_grads.keys() == re_grads.keys() and len(plain_grads) > 50
    for name in plain_grads:
        assert torch.allclose(plain_grads[name], re_grads[name], rtol=1e-4, atol=1e-7), name
    assert plain_buffers.keys() == re_buffers.keys() and any("num_batches_tracked" in k for k in plain_buffers)
    for name in plain_buffers:
        assert torch.equal(plain_buffers[name], re_buffers[name]), name
