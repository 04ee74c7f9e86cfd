"""The unified trainer end to end on a tiny synthetic DDAD world (48x80, 2 cameras, random ResNet-18):
train.py's results layout, eval.py's table and metrics.json (eval.scale_modes), TensorBoard pictures
of the warps and masks, exact resume, non-finite losses, 2-process DDP on gloo (replicas identical,
and equal to one process with the same global batch); plus the small pieces (schedules, cadence,
sampler, error lines)."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import eval as eval_entry
import train as train_entry
from dataset.build import build_dataset
from dataset.synthetic.writers import ensure_synthetic_dataset
from models import build_model
from models.losses import align_intensity, warp_views
from models.surround_baseline import batch_frame_ids
from trainer import distributed as dist_utils
from trainer import error_line
from trainer.checkpoint import STATE_FILE, load_networks
from trainer.distributed import Launch, device_for, rendezvous, torchrun_environment
from trainer.evaluate import evaluate, to_device
from trainer.logger import visual_pictures
from trainer.loop import NonFiniteLossError, ResumableSampler, Trainer, is_log_step, run_training
from trainer.rng import seed_everything
from trainer.optim import build_optimizer, build_scheduler
from utils.config import load_config

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "synthetic" / "ddad_baseline.yaml")
FRAMES, SCENES, HW = 4, 2, (48, 80)          # 2 training samples (scene 0), 2 evaluation samples (scene 1)


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


@pytest.fixture(scope="module")
def world(tmp_path_factory, one_thread):
    """The synthetic DDAD world, rendered once for the module."""
    root = tmp_path_factory.mktemp("world")
    ensure_synthetic_dataset("ddad", str(root / "ddad"), scenes=SCENES, frames=FRAMES, height=HW[0], width=HW[1], seed=0)
    return root


def overrides(world, log_dir, *extra):
    return [f"data.data_path={world}/ddad/ddad.json", f"data.mask_path={world}/ddad/masks", f"data.log_dir={log_dir}",
            f"data.synthetic_hw=[{HW[0]}, {HW[1]}]", f"training.height={HW[0]}", f"training.width={HW[1]}",
            f"data.synthetic_frames={FRAMES}", f"data.synthetic_scenes={SCENES}", "data.cameras=[camera_01, camera_05]",
            "model.weights_init=false", "training.num_workers=0", "eval.eval_num_workers=0", "training.batch_size=1",
            "eval.eval_batch_size=3", "training.learning_rate=1e-3", *extra]


def config(world, log_dir, *extra, mode="train", weight_path=None):
    return load_config(CONFIG, overrides(world, log_dir, *extra), mode=mode, weight_path=weight_path)


def parameters(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ----------------------------------------------------------------------------------------------
# End to end through the entry points


def test_train_then_eval_writes_results_layout_and_counts_every_sample(world, tmp_path, capsys):
    args = ["--config_file", CONFIG, *overrides(world, tmp_path, "training.max_steps=3", "logging.log_frequency=2")]
    assert train_entry.main(args) == 0
    run = tmp_path / "ddad_baseline"
    assert (run / "config.yaml").is_file()
    assert load_config(str(run / "config.yaml")).training.max_steps == 3          # the resolved config reloads
    # 2 steps per epoch: weights_0 at the end of epoch 0, weights_1_step3 where max_steps stopped the run
    for folder in ("weights_0", "weights_1_step3"):
        for name in ("depth_net", "pose_net", "optimizer", "scheduler", "scaler", "trainer_state"):
            assert (run / "models" / folder / f"{name}.pth").is_file(), (folder, name)
    state = torch.load(run / "models" / "weights_1_step3" / STATE_FILE, weights_only=True)
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (3, 1, 1)
    assert list((run / "train").glob("events.out.tfevents.*")) and list((run / "val").glob("events.out.tfevents.*"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    train_tags = EventAccumulator(str(run / "train")).Reload().Tags()
    val_tags = EventAccumulator(str(run / "val")).Reload().Tags()
    assert {"loss/total", "loss/temporal", "lr", "depth/mean"} <= set(train_tags["scalars"])
    assert {"loss/total", "metric/abs_rel", "median/abs_rel"} <= set(val_tags["scalars"])
    assert train_tags["images"] and val_tags["images"]

    capsys.readouterr()
    args = ["--config_file", CONFIG, "--weight_path", str(run / "models" / "weights_0"), "--save_vis",
            *overrides(world, tmp_path)]
    assert eval_entry.main(args) == 0
    out = capsys.readouterr().out
    assert "abs_rel" in out and "camera_01" in out and "median" in out
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    eval_cfg = config(world, tmp_path, mode="eval", weight_path=str(run / "models" / "weights_0"))
    dataset = build_dataset(eval_cfg, "eval")
    expected = {name: 0 for name in eval_cfg.data.cameras}
    for i in range(len(dataset)):
        sample = dataset[i]
        valid = (sample["depth_gt"] > eval_cfg.eval.eval_min_depth) & (sample["depth_gt"] < eval_cfg.eval.eval_max_depth)
        for n, name in enumerate(eval_cfg.data.cameras):
            expected[name] += int(bool(valid[n].any()))
    assert metrics["num_samples"] == len(dataset) == 2                # one batch of 3 holding 2: nothing dropped
    assert metrics["num_images"] == expected and sum(expected.values()) == 2 * len(eval_cfg.data.cameras)
    for mode in ("metric", "median"):
        assert set(metrics[mode]["per_camera"]) == set(eval_cfg.data.cameras)
        assert 0 < metrics[mode]["all"]["abs_rel"] < math.inf
    for cam in range(2):
        assert sorted(p.name for p in (run / "vis_results" / f"cam{cam}").iterdir()) == ["000_depth.png", "001_depth.png"]


def test_runtime_error_is_one_line_with_exit_status_1(world, tmp_path, capsys):
    empty = tmp_path / "empty_checkpoint"
    empty.mkdir()
    args = ["--config_file", CONFIG, "--weight_path", str(empty), "load.pretrain=true", *overrides(world, tmp_path)]
    assert train_entry.main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: FileNotFoundError:") and "depth_net" in err[0]
    assert "SFDEPTH_DEBUG" in err[1] and len(err) == 2


def test_eval_scale_modes_choose_the_table_json_and_validation_scalars(world, tmp_path, capsys):
    only = "eval.scale_modes=[median]"
    Trainer(config(world, tmp_path, "training.max_steps=1", "logging.log_frequency=1", only)).fit()
    run = tmp_path / "ddad_baseline"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    val_scalars = set(EventAccumulator(str(run / "val")).Reload().Tags()["scalars"])
    assert "median/abs_rel" in val_scalars and not any(tag.startswith("metric/") for tag in val_scalars)

    capsys.readouterr()
    args = ["--config_file", CONFIG, "--weight_path", str(run / "models" / "weights_0_step1"),
            *overrides(world, tmp_path, only)]
    assert eval_entry.main(args) == 0
    headers = [line.split("|")[0].strip() for line in capsys.readouterr().out.splitlines() if "abs_rel" in line]
    assert headers == ["median"]                           # the metric table is gone, the median one stays
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["scale_modes"] == ["median"] and "metric" not in metrics
    assert 0 < metrics["median"]["all"]["abs_rel"] < math.inf and metrics["scale"]["all"]["count"] == 4

    with pytest.raises(ValueError, match="scale modes"):  # nothing to report is an error, not an empty table
        evaluate(config(world, tmp_path, "eval.scale_modes=[]", mode="eval"), str(run / "models" / "weights_0_step1"))


# ----------------------------------------------------------------------------------------------
# TensorBoard pictures of what the losses see

VISUALS = ("temporal_warp_prev1", "temporal_warp_next1", "temporal_error", "automask", "spatial_warp", "spatial_mask")


def test_logged_step_writes_pictures_of_warps_and_masks_that_are_what_the_loss_sees(world, tmp_path):
    trainer = Trainer(config(world, tmp_path, "training.max_steps=1", "logging.log_frequency=1"))
    trainer.fit()                                          # step 0 logs: train and val
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    for split in ("train", "val"):
        events = EventAccumulator(str(tmp_path / "ddad_baseline" / split)).Reload()
        assert {f"visuals/{name}" for name in VISUALS} <= set(events.Tags()["images"]), split
        picture = events.Images("visuals/spatial_mask")[0]
        # the first item only, its 2 cameras side by side (2 black pixels apart) at half size
        assert (picture.height, picture.width) == (HW[0] // 2, 2 * (HW[1] // 2) + 2)

    algo = trainer.algo.eval()
    batch = to_device(next(iter(trainer.val_loader)), trainer.device)
    assert batch["image"].shape[0] == 2                    # visuals pick the first of several items
    with torch.no_grad():
        outputs = algo(batch)
        rng = torch.get_rng_state()
        trainer._visuals(batch, outputs)                   # draws auto-mask noise, and gives it back
        assert torch.equal(rng, torch.get_rng_state())
        torch.manual_seed(0)
        visuals = algo.visuals(batch, outputs)
        item = {k: v[:1] for k, v in batch.items() if isinstance(v, torch.Tensor)}
        depth, poses = outputs["depth"][0][:1], {f: p[:1] for f, p in outputs["poses"].items()}
        torch.manual_seed(0)                               # the same tie-breaking noise as the visuals'
        temporal = algo.view_losses(item, depth, poses)["temporal"]

    assert set(visuals) == set(VISUALS)
    for name, picture in visuals.items():
        assert picture.shape == (1, 2, 3 if "warp" in name else 1, *HW), name
        assert picture.dtype == torch.float32 and float(picture.min()) >= 0 and float(picture.max()) <= 1, name
    # The error map under the auto-mask (times the ego mask) gives back the temporal loss term.
    weight = visuals["automask"] * item["mask"]
    per_camera = (visuals["temporal_error"] * weight).sum(dim=(0, 2, 3, 4)) / weight.sum(dim=(0, 2, 3, 4))
    assert float(per_camera.mean()) == pytest.approx(float(temporal), rel=1e-5)
    # Each warp is its own context frame, warped with its pose and aligned as the loss does.
    ids = batch_frame_ids(item)
    target = item["image"][:, ids.index(0)]
    for f, name in ((-1, "temporal_warp_prev1"), (1, "temporal_warp_next1")):
        warp, valid = warp_views(item["image"][:, ids.index(f)], item["mask"], depth, item["K"], item["K"], poses[f])
        warp = align_intensity(warp, target, item["mask"] * valid, valid)
        assert torch.allclose(visuals[name], warp.clamp(0, 1), atol=1e-6), name
    # The overlap view is black outside its (binary) mask, and the two cameras do overlap.
    mask = visuals["spatial_mask"]
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    assert float((visuals["spatial_warp"] * (1 - mask)).abs().max()) == 0
    with pytest.raises(ValueError, match="C 1 or 3"):
        visual_pictures({"flow": torch.zeros(1, 2, 2, 8, 8)})


# ----------------------------------------------------------------------------------------------
# Resume


def test_resume_continues_exactly_like_an_uninterrupted_run(world, tmp_path):
    schedule = ["training.scheduler=step", "training.scheduler_step_size=1", "training.scheduler_gamma=0.5",
                "logging.tensorboard=false", "logging.early_phase=0", "logging.late_log_frequency=3"]
    straight = Trainer(config(world, tmp_path / "a", "training.max_steps=4", *schedule))
    straight.fit()

    interrupted = Trainer(config(world, tmp_path / "b", "training.max_steps=1", "logging.save_step_frequency=1", *schedule))
    interrupted.fit()                                      # killed after step 1, in the middle of epoch 0
    models_root = tmp_path / "b" / "ddad_baseline" / "models"
    assert (models_root / "weights_0_step1").is_dir()

    resume_cfg = config(world, tmp_path / "b", "training.max_steps=4", *schedule)
    train_entry.resume_latest(resume_cfg)                  # what train.py --resume does
    assert resume_cfg.load.pretrain and Path(resume_cfg.data.load_weights_dir).name == "weights_0_step1"
    args = ["--config_file", CONFIG, "--weight_path", str(models_root / "weights_0_step1"), "load.pretrain=true",
            *overrides(world, tmp_path / "b", "training.max_steps=4", *schedule)]
    assert train_entry.main(args) == 0                     # a fresh Trainer continues at step 1

    resumed = build_model(resume_cfg, torch.device("cpu"))
    load_networks(models_root / "weights_1", resumed.networks())
    expected = parameters(straight.algo)
    got = parameters(resumed)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected), \
        [k for k in expected if not torch.equal(expected[k], got[k])][:5]
    state = torch.load(models_root / "weights_1" / STATE_FILE, weights_only=True)
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (4, 2, 0)
    assert straight.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.25)


# ----------------------------------------------------------------------------------------------
# Non-finite losses


def test_nonfinite_loss_skips_steps_then_stops_with_a_clear_error(world, tmp_path, monkeypatch):
    trainer = Trainer(config(world, tmp_path, "training.max_steps=5", "training.max_nonfinite_steps=2",
                             "logging.tensorboard=false", "logging.log_frequency=100"))
    before = {k: v.detach().clone() for k, v in trainer.algo.named_parameters()}
    original = type(trainer.algo).compute_losses

    def nan_losses(self, batch, outputs):
        losses = original(self, batch, outputs)
        losses["total"] = losses["total"] * float("nan")
        return losses

    monkeypatch.setattr(type(trainer.algo), "compute_losses", nan_losses)
    with pytest.warns(RuntimeWarning, match="non-finite loss"):
        with pytest.raises(NonFiniteLossError, match="non-finite for 2 consecutive steps"):
            trainer.fit()
    assert trainer.step == 1 and trainer.nonfinite_total == 2
    after = dict(trainer.algo.named_parameters())
    assert all(torch.equal(before[k], after[k]) for k in before)     # no optimizer step was taken
    assert all(p.grad is None for p in trainer.algo.parameters())


# ----------------------------------------------------------------------------------------------
# Mixed precision


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_step_with_clipping_and_channels_last(world, tmp_path, amp):
    trainer = Trainer(config(world, tmp_path, f"training.amp={amp}", "training.grad_clip=1.0", "training.channels_last=true",
                             "training.max_steps=1", "logging.tensorboard=false"))
    before = {k: v.detach().clone() for k, v in trainer.algo.named_parameters()}
    trainer.fit()
    assert trainer.nonfinite_total == 0
    assert all(bool(torch.isfinite(p).all()) for p in trainer.algo.parameters())
    changed = any(not torch.equal(before[k], p) for k, p in trainer.algo.named_parameters())
    scaler = torch.load(tmp_path / "ddad_baseline" / "models" / "weights_0_step1" / "scaler.pth", weights_only=True)
    if amp == "bf16":
        assert changed and not trainer.scaler.is_enabled() and scaler == {}
    else:   # GradScaler starts at 2**16 and halves on an fp16 overflow, skipping that step: either happened
        assert trainer.scaler.is_enabled() and scaler["scale"] == trainer.scaler.get_scale()
        assert changed != (trainer.scaler.get_scale() < 2.0 ** 16)


# ----------------------------------------------------------------------------------------------
# DDP


def test_ddp_two_processes_on_gloo_keeps_replicas_identical(world, tmp_path):
    args = ["--config_file", CONFIG, *overrides(world, tmp_path, "ddp.ddp_enable=true", "ddp.world_size=2",
                                                "ddp.backend=gloo", "training.max_steps=2", "logging.log_frequency=1")]
    assert train_entry.main(args) == 0
    run = tmp_path / "ddad_baseline"
    folder = run / "models" / "weights_1"                  # 1 sample per rank and epoch: 2 epochs
    state = torch.load(folder / STATE_FILE, weights_only=True)
    assert state["world_size"] == 2 and state["global_batch_size"] == 2 and state["step"] == 2
    checksums = state["replica_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1]      # every rank's parameters, bit for bit
    single = build_model(config(world, tmp_path), torch.device("cpu"))
    initial = parameters(single)
    reports = load_networks(folder, single.networks())     # strict: a DDP checkpoint fits a plain model
    assert all(r.ok for r in reports.values())
    loaded = parameters(single)
    assert any(not torch.equal(initial[k], loaded[k]) for k in initial)
    assert list((run / "train").glob("events.out.tfevents.*"))       # rank 0 logged


def _item(tree, i: int):
    """Item i (batch dimension kept) of every tensor of a batch or outputs dict, nested dicts too."""
    if isinstance(tree, torch.Tensor):
        return tree[i:i + 1]
    if isinstance(tree, dict):
        return {k: _item(v, i) for k, v in tree.items()}
    return tree


def _train_with_per_sample_losses(launch, cfg):
    """run_training with the baseline's loss taken per batch item and averaged, and without the
    auto-mask's tie-breaking noise (see the test below). Module level: the spawned ranks import it."""
    import models.surround_baseline as baseline
    automask, compute_losses = baseline.automask, baseline.SurroundBaseline.compute_losses

    def per_item_losses(self, batch, outputs):
        items = [compute_losses(self, _item(batch, i), _item(outputs, i)) for i in range(batch["image"].shape[0])]
        return {name: sum(losses[name] for losses in items) / len(items) for name in items[0]}

    baseline.automask = lambda errors, identity, noise_std=0.0, generator=None: automask(errors, identity, noise_std=0.0)
    baseline.SurroundBaseline.compute_losses = per_item_losses
    try:
        run_training(launch, cfg)
    finally:                                               # the single-process run happens in this process
        baseline.automask, baseline.SurroundBaseline.compute_losses = automask, compute_losses


