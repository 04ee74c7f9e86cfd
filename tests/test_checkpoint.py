"""trainer.checkpoint: complete round trips, resume equivalence, DDP prefixes in both directions,
reported mismatches, and folders that are either complete or absent whenever a save dies."""

import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

from trainer import checkpoint as ckpt
from trainer.checkpoint import (CheckpointMismatchError, latest_checkpoint, load_networks,
                                load_training_state, save_checkpoint)
from trainer.rng import seed_everything

REPO = Path(__file__).resolve().parents[1]
DEAD_PID = 4194305  # above the largest pid_max Linux allows: never a live process


def make_networks(seed=0):
    torch.manual_seed(seed)
    return {
        "depth_net": nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3),
                                   nn.Linear(8, 1)),
        "pose_net": nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 6)),
    }


def make_training(networks, with_scaler=True):
    params = [p for net in networks.values() for p in net.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    scaler = None
    if with_scaler and hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler"):
        try:
            scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8, growth_interval=2)
        except (TypeError, RuntimeError, ValueError):
            scaler = None
    return optimizer, scheduler, scaler


def train_step(networks, optimizer, scheduler, scaler):
    """One step whose data and dropout come from the global torch, NumPy and Python generators."""
    for net in networks.values():
        net.train()
    x = torch.randn(8, 4) * (1.0 + random.random())
    x = x + torch.from_numpy(np.random.normal(size=(8, 4)).astype(np.float32))
    loss = networks["depth_net"](x).pow(2).mean() + networks["pose_net"](x).abs().mean()
    optimizer.zero_grad()
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    scheduler.step()


def draws():
    return torch.rand(5), np.random.rand(5), [random.random() for _ in range(5)]


def assert_draws_equal(a, b):
    assert torch.equal(a[0], b[0])
    assert np.array_equal(a[1], b[1])
    assert a[2] == b[2]


def scramble_rng():
    seed_everything(12345)
    draws()


def test_round_trip_restores_everything(tmp_path):
    seed_everything(0)
    networks = make_networks()
    optimizer, scheduler, scaler = make_training(networks)
    for _ in range(3):
        train_step(networks, optimizer, scheduler, scaler)
    folder = save_checkpoint(tmp_path / "models" / "weights_0", networks, optimizer, scheduler,
                             scaler, state={"step": 3, "epoch": 0, "config_name": "demo"})
    expected_draws = draws()

    names = sorted(os.listdir(folder))
    assert names == sorted(["depth_net.pth", "pose_net.pth", "optimizer.pth", "scheduler.pth",
                            "trainer_state.pth"] + (["scaler.pth"] if scaler else []))

    scramble_rng()
    fresh = make_networks(seed=7)
    fresh_optimizer, fresh_scheduler, fresh_scaler = make_training(fresh)
    reports = load_networks(folder, fresh)
    assert all(report.ok for report in reports.values())
    state = load_training_state(folder, fresh_optimizer, fresh_scheduler, fresh_scaler)
    assert_draws_equal(draws(), expected_draws)

    assert state == {"step": 3, "epoch": 0, "config_name": "demo"}
    for name in networks:
        for (key, a), (key_b, b) in zip(networks[name].state_dict().items(),
                                        fresh[name].state_dict().items()):
            assert key == key_b and torch.equal(a, b), (name, key)
    saved_opt, loaded_opt = optimizer.state_dict(), fresh_optimizer.state_dict()
    assert loaded_opt["param_groups"] == saved_opt["param_groups"]
    assert set(loaded_opt["state"]) == set(saved_opt["state"]) and len(saved_opt["state"]) > 0
    for index, slot in saved_opt["state"].items():
        assert torch.equal(slot["exp_avg"], loaded_opt["state"][index]["exp_avg"])
        assert torch.equal(slot["exp_avg_sq"], loaded_opt["state"][index]["exp_avg_sq"])
        assert torch.equal(torch.as_tensor(slot["step"]), torch.as_tensor(loaded_opt["state"][index]["step"]))
    assert fresh_scheduler.last_epoch == scheduler.last_epoch == 3
    assert fresh_scheduler.get_last_lr() == scheduler.get_last_lr() == [1e-2 * 0.5]
    assert fresh_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    if scaler is None:
        pytest.skip("torch.amp.GradScaler('cpu') is not available in this torch: scaler part not checked")
    assert fresh_scaler.get_scale() == scaler.get_scale() != 2.0 ** 8  # it grew during training
    assert fresh_scaler.state_dict() == scaler.state_dict()


