"""The unified trainer: training loop (loop.py), DDP process handling (distributed.py), optimizer
and schedule (optim.py), checkpoints (checkpoint.py), TensorBoard logging (logger.py) and the
evaluation loop (evaluate.py); plus the command-line glue shared by train.py and eval.py.

Submodules are imported on use: `import trainer` stays cheap.
"""

import argparse
import os
import re
import sys
import traceback
from typing import Optional, Sequence, Tuple

DEBUG_ENV = "SFDEPTH_DEBUG"   # SFDEPTH_DEBUG=1: full tracebacks instead of one-line errors


def command_line(description: str, mode: str, argv: Optional[Sequence[str]],
                 flags: Sequence[Tuple[str, str]] = ()) -> tuple:
    """utils.cli.config_from_command_line with extra boolean flags of one entry point
    (`flags`: (name, help) pairs such as ("--save_vis", "...")). Returns (args, cfg) where `args`
    also holds the extra flags."""
    from utils.cli import build_parser, config_from_command_line

    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argparse.ArgumentParser(add_help=False)
    for name, text in flags:
        extra.add_argument(name, action="store_true", help=text)
    known, rest = extra.parse_known_args(argv)
    if "-h" in rest or "--help" in rest:
        parser = build_parser(description, mode)
        for name, text in flags:
            parser.add_argument(name, action="store_true", help=text)
        parser.print_help()
        raise SystemExit(0)
    args, cfg = config_from_command_line(description, mode, rest)
    for key, value in vars(known).items():
        setattr(args, key, value)
    return args, cfg


def error_line(error: BaseException) -> str:
    """A one-line description of `error`; for an error raised in a spawned DDP process, the
    child's own exception line (torch.multiprocessing wraps it with the child's traceback)."""
    text = str(error)
    if "Traceback (most recent call last):" in text:
        lines = text.splitlines()
        start = max(i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last):"))
        rank = next((m.group(1) for m in map(re.compile(r"^-- Process (\d+) terminated").match, lines) if m), None)
        tail = next((line for line in lines[start + 1:] if line and not line.startswith(" ")), "")
        if tail:
            return (f"rank {rank}: " if rank is not None else "") + tail
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def report_error(error: BaseException) -> int:
    """Print the error (one line, or the traceback with SFDEPTH_DEBUG=1); returns exit status 1."""
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        traceback.print_exception(type(error), error, error.__traceback__)
    else:
        print(f"error: {error_line(error)}\n(set {DEBUG_ENV}=1 for the full traceback)", file=sys.stderr)
    return 1


def run_reporting_errors(job) -> int:
    """Exit status of an entry point running `job()`: 0 when it returns, 130 on Ctrl-C, 1 with a
    one-line message (report_error) for any other failure."""
    try:
        job()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001  (one line per failure, whatever it is)
        return report_error(error)
    return 0
