"""Process-group helpers: how a run becomes one or several processes, and which device each uses.

Three ways to run (decided by `launch`):

- one process: `ddp.ddp_enable: false` (or `ddp.world_size: 1`) and no torchrun environment;
- spawned: `ddp.ddp_enable: true` with `ddp.world_size: N` starts N processes on this machine with
  torch.multiprocessing.spawn; the parent picks the rendezvous address (ddp.master_addr /
  ddp.master_port, else $MASTER_ADDR / $MASTER_PORT, else localhost and a free port);
- torchrun: RANK and WORLD_SIZE in the environment (torchrun, SLURM wrappers): the process joins
  that job as its rank and nothing is spawned; this is how a run spans several machines.

The backend is NCCL on GPUs and gloo on the CPU (`ddp.backend: auto`). Every process group gets a
timeout, so a rank that dies while the others wait in a collective ends the job instead of hanging
it; under spawn the parent also terminates the other ranks as soon as one fails and re-raises its
error.
"""

import datetime
import os
import socket
from contextlib import closing
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.distributed as dist

# How long a collective may wait for a missing rank before the job fails (NCCL and gloo).
PROCESS_GROUP_TIMEOUT = datetime.timedelta(minutes=10)


@dataclass(frozen=True)
class Launch:
    """Where this process stands in the job."""
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def torchrun_environment() -> Optional[Launch]:
    """The job described by torchrun's environment variables, or None outside torchrun."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    return Launch(rank, local_rank, world, local_world)


def resolve_backend(cfg) -> str:
    """ddp.backend, with auto = nccl when CUDA is available, else gloo."""
    if cfg.ddp.backend != "auto":
        return cfg.ddp.backend
    return "nccl" if torch.cuda.is_available() else "gloo"


def free_port() -> int:
    """A TCP port that is free on this machine right now."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def rendezvous(cfg) -> tuple:
    """(address, port) for a spawned job: the config, else the environment, else localhost and a
    free port chosen here (in the parent, so that every child gets the same one)."""
    addr = cfg.ddp.master_addr or os.environ.get("MASTER_ADDR") or "localhost"
    port = cfg.ddp.master_port or os.environ.get("MASTER_PORT") or free_port()
    return addr, int(port)


def device_for(cfg, launch: Launch) -> torch.device:
    """cuda:<ddp.gpus[local rank]> when CUDA is available (the local rank itself when ddp.gpus
    lists fewer GPUs than there are local processes), else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    gpus = list(cfg.ddp.gpus)
    index = gpus[launch.local_rank] if launch.local_rank < len(gpus) and len(gpus) >= launch.local_world_size \
        else launch.local_rank
    return torch.device("cuda", index)


def init_process_group(cfg, launch: Launch, device: torch.device) -> None:
    """Join the job's process group (MASTER_ADDR/MASTER_PORT must be in the environment)."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = resolve_backend(cfg)
    if backend == "nccl" and device.type != "cuda":
        raise RuntimeError("ddp.backend: nccl needs GPUs, but CUDA is not available; use ddp.backend=gloo")
    dist.init_process_group(backend=backend, init_method="env://", rank=launch.rank,
                            world_size=launch.world_size, timeout=PROCESS_GROUP_TIMEOUT)


def destroy_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def share_cpu_threads(local_world_size: int) -> None:
    """Give each local process its share of the CPU cores (oversubscribed threads slow all ranks)."""
    if local_world_size > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world_size))


def all_true(flag: bool, device: torch.device) -> bool:
    """True when `flag` is true on every rank (one tiny all-reduce; just `flag` without DDP)."""
    if not (dist.is_available() and dist.is_initialized()):
        return bool(flag)
    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def all_gather_floats(values: Sequence[float], device: torch.device) -> list:
    """Every rank's `values` (same length everywhere), as a list per rank ([values] without DDP)."""
    local = torch.tensor(list(values), dtype=torch.float64, device=device)
    if not (dist.is_available() and dist.is_initialized()):
        return [local.tolist()]
    gathered = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, local)
    return [g.tolist() for g in gathered]


# ----------------------------------------------------------------------------------------------
# Launching


def launch(fn: Callable, cfg, *args) -> None:
    """Run `fn(launch, cfg, *args)` in the process layout the config and environment ask for.

    `fn` must be a module-level function (spawned processes import it by name). It is responsible
    for calling `init_process_group` when `launch.distributed` (see trainer.loop.run_training),
    so that a process that fails before joining still ends the job.
    """
    job = torchrun_environment()
    if job is not None:
        fn(job, cfg, *args)
        return
    world = cfg.ddp.world_size if cfg.ddp.ddp_enable else 1
    if world <= 1:
        fn(Launch(), cfg, *args)
        return
    addr, port = rendezvous(cfg)
    import torch.multiprocessing as mp
    # join=True: the parent waits; when one child raises, the others are terminated and the
    # child's error (with its traceback) is raised here as ProcessRaisedException.
    mp.spawn(_spawned, args=(world, addr, port, fn, cfg, args), nprocs=world, join=True)


def _spawned(rank: int, world: int, addr: str, port: int, fn: Callable, cfg, args) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = addr, str(port)
    os.environ["RANK"], os.environ["WORLD_SIZE"] = str(rank), str(world)
    os.environ["LOCAL_RANK"], os.environ["LOCAL_WORLD_SIZE"] = str(rank), str(world)
    share_cpu_threads(world)
    fn(Launch(rank, rank, world, world), cfg, *args)
