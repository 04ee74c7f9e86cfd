"""Command-line handling shared by the entry points: --config_file, --weight_path, --print_config
and KEY=VALUE overrides, with config errors printed as a message (no traceback) and exit code 2."""

import argparse
import sys
from typing import Optional, Sequence

from utils.config import Config, ConfigError, load_config

DEFAULT_CONFIG = "configs/ddad/ddad_surround_fusion.yaml"


def build_parser(description: str, mode: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=description,
        epilog="Any config key can be overridden as KEY=VALUE, e.g. training.batch_size=4 "
               "ddp.ddp_enable=true; values are read as YAML.")
    parser.add_argument("--config_file", default=DEFAULT_CONFIG, help=f"experiment YAML (default {DEFAULT_CONFIG})")
    parser.add_argument("--weight_path", default=None,
                        help="checkpoint folder (results/<name>/models/weights_<epoch>)"
                             + (" to evaluate" if mode == "eval" else " to start from"))
    parser.add_argument("--print_config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    return parser


def config_from_command_line(description: str, mode: str, argv: Optional[Sequence[str]] = None):
    """Parse arguments and load the config; on a config error print it and exit with status 2.
    Returns (args, cfg). Paths are checked only when the run is really going to start."""
    parser = build_parser(description, mode)
    args = parser.parse_intermixed_args(argv)   # overrides may come before and after the flags
    try:
        cfg = load_config(args.config_file, args.overrides, mode=mode, weight_path=args.weight_path,
                          check_paths=not args.print_config)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2)
    if args.print_config:
        print(cfg.to_yaml(), end="")
        raise SystemExit(0)
    return args, cfg


def describe(cfg: Config) -> str:
    """One line naming what a config runs, for logs."""
    # depth_model / pose_model choose the networks of surround_depth only
    variant = (f" depth_model={cfg.model.depth_model} pose_model={cfg.model.pose_model}"
               if cfg.model.type == "surround_depth" else "")
    return (f"{cfg.name}: model.type={cfg.model.type}{variant} "
            f"dataset={cfg.data.dataset} cameras={cfg.data.num_cams} "
            f"size={cfg.training.height}x{cfg.training.width} mode={cfg.mode}")
