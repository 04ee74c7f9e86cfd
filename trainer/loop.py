"""The unified training loop: any registered algorithm, one process or DDP, fp32/bf16/fp16, resume.

    Trainer(cfg, rank, world_size).fit()        # or trainer.loop.train(cfg): launches the processes

One step: batch to the device -> forward (the DDP/compiled wrapper) -> compute_losses -> backward
-> (unscale, clip) -> optimizer step. The algorithm owns everything model-specific (which image it
feeds its networks, its losses); the loop never looks inside.

Data order: every run samples with a DistributedSampler (one replica in a single process) seeded
with training.seed and the epoch, so a run of N processes with batch b sees at each step exactly
the samples one process with batch N*b sees, and a resumed run skips precisely the samples the
interrupted run had consumed in its epoch. A dataset of two `parts` (the KITTI 2015 + KITTI raw
fine-tuning combination) is batched by ResumableAlternatingSampler instead: batches alternate
between the parts, with the same guarantees of resume.

Validation, logging and checkpoints happen on rank 0 only (VFDepth): one validation batch at the
logging cadence (every logging.log_frequency steps while the step is below logging.early_phase,
then every logging.late_log_frequency), checkpoints `weights_<epoch>` after every
logging.save_frequency epochs (and the last), `weights_<epoch>_step<step>` every
logging.save_step_frequency steps and where training.max_steps stops a run inside an epoch.

Resume: with load.pretrain, data.load_weights_dir (load.weights, or --weight_path) is read. A
checkpoint of this trainer (it has trainer_state.pth) restores every network, the optimizer, the
scheduler, the gradient scaler, the RNG states and the position (epoch and batch within it), and
the run continues at the saved step; a folder of weights only (e.g. converted reference weights)
initialises the networks of load.models_to_load and training starts at step 0.
"""

import itertools
import math
import os
import sys
import warnings
from typing import Dict, Iterator, List, Optional

import torch
import torch.distributed
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from dataset.splits import AlternatingBatchSampler
from dataset.transforms import apply_batch_color_jitter
from trainer import distributed as dist_utils
from trainer.evaluate import autocast, metrics_accumulator, summary_scalars, to_device, update_metrics
from trainer.logger import build_logger, log_batch
from trainer.optim import build_optimizer, build_scheduler, current_lr


class NonFiniteLossError(RuntimeError):
    """The total loss stayed non-finite for training.max_nonfinite_steps consecutive steps."""


class ResumableSampler(DistributedSampler):
    """DistributedSampler (shuffled by seed + epoch, padded to equal shares) that can start the
    coming epoch after its first `start` indices: the position of a resumed run."""

    def __init__(self, dataset, num_replicas: int, rank: int, seed: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.start = 0

    def set_start(self, start: int) -> None:
        self.start = int(start)

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start:])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)


class ResumableAlternatingSampler(AlternatingBatchSampler):
    """The batch sampler of a dataset made of two parts (`parts` = their lengths, e.g. KITTI 2015
    and KITTI raw for fine-tuning): dataset.splits.AlternatingBatchSampler, whose batches take
    turns between the parts and are a function of (seed, epoch), with ResumableSampler's
    interface for the loop: `num_samples` per process per epoch and `set_start`, which skips the
    batches of the coming epoch that an interrupted run had consumed."""

    def __init__(self, parts, batch_size: int, num_replicas: int, rank: int, seed: int):
        if len(parts) != 2:
            raise ValueError(f"alternating batches need a dataset of two parts, got parts={tuple(parts)}")
        super().__init__(parts[0], parts[1], batch_size=batch_size, shuffle=True, seed=seed,
                         num_replicas=num_replicas, rank=rank)
        self.start = 0

    @property
    def num_samples(self) -> int:
        return self.num_batches * self.batch_size

    def set_start(self, start: int) -> None:
        """`start` samples of the epoch are done (the loop counts whole batches: a multiple of
        batch_size)."""
        self.start = int(start) // self.batch_size

    def __iter__(self) -> Iterator[List[int]]:
        # The same (seed, epoch) gives the same batches: dropping the first ones resumes exactly.
        return itertools.islice(super().__iter__(), self.start, None)

    def __len__(self) -> int:
        return max(0, self.num_batches - self.start)


def is_log_step(cfg, step: int) -> bool:
    """The reference's cadence, for the 0-based index of the step just taken."""
    log = cfg.logging
    return step % (log.log_frequency if step < log.early_phase else log.late_log_frequency) == 0


