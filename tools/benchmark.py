"""Measure what a config costs: one training step of its model, or its data loader, or the scene-flow
correlation.

    python tools/benchmark.py --config_file=F [--steps N] [--profile] [--json OUT] [--device cpu|cuda] [KEY=VALUE ...]
    python tools/benchmark.py --config_file=F --loader [--split S] [--batches N] [--workers W] [--rounds R] [--json OUT]
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
Seconds per batch: the median over passes of the mean over a pass's timed batches.
For ddad and nuscenes it is measured against the plain path (frames decoded at full size, then
resized; no cache), interleaved in ``--rounds`` rounds over the same items: ``plain_images_per_s``,
``reduced_images_per_s`` (reduced-size decoding), with ``data.cache_dir`` also
``cache_cold_images_per_s`` (the first pass, filling a fresh cache) and ``cache_warm_images_per_s``,
and the ``speedup_*`` ratios over plain; ``images_per_s`` is the configured loader (warm cache, or
reduced decoding). Colour jitter runs where ``data.color_aug_on_device`` says, the same in every
variant. To time it at the real datasets' image sizes, see tools/real_size_data.py.

Timings belong here, never in tests. Shared machines drift: repeat a measurement and report the
median with the time of day.
"""

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torch.utils.data import DataLoader, Subset  # noqa: E402

