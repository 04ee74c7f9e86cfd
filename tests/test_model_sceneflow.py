"""model.type mono_sceneflow (models/mono_sceneflow.py): registry, the Predictions interface and its
units, shapes and gradients of the whole model on 5-frame stereo input, evaluation with the flipped
pass, monocular inference, the semi-supervised fine-tuning loss with and without ground truth, the
early-epoch detaching, one batch overfitting, and the configs."""
import math

import pytest
import torch

from models import MonoSceneFlow, Predictions, build_model, registered_models
from models.mono_sceneflow import REFERENCE_BASELINE, sequence_layout
from sceneflow_world import BASELINE, wall_batch
from utils.config import load_config

CONFIG = "configs/synthetic/kitti_selfsup.yaml"
H, W = 32, 96


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def make_model(*overrides):
    cfg = load_config(CONFIG, [f"training.height={H}", f"training.width={W}", *overrides])
    return build_model(cfg)


@pytest.fixture(scope="module")
def wall():
    return wall_batch(height=H, width=W)


def with_ground_truth(batch, scale=1.0):
    """The batch plus KITTI 2015-style ground truth at 2x the input resolution."""
    hg, wg = 2 * H, 2 * W
    K_gt = batch["K"][:, 0].clone()
    K_gt[:, :2] *= 2
    out = dict(batch)
    out["kitti2015_K"] = K_gt
    out["kitti2015_disp0"] = torch.full((1, 1, hg, wg), 6.0 * scale)
    out["kitti2015_disp1"] = torch.full((1, 1, hg, wg), 6.5 * scale)
    out["kitti2015_flow"] = torch.zeros(1, 2, hg, wg)
    out["kitti2015_flow_valid"] = torch.ones(1, 1, hg, wg)
    return out


# ----------------------------------------------------------------------------------- interface
def test_registered_and_predictions_follow_the_interface(wall):
    batch, _ = wall
    assert "mono_sceneflow" in registered_models()
    model = make_model("eval.flip_post_process=false")
    assert isinstance(model, MonoSceneFlow) and model.network_names == ("sceneflow_net",)
    model.eval()
    with torch.no_grad():
        outputs = model(batch)
        pred = model.predict(batch, outputs)
    assert isinstance(pred, Predictions) and pred.poses == {}
    assert pred.depth.shape == (1, 1, 1, H, W)
    assert pred.extras["disparity"].shape == (1, 1, 1, H, W) and pred.extras["disparity_next"].shape == (1, 1, 1, H, W)
    assert pred.extras["optical_flow"].shape == (1, 1, 2, H, W)
    assert pred.scene_flow["fwd"].shape == (1, 1, 3, H, W) and pred.scene_flow["bwd"].shape == (1, 1, 3, H, W)
    # units: the target is the last centre frame; depth = fx b / (disparity + 1e-4) in [1e-3, 80]
    step = outputs["target_step"]
    assert step == 2 and outputs["frame_ids"] == [-3, -2, -1, 0, 1]
    disp = outputs["left"]["disp"][step][0] * W
    torch.testing.assert_close(pred.extras["disparity"][:, 0], disp)
    fx = float(batch["K"][0, 0, 0, 0])
    torch.testing.assert_close(pred.depth[:, 0], (fx * BASELINE / (disp + 1e-4)).clamp(1e-3, 80))
    sf = outputs["left"]["sf_f"][step][0]
    torch.testing.assert_close(pred.scene_flow["fwd"][:, 0], sf)
    torch.testing.assert_close(pred.extras["disparity_next"][:, 0], fx * BASELINE / (pred.depth[:, 0] + sf[:, 2:3]))
    # the optical flow is the projection of the moved points, at one pixel by hand
    z, (v, u) = float(pred.depth[0, 0, 0, 5, 7]), (5, 7)
    K = batch["K"][0, 0]
    X = (u - float(K[0, 2])) / fx * z + float(sf[0, 0, v, u])
    Z = z + float(sf[0, 2, v, u])
    assert float(pred.extras["optical_flow"][0, 0, 0, v, u]) == pytest.approx(fx * X / Z + float(K[0, 2]) - u, abs=1e-3)


