"""Evaluate a trained model against ground truth and print the metric tables.

    python eval.py --config_file=configs/ddad/ddad_surround_fusion.yaml --weight_path=results/ddad_surround_fusion/models/weights_19
    python eval.py --config_file=F --print_config eval.eval_batch_size=2
"""

import sys

from utils.cli import config_from_command_line, describe


def main(argv=None) -> int:
    _, cfg = config_from_command_line(__doc__.strip().splitlines()[0], mode="eval", argv=argv)
    print(describe(cfg))
    print("error: the evaluation loop is not part of this version yet (config loaded and "
          "validated; use --print_config to see it)", file=sys.stderr)
    return 3


if __name__ == "__main__":
    sys.exit(main())
