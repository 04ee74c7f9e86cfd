"""Measure what a config costs: one training step of its model, or its data loader, or the scene-flow
correlation.

    python tools/benchmark.py --config_file=F [--steps N] [--profile] [--json OUT] [--device cpu|cuda] [KEY=VALUE ...]
    python tools/benchmark.py --config_file=F --loader [--split train] [--batches N] [--workers W] [--json OUT]
    python tools/benchmark.py --correlation [--repeats N] [--device cpu|cuda] [--json OUT]

Training step (the default): builds the model of the config on random inputs of the config's
shapes (the synthetic rig of its dataset gives realistic intrinsics and extrinsics; no dataset is
read), and in a fresh process runs one warm-up step and N timed steps (forward, losses, backward,
Adam), then times the depth prediction in evaluation mode. Prints and writes JSON with
``step_time_s`` (median), ``peak_rss_mb`` (the fresh process's peak resident memory),
``forward_eval_time_s`` (median), the parameter counts, the device and the PyTorch version;
``--profile`` adds ``stages``: seconds per stage of one step (encoders, back-projection, fusion
convolutions, projection to images, decoder, view rendering and losses, backward, optimizer step),
from torch.profiler's record_function scopes in the models.

Loader (``--loader``): images per second of the config's DataLoader (frames x cameras x samples).

Timings belong here, never in tests. Shared machines drift: repeat a measurement and report the
median with the time of day.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from dataset.build import build_dataset  # noqa: E402
from utils.cli import DEFAULT_CONFIG  # noqa: E402
from utils.config import ConfigError, load_config  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--config_file", default=DEFAULT_CONFIG)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps after one warm-up step")
    parser.add_argument("--eval_repeats", type=int, default=3, help="timed evaluation forwards")
    parser.add_argument("--profile", action="store_true", help="add the per-stage breakdown of one step")
    parser.add_argument("--in_process", action="store_true",
                        help="measure in this process (default: a fresh one, so that peak memory is the step's)")
    parser.add_argument("--loader", action="store_true", help="time the config's DataLoader instead of a step")
    parser.add_argument("--split", default="train", choices=("train", "val", "eval"))
    parser.add_argument("--batches", type=int, default=10, help="--loader: timed batches after one warm-up batch")
    parser.add_argument("--workers", type=int, default=None,
                        help="--loader: DataLoader workers (default training.num_workers)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--correlation", action="store_true",
                        help="time the scene flow correlation instead of a loader: the batched version against "
                             "the loop over the 81 displacements, at the 4 decoder levels of a 256x832 input")
    parser.add_argument("--repeats", type=int, default=7, help="--correlation: timed runs per case (median)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    return parser.parse_args(argv)


def time_loader(loader, batches: int):
    """Seconds per batch for `batches` batches after one warm-up batch, and the images per batch."""
    iterator = iter(loader)
    first = next(iterator)                      # warm-up: workers start, caches fill
    images_per_batch = first["image"].shape[:3].numel()
    durations = []
    start = time.perf_counter()
    for _ in range(batches):
        try:
            next(iterator)
        except StopIteration:
            break
        now = time.perf_counter()
        durations.append(now - start)
        start = now
    return durations, images_per_batch


# The four decoder levels of multi-mono-sf for a 256x832 input: (channels, height, width).
CORRELATION_LEVELS = ((192, 8, 26), (128, 16, 52), (96, 32, 104), (64, 64, 208))


def _median_ms(fn, repeats: int, sync) -> float:
    fn()                                        # warm-up (allocations, kernels)
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def benchmark_correlation(repeats: int = 7, device: str = "cpu", search_range: int = 4) -> dict:
    """Median milliseconds of network.correlation (batched) and network.correlation_loop (81
    displacements) per decoder level of a 256x832 input, forward and forward + backward, on a batch
    of 2 (the model correlates both time directions at once), with the largest difference."""
    from network.correlation import correlation, correlation_loop
    device = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    generator = torch.Generator().manual_seed(0)
    levels = []
    for channels, height, width in CORRELATION_LEVELS:
        f1 = torch.randn(2, channels, height, width, generator=generator).to(device).requires_grad_(True)
        f2 = torch.randn(2, channels, height, width, generator=generator).to(device).requires_grad_(True)
        row = {"channels": channels, "height": height, "width": width}
        with torch.no_grad():
            row["max_abs_difference"] = float((correlation(f1, f2, search_range)
                                               - correlation_loop(f1, f2, search_range)).abs().max())
        for name, fn in (("vectorised", correlation), ("loop", correlation_loop)):
            def forward(fn=fn):
                with torch.no_grad():
                    fn(f1, f2, search_range)

            def forward_backward(fn=fn):
                fn(f1, f2, search_range).sum().backward()
            row[f"{name}_forward_ms"] = _median_ms(forward, repeats, sync)
            row[f"{name}_forward_backward_ms"] = _median_ms(forward_backward, repeats, sync)
        row["speedup_forward"] = row["loop_forward_ms"] / row["vectorised_forward_ms"]
        row["speedup_forward_backward"] = row["loop_forward_backward_ms"] / row["vectorised_forward_backward_ms"]
        levels.append(row)
    total = {key: sum(row[key] for row in levels) for key in
             ("vectorised_forward_ms", "loop_forward_ms", "vectorised_forward_backward_ms", "loop_forward_backward_ms")}
    return {"benchmark": "correlation", "search_range": search_range, "input_hw": [256, 832], "batch": 2,
            "repeats": repeats, "levels": levels, "total": total, "torch": torch.__version__, "device": str(device),
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "machine": platform.processor() or platform.machine()}


# ----------------------------------------------------------------------------------------------
# One training step on random inputs


def _rig_preset(dataset: str) -> str:
    return {"ddad": "ddad", "nuscenes": "nuscenes"}.get(dataset, "kitti")


def random_batch(cfg, batch_size: int, generator: torch.Generator) -> dict:
    """A batch of the data contract with the config's shapes: random images, the synthetic rig of
    the config's dataset (cameras as in data.cameras, at training.height x width), all-ones masks."""
    from dataset.synthetic.rig import get_rig
    h, w = cfg.training.height, cfg.training.width
    rig = get_rig(_rig_preset(cfg.data.dataset), image_hw=(h, w))
    n = len(cfg.data.cameras)
    if n > rig.num_cameras:
        raise ValueError(f"data.cameras: {n} cameras, but the synthetic {rig.name} rig has {rig.num_cameras}")
    frame_ids = list(cfg.data.frame_ids)
    t = len(frame_ids)
    image = torch.rand(batch_size, t, n, 3, h, w, generator=generator)
    return {
        "image": image, "image_aug": image.clone(),
        "K": torch.from_numpy(rig.K[:n]).float().expand(batch_size, n, 3, 3).clone(),
        "extrinsics": torch.from_numpy(rig.T_rig_cam[:n]).float().expand(batch_size, n, 4, 4).clone(),
        "mask": torch.ones(batch_size, n, 1, h, w),
        "frame_ids": torch.tensor(frame_ids).expand(batch_size, t).clone(),
    }


