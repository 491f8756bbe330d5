import json
import os
import subprocess
import sys

from conftest import ROOT
from train.benchmark import bare_table, paired, point_of, spread, table


def _bench(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "train.benchmark", "--steps", "2", "--warmup-steps", "1",
                           "--batch-size", "4", "--device", "cpu", "--out-dir", str(tmp_path), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_quick_start_interleaves_rounds_prints_ratios_with_their_range_and_the_reason_for_points_not_run(tmp_path):
    out = _bench(tmp_path, "--precisions", "fp32", "tf32", "--rounds", "2", "--bare", "--wandb-mode", "offline")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    # Interleaved: round 1 runs every point (the runner and its bare loop) before round 2 runs any.
    marks = [line.split(",")[0] for line in text.splitlines() if line.startswith("== round")]
    assert marks == ["== round 1/2"] * 2 + ["== round 2/2"] * 2
    table_text = text[text.index("depth  precision"):]
    rows = {line.split()[1]: line.split() for line in table_text.splitlines()[2:4]}
    assert rows["fp32"][5:7] == ["1.00x", "[1.00-1.00]"] and rows["fp32"][-1] == "1.00x"  # median [min-max]
    assert rows["tf32"][4] == "-"
    assert "tf32 (resnet18, device, compile none): precision tf32 cannot run on cpu" in table_text
    bare = text[text.index("runner/bare (step)"):].splitlines()[2].split()
    assert bare[:4] == ["18", "fp32", "device", "none"] and bare[4].endswith("x") and bare[5].startswith("[")
    assert "goal >= 0.97" in text
    assert "AVX512-BF16" in text and "AMX-BF16" in text  # CPU ratios name the features they depend on
    runs = [d for d in os.listdir(tmp_path) if d.startswith("r18-")]
    assert len(runs) == 2 and all(os.path.exists(tmp_path / d / "checkpoint.pt") for d in runs)  # 1 point x 2 rounds
    for run in runs:
        result = json.load(open(tmp_path / run / "result.json"))
        assert result["time/setup_s"] > 0 and result["time/compile_s"] is None


def _row(rnd, prec, ips, kind="runner", wall=1.0):
    return {"round": rnd, "kind": kind, "depth": 18, "precision": prec, "loader": "device", "compile": "none",
            "nvml_hz": 10.0, "batch_size": 8, "device": "cpu", "train/images_per_s": ips, "time/train_s": wall,
            "ckpt/size_bytes": 100 if prec == "fp32" else 50, "time/setup_s": 1.0, "mem/rss_peak_bytes": 2**30}


def test_ratios_pair_points_within_a_round_and_a_wide_range_is_flagged():
    steady = [_row(0, "fp32", 100), _row(0, "bf16", 200), _row(1, "fp32", 50), _row(1, "bf16", 100)]
    ratios = paired(steady, point_of, lambda r: (18, "fp32", "device", "none", 10.0), "train/images_per_s", 0.1)
    # The machine halved its speed in round 2, for both points alike: the ratio is still exactly 2.
    assert ratios[(18, "bf16", "device", "none", 10.0)] == spread([2.0, 2.0], 0.1)
    assert "2.00x [2.00-2.00]" in table(steady) and " !" not in table(steady)
    assert table(steady).splitlines()[3].split()[-1] == "0.50x"  # checkpoint sizes do not vary: no range
    noisy = [_row(0, "fp32", 100), _row(0, "bf16", 200), _row(1, "fp32", 100), _row(1, "bf16", 120)]
    assert "1.60x [1.20-2.00] !" in table(noisy)
    assert spread([1.0], 0.1)["wide"] is False  # one round: no range, not "wide"


def test_bare_loop_verdict_is_met_missed_or_inconclusive():
    def rows(*pairs):
        out = []
        for rnd, (runner, bare) in enumerate(pairs):
            out += [_row(rnd, "fp32", runner), _row(rnd, "fp32", bare, kind="bare")]
        return out

    assert "met" in bare_table(rows((99, 100), (98, 100)), 0.1, "cpu")
    assert "missed" in bare_table(rows((90, 100), (91, 100)), 0.1, "cpu")
    assert "inconclusive (range spans" in bare_table(rows((95, 100), (100, 100)), 0.1, "cpu")
    # All rounds below the goal, but 0.3x to 0.6x: a busy machine, not a verdict.
    assert "inconclusive (range too wide)" in bare_table(rows((30, 100), (60, 100)), 0.1, "cpu")
