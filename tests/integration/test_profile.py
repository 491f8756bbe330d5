"""A profiled run (--profile): the breakdown it logs, the trace it keeps, and the steps it leaves untimed."""

import glob
import json
import os

import pytest
from conftest import run_in_process
from metric_contract import PROFILE_KEYS

from train.contract.metrics import PROFILE_CLASSES

TOLERANCE = 0.01  # the classes' sum vs the profiled step's span (docs/profile.md)


def test_profiled_run_logs_a_breakdown_that_adds_up_keeps_its_trace_and_leaves_its_steps_untimed(tmp_path):
    # --log-every 1: two windows hold profiled steps only (steps 1 and 2), which log no step time at all.
    result = run_in_process("--dataset", "synthetic", "--max-steps", "3", "--batch-size", "2", "--log-every", "1",
                            "--warmup-steps", "0", "--profile", "2", "--device", "cpu", "--out-dir", str(tmp_path),
                            "--name", "p", "--wandb-mode", "offline")
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "p"
    summary = json.loads((run_dir / "result.json").read_text())
    assert summary["train/timed_steps"] == 1  # 3 steps: 2 profiled, 1 timed
    assert set(PROFILE_KEYS) <= set(summary) and summary["prof/conv_matmul_peak_frac"] is None  # no CPU peak
    assert summary["prof/steps"] == 2
    total = sum(summary[f"prof/{c}_ms"] for c in PROFILE_CLASSES)
    assert total == pytest.approx(summary["prof/step_ms"], rel=TOLERANCE)
    assert sum(summary[f"prof/{c}_share"] for c in PROFILE_CLASSES) == pytest.approx(1.0, rel=TOLERANCE)
    assert summary["prof/conv_matmul_ms"] > 0 and summary["prof/optimizer_ms"] > 0 and summary["prof/data_ms"] > 0
    assert summary["prof/conv_matmul_flops_per_s"] > 0
    # SGD with momentum in fp32 reads weights, gradients and momentum and writes weights and momentum: 5 x weights
    assert summary["prof/optimizer_bytes"] == 5 * summary["mem/params_bytes"]
    assert summary["prof/optimizer_bytes_per_s"] == pytest.approx(
        summary["prof/optimizer_bytes"] / (summary["prof/optimizer_ms"] / 1e3))
    traces = os.listdir(run_dir / "profile")
    assert traces == ["trace-step1.json"]
    names = {e.get("name") for e in json.loads((run_dir / "profile" / traces[0]).read_text())["traceEvents"]}
    assert "profile/step" in names and "aten::convolution" in names  # a Chrome/Perfetto trace of the steps
    assert glob.glob(str(run_dir / "wandb" / "offline-run-*" / "files" / "profile" / "trace-step1.json"))