def test_ddp_matches_one_process_with_the_same_global_batch(world, tmp_path):
    """2 gloo processes with batch 1 take the same steps as 1 process with batch 2.

    What has to agree for that, and how the test gets it:
    - BatchNorm: SyncBatchNorm refuses CPU tensors in torch 2.14 (and DDP refuses a CPU module that
      holds one), so in training mode each rank would normalise with its own item's statistics:
      training.freeze_bn keeps the layers in eval mode (their running statistics stay as they are).
    - The loss: the baseline's masked means (VFDepth's) pool the pixels of all items of a batch per
      camera, so one mean over 2 items is not the mean of 2 per-item means whenever the auto-masks
      cover different areas; that is the model's definition, not the trainer's doing. The test
      takes the same loss terms per item and averages them, the form DDP's gradient averaging
      reproduces. The auto-mask's 1e-5 tie-breaking noise comes from each process's own RNG
      stream (seed + rank), which no other layout can replay: it is switched off here.
    Measured without these (2 steps, lr 1e-3): BatchNorm in training mode gives a difference as
    large as the update itself (ratio below ~1.0); the pooled loss ~0.6; the noise alone ~0.06.
    With them: ~3e-3. Not bitwise: gloo sums two per-item gradients where autograd reduces over a
    batch of two, in another order, and Adam divides each element by its own magnitude, so an
    element whose gradient is at rounding level can move by up to lr in one run and not in the
    other. Hence the tolerance: the difference, in norm, below 1 % of how far the parameters
    moved, and fewer than 1 % of the elements apart by more than lr / 1000.
    """
    lr, steps = 1e-3, 2
    common = [f"training.learning_rate={lr}", f"training.max_steps={steps}", "training.freeze_bn=true",
              "logging.tensorboard=false", "logging.log_frequency=100"]
    runs = {"ddp": config(world, tmp_path / "ddp", *common, "training.batch_size=1", "ddp.ddp_enable=true",
                          "ddp.world_size=2", "ddp.backend=gloo"),
            "single": config(world, tmp_path / "single", *common, "training.batch_size=2")}
    params = {}
    for name, cfg in runs.items():
        dist_utils.launch(_train_with_per_sample_losses, cfg)
        folder = Path(cfg.data.save_weights_root) / f"weights_{steps - 1}"   # 1 step per epoch either way
        assert torch.load(folder / STATE_FILE, weights_only=True)["step"] == steps
        model = build_model(cfg, torch.device("cpu"))
        load_networks(folder, model.networks())
        params[name] = parameters(model)
    seed_everything(runs["single"].training.seed)          # how the Trainer initialised both runs
    start = parameters(build_model(runs["single"], torch.device("cpu")))

    statistics = [k for k in start if "running_" in k]
    assert statistics and all(torch.equal(p[k], start[k]) for p in params.values() for k in statistics)
    weights = [k for k in start if start[k].is_floating_point() and "running_" not in k]
    moved = torch.cat([(params["single"][k] - start[k]).flatten() for k in weights]).double()
    apart = torch.cat([(params["ddp"][k] - params["single"][k]).flatten() for k in weights]).double()
    assert 0 < float(moved.abs().max()) <= 10 * lr          # the start is right: Adam moves <~ lr per step
    assert float(apart.norm()) < 1e-2 * float(moved.norm())
    assert float((apart.abs() > lr / 1000).double().mean()) < 1e-2