STAGES = ("encoders", "back-projection", "fusion convolutions", "projection to images", "decoder",
          "view rendering and losses", "backward", "optimizer step")


def _stage_seconds(profiler) -> dict:
    """Wall seconds of the record_function scopes named in STAGES (their CPU totals)."""
    totals = {name: 0.0 for name in STAGES}
    for event in profiler.key_averages():
        if event.key in totals:
            totals[event.key] += event.cpu_time_total / 1e6
    return totals


def measure_step(cfg, steps: int, eval_repeats: int, profile: bool, device: torch.device) -> dict:
    """Median seconds of a training step and of an evaluation forward, in this process."""
    from torch.profiler import ProfilerActivity, profile as torch_profile, record_function

    from models import build_model
    from trainer.evaluate import autocast
    from trainer.optim import build_optimizer

    torch.manual_seed(cfg.training.seed)
    generator = torch.Generator().manual_seed(cfg.training.seed)
    model = build_model(cfg, device).train()
    if cfg.training.channels_last:                                # as the trainer does
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg, model)
    batch = {k: v.to(device) for k, v in random_batch(cfg, cfg.training.batch_size, generator).items()}
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)

    def step():
        with autocast(cfg, device):
            outputs = model(batch)
            with record_function("view rendering and losses"):
                losses = model.compute_losses(batch, outputs)
        optimizer.zero_grad(set_to_none=True)
        with record_function("backward"):
            losses["total"].backward()
        with record_function("optimizer step"):
            optimizer.step()
        sync()

    step()                                                        # warm-up: caches, allocator, kernels
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    result = {"step_time_s": statistics.median(times), "step_times_s": times}
    if profile:
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with torch_profile(activities=activities) as prof:
            start = time.perf_counter()
            step()
            wall = time.perf_counter() - start
        stages = _stage_seconds(prof)
        stages["other"] = max(0.0, wall - sum(stages.values()))
        result["stages"] = stages
        result["profiled_step_time_s"] = wall
    model.eval()
    eval_times = []
    with torch.no_grad():
        for _ in range(eval_repeats + 1):
            start = time.perf_counter()
            with autocast(cfg, device):
                model.predict(batch, model(batch))
            sync()
            eval_times.append(time.perf_counter() - start)
    result["forward_eval_time_s"] = statistics.median(eval_times[1:])
    result["params"] = {name: sum(p.numel() for p in net.parameters()) for name, net in model.networks().items()}
    return result