def test_resume_continues_the_same_run(tmp_path):
    seed_everything(1)
    networks = make_networks(seed=1)
    training = make_training(networks)
    for _ in range(6):
        train_step(networks, *training)
    straight = {name: [p.detach().clone() for p in net.parameters()] for name, net in networks.items()}
    straight_buffers = [b.clone() for b in networks["depth_net"].buffers()]

    seed_everything(1)
    networks = make_networks(seed=1)
    training = make_training(networks)
    for _ in range(3):
        train_step(networks, *training)
    save_checkpoint(tmp_path / "weights_0_step3", networks, *training, state={"step": 3, "epoch": 0})
    del networks, training  # the crash

    scramble_rng()
    networks = make_networks(seed=99)
    training = make_training(networks)
    load_networks(tmp_path / "weights_0_step3", networks)
    state = load_training_state(tmp_path / "weights_0_step3", *training)
    assert state["step"] == 3
    for _ in range(3):
        train_step(networks, *training)

    for name, net in networks.items():
        for a, b in zip(net.parameters(), straight[name]):
            assert torch.equal(a, b), name
    for a, b in zip(networks["depth_net"].buffers(), straight_buffers):
        assert torch.equal(a, b)


class Wrapper(nn.Module):
    """What DataParallel-like wrappers look like: the network under `module`."""

    def __init__(self, module):
        super().__init__()
        self.module = module


def test_ddp_checkpoint_loads_into_plain_model_and_back(tmp_path):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    if dist.is_initialized():
        pytest.skip("a default process group already exists in this process")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        net = make_networks(seed=3)["depth_net"]
        ddp = nn.parallel.DistributedDataParallel(net)
        assert all(key.startswith("module.") for key in ddp.state_dict())

        # The reference layout: DDP keys with the `module.` prefix, loaded into a plain model.
        reference = tmp_path / "reference"
        reference.mkdir()
        torch.save(ddp.state_dict(), reference / "depth_net.pth")
        plain = make_networks(seed=4)["depth_net"]
        report = load_networks(reference, {"depth_net": plain})["depth_net"]
        assert report.ok and report.stripped_prefix == "module."
        for a, b in zip(plain.state_dict().values(), net.state_dict().values()):
            assert torch.equal(a, b)

        # save_checkpoint stores the plain form, whatever the wrapper.
        folder = save_checkpoint(tmp_path / "weights_1", {"depth_net": ddp}, state={"step": 1})
        stored = torch.load(folder / "depth_net.pth", weights_only=True)
        assert list(stored) == list(net.state_dict())

        # A plain checkpoint loads into a DDP-wrapped model.
        source = make_networks(seed=5)["depth_net"]
        save_checkpoint(tmp_path / "weights_2", {"depth_net": source}, state={"step": 2})
        target = nn.parallel.DistributedDataParallel(make_networks(seed=6)["depth_net"])
        assert load_networks(tmp_path / "weights_2", {"depth_net": target})["depth_net"].ok
        for a, b in zip(target.module.state_dict().values(), source.state_dict().values()):
            assert torch.equal(a, b)
    finally:
        dist.destroy_process_group()


