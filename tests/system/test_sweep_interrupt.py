"""Ctrl-C on `python -m train.sweep FILE local`: the running point checkpoints, the sweep stops with exit 130, and
the same command continues that point's W&B run."""

import json
import os
import signal
import sys

from conftest import ROOT, signal_at_line


def test_ctrl_c_on_a_local_sweep_checkpoints_its_point_and_the_same_command_continues_it(tmp_path):
    path = tmp_path / "one.yaml"
    path.write_text("name: one\nmethod: grid\nprogram: train/run.py\nparameters:\n  precision: {value: fp32}\n"
                    "  dataset: {value: synthetic}\n  max_steps: {value: 4}\n  batch_size: {value: 4}\n"
                    "  log_every: {value: 1}\n  warmup_steps: {value: 0}\n  device: {value: cpu}\n")
    cmd = [sys.executable, "-m", "train.sweep", str(path), "local", "--out-dir", str(tmp_path / "runs")]
    env = {**os.environ, "PYTHONPATH": ROOT}
    status, out, err = signal_at_line(cmd, "step 2/4 loss", env=env, signals=(signal.SIGINT,), group=True)
    assert status == 130, err
    assert "interrupted (Ctrl-C), checkpointed; run the same command to continue" in out and "Traceback" not in err
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]  # the one point's
    assert (run_dir / "checkpoint.pt").exists() and not (run_dir / "result.json").exists()
    status, out, err = signal_at_line(cmd, "no such line", env=env)  # the same command, to its end
    assert status == 0 and "1 point(s) run" in out, err
    assert json.load(open(run_dir / "result.json"))["train/segments"] == 2