from dataset.build import build_dataset  # noqa: E402
from utils.cli import DEFAULT_CONFIG  # noqa: E402
from utils.config import ConfigError, load_config  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--config_file", default=DEFAULT_CONFIG)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps after one warm-up step")
    parser.add_argument("--eval_repeats", type=int, default=3, help="timed evaluation forwards")
    parser.add_argument("--profile", action="store_true", help="add the per-stage breakdown of one step")
    parser.add_argument("--plain", action="store_true",
                        help="fusion models: use the plain formulation (dense back-projection of every voxel in every "
                             "camera, grid_sample projection), the reference's way, for the ratio to the optimised one")
    parser.add_argument("--in_process", action="store_true",
                        help="measure in this process (default: a fresh one, so that peak memory is the step's)")
    parser.add_argument("--loader", action="store_true", help="time the config's DataLoader instead of a step")
    parser.add_argument("--split", default="train", choices=("train", "val", "eval"))
    parser.add_argument("--batches", type=int, default=10, help="--loader: timed batches after one warm-up batch")
    parser.add_argument("--workers", type=int, default=None,
                        help="--loader: DataLoader workers (default training.num_workers)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="--loader: interleaved passes of each variant (plain, reduced, cached)")
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


# ----------------------------------------------------------------------------------------------
# The data loader: the configured (fast) path against plain full-size decoding

# How a rig dataset (ddad, nuscenes) reads its frames in each variant: (reduced_decode, cached).
# "plain" is the path the fast one is measured against: full-size decoding, then the resize.
LOADER_VARIANTS = {"plain": (False, False), "reduced": (True, False), "cache": (True, True)}


def _loader_subset(dataset, count: int) -> Subset:
    """`count` items spread evenly over the dataset (all when it has fewer): every pass of every
    variant reads the same items, so the cache is warm after its first pass."""
    count = min(count, len(dataset))
    indices = torch.linspace(0, len(dataset) - 1, count).round().long().unique().tolist() if count else []
    return Subset(dataset, indices)


def _time_pass(dataset, subset, variant, cache_dir, batch_size: int, workers: int, batches: int, shuffle: bool):
    """One pass of `variant` over `subset`: (seconds per timed batch, images per batch). A rig
    dataset is switched to the variant's frame reading first (workers fork with it); any other
    dataset (variant "configured") is read as it is."""
    if variant in LOADER_VARIANTS:
        reduced_decode, cached = LOADER_VARIANTS[variant]
        dataset.set_frame_reading(reduced_decode, cache_dir if cached else None)
    loader = DataLoader(subset, batch_size=batch_size, shuffle=shuffle, num_workers=workers, drop_last=False,
                        persistent_workers=False)
    return time_loader(loader, batches)


def measure_loader(dataset, batch_size: int, workers: int, batches: int, rounds: int, shuffle: bool,
                   cache_dir=None) -> dict:
    """Seconds per batch of each variant, measured interleaved: `rounds` rounds of one pass per
    variant (so that the load of a shared machine affects them alike), over the same
    (batches + 1) * batch_size items. With `cache_dir` (an empty folder) the cache is filled by a
    first pass, timed as "cache_cold", and read in every round as "cache_warm"."""
    subset = _loader_subset(dataset, (batches + 1) * batch_size)
    rig = hasattr(dataset, "set_frame_reading")
    order = (["plain", "reduced"] + (["cache"] if cache_dir else [])) if rig else ["configured"]
    times = {}
    images_per_batch = 0

    def run(variant, name):
        nonlocal images_per_batch
        durations, images_per_batch = _time_pass(dataset, subset, variant, cache_dir, batch_size, workers,
                                                 batches, shuffle)
        times.setdefault(name, []).append(durations)

    if "cache" in order:
        run("cache", "cache_cold")
    for _ in range(rounds):
        for variant in order:
            run(variant, "cache_warm" if variant == "cache" else variant)
    return {"images_per_batch": images_per_batch, "passes": times}


def _variant_summary(passes, images_per_batch: int) -> dict:
    """A variant's seconds per batch: the median over its passes of each pass's mean. (Not the
    median of single batches: with several workers the batches arrive in bursts, one slow, the
    next ready at once, and such a median picks either.)"""
    per_pass = [sum(one_pass) / len(one_pass) for one_pass in passes if one_pass]
    batch_time = statistics.median(per_pass)
    return {"batch_time_s": batch_time, "images_per_s": images_per_batch / batch_time,
            "pass_batch_time_s": per_pass, "batch_times_s": [d for one_pass in passes for d in one_pass]}


def _ratio(a, b):
    return a / b if a is not None and b else None


def loader_report(cfg, args, dataset, batch_size: int, workers: int, cache_dir) -> dict:
    """The loader figures of one run: the existing keys describe the configured loader (warm cache
    with data.cache_dir, reduced decoding otherwise), the new ones each variant and its speed-up
    over the plain path."""
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    measured = measure_loader(dataset, batch_size, workers, args.batches, args.rounds, args.split == "train", cache_dir)
    variants = {name: _variant_summary(passes, measured["images_per_batch"])
                for name, passes in measured["passes"].items()}
    fast = "cache_warm" if "cache_warm" in variants else "reduced" if "reduced" in variants else "configured"
    plain = variants.get("plain", {}).get("images_per_s")

    def rate(name):
        return variants.get(name, {}).get("images_per_s")

    return {
        "config": cfg.name, "dataset": cfg.data.dataset, "split": args.split, "batch_size": batch_size,
        "num_workers": workers, "image_hw": [cfg.training.height, cfg.training.width],
        "images_per_batch": measured["images_per_batch"],
        "batches_timed": min(len(p) for p in measured["passes"][fast]),
        "batch_time_s": variants[fast]["batch_time_s"], "images_per_s": rate(fast),
        "samples_per_s": batch_size / variants[fast]["batch_time_s"],
        "fast_path": fast, "rounds": args.rounds, "started": started,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "plain_images_per_s": plain, "reduced_images_per_s": rate("reduced"),
        "cache_cold_images_per_s": rate("cache_cold"), "cache_warm_images_per_s": rate("cache_warm"),
        "speedup": _ratio(rate(fast), plain), "speedup_reduced": _ratio(rate("reduced"), plain),
        "speedup_cache_cold": _ratio(rate("cache_cold"), plain),
        "speedup_cache_warm": _ratio(rate("cache_warm"), plain),
        "variants": variants, "cache_dir": cfg.data.cache_dir, "color_aug_on_device": cfg.data.color_aug_on_device,
        "torch": torch.__version__, "device": "cpu", "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
    }


def loader_main(args, cfg) -> int:
    """--loader: the figures of loader_report, printed and written to --json. The cache variants use
    a fresh folder inside data.cache_dir (removed afterwards), so that "cold" is cold and an
    existing cache is left alone."""
    if args.batches < 1 or args.rounds < 1:
        print(f"error: --batches and --rounds must be at least 1, got {args.batches} and {args.rounds}",
              file=sys.stderr)
        return 2
    dataset = build_dataset(cfg, args.split)
    workers = cfg.training.num_workers if args.workers is None else args.workers
    batch_size = cfg.training.batch_size if args.split == "train" else cfg.eval.eval_batch_size
    if len(dataset) <= batch_size:
        print(f"error: the {args.split} set of {cfg.name} has fewer than 2 batches; nothing to time", file=sys.stderr)
        return 1
    threads, cache_dir = torch.get_num_threads(), None
    if workers == 0:
        torch.set_num_threads(1)                # read as a DataLoader worker reads: one thread
    if cfg.data.cache_dir and hasattr(dataset, "set_frame_reading"):
        os.makedirs(cfg.data.cache_dir, exist_ok=True)
        cache_dir = tempfile.mkdtemp(prefix="benchmark-", dir=cfg.data.cache_dir)
    try:
        result = loader_report(cfg, args, dataset, batch_size, workers, cache_dir)
    finally:
        torch.set_num_threads(threads)
        if cache_dir:
            shutil.rmtree(cache_dir, ignore_errors=True)
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


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


def measure_step(cfg, steps: int, eval_repeats: int, profile: bool, device: torch.device, plain: bool = False) -> dict:
    """Median seconds of a training step and of an evaluation forward, in this process.
    plain: the fusion modules compute the plain formulation (same values, the reference's cost)."""
    from torch.profiler import ProfilerActivity, profile as torch_profile, record_function

    from models import build_model
    from trainer.evaluate import autocast
    from trainer.optim import build_optimizer

    torch.manual_seed(cfg.training.seed)
    generator = torch.Generator().manual_seed(cfg.training.seed)
    model = build_model(cfg, device).train()
    fusion_modules = [m for m in model.modules() if hasattr(m, "plain")]
    if plain and not fusion_modules:
        raise ValueError("--plain: the model of this config has no volumetric fusion")
    for module in fusion_modules:
        module.plain = plain
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
        command += ["--plain"] if args.plain else []
        command += [f"--device={args.device}"] if args.device else []
        command += [f"--json={args.json}"] if args.json else []
        return subprocess.call(command + list(args.overrides))
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    result = {"config": cfg.name, "model": cfg.model.type, "depth_model": cfg.model.depth_model,
              "pose_model": cfg.model.pose_model, "batch_size": cfg.training.batch_size,
              "num_cams": len(cfg.data.cameras), "image_hw": [cfg.training.height, cfg.training.width],
              "amp": cfg.training.amp, "activation_checkpointing": cfg.training.activation_checkpointing,
              "plain": args.plain, "started": started}
    result.update(measure_step(cfg, args.steps, args.eval_repeats, args.profile, device, args.plain))
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
    return loader_main(args, cfg)


if __name__ == "__main__":
    sys.exit(main())