def test_wrapper_prefixes_and_nested_layouts(tmp_path):
    source = make_networks(seed=8)["pose_net"]
    folder = tmp_path / "ckpt"
    folder.mkdir()
    variants = {
        "module.": {f"module.{k}": v for k, v in source.state_dict().items()},
        "_orig_mod.": {f"_orig_mod.{k}": v for k, v in source.state_dict().items()},
        "module._orig_mod.": {f"module._orig_mod.{k}": v for k, v in source.state_dict().items()},
    }
    for prefix, state_dict in variants.items():
        for layout in (state_dict, {"state_dict": state_dict, "epoch": 3}, {"model": state_dict}):
            torch.save(layout, folder / "pose_net.pth")
            for target in (make_networks(seed=9)["pose_net"], Wrapper(make_networks(seed=9)["pose_net"])):
                report = load_networks(folder, {"pose_net": target})["pose_net"]
                assert report.ok and report.stripped_prefix == prefix
                inner = getattr(target, "module", target)
                for a, b in zip(inner.state_dict().values(), source.state_dict().values()):
                    assert torch.equal(a, b)
    # A wrapper given to save_checkpoint is stored unwrapped too.
    save_checkpoint(tmp_path / "weights_0", {"pose_net": Wrapper(source)}, state={"step": 0})
    assert list(torch.load(tmp_path / "weights_0" / "pose_net.pth", weights_only=True)) == \
        list(source.state_dict())


def test_models_to_load_and_missing_file(tmp_path):
    networks = make_networks(seed=10)
    folder = save_checkpoint(tmp_path / "weights_0", {"depth_net": networks["depth_net"]},
                             state={"step": 0})
    fresh = make_networks(seed=11)
    pose_before = [p.clone() for p in fresh["pose_net"].parameters()]
    reports = load_networks(folder, fresh, names=["depth_net"])
    assert list(reports) == ["depth_net"]
    for a, b in zip(fresh["depth_net"].parameters(), networks["depth_net"].parameters()):
        assert torch.equal(a, b)
    for a, b in zip(fresh["pose_net"].parameters(), pose_before):
        assert torch.equal(a, b)
    with pytest.raises(FileNotFoundError, match="pose_net.pth"):
        load_networks(folder, fresh)
    with pytest.raises(KeyError, match="flow_net"):
        load_networks(folder, fresh, names=["flow_net"])


def test_mismatch_is_reported(tmp_path):
    torch.manual_seed(12)
    saved = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2), nn.Linear(2, 2))
    folder = save_checkpoint(tmp_path / "weights_0", {"depth_net": saved}, state={"step": 0})
    other = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3), nn.Identity(), nn.Linear(3, 1))
    before = {k: v.clone() for k, v in other.state_dict().items()}

    with pytest.raises(CheckpointMismatchError) as raised:
        load_networks(folder, {"depth_net": other})
    message = str(raised.value)
    assert str(folder / "depth_net.pth") in message
    assert "2 missing key(s)" in message and "4.weight" in message and "4.bias" in message
    assert "2 unexpected key(s)" in message and "3.weight" in message and "3.bias" in message
    assert "2 shape mismatch(es)" in message and "2.weight [2, 8] in the file vs [3, 8]" in message
    report, = raised.value.reports
    assert set(report.missing) == {"4.weight", "4.bias"}
    assert set(report.unexpected) == {"3.weight", "3.bias"}
    assert {key for key, _, _ in report.mismatched} == {"2.weight", "2.bias"}
    for key, value in other.state_dict().items():  # strict: nothing was loaded
        assert torch.equal(value, before[key])

    with pytest.warns(UserWarning, match="partial load"):
        report = load_networks(folder, {"depth_net": other}, strict=False)["depth_net"]
    assert not report.ok and report.loaded == 2
    assert torch.equal(other[0].weight, saved[0].weight) and torch.equal(other[0].bias, saved[0].bias)
    assert torch.equal(other[2].weight, before["2.weight"])
    assert torch.equal(other[4].weight, before["4.weight"])