def test_whole_model_shapes_and_gradients_on_five_frames(wall):
    batch, _ = wall
    model = make_model()
    with torch.no_grad():
        # A calm random network: small scene flow keeps the ConvLSTM states on the image (a large
        # one resets them, and the cell-state initialisation then gets no gradient).
        for decoder in model.sceneflow_net.flow_estimators:
            decoder.conv_sf[2][0].weight.mul_(0.02)
    model.train()
    model.set_epoch(3)
    outputs = model(batch)
    left = outputs["left"]
    assert len(left["sf_f"]) == 3 and len(left["disp"][0]) == 4       # 3 centre frames, 4 scales
    for s in range(4):
        assert left["sf_f"][1][s].shape == (1, 3, H >> s, W >> s)
        assert left["disp"][1][s].shape == (1, 1, H >> s, W >> s)
        assert 0 < float(left["disp"][1][s].detach().min()) and float(left["disp"][1][s].detach().max()) < 0.3
    assert "right_disp" in outputs and not outputs["right_disp"][0][0].requires_grad
    losses = model.compute_losses(batch, outputs)
    assert {"disparity", "scene_flow", "total"} <= set(losses)
    torch.testing.assert_close(losses["total"], losses["disparity"] + losses["scene_flow"])
    # balanced: both terms at the magnitude of the larger raw one
    raw = max(float(losses["stats/disparity_raw"]), float(losses["stats/scene_flow_raw"]))
    assert float(losses["disparity"].detach()) == pytest.approx(raw, rel=1e-5)
    losses["total"].backward()
    grads = {name: p.grad for name, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads.values())
    silent = [name for name, g in grads.items() if float(g.abs().sum()) == 0]
    assert not silent, silent


def test_evaluation_uses_the_flipped_pass(wall):
    batch, _ = wall
    model = make_model()
    plain = make_model("eval.flip_post_process=false")
    plain.load_state_dict(model.state_dict())
    model.eval()
    plain.eval()
    with torch.no_grad():
        out, out_plain = model(batch), plain(batch)
        pred, pred_plain = model.predict(batch, out), plain.predict(batch, out_plain)
        losses = model.compute_losses(batch, out)          # evaluation: the right pass on demand
    assert "pp" in out and "pp" not in out_plain and "right_disp" not in out
    assert math.isfinite(float(losses["total"]))
    assert not torch.allclose(pred.depth, pred_plain.depth)
    pp_disp = out["pp"]["disp"][0] * W
    torch.testing.assert_close(pred.extras["disparity"][:, 0], pp_disp)


def test_monocular_batch_runs_inference_only(wall):
    batch, _ = wall
    mono = {k: (v[:, :, :1] if k == "image" else v[:, :1] if k in ("K", "extrinsics", "mask") else v)
            for k, v in batch.items()}
    model = make_model()
    model.eval()
    with torch.no_grad():
        out = model(mono)
        pred = model.predict(mono, out)
    assert pred.depth.shape == (1, 1, 1, H, W)
    assert float(out["baseline"][0]) == pytest.approx(REFERENCE_BASELINE)
    with pytest.raises(ValueError, match="stereo pair"):
        model.compute_losses(mono, out)


def test_frame_ids_must_surround_the_target():
    assert sequence_layout([0, -1, 1])["order"] == [1, 0, 2]
    assert sequence_layout([-3, -2, -1, 0, 1])["target_step"] == 2
    with pytest.raises(ValueError, match="before and after"):
        sequence_layout([-2, -1, 0])
    with pytest.raises(ValueError, match="missing"):
        sequence_layout([-2, -1, 1])


