"""The CUDA paths, on a GPU node: CUDA-event step timing, allocator peaks, NVML telemetry in a run, NCCL, every
precision, and fp32's TF32 switch. Each test is skipped, with the reason, where torch sees no CUDA device
(`python -m pytest -q -rs tests` prints the reasons)."""

import os
import time

import pytest
import torch

from train.contract.errors import UsageError
from train.measure.memory import MemoryMonitor
from train.measure.timing import StepTimer
from train.numerics import precision
from train.runner.options import PRECISIONS, parse_args
from train.runner.session import train

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: torch sees none")]


def _run(tmp_path, *extra):
    return train(parse_args(["--dataset", "synthetic", "--max-steps", "4", "--batch-size", "16", "--log-every", "2",
                             "--warmup-steps", "1", "--device", "cuda", "--wandb-mode", "disabled",
                             "--out-dir", str(tmp_path), *extra]))


def test_cuda_event_step_times_agree_with_the_wall_clock():
    device = torch.device("cuda")
    timer = StepTimer(device)
    a = torch.randn(2048, 2048, device=device)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(5):
        timer.start()
        timer.data_ready()
        for _ in range(20):
            a = (a @ a).clamp_(-1, 1)
        timer.end()
    times = timer.collect()  # waits on the last event
    wall = time.perf_counter() - started
    total = sum(step for step, _ in times)
    assert len(times) == 5 and all(step > 0 for step, _ in times)
    assert 0.8 * wall <= total <= 1.01 * wall  # the events cover the device work, launch gaps aside


def test_allocator_peaks_are_per_window_and_reset():
    device = torch.device("cuda")
    monitor = MemoryMonitor(device)
    block = torch.empty(256 * 2**20, dtype=torch.uint8, device=device)
    first = monitor.read_and_reset()
    del block
    second = monitor.read_and_reset()
    assert first["mem/max_allocated_bytes"] >= 256 * 2**20
    assert second["mem/max_allocated_bytes"] < first["mem/max_allocated_bytes"]
    assert monitor.peaks["mem/peak_allocated_bytes"] == first["mem/max_allocated_bytes"]


def test_a_run_logs_nvml_metrics(tmp_path):
    pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed")
    summary = _run(tmp_path, "--nvml-hz", "20")
    nvml = [k for k in summary if k.startswith("nvml/")]
    assert "nvml/power_w" in nvml and "nvml/util_pct" in nvml, sorted(summary)


def test_nccl_all_reduce_in_one_process(tmp_path):
    import torch.distributed as dist

    assert dist.is_nccl_available()
    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1,
                            device_id=torch.device("cuda", 0))
    try:
        x = torch.full((4,), 3.0, device="cuda")
        dist.all_reduce(x)
        torch.cuda.synchronize()
        assert x.tolist() == [3.0] * 4
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("name", PRECISIONS)
def test_every_precision_trains_a_few_steps(tmp_path, name):
    major, _ = torch.cuda.get_device_capability()
    if precision.get(name).needs_ampere and major < 8:
        with pytest.raises(UsageError):
            _run(tmp_path, "--precision", name)
        return
    summary = _run(tmp_path, "--precision", name)
    assert summary["train/steps"] == 4 and summary["train/images_per_s"] > 0
    assert summary["train/diverged_at_step"] is None
    assert os.path.exists(os.path.join(summary["run_dir"], "checkpoint.pt"))


def test_fp32_turns_tf32_off_and_tf32_turns_it_on():
    assert precision.get("fp32").set_backend_flags() == {"tf32_matmul": False, "tf32_cudnn": False}
    assert precision.get("tf32").set_backend_flags() == {"tf32_matmul": True, "tf32_cudnn": True}
    precision.get("fp32").set_backend_flags()
    a = torch.randn(1024, 1024, device="cuda")
    exact = (a.double() @ a.double()).float()
    err = ((a @ a) - exact).abs().max().item()
    assert err < 1e-2  # IEEE fp32: TF32's 10-bit mantissa would be off by ~1 at this size


@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_a_compiled_run_trains_and_saves_the_uncompiled_model(tmp_path, mode):
    summary = _run(tmp_path, "--precision", "fp32", "--compile", mode)
    assert summary["train/steps"] == 4 and summary["time/compile_s"] > 0
    state = torch.load(os.path.join(summary["run_dir"], "checkpoint.pt"), weights_only=True)["state"]["model"]
    assert not any(k.startswith(("_orig_mod.", "compiled.")) for k in state)


@pytest.mark.system  # the benchmark and a process per point
def test_the_benchmark_gives_cuda_points_their_turns_and_prints_their_ratios(tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    out = subprocess.run([sys.executable, "-m", "train.benchmark", "--device", "cuda", "--precisions", "fp32", "bf16",
                          "--bare", "--rounds", "2", "--steps", "6", "--warmup-steps", "2", "--batch-size", "16",
                          "--wandb-mode", "disabled", "--out-dir", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert out.stdout.count("== round 2/2") == 4 and "failed" not in out.stdout
    bf16 = next(line.split() for line in out.stdout.splitlines() if line.split()[:2] == ["18", "bf16"])
    assert bf16[5].endswith("x") and "peak alloc MiB" in out.stdout
    assert "runner/bare (step)" in out.stdout
