"""`make demo`: the main job on the embedded default.

Renders the synthetic DDAD world on first use (data/synthetic/ddad, about a minute on 2 cores),
reads one validation sample through the DDAD loader exactly as real DDAD data is read and writes a
preview picture (results/ddad_surround_fusion/inspect/val_0.png), then trains VFDepth's surround
fusion model on it for the config's short schedule on the CPU (random initialisation: nothing to
download), evaluates it, printing the metric tables (results/ddad_surround_fusion/eval/metrics.json),
and renders the novel-view depth sweep of one sample (results/ddad_surround_fusion/syn_results/).
Every shipped config is validated first.
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
DEMO_OVERRIDES = ["model.weights_init=false"]


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
    status = inspect_dataset.main([f"--config_file={DEMO_CONFIG}", "--split=val", "--index=0"] + DEMO_OVERRIDES)
    if status:
        return status
    import eval as eval_entry
    import train as train_entry
    status = train_entry.main([f"--config_file={DEMO_CONFIG}"] + DEMO_OVERRIDES)
    if status:
        return status
    cfg = load_config(DEMO_CONFIG, DEMO_OVERRIDES)
    last = os.path.join(cfg.data.save_weights_root, f"weights_{cfg.training.num_epochs - 1}")
    return eval_entry.main([f"--config_file={DEMO_CONFIG}", f"--weight_path={last}"] + DEMO_OVERRIDES)


if __name__ == "__main__":
    sys.exit(main())