def test_ddp_failure_in_one_rank_ends_the_job_with_exit_status_1(world, tmp_path):
    """A training sample that only one rank reads is corrupt: that rank raises while the other waits
    in a collective; the job must end (no hang) with the failing rank's error on one line."""
    copy = tmp_path / "world"
    shutil.copytree(world, copy)
    first_frame = sorted((copy / "ddad" / "000000" / "rgb" / "CAMERA_01").iterdir())[0]
    first_frame.write_bytes(b"not an image")                # frame 0 is only in training sample 0
    args = ["--config_file", CONFIG, *overrides(copy, tmp_path, "ddp.ddp_enable=true", "ddp.world_size=2",
                                                "ddp.backend=gloo", "training.max_steps=2")]
    env = dict(os.environ, OMP_NUM_THREADS="1", SFDEPTH_DEBUG="0")
    done = subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-2000:]
    error = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and error[0].startswith("error: rank ") and first_frame.name in error[0], done.stderr[-2000:]


# ----------------------------------------------------------------------------------------------
# Pieces


def test_sampler_gives_ranks_disjoint_shares_matching_one_process_with_the_global_batch():
    data = list(range(10))
    ranks = [ResumableSampler(data, 2, r, seed=3) for r in range(2)]
    single = ResumableSampler(data, 1, 0, seed=3)
    for s in ranks + [single]:
        s.set_epoch(1)
    shares = [list(s) for s in ranks]
    assert sorted(shares[0] + shares[1]) == data
    assert [i for pair in zip(*shares) for i in pair] == list(single)  # step k of batch 2 = rank 0's k-th + rank 1's k-th
    single.set_start(4)
    assert list(single) == [i for pair in zip(*shares) for i in pair][4:] and len(single) == 6


