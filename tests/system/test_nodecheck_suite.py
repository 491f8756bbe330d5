"""The node check's multi-process parts: the gloo all-reduce sweep (two processes), and the --gpu-suite
rehearsal on CPU end to end: node check, GPU test tier (skipping here), runs and the report's table with MFU
against the measured peak."""

import json
import os
import subprocess
import sys

import torch
from conftest import ROOT

from train.nodecheck import allreduce, checks


def test_gloo_sweep_gives_algbw_and_busbw_per_size_and_dtype(tmp_path):
    found = allreduce.check(torch, torch.device("cpu"), str(tmp_path), max_mib=4, quick=False)
    assert [c.status for c in found] == [checks.PASS], found[0].reason
    rows = found[0].data["rows"]
    assert [(r["dtype"], r["bytes"] >> 20) for r in rows] == [("float32", 1), ("float32", 4), ("bfloat16", 1),
                                                             ("bfloat16", 4)]
    for r in rows:
        assert r["algbw_bytes_per_s"] == r["bytes"] / r["time_s"]
        assert r["busbw_bytes_per_s"] == r["algbw_bytes_per_s"]  # 2(n-1)/n = 1 at two ranks
    assert set(found[0].data["best_busbw_bytes_per_s"]) == {"float32", "bfloat16"}
    assert os.listdir(tmp_path) == []  # rank 0's result file is removed


def test_gpu_suite_rehearsal_on_cpu_writes_everything_under_one_folder(tmp_path):
    out = tmp_path / "suite"
    result = subprocess.run([sys.executable, "-m", "train.nodecheck", "--gpu-suite", "--quick", "--device", "cpu",
                             "--out-dir", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=900,
                            env={**os.environ, "WANDB_BASE_URL": "http://127.0.0.1:9"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "✓ node check" in result.stdout and "✓ GPU test tier" in result.stdout and "✓ study table" in result.stdout
    assert (out / "nodecheck" / "nodecheck.json").is_file() and (out / "nodecheck" / "nodecheck.md").is_file()
    assert "skipped" in (out / "gpu-tests.txt").read_text() and (out / "gpu-tests.xml").is_file()
    assert "| ✓ | study table |" in (out / "suite.md").read_text()
    results = (out / "report" / "results.md").read_text()
    assert "MFU vs measured peak" in results
    precisions = json.loads((out / "nodecheck" / "nodecheck.json").read_text())["runnable_precisions"]
    runs = [name for name in os.listdir(out / "study") if not name.startswith(".")]  # .wandb-cache: W&B's
    assert sorted(runs) == sorted([f"r18-{p}" for p in precisions] +
                                                       [f"r18-{p}.log" for p in precisions])
