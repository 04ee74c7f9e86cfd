"""`make demo`: the main job on the embedded default.

The synthetic world (the embedded default dataset) and the trainer are not part of this version
yet, so the demo validates every shipped experiment config and prints what each one would run.
"""

import glob
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.cli import describe  # noqa: E402
from utils.config import ConfigError, load_config  # noqa: E402


def main() -> int:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    configs = sorted(glob.glob(os.path.join(root, "configs", "**", "*.yaml"), recursive=True))
    failures = 0
    print(f"{len(configs)} experiment configs in configs/:")
    for path in configs:
        try:
            print("  " + describe(load_config(path)))
        except ConfigError as err:
            failures += 1
            print(f"  {os.path.relpath(path, root)}: {err}")
    print("Training on the synthetic world is not available yet; see the README for the commands.")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