def test_log_cadence_follows_the_reference(world, tmp_path):
    cfg = config(world, tmp_path, "logging.early_phase=20", "logging.log_frequency=5", "logging.late_log_frequency=50")
    assert [s for s in range(120) if is_log_step(cfg, s)] == [0, 5, 10, 15, 50, 100]


@pytest.mark.parametrize("kind, extra, expected", [
    ("step", ["training.scheduler_step_size=2", "training.scheduler_gamma=0.1"], [1, 1, 0.1, 0.1, 0.01]),
    ("multistep", ["training.scheduler_milestones=[1, 3]", "training.scheduler_gamma=0.5"], [1, 0.5, 0.5, 0.25, 0.25]),
    ("none", [], [1, 1, 1, 1, 1]),
])
def test_schedules_step_per_epoch(world, tmp_path, kind, extra, expected):
    cfg = config(world, tmp_path, f"training.scheduler={kind}", "training.weight_decay=0.01", *extra)
    optimizer = build_optimizer(cfg, torch.nn.Linear(2, 2))
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.param_groups[0]["weight_decay"] == 0.01
    scheduler = build_scheduler(cfg, optimizer)
    lrs = []
    for _ in expected:
        lrs.append(optimizer.param_groups[0]["lr"] / cfg.training.learning_rate)
        if scheduler is not None:
            optimizer.step()
            scheduler.step()
    assert lrs == pytest.approx(expected)