def step_main(args, cfg) -> int:
    """The training-step benchmark, in a fresh process unless --in_process."""
    if not args.in_process:
        command = [sys.executable, os.path.abspath(__file__), f"--config_file={args.config_file}", "--in_process",
                   f"--steps={args.steps}", f"--eval_repeats={args.eval_repeats}"]
        command += ["--profile"] if args.profile else []
        command += [f"--device={args.device}"] if args.device else []
        command += [f"--json={args.json}"] if args.json else []
        return subprocess.call(command + list(args.overrides))
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    result = {"config": cfg.name, "model": cfg.model.type, "depth_model": cfg.model.depth_model,
              "pose_model": cfg.model.pose_model, "batch_size": cfg.training.batch_size,
              "num_cams": len(cfg.data.cameras), "image_hw": [cfg.training.height, cfg.training.width],
              "amp": cfg.training.amp, "started": started}
    result.update(measure_step(cfg, args.steps, args.eval_repeats, args.profile, device))
    # ru_maxrss is in KiB on Linux: the peak of this fresh process, model and all
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        result["peak_cuda_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        result["gpu"] = torch.cuda.get_device_name(device)
    result.update({"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
                   "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine()})
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.correlation:
        result = benchmark_correlation(args.repeats, args.device or "cpu")
        print(json.dumps(result, indent=2))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=2)
        return 0
    try:
        cfg = load_config(args.config_file, args.overrides, check_paths=args.loader)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not args.loader:
        return step_main(args, cfg)
    dataset = build_dataset(cfg, args.split)
    workers = cfg.training.num_workers if args.workers is None else args.workers
    batch_size = cfg.training.batch_size if args.split == "train" else cfg.eval.eval_batch_size
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=args.split == "train", num_workers=workers,
                        drop_last=False, persistent_workers=False)
    durations, images_per_batch = time_loader(loader, args.batches)
    if not durations:
        print(f"error: the {args.split} set of {cfg.name} has fewer than 2 batches; nothing to time", file=sys.stderr)
        return 1
    per_batch = statistics.median(durations)
    result = {
        "config": cfg.name, "dataset": cfg.data.dataset, "split": args.split, "batch_size": batch_size,
        "num_workers": workers, "image_hw": [cfg.training.height, cfg.training.width],
        "images_per_batch": images_per_batch, "batches_timed": len(durations),
        "batch_time_s": per_batch, "images_per_s": images_per_batch / per_batch,
        "samples_per_s": batch_size / per_batch, "torch": torch.__version__, "device": "cpu",
        "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
