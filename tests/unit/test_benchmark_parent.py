"""The benchmark's parent process never initialises CUDA, as the runner's launcher does not: a context there sits
in every point's nvml/memory_used and, under EXCLUSIVE_PROCESS compute mode, keeps the points off the GPU. The
parent used torch.cuda.current_device() in its refusals and get_device_name() for its table's heading.

Shown on CPU: torch.cuda says a GPU is there but raises on initialisation; the points' processes are stood in
for by rows as their result files give them (their own device name included)."""

import pytest
import torch

from train.benchmark import cli


@pytest.fixture
def cuda_that_must_not_start(monkeypatch):
    def refuse():
        raise AssertionError("the benchmark's parent initialised CUDA")

    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # the benchmark sets it: put back afterwards
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "_lazy_init", refuse)  # current_device, get_device_name/capability call it


def test_the_benchmark_parent_never_initialises_cuda(cuda_that_must_not_start, monkeypatch, tmp_path, capsys):
    seen = {}

    def points_ran(pl, group, rows):
        rows.extend({**p, "round": 0, "device_name": "NVIDIA H200"} for p in group)

    monkeypatch.setattr(cli, "run_group", points_ran)
    monkeypatch.setattr(cli, "print_tables", lambda pl, rows, where, version: seen.update(where=where, plan=pl))
    code = cli.main(["--device", "cuda", "--precisions", "fp32", "tf32", "bf16", "fp16", "--compile", "none",
                     "max-autotune", "--bare", "--rounds", "1", "--out-dir", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    assert not torch.cuda.is_initialized()
    assert seen["where"] == "GPU NVIDIA H200"  # the points' own word for their GPU
    assert len(seen["plan"].points) == 16 and not seen["plan"].refused  # no CPU rule applied to a GPU point
