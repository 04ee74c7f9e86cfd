"""`make demo`: the main job on the embedded default.

Renders the synthetic DDAD world on first use (data/synthetic/ddad, about a minute on 2 cores),
reads one validation sample through the DDAD loader exactly as real DDAD data is read, prints it
and writes a preview picture (results/ddad_surround_fusion/inspect/val_0.png). Training on it
arrives with the trainer; every shipped config is validated as well.
"""

import glob
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tools import inspect_dataset  # noqa: E402
from utils.cli import describe  # noqa: E402
from utils.config import ConfigError, load_config  # noqa: E402

DEMO_CONFIG = os.path.join("configs", "synthetic", "ddad_surround_fusion.yaml")


def validate_shipped_configs() -> int:
    configs = sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True))
    failures = 0
    print(f"{len(configs)} experiment configs in configs/:", file=sys.stderr)
    for path in configs:
        try:
            print("  " + describe(load_config(path)), file=sys.stderr)
        except ConfigError as err:
            failures += 1
            print(f"  {os.path.relpath(path, ROOT)}: {err}", file=sys.stderr)
    return failures


def main() -> int:
    os.chdir(ROOT)                       # configs name their data relative to the project root
    if validate_shipped_configs():
        return 1
    status = inspect_dataset.main([f"--config_file={DEMO_CONFIG}", "--split=val", "--index=0"])
    print("The trainer is not part of this version yet: the demo stops after reading the data.", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
