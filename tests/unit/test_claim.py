"""The run-folder lock with real files: a live holder keeps the folder, a gone one's lock is taken over."""

import json
import os
import socket
import subprocess
import time

import pytest

from train.contract.errors import UsageError
from train.runner import claim
from train.runner.claim import RunFolderLock


def _write_lock(folder, host, pid, age_s=0.0):
    path = folder / claim.LOCK
    path.write_text(json.dumps({"host": host, "pid": pid, "since": "2026-12-01T09:00:00+00:00"}))
    if age_s:
        then = time.time() - age_s
        os.utime(path, (then, then))
    return path


def _dead_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _holder(path):
    return json.loads(path.read_text())


def test_a_lock_left_by_a_dead_process_of_this_host_is_taken_over_and_released(tmp_path):
    path = _write_lock(tmp_path, socket.gethostname(), _dead_pid())
    lock = RunFolderLock(str(tmp_path)).acquire()
    try:
        assert _holder(path)["pid"] == os.getpid() and _holder(path)["host"] == socket.gethostname()
        assert sorted(os.listdir(tmp_path)) == [claim.LOCK]  # the stale lock moved aside and gone
    finally:
        lock.release()
    assert not path.exists()


def test_a_live_holder_of_this_host_keeps_the_folder_and_is_named(tmp_path):
    holder = subprocess.Popen(["sleep", "30"])
    try:
        path = _write_lock(tmp_path, socket.gethostname(), holder.pid, age_s=3600)  # old, but alive
        before = path.read_text()
        with pytest.raises(UsageError) as e:
            RunFolderLock(str(tmp_path)).acquire()
        assert f"pid {holder.pid} on {socket.gethostname()}" in str(e.value) and str(path) in str(e.value)
        assert path.read_text() == before
    finally:
        holder.kill()
        holder.wait()


def test_another_hosts_lock_is_taken_over_only_when_not_refreshed_for_the_stale_time(tmp_path):
    path = _write_lock(tmp_path, "node-that-is-gone", 4242, age_s=claim.STALE_S - 60)
    with pytest.raises(UsageError, match="pid 4242 on node-that-is-gone"):
        RunFolderLock(str(tmp_path)).acquire()  # its processes cannot be checked from here: held while fresh
    _write_lock(tmp_path, "node-that-is-gone", 4242, age_s=claim.STALE_S + 60)
    lock = RunFolderLock(str(tmp_path)).acquire()
    try:
        assert _holder(path)["pid"] == os.getpid()
    finally:
        lock.release()


def test_a_lock_being_written_counts_as_held(tmp_path):
    (tmp_path / claim.LOCK).write_text('{"host": "x", ')  # half written this instant
    with pytest.raises(UsageError, match="in use by another process"):
        RunFolderLock(str(tmp_path)).acquire()


def test_release_leaves_a_lock_another_process_has_taken_over(tmp_path):
    lock = RunFolderLock(str(tmp_path)).acquire()
    path = _write_lock(tmp_path, "other-node", 7)  # taken over while this process was presumed gone
    lock.release()
    assert _holder(path)["host"] == "other-node"


def test_the_holder_refreshes_its_lock_so_other_hosts_do_not_take_it_over(tmp_path, monkeypatch):
    monkeypatch.setattr(claim, "REFRESH_S", 0.05)
    lock = RunFolderLock(str(tmp_path)).acquire()
    try:
        path = tmp_path / claim.LOCK
        old = time.time() - 3600
        os.utime(path, (old, old))
        deadline = time.time() + 5
        while os.path.getmtime(path) < time.time() - 60 and time.time() < deadline:
            time.sleep(0.02)
        assert os.path.getmtime(path) > time.time() - 60
    finally:
        lock.release()


def test_a_folder_that_cannot_be_written_is_one_usage_error(tmp_path):
    missing = tmp_path / "no-such-folder"
    with pytest.raises(UsageError, match="cannot be written"):
        RunFolderLock(str(missing)).acquire()
