"""NVML telemetry for real: the probe command on a machine without a driver, and the runner's loop with the
sampler's NVML replaced by the test double, end to end in W&B."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import ROOT
from nvml_double import FakeGpu, FakeNvml


@pytest.mark.skipif(torch.cuda.is_available(), reason="asserts that no NVIDIA driver is present")
def test_probe_command_without_a_driver_says_so_in_one_line_and_exits_0():
    result = subprocess.run([sys.executable, "-m", "train.telemetry", "--seconds", "0.1"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout.strip().startswith("no NVIDIA GPU telemetry on this machine")
    assert len(result.stdout.strip().splitlines()) == 1 and not result.stderr


def test_the_runner_logs_nvml_keys_per_window_and_energy_per_image(tmp_path, monkeypatch):
    """CPU training with the sampler's NVML replaced by the double: the loop's use of it, end to end in W&B,
    idle power measured before training (the double idles at 100 W, trains at 300 W)."""
    from wandb_reader import _inspect

    from train.measure import nvml as telemetry
    from train.runner import session
    from train.runner.options import parse_args

    gpu = FakeGpu()
    gpu.ticking = True  # 30 J per 0.1 s on the counter: 300 W, as field 186 reads
    open_for_run = telemetry.open_for_run

    def fake_open(device, hz, say, idle_s=0.0):
        gpu.fields[186] = (100_000, 1)  # idle
        opened = open_for_run(torch.device("cuda", 0), hz, say, nvml=FakeNvml([gpu]), idle_s=idle_s)
        gpu.fields[186] = (300_000, 1)  # training
        return opened

    monkeypatch.setattr(telemetry, "handle_for_cuda_device", lambda nvml, index: 0)
    monkeypatch.setattr(session.nvml, "open_for_run", fake_open)
    summary = session.train(parse_args(["--dataset", "synthetic", "--max-steps", "6", "--batch-size", "4", "--log-every",
                                    "3", "--wandb-mode", "offline", "--out-dir", str(tmp_path), "--name", "nv",
                                    "--nvml-hz", "50", "--device", "cpu", "--idle-power-s", "0.2"]))
    records = [json.loads(line) for line in _inspect(tmp_path / "nv").splitlines() if line.strip()]
    windows = [r["history"]["item"] for r in records if r.get("type") == "history"
               and "train/loss" in r["history"]["item"]]
    assert len(windows) == 2
    for w in windows:
        assert w["nvml/pcie_tx_bytes_per_s"] == pytest.approx(1e7)  # 1 MB per 0.1 s of the double's clock
        assert {"nvml/energy_j", "nvml/power_w", "nvml/memory_used_bytes", "nvml/sm_clock_mhz", "nvml/util_pct",
                "nvml/throttle_reasons", "nvml/power_integral_j"} <= w.keys()
        assert w["nvml/energy_counter_vs_power"] == pytest.approx(1.0, rel=0.01)
    assert summary["nvml/energy_per_image_j"] == pytest.approx(summary["nvml/energy_total_j"] / 24)
    assert summary["nvml/energy_source"] == "counter"
    assert summary["nvml/energy_counter_vs_power"] == pytest.approx(1.0, rel=0.01)  # the run's ratio, a number
    assert summary["nvml/idle_power_w"] == pytest.approx(100.0)
    assert summary["nvml/energy_above_idle_j"] == pytest.approx(summary["nvml/energy_total_j"] * 2 / 3, rel=0.01)
    nvml_config = json.loads(_inspect(tmp_path / "nv", "--summary"))["config"]["nvml"]
    assert nvml_config["idle_power_w"] == pytest.approx(100.0) and nvml_config["energy_source"] == "counter"