def train_mode(model: nn.Module, freeze_bn: bool = False) -> nn.Module:
    """model.train(); with `freeze_bn` (training.freeze_bn) every BatchNorm layer goes back to eval
    mode, so that it normalises with its running statistics and never updates them: a step then
    does not depend on which samples share a batch, and N processes with batch b take the same
    step as one process with batch N*b (what SyncBatchNorm gives on GPUs only)."""
    model.train()
    if freeze_bn:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):   # BatchNorm1d/2d/3d and SyncBatchNorm
                module.eval()
    return model


def replica_checksum(model: nn.Module) -> float:
    """A float64 checksum of all parameters (equal on every rank while the replicas agree)."""
    with torch.no_grad():
        terms = [p.detach().double().sum() * (1.0 + 1e-3 * (i % 97)) for i, p in enumerate(model.parameters())]
        return float(torch.stack(terms).sum()) if terms else 0.0


class Trainer:
    """Trains `cfg` as rank `rank` of `world_size` processes (the process group must exist when
    world_size > 1; `train(cfg)` sets it up)."""

    def __init__(self, cfg, rank: int = 0, world_size: int = 1, local_rank: Optional[int] = None,
                 local_world_size: Optional[int] = None):
        self.cfg = cfg
        self.launch = dist_utils.Launch(rank, rank if local_rank is None else local_rank, world_size,
                                        world_size if local_world_size is None else local_world_size)
        self.is_main = rank == 0
        self.device = dist_utils.device_for(cfg, self.launch)
        if self.launch.distributed and not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            raise RuntimeError("Trainer with world_size > 1 needs an initialised process group "
                               "(use trainer.loop.train(cfg), which starts the processes)")
        from trainer.rng import seed_everything
        seed_everything(cfg.training.seed + rank)

        self.step = 0                    # optimizer steps taken (skipped non-finite steps count too)
        self.epoch = 0                   # the epoch to run next
        self.batch_in_epoch = 0          # batches of that epoch already consumed
        self.nonfinite_in_a_row = 0
        self.nonfinite_total = 0
        self._last_saved_step = -1

        self.algo = self._build_model()
        resume_folder = self._load_pretrained_networks()
        self.net = self._wrap(self.algo)
        self.optimizer = build_optimizer(cfg, self.algo)
        self.scheduler = build_scheduler(cfg, self.optimizer)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.training.amp == "fp16")
        self.train_set, self.sampler, self.train_loader = self._train_loader()
        self.val_loader, self._val_iter = (self._val_loader() if self.is_main else None), None
        self.logger = build_logger(cfg, self.is_main)
        if resume_folder is not None:    # last: nothing after it may draw from the restored RNGs
            self._restore_training_state(resume_folder)

    # ------------------------------------------------------------------------------------------
    # Set-up

    def _build_model(self) -> nn.Module:
        from models import build_model   # importing the package registers every algorithm
        model = build_model(self.cfg, self.device)
        if self.cfg.training.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def _wrap(self, model: nn.Module) -> nn.Module:
        """The module the forward pass runs through: DDP (with SyncBatchNorm where possible) and
        torch.compile around the algorithm; `self.algo` stays the plain algorithm."""
        net = model
        if self.launch.distributed:
            if self.cfg.ddp.sync_bn and self.device.type == "cuda":
                self.algo = net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
            elif self.cfg.ddp.sync_bn:
                self._note("ddp.sync_bn: SyncBatchNorm needs GPUs; on the CPU each process keeps its "
                           "own BatchNorm statistics (rank 0's are broadcast at every forward)")
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(net, device_ids=device_ids, broadcast_buffers=True,
                                                      find_unused_parameters=False)
        if self.cfg.training.compile:
            net = torch.compile(net)
        return net

    def _load_pretrained_networks(self) -> Optional[str]:
        """Load the networks for load.pretrain; returns the folder when it is a full checkpoint
        whose optimizer, scheduler and state are to be restored next."""
        if not self.cfg.load.pretrain:
            return None
        from trainer.checkpoint import STATE_FILE, load_networks
        folder = self.cfg.data.load_weights_dir
        full = os.path.isfile(os.path.join(folder, STATE_FILE))
        names = list(self.algo.network_names) if full else list(self.cfg.load.models_to_load)
        load_networks(folder, self.algo.networks(), names=names, strict=True)
        self._note(f"{'resuming from' if full else 'initialised ' + ', '.join(names) + ' from'} {folder}")
        return folder if full else None

    def _restore_training_state(self, folder: str) -> None:
        from trainer.checkpoint import load_training_state
        from trainer.rng import seed_everything
        state = load_training_state(folder, self.optimizer, self.scheduler, self.scaler,
                                    restore_rng=self.is_main)
        if not self.is_main:             # the checkpoint holds rank 0's streams: derive our own
            seed_everything(self.cfg.training.seed + self.launch.rank + 7919 * int(state["step"]))
        self.step = self._last_saved_step = int(state["step"])
        self.epoch = int(state.get("epoch", 0))
        self.batch_in_epoch = int(state.get("batch_in_epoch", 0))
        saved_global = state.get("global_batch_size")
        global_batch = self.cfg.training.batch_size * self.launch.world_size
        if self.batch_in_epoch and saved_global and int(saved_global) != global_batch:
            samples = self.batch_in_epoch * int(saved_global)
            self.batch_in_epoch = samples // global_batch
            self._note(f"the checkpoint was taken with {saved_global} samples per step, this run takes "
                       f"{global_batch}: resuming epoch {self.epoch} after batch {self.batch_in_epoch}"
                       + ("" if samples % global_batch == 0 else " (a few samples are seen twice)"))
        self._note(f"continuing at step {self.step}, epoch {self.epoch}, batch {self.batch_in_epoch}")

    def _train_loader(self):
        from dataset.build import build_dataset
        t = self.cfg.training
        dataset = build_dataset(self.cfg, "train")
        if getattr(dataset, "parts", None) is not None:
            # Fine-tuning combination (dataset/build.py kitti_finetune): every batch from one part,
            # the parts taking turns. One dataset per batch is also what lets the default collate
            # stack them: the parts' samples carry different keys (KITTI 2015 ground truth or none).
            sampler = ResumableAlternatingSampler(dataset.parts, t.batch_size, self.launch.world_size,
                                                  self.launch.rank, t.seed)
            loader = DataLoader(dataset, batch_sampler=sampler, num_workers=t.num_workers,
                                pin_memory=self.device.type == "cuda",
                                generator=torch.Generator().manual_seed(t.seed + self.launch.rank),
                                persistent_workers=False)
            return dataset, sampler, loader
        sampler = ResumableSampler(dataset, self.launch.world_size, self.launch.rank, t.seed)
        if sampler.num_samples < t.batch_size:
            raise RuntimeError(f"the training split has {len(dataset)} samples ({sampler.num_samples} per "
                               f"process): fewer than training.batch_size={t.batch_size}")
        loader = DataLoader(dataset, batch_size=t.batch_size, sampler=sampler, num_workers=t.num_workers,
                            drop_last=True, pin_memory=self.device.type == "cuda",
                            generator=torch.Generator().manual_seed(t.seed + self.launch.rank),
                            persistent_workers=False)
        return dataset, sampler, loader

    def _val_loader(self) -> Optional[DataLoader]:
        from dataset.build import build_dataset
        dataset = build_dataset(self.cfg, "val")
        if len(dataset) == 0:
            self._note("the validation split is empty: no validation during training")
            return None
        return DataLoader(dataset, batch_size=self.cfg.eval.eval_batch_size, shuffle=False, drop_last=False,
                          num_workers=0, pin_memory=self.device.type == "cuda")

    @property
    def steps_per_epoch(self) -> int:
        return self.sampler.num_samples // self.cfg.training.batch_size

    def planned_steps(self) -> int:
        total = self.cfg.training.num_epochs * self.steps_per_epoch
        return min(total, self.cfg.training.max_steps) if self.cfg.training.max_steps else total

    def _note(self, text: str) -> None:
        if self.is_main:
            from tqdm import tqdm
            tqdm.write(text, file=sys.stderr)

    # ------------------------------------------------------------------------------------------
    # The loop

    def fit(self) -> None:
        """Train until training.num_epochs or training.max_steps, whichever comes first."""
        from tqdm import tqdm
        from utils.cli import describe
        if self.is_main:
            os.makedirs(self.cfg.data.log_path, exist_ok=True)
            self.cfg.save(os.path.join(self.cfg.data.log_path, "config.yaml"))
            self._note(describe(self.cfg) + f" | {self.launch.world_size} process(es) on {self.device}, "
                       f"{self.steps_per_epoch} steps per epoch")
        bar = tqdm(total=self.planned_steps(), initial=min(self.step, self.planned_steps()), unit="step",
                   disable=not self.is_main, dynamic_ncols=True, mininterval=1.0, desc=self.cfg.name)
        try:
            while self.epoch < self.cfg.training.num_epochs and not self._budget_spent():
                epoch = self.epoch
                if self._train_epoch(epoch, bar):
                    self._end_epoch(epoch)
            if self.batch_in_epoch and self._last_saved_step != self.step:
                self._save(f"weights_{self.epoch}_step{self.step}")     # stopped inside an epoch
        finally:
            bar.close()
            self.logger.close()

    def _budget_spent(self) -> bool:
        return bool(self.cfg.training.max_steps) and self.step >= self.cfg.training.max_steps

    def _train_epoch(self, epoch: int, bar) -> bool:
        """Run the rest of `epoch`; True when all its batches are done."""
        self.sampler.set_epoch(epoch)
        self.sampler.set_start(self.batch_in_epoch * self.cfg.training.batch_size)
        if hasattr(self.train_set, "set_epoch"):
            self.train_set.set_epoch(epoch)
        train_mode(self.algo, self.cfg.training.freeze_bn)
        self.algo.set_epoch(epoch)       # epoch-dependent losses (models.base.Algorithm.set_epoch)
        for batch in self.train_loader:
            losses, outputs, batch = self._train_step(batch)
            self.batch_in_epoch += 1
            self.step += 1
            bar.update(1)
            if self.is_main:
                bar.set_postfix(loss=f"{float(losses['total'].detach()):.4f}", lr=f"{current_lr(self.optimizer):.2e}",
                                epoch=epoch, refresh=False)
            if self.is_main and is_log_step(self.cfg, self.step - 1):
                self._log_train(batch, outputs, losses)
                self._validate()
            every = self.cfg.logging.save_step_frequency
            if every and self.step % every == 0:
                self._save(f"weights_{epoch}_step{self.step}")
            if self._budget_spent():
                break
        return self.batch_in_epoch >= self.steps_per_epoch

    def _end_epoch(self, epoch: int) -> None:
        if self.scheduler is not None:
            self.scheduler.step()
        self.epoch, self.batch_in_epoch = epoch + 1, 0
        last = self.epoch >= self.cfg.training.num_epochs or self._budget_spent()
        if (epoch + 1) % self.cfg.logging.save_frequency == 0 or last:
            self._save(f"weights_{epoch}")

    def _train_step(self, batch: Dict):
        """One optimisation step; returns (losses, outputs, batch on the device)."""
        # data.color_aug_on_device: the loader sent the colour-jitter draws, image_aug is made here
        batch = apply_batch_color_jitter(to_device(batch, self.device))
        with autocast(self.cfg, self.device):
            outputs = self.net(batch)
            losses = self.algo.compute_losses(batch, outputs)
        total = losses["total"]
        if not dist_utils.all_true(bool(torch.isfinite(total.detach()).all()), self.device):
            self._skip_nonfinite(losses)
            return losses, outputs, batch
        self.nonfinite_in_a_row = 0
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.cfg.training.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.algo.parameters(), self.cfg.training.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return losses, outputs, batch

    def _skip_nonfinite(self, losses: Dict[str, torch.Tensor]) -> None:
        """A non-finite loss (on any rank): no backward, no optimizer step, and after
        training.max_nonfinite_steps in a row, a NonFiniteLossError."""
        self.nonfinite_in_a_row += 1
        self.nonfinite_total += 1
        self.optimizer.zero_grad(set_to_none=True)
        limit = self.cfg.training.max_nonfinite_steps
        bad = [name for name, value in losses.items()
               if isinstance(value, torch.Tensor) and not bool(torch.isfinite(value.detach()).all())]
        where = f"step {self.step} (epoch {self.epoch}, rank {self.launch.rank})"
        if self.nonfinite_in_a_row >= limit:
            raise NonFiniteLossError(
                f"training stopped at {where}: the total loss was non-finite for {self.nonfinite_in_a_row} "
                f"consecutive steps (training.max_nonfinite_steps={limit}); non-finite terms here: "
                f"{bad or 'on another rank'}. Try a lower training.learning_rate, training.grad_clip > 0 "
                f"or training.amp=off, or resume from the last checkpoint")
        if self.is_main:
            warnings.warn(f"{where}: non-finite loss (terms {bad or 'on another rank'}); optimizer step "
                          f"skipped ({self.nonfinite_in_a_row}/{limit} in a row)", RuntimeWarning, stacklevel=2)

    # ------------------------------------------------------------------------------------------
    # Logging and validation (rank 0)

    def _log_train(self, batch: Dict, outputs: Dict, losses: Dict[str, torch.Tensor]) -> None:
        if not self.logger.enabled:
            return
        with torch.no_grad():
            depth = self.algo.predict(batch, outputs).depth
        extra = {"lr": current_lr(self.optimizer), "nonfinite_steps": float(self.nonfinite_total)}
        if self.scaler.is_enabled():
            extra["amp/scale"] = float(self.scaler.get_scale())
        log_batch(self.logger, "train", self.step, losses=losses, depth=depth, batch=batch, extra=extra,
                  visuals=self._visuals(batch, outputs))

    def _visuals(self, batch: Dict, outputs: Dict) -> Dict[str, torch.Tensor]:
        """The algorithm's pictures of a batch (none when nothing is logged). They may recompute
        what the losses drew random numbers for (the auto-mask's tie-breaking noise): the RNG
        states are restored afterwards, so that logging never changes the course of a run."""
        if not self.logger.enabled:
            return {}
        devices = [self.device.index] if self.device.type == "cuda" else []
        with torch.no_grad(), autocast(self.cfg, self.device), torch.random.fork_rng(devices=devices):
            return self.algo.visuals(batch, outputs)

    def _next_val_batch(self) -> Optional[Dict]:
        if self.val_loader is None:
            return None
        if self._val_iter is None:
            self._val_iter = iter(self.val_loader)
        try:
            return next(self._val_iter)
        except StopIteration:                     # persistent iterator that cycles over the split
            self._val_iter = iter(self.val_loader)
            return next(self._val_iter)

    def _validate(self) -> None:
        """Losses and depth metrics of one validation batch, on the plain algorithm (never through
        DDP, whose forward would wait for the other ranks)."""
        batch = self._next_val_batch()
        if batch is None:
            return
        batch = to_device(batch, self.device)
        self.algo.eval()
        try:
            with torch.no_grad(), autocast(self.cfg, self.device):
                outputs = self.algo(batch)
                losses = self.algo.compute_losses(batch, outputs)
                depth = self.algo.predict(batch, outputs).depth
            visuals = self._visuals(batch, outputs)
        finally:
            train_mode(self.algo, self.cfg.training.freeze_bn)
        extra = {}
        if "depth_gt" in batch:
            accumulator = metrics_accumulator(self.cfg, num_cameras=depth.shape[1])
            update_metrics(accumulator, batch, depth)
            extra = summary_scalars(accumulator, self.cfg.eval.scale_modes)
        log_batch(self.logger, "val", self.step, losses=losses, depth=depth, batch=batch, extra=extra,
                  visuals=visuals)
        self.logger.flush()
        metric = " ".join(f"{k.split('/')[0]} abs_rel {v:.3f}" for k, v in extra.items() if k.endswith("/abs_rel"))
        self._note(f"val step {self.step}: loss {float(losses['total']):.4f}" + (f" | {metric}" if metric else ""))

    # ------------------------------------------------------------------------------------------
    # Checkpoints

    def _save(self, name: str) -> None:
        """Checkpoint `name` under data.save_weights_root (rank 0 writes; under DDP every rank
        takes part in comparing the replicas first)."""
        checksums = None
        if self.launch.distributed:
            checksums = [c[0] for c in dist_utils.all_gather_floats([replica_checksum(self.algo)], self.device)]
            if self.is_main and not all(math.isclose(c, checksums[0], rel_tol=1e-9, abs_tol=1e-9) for c in checksums):
                warnings.warn(f"the DDP replicas disagree at step {self.step} (parameter checksums per rank "
                              f"{checksums}); {name} holds rank 0's parameters", RuntimeWarning, stacklevel=2)
        self._last_saved_step = self.step
        if not self.is_main:
            return
        from trainer.checkpoint import save_checkpoint
        state = {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                 "config_name": self.cfg.name, "world_size": self.launch.world_size,
                 "global_batch_size": self.cfg.training.batch_size * self.launch.world_size,
                 "nonfinite_steps": self.nonfinite_total}
        if checksums is not None:
            state["replica_checksums"] = checksums
        folder = save_checkpoint(os.path.join(self.cfg.data.save_weights_root, name), self.algo.networks(),
                                 self.optimizer, self.scheduler, self.scaler, state)
        self._note(f"saved {folder}")


# ----------------------------------------------------------------------------------------------
# Entry


def run_training(launch: dist_utils.Launch, cfg) -> None:
    """One process of a training job (module level, so that spawned processes can import it)."""
    device = dist_utils.device_for(cfg, launch)
    if launch.distributed:
        dist_utils.init_process_group(cfg, launch, device)
    try:
        Trainer(cfg, launch.rank, launch.world_size, launch.local_rank, launch.local_world_size).fit()
    finally:
        dist_utils.destroy_process_group()


def train(cfg) -> None:
    """Train `cfg` in the process layout it asks for (one process, spawned DDP, or torchrun)."""
    dist_utils.launch(run_training, cfg)