def test_optimizer_of_another_model_is_refused(tmp_path):
    networks = make_networks(seed=13)
    optimizer, _, _ = make_training(networks, with_scaler=False)
    folder = save_checkpoint(tmp_path / "weights_0", networks, optimizer, state={"step": 0})
    other = torch.optim.Adam(networks["depth_net"].parameters())
    with pytest.raises(CheckpointMismatchError, match="optimizer.pth"):
        load_training_state(folder, other, restore_rng=False)
    with pytest.raises(FileNotFoundError, match="scheduler.pth"):
        load_training_state(folder, scheduler=torch.optim.lr_scheduler.StepLR(other, 1))


def test_crash_during_save_leaves_previous_checkpoint(tmp_path, monkeypatch):
    models = tmp_path / "models"
    networks = make_networks(seed=14)
    optimizer, scheduler, _ = make_training(networks, with_scaler=False)
    previous = save_checkpoint(models / "weights_0", networks, optimizer, scheduler,
                               state={"step": 10, "epoch": 0})
    previous_files = {p.name: p.read_bytes() for p in previous.iterdir()}

    real_save, calls = torch.save, []

    def failing_save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(models / "weights_1", networks, optimizer, scheduler, state={"step": 20, "epoch": 1})
    calls.clear()
    with pytest.raises(OSError, match="simulated"):  # replacing the folder of the same name
        save_checkpoint(models / "weights_0", networks, optimizer, scheduler, state={"step": 30, "epoch": 1})
    monkeypatch.undo()

    assert sorted(os.listdir(models)) == ["weights_0"]
    assert {p.name: p.read_bytes() for p in previous.iterdir()} == previous_files

    # What a SIGKILL mid-save leaves: a scratch folder that looks newer; it is ignored and cleaned.
    leftover = models / f"weights_5.tmp-{DEAD_PID}"
    leftover.mkdir()
    torch.save({"step": 999}, leftover / "trainer_state.pth")
    assert latest_checkpoint(models) == previous
    assert not leftover.exists()
    assert load_training_state(previous, restore_rng=False)["step"] == 10


def test_replacing_a_folder_and_rename_failure(tmp_path, monkeypatch):
    models = tmp_path / "models"
    networks = make_networks(seed=15)
    save_checkpoint(models / "weights_0", networks, state={"step": 1})
    save_checkpoint(models / "weights_0", networks, state={"step": 2})
    assert sorted(os.listdir(models)) == ["weights_0"]
    assert load_training_state(models / "weights_0", restore_rng=False)["step"] == 2

    real_rename = os.rename

    def failing_rename(src, dst):
        if ".tmp-" in os.fspath(src):
            raise OSError("rename failed (simulated)")
        return real_rename(src, dst)

    monkeypatch.setattr(ckpt.os, "rename", failing_rename)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(models / "weights_0", networks, state={"step": 3})
    monkeypatch.undo()
    assert sorted(os.listdir(models)) == ["weights_0"]
    assert load_training_state(models / "weights_0", restore_rng=False)["step"] == 2


def test_latest_checkpoint_orders_by_saved_step(tmp_path):
    models = tmp_path / "models"
    assert latest_checkpoint(models) is None
    networks = {"pose_net": make_networks(seed=16)["pose_net"]}
    for name, step, epoch in (("weights_10", 100, 10), ("weights_9_step500", 500, 9),
                              ("weights_2", 50, 2), ("weights_3_step7", 7, 3)):
        save_checkpoint(models / name, networks, state={"step": step, "epoch": epoch})
    (models / "weights_99").mkdir()  # no trainer state (e.g. a reference folder): not resumable
    (models / "weights_11.old-1").mkdir()  # not a checkpoint name
    assert latest_checkpoint(models) == models / "weights_9_step500"
    with pytest.raises(ValueError, match="step"):
        save_checkpoint(models / "weights_12", networks, state={"epoch": 12})


