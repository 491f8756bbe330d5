"""Failures lose nothing: racing runs, folders that cannot be written, full disks, dead writers, bad labels."""

import contextlib
import json
import os
import pickle
import socket
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, run_cli, run_in_process

from train.contract.errors import UsageError
from train.runner import checkpoint

RUNNER = [sys.executable, os.path.join(ROOT, "train", "run.py")]
QUICK = ["--dataset", "synthetic", "--batch-size", "4", "--warmup-steps", "0", "--device", "cpu"]


def _one_line(result, *words):
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


@contextlib.contextmanager
def tmpfs(path, size_mib: int):
    """A real small file system (root only): a disk that fills, or that can be made read-only."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'not root'})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.mark.system  # two runner processes at once (the lock itself: tests/unit/test_claim.py)
def test_two_runs_with_one_name_at_once_the_second_is_refused_and_a_dead_holder_is_taken_over(tmp_path):
    argv = [*RUNNER, *QUICK, "--max-steps", "500", "--log-every", "1", "--wandb-mode", "offline",
            "--out-dir", str(tmp_path), "--name", "same", "--resume", "auto"]
    # The holder trains on one thread: the second start then has a core of its own, not half of two.
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        for line in first.stdout:
            if "step 1/500" in line:
                break
        second = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        _one_line(second, f"run folder {tmp_path / 'same'} is in use by pid {first.pid} on {socket.gethostname()}")
        assert first.poll() is None  # the first goes on
    finally:
        first.kill()  # SIGKILL: its lock stays behind, naming a process that no longer exists
        first.wait()
    assert json.load(open(tmp_path / "same" / ".lock"))["pid"] == first.pid
    third = subprocess.run([*argv[:argv.index("500")], "2", *argv[argv.index("500") + 1:]], capture_output=True,
                           text=True, timeout=300)
    assert third.returncode == 0, third.stderr
    assert not (tmp_path / "same" / ".lock").exists()  # released at the end
    assert json.load(open(tmp_path / "same" / "result.json"))["train/steps"] == 2


def test_resume_in_a_folder_that_cannot_be_written_stops_before_training(tmp_path):
    with tmpfs(tmp_path / "fs", 400) as fs:
        first = run_in_process(*QUICK, "--max-steps", "1", "--out-dir", str(fs), "--name", "ro")
        assert first.returncode == 0, first.stderr
        os.unlink(fs / "ro" / "result.json")  # as if it had been stopped: a checkpoint to resume
        subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
        before = set(os.listdir("/tmp"))
        result = run_in_process(*QUICK, "--max-steps", "3", "--wandb-mode", "offline", "--resume", str(fs / "ro"),
                                cwd=str(tmp_path))
        _one_line(result, f"run folder {fs / 'ro'} cannot be written", "Read-only")
        assert "epoch" not in result.stdout  # nothing trained
        assert not (tmp_path / "wandb").exists() and "wandb" not in set(os.listdir("/tmp")) - before  # W&B's fallback


def test_a_checkpoint_that_cannot_fit_is_refused_before_training(tmp_path):
    with tmpfs(tmp_path / "small", 40) as fs:  # a ResNet-18 checkpoint with momentum needs about 86 MiB
        result = run_in_process(*QUICK, "--max-steps", "2", "--out-dir", str(fs), "--name", "big")
        _one_line(result, f"not enough free space in {fs} for the checkpoint", "MiB are free")
        assert os.listdir(fs) == []  # nothing created


def test_a_full_disk_at_a_checkpoint_is_named_and_the_previous_checkpoint_survives(tmp_path):
    with tmpfs(tmp_path / "full", 40) as fs:
        path = str(fs / "checkpoint.pt")
        checkpoint.save(path, {"state": {"w": torch.ones(1000)}})
        before = open(path, "rb").read()
        with pytest.raises(UsageError) as e:
            checkpoint.save(path, {"state": {"w": torch.ones(20_000_000)}})  # 80 MB into 40 MiB
        assert "no space left for the checkpoint" in str(e.value) and "the previous checkpoint is intact" in str(e.value)
        assert open(path, "rb").read() == before and os.listdir(fs) == ["checkpoint.pt"]  # no temp file left


def test_temp_files_of_dead_writers_are_removed_at_the_next_save(tmp_path):
    path = str(tmp_path / "checkpoint.pt")
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname()
    stale = tmp_path / f".checkpoint.pt.tmp-{host}-{dead.pid}"
    alive = tmp_path / f".checkpoint.pt.tmp-{host}-1"  # pid 1 is alive: a writer mid-save is left alone
    elsewhere = tmp_path / f".checkpoint.pt.tmp-another-node-{dead.pid}"  # another host's: cannot be checked here
    for f in (stale, alive, elsewhere):
        f.write_bytes(b"x" * 1000)
    checkpoint.save(path, {"state": {}})
    assert sorted(os.listdir(tmp_path)) == sorted(["checkpoint.pt", alive.name, elsewhere.name])


@pytest.mark.parametrize("labels", [[1.0, 2.0], [float("nan"), 1.0], ["cat", "dog"]], ids=["float", "nan", "text"])
def test_labels_that_are_not_class_numbers_are_refused_before_anything_is_written(cifar_dir, tmp_path, labels):
    bad = os.path.join(cifar_dir, "cifar-10-batches-py", "test_batch")
    batch = pickle.load(open(bad, "rb"))
    n = len(batch[b"labels"])
    batch[b"labels"] = (labels * n)[:n]
    pickle.dump(batch, open(bad, "wb"), protocol=2)
    result = run_in_process("--data-dir", cifar_dir, "--out-dir", str(tmp_path / "runs"), "--device", "cpu")
    _one_line(result, bad, "expected whole numbers 0..9")
    assert not (tmp_path / "runs").exists() or os.listdir(tmp_path / "runs") == []


@pytest.mark.system  # the elastic launcher and its workers
def test_the_launcher_leaves_device_and_precision_checks_to_its_workers(tmp_path):
    # The launcher stays alive as the elastic agent for the whole job: the precision probe (a training step on
    # the device) must run in the workers, never here, or it would hold a CUDA context on GPU 0 all along.
    result = run_cli("--gpus", "2", "--precision", "tf32", "--device", "cpu", "--dataset", "synthetic",
                     "--out-dir", str(tmp_path), timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "precision tf32 cannot run on cpu" in errors[0]
    assert "local_rank:" in result.stderr  # the elastic agent reporting a worker's refusal: the workers checked
