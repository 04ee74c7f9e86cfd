"""tools/benchmark.py: the loader throughput figures are computed from what the loader delivered."""

import json
import os

from tools import benchmark

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "synthetic", "ddad_surround_fusion.yaml")


def test_loader_throughput_report(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)              # the demo config names its data relative to the project root
    out = tmp_path / "bench.json"
    status = benchmark.main([f"--config_file={CONFIG}", "--loader", "--split=val", "--batches=2", "--workers=0",
                             f"--json={out}", "eval.eval_batch_size=2"])
    assert status == 0
    result = json.loads(out.read_text())
    assert result["batch_size"] == 2 and result["batches_timed"] == 2
    assert result["images_per_batch"] == 2 * 3 * 6          # batch x frames x cameras
    assert result["images_per_s"] > 0
    assert abs(result["images_per_s"] * result["batch_time_s"] - result["images_per_batch"]) < 1e-6


def test_config_errors_exit_2(capsys):
    assert benchmark.main([f"--config_file={CONFIG}", "traning.batch_size=2"]) == 2
    assert "did you mean 'training.batch_size'?" in capsys.readouterr().err
