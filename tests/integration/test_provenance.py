"""A run resumed on other code says so, keeps every segment's commit (checkpoint, W&B config, result.json) and
the report names each commit its runs were trained with. Git is the one test double: provenance() answers a
made-up commit per segment; the run itself is real."""

import json
import os
import signal
import subprocess
import sys

from conftest import ROOT
from wandb_reader import _inspect

from train.launch.signals import StopRequest
from train.runner import wandb_config
from train.runner.options import parse_args
from train.runner.session import train

OLD, NEW = "a" * 40, "b" * 40


def _code(monkeypatch, commit, dirty, started):
    monkeypatch.setattr(wandb_config, "provenance",
                        lambda: {"git_commit": commit, "git_dirty": dirty, "started_at": started})


def test_a_resume_on_other_code_says_so_and_every_segments_commit_is_kept_and_reported(tmp_path, monkeypatch,
                                                                                         capsys):
    flags = ["--dataset", "synthetic", "--max-steps", "2", "--batch-size", "4", "--warmup-steps", "0",
             "--device", "cpu", "--wandb-mode", "offline", "--out-dir", str(tmp_path / "runs"),
             "--name", "mixed", "--resume", "auto"]
    _code(monkeypatch, OLD, False, "2026-12-01T10:00:00+00:00")
    stop = StopRequest()
    stop.signal = signal.SIGTERM  # stopped after its first step: a checkpoint to resume
    assert train(parse_args(flags), stop=stop)["preempted"]
    _code(monkeypatch, NEW, True, "2026-12-01T11:00:00+00:00")
    capsys.readouterr()
    result = train(parse_args(flags))
    out = capsys.readouterr().out
    assert ("resumed with commit bbbbbbbbbbbb (dirty); segment 1 ran aaaaaaaaaaaa (the run goes on; its "
            "provenance lists each segment's code)") in out.splitlines()

    segments = [{"segment": 1, "git_commit": OLD, "git_dirty": False, "started_at": "2026-12-01T10:00:00+00:00"},
                {"segment": 2, "git_commit": NEW, "git_dirty": True, "started_at": "2026-12-01T11:00:00+00:00"}]
    run_dir = tmp_path / "runs" / "mixed"
    assert result["train/segments"] == 2
    assert json.load(open(run_dir / "result.json"))["provenance/segments"] == segments
    last = sorted(d for d in os.listdir(run_dir / "wandb") if d.startswith("offline-run-"))[-1]
    config = json.loads(_inspect(str(run_dir / "wandb" / last), "--summary"))["config"]
    assert config["provenance"]["segments"] == segments and config["provenance"]["git_commit"] == NEW

    report = subprocess.run([sys.executable, "-m", "report", str(tmp_path / "runs"), "--out", str(tmp_path / "r")],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True,
                            timeout=300)
    assert report.returncode == 0, report.stderr
    head = open(tmp_path / "r" / "results.md").read().split("## ")[0]
    assert "**Suite commit:** aaaaaaaaaaaa (1 run), bbbbbbbbbbbb (1 run)" in head, head
    assert "**Resumed on other code:** mixed (aaaaaaaaaaaa → bbbbbbbbbbbb)" in head, head
    assert "**Runs started:** 2026-12-01 10:00 – 2026-12-01 11:00" in head, head
    assert "**Local changes:** yes: 1 of 1 run(s)" in head, head