def test_old_folder_of_an_interrupted_replacement_comes_back(tmp_path):
    models = tmp_path / "models"
    save_checkpoint(models / "weights_4", make_networks(seed=17), state={"step": 40})
    os.rename(models / "weights_4", models / f"weights_4.old-{DEAD_PID}")
    (models / f"weights_4.tmp-{DEAD_PID}").mkdir()
    assert latest_checkpoint(models) == models / "weights_4"
    assert sorted(os.listdir(models)) == ["weights_4"]


def test_state_must_be_plain(tmp_path):
    networks = {"pose_net": make_networks(seed=18)["pose_net"]}
    folder = save_checkpoint(tmp_path / "weights_0", networks,
                             state={"step": np.int64(4), "epoch": 0, "path": tmp_path,
                                    "losses": np.array([1.0, 2.0])})
    state = load_training_state(folder, restore_rng=False)
    assert state["step"] == 4 and type(state["step"]) is int and state["path"] == str(tmp_path)
    assert torch.equal(state["losses"], torch.tensor([1.0, 2.0], dtype=torch.float64))
    with pytest.raises(TypeError, match="object"):
        save_checkpoint(tmp_path / "weights_1", networks, state={"step": 1, "bad": object()})
    assert not (tmp_path / "weights_1").exists()


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import torch
    from torch import nn
    from trainer import checkpoint as ckpt

    models, where = sys.argv[1], sys.argv[2]
    nets = {"depth_net": nn.Linear(3, 3), "pose_net": nn.Linear(3, 2)}
    ckpt.save_checkpoint(os.path.join(models, "weights_0"), nets, state={"step": 10, "epoch": 0})
    real_save, real_rename, calls = torch.save, os.rename, []

    def killing_save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_save(obj, f, *args, **kwargs)

    def killing_rename(src, dst):
        if ".tmp-" in os.fspath(src):  # the old folder is moved aside, the new one not yet in
            os.kill(os.getpid(), signal.SIGKILL)
        return real_rename(src, dst)

    if where == "files":
        torch.save = killing_save
        ckpt.save_checkpoint(os.path.join(models, "weights_1"), nets, state={"step": 20, "epoch": 1})
    else:
        os.rename = killing_rename
        ckpt.save_checkpoint(os.path.join(models, "weights_0"), nets, state={"step": 30, "epoch": 1})
    print("not killed")
""")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.parametrize("where", ["files", "rename"])
def test_sigkill_mid_save(tmp_path, where):
    models = tmp_path / "models"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(models), where], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == -signal.SIGKILL, run.stdout + run.stderr
    leftovers = [name for name in os.listdir(models) if name != "weights_0"]
    assert leftovers and all(".tmp-" in n or ".old-" in n for n in leftovers), leftovers
    assert latest_checkpoint(models) == models / "weights_0"
    assert sorted(os.listdir(models)) == ["weights_0"]
    assert load_training_state(models / "weights_0", restore_rng=False)["step"] == 10
    fresh = {"depth_net": nn.Linear(3, 3), "pose_net": nn.Linear(3, 2)}
    assert all(report.ok for report in load_networks(models / "weights_0", fresh).values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_streams_are_restored(tmp_path):
    torch.cuda.init()
    networks = {"pose_net": make_networks(seed=19)["pose_net"]}
    folder = save_checkpoint(tmp_path / "weights_0", networks, state={"step": 0})
    expected = torch.rand(4, device="cuda").cpu()
    torch.cuda.manual_seed_all(321)
    load_training_state(folder)
    assert torch.equal(torch.rand(4, device="cuda").cpu(), expected)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only machine's warning")
def test_cuda_states_without_cuda_warn():
    from trainer.rng import capture_rng_state, restore_rng_state
    state = capture_rng_state()
    assert "cuda" not in state
    expected = draws()
    restore_rng_state(state)
    with pytest.warns(UserWarning, match="CUDA is not available"):
        restore_rng_state(dict(state, cuda=[torch.zeros(16, dtype=torch.uint8)]))
    assert_draws_equal(draws(), expected)
