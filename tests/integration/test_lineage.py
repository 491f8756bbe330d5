"""W&B as its users expect, offline, read back with W&B's own reader: each run's job_type, the data set as a
reference artifact each run uses, each segment's checkpoint as a version the next segment uses, and the
report's run with the results table, using the runs it summarises."""

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import ROOT, run_in_process
from wandb_reader import _inspect

from train.benchmark.turns import ENV as TURNS_ENV
from train.contract import wandb_offline
from train.launch.signals import StopRequest
from train.runner.options import parse_args
from train.runner.session import train

RUNNER = [sys.executable, os.path.join(ROOT, "train", "run.py")]
CIFAR_FILES = {*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"}


def _records(folder):
    return list(wandb_offline.records(_inspect(folder)))


def _job_type(records):
    return next(r["run"].get("job_type") for r in records if r.get("type") == "run")


def _artifacts(records, kind):
    return [r["artifact"] for r in records if r.get("type") == "artifact" and r["artifact"]["type"] == kind]


def _md5(path):
    return base64.b64encode(hashlib.md5(open(path, "rb").read()).digest()).decode()


def _segments(run_dir):
    wandb_dir = run_dir / "wandb"
    return [wandb_dir / d for d in sorted(os.listdir(wandb_dir)) if d.startswith("offline-run-")]


def test_a_training_run_is_a_train_job_that_uses_the_data_set_by_reference(cifar_dir, tmp_path):
    result = run_in_process("--data-dir", cifar_dir, "--out-dir", str(tmp_path / "runs"), "--max-steps", "2",
                            "--batch-size", "8", "--warmup-steps", "0", "--name", "r", "--wandb-mode", "offline",
                            "--device", "cpu")
    assert result.returncode == 0, result.stderr
    records = _records(tmp_path / "runs" / "r")
    assert _job_type(records) == "train"
    [data] = _artifacts(records, "dataset")
    assert data["name"] == "cifar10" and data["use_after_commit"]  # an input of the run, not its output
    entries = {e["path"]: e for e in data["manifest"]["contents"]}
    assert set(entries) == CIFAR_FILES
    for name, entry in entries.items():
        path = os.path.join(cifar_dir, "cifar-10-batches-py", name)
        assert entry["ref"] == f"file://{path}" and int(entry["size"]) == os.path.getsize(path)
        assert entry["digest"] == _md5(path)
    # A reference: the data's bytes are not copied anywhere (no staging copy in the run's folder or caches).
    copied = [f for _, _, files in os.walk(tmp_path / "runs") for f in files if f in CIFAR_FILES]
    assert copied == []


def test_a_benchmark_point_is_a_benchmark_job(tmp_path):
    """The runner as `python -m train.benchmark` starts a point: paced by its turns (TRAIN_TURNS)."""
    from_benchmark, to_child = os.pipe()
    from_child, to_benchmark = os.pipe()
    proc = subprocess.Popen(
        [*RUNNER, "--dataset", "synthetic", "--max-steps", "2", "--batch-size", "4", "--warmup-steps", "0",
         "--device", "cpu", "--wandb-mode", "offline", "--out-dir", str(tmp_path), "--name", "point"],
        env={**os.environ, TURNS_ENV: f"{from_benchmark},{to_benchmark},2,0,test"}, pass_fds=(from_benchmark, to_benchmark),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    os.close(from_benchmark)
    os.close(to_benchmark)
    with os.fdopen(to_child, "w") as go, os.fdopen(from_child, "r") as reports:
        for _ in ("set up", "warmed up"):  # then one turn of its two steps, which ends the run
            reports.readline()
            go.write("go\n")
            go.flush()
        assert proc.wait(timeout=120) == 0, proc.stderr.read()
    records = _records(tmp_path / "point")
    assert _job_type(records) == "benchmark"
    assert _artifacts(records, "dataset") == []  # synthetic data: nothing was read, no data set to name


def _stopped_and_resumed(out_dir, name):
    flags = ["--dataset", "synthetic", "--max-steps", "4", "--batch-size", "4", "--warmup-steps", "0",
             "--log-every", "1", "--device", "cpu", "--wandb-mode", "offline", "--out-dir", str(out_dir),
             "--resume", "auto", "--name", name]
    stop = StopRequest()
    stop.signal = signal.SIGTERM  # as if it came during the first step: a checkpoint there, to be continued
    assert train(parse_args(flags), stop=stop)["preempted"]
    again = run_in_process(*flags)
    assert again.returncode == 0 and "resumed from" in again.stdout, again.stderr
    return out_dir / name


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """One run stopped by SIGTERM and resumed (two segments), for the chain and for the report over it."""
    return _stopped_and_resumed(tmp_path_factory.mktemp("runs"), "chain")


def test_each_segment_logs_its_checkpoint_and_the_next_segment_uses_it(resumed):
    run_dir = resumed
    first, second = (_records(s) for s in _segments(run_dir))
    run_id = json.load(open(run_dir / "result.json"))["run_id"]
    [left] = _artifacts(first, "checkpoint")  # the stopped segment's checkpoint, as its output
    assert left["name"] == f"checkpoint-{run_id}" and not left.get("use_after_commit")
    stopped_at = json.loads(left["metadata"])["step"]  # the step after the signal's
    assert {"segment-1", f"step-{stopped_at}"} <= set(left["aliases"]) and json.loads(left["metadata"])["segment"] == 1
    used, logged = _artifacts(second, "checkpoint")
    # The resumed segment's input is that version: the same content digest, which `wandb sync` links.
    assert used["use_after_commit"] and used["digest"] == left["digest"]
    assert not logged.get("use_after_commit") and {"segment-2", "step-4"} <= set(logged["aliases"])
    [entry] = logged["manifest"]["contents"]
    assert entry["ref"] == f"file://{run_dir / 'checkpoint.pt'}" and entry["digest"] == _md5(run_dir / "checkpoint.pt")
    assert logged["digest"] != left["digest"]


def test_publish_logs_the_results_table_in_a_report_run_that_uses_the_runs(resumed, tmp_path):
    run_dir = resumed
    out = tmp_path / "out"
    report = subprocess.run([sys.executable, "-m", "report", str(run_dir.parent), "--out", str(out), "--publish"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "WANDB_MODE": "offline"})
    assert report.returncode == 0, report.stderr
    assert "wandb sync" in report.stdout and "using the checkpoints of 1 of 1 run(s)" in report.stdout
    [segment] = _segments(out)
    records = _records(segment)
    assert _job_type(records) == "report"
    [used] = _artifacts(records, "checkpoint")  # the run's last checkpoint version, as the report's input
    final = _artifacts(_records(_segments(run_dir)[-1]), "checkpoint")[-1]
    assert used["use_after_commit"] and used["digest"] == final["digest"] and used["name"] == final["name"]
    [logged] = [r["history"]["item"] for r in records if r.get("type") == "history"]
    assert logged["results._type"] == "table-file"
    table = json.load(open(segment / "files" / logged["results.path"]))
    md_header = next(line for line in open(out / "results.md") if line.startswith("| Precision | Model |"))
    assert table["columns"] == [c.strip() for c in md_header.strip().strip("|").split("|")]
    [row] = table["data"]
    assert row[0].startswith("fp32") and row[1] == "ResNet-18" and row[3] == 1
    assert all(isinstance(v, float) for v in row[4:])  # the measured cells as numbers, to sort by
    assert logged["plots/throughput._type"] == "image-file"  # each plot, as an image
    # The report's own run in a folder with the runs is listed as what it is, not as some other code's run.
    from report.__main__ import main as report_main

    both = tmp_path / "both"
    both.mkdir()
    (both / "runs").symlink_to(run_dir.parent)
    (both / "report").symlink_to(out)
    assert report_main([str(both), "--out", str(tmp_path / "again")]) == 0
    text = open(tmp_path / "again" / "results.md").read()
    assert "the suite's own report run (python -m report --publish), not a training run" in text
