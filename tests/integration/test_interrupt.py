"""Ctrl-C stops a run as a stop signal does: the first SIGINT checkpoints at the next step and exits 130, the same
command continues the same W&B run; a second SIGINT aborts at once, in one line, without a traceback."""

import json
import os
import signal
import sys

import pytest
from conftest import ROOT, run_cli, signal_at_line

RUNNER = [sys.executable, os.path.join(ROOT, "train", "run.py")]


def _flags(out_dir, name):
    return ["--dataset", "synthetic", "--max-steps", "4", "--batch-size", "4", "--warmup-steps", "0",
            "--log-every", "1", "--device", "cpu", "--wandb-mode", "offline", "--out-dir", str(out_dir),
            "--resume", "auto", "--name", name]


@pytest.mark.system  # the run, its DataLoader workers and W&B's service get the signal together
def test_ctrl_c_checkpoints_exits_130_and_the_same_command_continues_the_same_wandb_run(tmp_path):
    # To the process group, as a terminal sends it: the DataLoader workers get it too, and leave it to the run.
    flags = [*_flags(tmp_path, "part"), "--loader", "torch", "--num-workers", "2"]
    status, printed, err = signal_at_line([*RUNNER, *flags], "step 2/4 loss", signals=(signal.SIGINT,), group=True)
    assert status == 130, err
    stopped = [line for line in printed.splitlines() if line.startswith("stopped by SIGINT at step")]
    assert len(stopped) == 1 and "run the same command" in stopped[0], printed
    assert err.splitlines() == ["interrupt: stopping at the next step with a checkpoint (Ctrl-C again to abort "
                                "without one)"], err
    run_dir = tmp_path / "part"
    assert (run_dir / "checkpoint.pt").exists() and not (run_dir / "result.json").exists()

    again = run_cli(*flags)
    assert again.returncode == 0 and "resumed from" in again.stdout, again.stderr
    result = json.load(open(run_dir / "result.json"))
    assert result["train/steps"] == 4 and result["train/segments"] == 2
    segments = sorted(d for d in os.listdir(run_dir / "wandb") if d.startswith("offline-run-"))
    assert len(segments) == 2 and len({s.rsplit("-", 1)[-1] for s in segments}) == 1  # one W&B run, two segments


def test_a_second_ctrl_c_aborts_at_once_in_one_line_without_a_traceback(tmp_path):
    status, _, err = signal_at_line([*RUNNER, *_flags(tmp_path, "twice")], "step 1/4",
                                    signals=(signal.SIGINT, signal.SIGINT), gap_s=0.02)
    assert status == 130, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert err.splitlines()[-1].startswith("interrupted again: aborted without a checkpoint"), err
    assert len(err.splitlines()) <= 2, err  # the first Ctrl-C's line, then the abort's
