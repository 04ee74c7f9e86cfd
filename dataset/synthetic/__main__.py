"""Command line: render synthetic driving scenes and write them in a real dataset format.

    python -m dataset.synthetic --format {ddad,nuscenes,kitti_raw,kitti_2015,davis} --out DIR
                                [--scenes N] [--frames N] [--height H --width W] [--seed S]
                                [--if-missing] [--quiet]

The preset follows the format: ddad -> "ddad" (6 cameras, 10 Hz), nuscenes -> "nuscenes"
(6 cameras, 12 Hz), kitti_raw / kitti_2015 / davis -> "kitti" (stereo pair, 10 Hz). Scene k is
rendered with ``scene_index = k`` and ``seed``. Without --height/--width the preset's own image
size is used. Without ``--if-missing`` the files are written into DIR as it is (files of an
earlier, larger run are not removed); with it, DIR is (re)generated as a whole, and only when it
lacks the completion marker of an identical earlier run (what :func:`ensure_synthetic_dataset`
does for configs; it refuses to replace a non-empty folder it did not generate).
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import List, Optional

from dataset.synthetic.writers.generate import (
    DEFAULT_FRAMES,
    FORMATS,
    check_parameters,
    ensure_synthetic_dataset,
    generate_synthetic_dataset,
)

__all__ = ["main", "build_parser", "ensure_synthetic_dataset"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dataset.synthetic",
        description="Render synthetic driving scenes and write them in a real on-disk dataset format.")
    parser.add_argument("--format", required=True, choices=FORMATS, help="dataset format to write")
    parser.add_argument("--out", required=True, help="output folder (the dataset root)")
    parser.add_argument("--scenes", type=_positive_int, default=1, help="number of scenes (default 1)")
    parser.add_argument("--frames", type=_positive_int, default=None,
                        help="frames per scene (default: " + ", ".join(f"{k} {v}" for k, v in DEFAULT_FRAMES.items()) + ")")
    parser.add_argument("--height", type=_positive_int, default=None, help="image height (default: the preset's)")
    parser.add_argument("--width", type=_positive_int, default=None, help="image width (default: the preset's)")
    parser.add_argument("--seed", type=int, default=0, help="world seed (default 0)")
    parser.add_argument("--if-missing", action="store_true",
                        help="do nothing if --out already holds this dataset with the same parameters")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        frames = check_parameters(args.format, args.scenes, args.frames, args.height, args.width)
    except ValueError as error:
        parser.error(str(error))
    start = time.perf_counter()
    if args.if_missing:
        path = ensure_synthetic_dataset(args.format, args.out, args.scenes, frames, args.height, args.width,
                                        args.seed, progress=not args.quiet)
        message = f"{args.format}: {path} is ready"
    else:
        summary = generate_synthetic_dataset(args.format, args.out, args.scenes, frames, args.height, args.width,
                                             args.seed, progress=not args.quiet)
        message = f"{args.format}: wrote {len(summary['files'])} files under {summary['root']}"
    if not args.quiet:
        print(f"{message} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
