"""Train a model described by a YAML config.

    python train.py --config_file=configs/ddad/ddad_surround_fusion.yaml [KEY=VALUE ...]
    python train.py --config_file=F --print_config training.batch_size=4
"""

import sys

from utils.cli import config_from_command_line, describe


def main(argv=None) -> int:
    _, cfg = config_from_command_line(__doc__.strip().splitlines()[0], mode="train", argv=argv)
    print(describe(cfg))
    print("error: the trainer is not part of this version yet (config loaded and validated; "
          "use --print_config to see it)", file=sys.stderr)
    return 3


if __name__ == "__main__":
    sys.exit(main())