def test_process_layout_from_torchrun_environment_and_rendezvous(world, tmp_path, monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert torchrun_environment() is None
    cfg = config(world, tmp_path)
    addr, port = rendezvous(cfg)
    assert addr == "localhost" and 0 < port < 65536                  # a free port chosen by the parent
    monkeypatch.setenv("MASTER_PORT", "29555")
    assert rendezvous(cfg) == ("localhost", 29555)
    cfg.ddp.master_addr, cfg.ddp.master_port = "10.0.0.2", 12000     # the config wins over the environment
    assert rendezvous(cfg) == ("10.0.0.2", 12000)
    for name, value in (("RANK", "5"), ("WORLD_SIZE", "8"), ("LOCAL_RANK", "1"), ("LOCAL_WORLD_SIZE", "4")):
        monkeypatch.setenv(name, value)
    assert torchrun_environment() == Launch(rank=5, local_rank=1, world_size=8, local_world_size=4)
    if not torch.cuda.is_available():
        assert device_for(cfg, torchrun_environment()) == torch.device("cpu")


def test_error_line_of_a_failed_spawned_rank():
    message = ("\n\n-- Process 1 terminated with the following error:\nTraceback (most recent call last):\n"
               "  File \"x.py\", line 1, in f\n    raise ValueError('bad')\nValueError: bad value\n")
    assert error_line(RuntimeError(message)) == "rank 1: ValueError: bad value"
    assert error_line(KeyError("depth_net")) == "KeyError: 'depth_net'"


def test_train_then_eval_on_synthetic_nuscenes(tmp_path, capsys):
    """The same end to end on the nuScenes format: devkit tables, sweeps as context frames."""
    config_file = str(REPO / "configs" / "synthetic" / "nusc_baseline.yaml")
    root = tmp_path / "nuscenes"
    ensure_synthetic_dataset("nuscenes", str(root), scenes=2, frames=13, height=HW[0], width=HW[1], seed=0)
    args = [f"data.data_path={root}", f"data.mask_path={root}/masks", f"data.train_split={root}/splits/train.txt",
            f"data.val_split={root}/splits/val.txt", f"data.test_split={root}/splits/val.txt",
            f"data.log_dir={tmp_path}/results", f"training.height={HW[0]}", f"training.width={HW[1]}",
            "data.cameras=[CAM_FRONT, CAM_FRONT_LEFT]", "model.weights_init=false", "training.num_workers=0",
            "eval.eval_num_workers=0", "training.max_steps=2", "logging.log_frequency=1"]
    assert train_entry.main(["--config_file", config_file, *args]) == 0
    run = tmp_path / "results" / "nusc_baseline"
    checkpoints = sorted((run / "models").iterdir())
    assert checkpoints and (checkpoints[-1] / "depth_net.pth").is_file() and (checkpoints[-1] / STATE_FILE).is_file()
    assert list((run / "train").iterdir()) and list((run / "val").iterdir())
    assert eval_entry.main(["--config_file", config_file, f"--weight_path={checkpoints[-1]}", *args]) == 0
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert "CAM_FRONT" in json.dumps(metrics) and "abs_rel" in json.dumps(metrics)
    assert all(count > 0 for count in metrics["num_images"].values())     # ground truth in both cameras


def test_depth_metrics_of_a_model_predicting_fewer_cameras_than_the_sample_carries(world, tmp_path):
    """The scene-flow model predicts the left camera of a stereo sample: validation compares it
    with that camera's ground truth only."""
    from trainer.evaluate import metrics_accumulator, update_metrics
    cfg = config(world, tmp_path)
    gt = torch.rand(2, 2, 1, 8, 8) * 10 + 1
    batch = {"depth_gt": gt, "mask": torch.ones(2, 2, 1, 8, 8)}
    accumulator = metrics_accumulator(cfg, num_cameras=1)
    update_metrics(accumulator, batch, gt[:, :1])            # exact for camera 0, camera 1 ignored
    result = accumulator.compute()
    assert result["names"] == [cfg.data.cameras[0]] and result["metric"]["per_camera"].shape[0] == 1
    assert float(result["metric"]["all"][0]) == 0.0
    update_metrics(accumulator, batch, gt[:, 1:])            # camera 1's depth is wrong for camera 0
    assert float(accumulator.compute()["metric"]["all"][0]) > 0.01
