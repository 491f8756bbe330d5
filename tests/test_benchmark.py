import json
import os
import subprocess
import sys

from conftest import ROOT


def test_quick_start_prints_ratios_to_fp32_and_the_reason_for_points_not_run(tmp_path):
    out = subprocess.run([sys.executable, "-m", "train.benchmark", "--precisions", "fp32", "bf16", "tf32",
                          "--steps", "3", "--warmup-steps", "1", "--batch-size", "8", "--device", "cpu",
                          "--out-dir", str(tmp_path), "--wandb-mode", "offline"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    table = out.stdout[out.stdout.index("depth  precision"):]
    rows = {line.split()[1]: line.split() for line in table.splitlines()[2:5]}
    assert rows["fp32"][4] == "1.00x" and rows["fp32"][-1] == "1.00x"
    assert rows["bf16"][-1] in ("0.50x", "0.51x")  # pure bf16 weights and momentum: half the checkpoint
    assert rows["tf32"][3] == "-"
    assert "tf32 (resnet18, device): precision tf32 cannot run on cpu" in table
    runs = [d for d in os.listdir(tmp_path) if d.startswith("r18-")]
    assert len(runs) == 2 and all(os.path.exists(tmp_path / d / "checkpoint.pt") for d in runs)
    # Each point ran in its own process, so its memory figure is its own peak RSS, not one shared by all points.
    assert "peak RSS MiB" in table.splitlines()[0]
    for run in runs:
        result = json.load(open(tmp_path / run / "result.json"))
        assert rows[result["precision"]][6] == f"{result['mem/rss_peak_bytes'] / 2**20:,.0f}"
