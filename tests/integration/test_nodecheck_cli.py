"""`python -m train.nodecheck` as a user starts it on a CPU node: one line per check, both files written, bad
flags refused in one line; and a run that finds the node check in its --out-dir records its ceilings."""

import json
import os
import platform
import subprocess
import sys

from conftest import ROOT, run_cli
from wandb_reader import _inspect


def _nodecheck(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "train.nodecheck", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "WANDB_BASE_URL": "http://127.0.0.1:9"})


def test_quick_node_check_on_cpu_prints_one_line_per_check_and_writes_both_files(tmp_path):
    result = _nodecheck("--quick", "--device", "cpu", "--out-dir", str(tmp_path))
    assert result.returncode in (0, 1), result.stderr  # 1: some check failed on this node, said on its line
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for section in ("environment:", "precisions:", "nvml:", "ceilings:", "all-reduce:", "benchmark:",
                    "storage and W&B:"):
        assert section in lines
    checks = [line.strip() for line in lines if line.startswith("  ")]
    assert all(line[0] in "✓✗–" for line in checks), checks
    assert any(line.startswith("✓ fp32 ") for line in checks)
    assert any(line.startswith("– tf32 ") and "refused" in line for line in checks)
    assert any(line.startswith("✓ fp32 numerics") and "TF32 off" in line for line in checks)
    assert any(line.startswith("– W&B") and "unreachable" in line for line in checks)
    doc = json.loads((tmp_path / "nodecheck.json").read_text())
    assert doc["host"] == platform.node() and doc["device"] == "cpu" and doc["quick"] is True
    assert doc["ceilings"]["matmul_flops_per_s"]["fp32"] > 0
    assert len(doc["checks"]) == len(checks)
    md = (tmp_path / "nodecheck.md").read_text()
    assert md.startswith(f"# Node check: {platform.node()}") and "| ✓ | fp32 |" in md
    assert sorted(os.listdir(tmp_path)) == ["nodecheck.json", "nodecheck.md"]  # the write test cleaned up


def test_bad_flags_are_one_line_and_exit_2_with_nothing_written(tmp_path):
    result = _nodecheck("--device", "tpu", "--out-dir", str(tmp_path / "out"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--device" in result.stderr
    blocked = tmp_path / "file"
    blocked.write_text("")
    result = _nodecheck("--quick", "--out-dir", str(blocked / "sub"))
    assert result.returncode == 2 and result.stderr.startswith("error: --out-dir") and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_run_records_the_ceilings_of_the_node_check_in_its_out_dir(tmp_path):
    ceilings = {"matmul_flops_per_s": {"fp32": 1.5e11}, "allreduce": {"backend": "gloo", "world_size": 2,
                                                                     "busbw_bytes_per_s": {"float32": 4e8}}}
    (tmp_path / "nodecheck.json").write_text(json.dumps(
        {"host": platform.node(), "device_name": platform.processor() or platform.machine(),
         "checked_at": "2026-12-01T12:00:00+00:00", "quick": False, "ceilings": ceilings}))
    result = run_cli("--dataset", "synthetic", "--max-steps", "2", "--batch-size", "4", "--log-every", "2",
                     "--warmup-steps", "0", "--device", "cpu", "--out-dir", str(tmp_path), "--name", "r",
                     "--wandb-mode", "offline")
    assert result.returncode == 0, result.stderr
    recorded = json.loads(_inspect(tmp_path / "r", "--summary"))["config"]["nodecheck"]
    assert recorded["used"] is True and recorded["matmul_kind"] == "fp32"
    assert recorded["matmul_flops_per_s"] == 1.5e11 and recorded["allreduce_busbw_bytes_per_s"] == 4e8
    result = run_cli("--dataset", "synthetic", "--max-steps", "1", "--device", "cpu", "--out-dir", str(tmp_path),
                     "--nodecheck", str(tmp_path / "missing.json"))
    assert result.returncode == 2 and "no such file" in result.stderr
