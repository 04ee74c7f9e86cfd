"""Measure the data path of a config: how many images per second its loader delivers.

    python tools/benchmark.py --config_file=configs/synthetic/ddad_surround_fusion.yaml [--split train]
        [--batches N] [--workers W] [--json OUT] [KEY=VALUE ...]

Builds the dataset of the config, runs one warm-up batch, then times N batches through a
DataLoader with the config's batch size and `training.num_workers` (or --workers), and prints and
optionally writes JSON: images/s (frames x cameras x samples), samples/s, the median time per
batch, the machine and the PyTorch version. Timings belong here, never in tests.
"""

import argparse
import json
import os
import platform
import statistics
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
    parser.add_argument("--split", default="train", choices=("train", "val", "eval"))
    parser.add_argument("--batches", type=int, default=10, help="timed batches after one warm-up batch")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default training.num_workers)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
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


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config_file, args.overrides, check_paths=True)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
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