# ----------------------------------------------------------------------------------- losses
def test_finetuning_loss_uses_ground_truth_only_when_present(wall):
    batch, _ = wall
    model = make_model("training.finetuning=true")
    selfsup = make_model()
    selfsup.load_state_dict(model.state_dict())
    model.train()
    selfsup.train()
    model.set_epoch(3)
    selfsup.set_epoch(3)
    # KITTI raw batch: no ground truth -> the self-supervised loss alone, as without fine-tuning
    out = model(batch)
    assert "pp" not in out
    raw = model.compute_losses(batch, out)
    ref = selfsup.compute_losses(batch, selfsup(batch))
    assert set(k for k in raw if not k.startswith("stats/")) == {"disparity", "scene_flow", "total"}
    torch.testing.assert_close(raw["total"], ref["total"])
    # KITTI 2015 batch: the supervised terms join, dynamically weighted
    gt = with_ground_truth(batch)
    out = model(gt)
    assert "pp" in out and out["pp"]["disp"][0].requires_grad
    losses = model.compute_losses(gt, out)
    assert {"self_supervised", "sup_disparity", "sup_flow", "total"} <= set(losses)
    # the self-supervised total is itself balanced: twice the larger of its two raw terms
    self_total = 2 * max(float(losses["stats/disparity_raw"]), float(losses["stats/scene_flow_raw"]))
    top = max(float(losses["stats/sup_disparity_raw"]), float(losses["stats/sup_flow_raw"]), self_total)
    for name in ("self_supervised", "sup_disparity", "sup_flow"):
        assert float(losses[name].detach()) == pytest.approx(top, rel=1e-4), name
    other = model.compute_losses(with_ground_truth(batch, scale=3.0), out)
    assert float(other["stats/sup_disparity_raw"]) != pytest.approx(float(losses["stats/sup_disparity_raw"]))
    # the supervised gradient reaches the network through the post-processed outputs
    grad = torch.autograd.grad(losses["sup_disparity"], out["pp"]["disp"][0], retain_graph=True)[0]
    assert float(grad.abs().sum()) > 0


def test_disparity_is_detached_in_the_scene_flow_term_early(wall):
    batch, _ = wall
    model = make_model("training.detach_disp_epochs=2")
    model.train()

    def grad_of_scene_flow_wrt_last_disparity(epoch):
        model.set_epoch(epoch)
        out = model(batch)
        terms = model.self_supervised_losses(batch, out)
        last = [d for d in out["left"]["disp"][-1]]      # used by the losses only
        grads = torch.autograd.grad(terms["scene_flow"], last, allow_unused=True)
        return sum(float(g.abs().sum()) for g in grads if g is not None)
    assert grad_of_scene_flow_wrt_last_disparity(1) == 0.0
    assert grad_of_scene_flow_wrt_last_disparity(2) > 0.0


def test_one_synthetic_batch_overfits(wall):
    """The whole training step (both passes, all loss terms, balancing) on one batch of the
    analytic wall scene: the loss falls clearly within 20 Adam steps (2 decoder levels, for speed)."""
    batch, truth = wall
    model = make_model("model.output_level=1", "loss.scale_weights=[4.0, 2.0]")
    model.train()
    model.set_epoch(5)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for _ in range(20):
        losses = model.compute_losses(batch, model(batch))
        optimizer.zero_grad()
        losses["total"].backward()
        optimizer.step()
        history.append((float(losses["total"].detach()), float(losses["stats/disparity_raw"]),
                        float(losses["stats/scene_flow_raw"])))
    first, last = history[0], history[-1]
    assert last[0] < 0.75 * first[0], history
    assert last[1] < 0.8 * first[1] and last[2] < 0.8 * first[2], history


# ----------------------------------------------------------------------------------- configs
@pytest.mark.parametrize("path, dataset, finetuning", [
    ("configs/kitti/selfsup.yaml", "kitti_raw", False),
    ("configs/kitti/ft_1st_stage.yaml", "kitti_finetune", True),
    ("configs/kitti/ft_2nd_stage.yaml", "kitti_finetune", True),
    ("configs/synthetic/kitti_selfsup.yaml", "kitti_raw", False),
    ("configs/synthetic/kitti_ft.yaml", "kitti_finetune", True),
])
def test_configs(path, dataset, finetuning):
    cfg = load_config(path)
    assert cfg.model.type == "mono_sceneflow" and cfg.data.dataset == dataset
    assert cfg.training.finetuning == finetuning and list(cfg.data.frame_ids) == [-3, -2, -1, 0, 1]
    if path.startswith("configs/kitti/"):
        assert (cfg.training.height, cfg.training.width, cfg.training.batch_size) == (256, 832, 1)
        assert cfg.training.learning_rate == (4e-5 if finetuning else 2e-4)
