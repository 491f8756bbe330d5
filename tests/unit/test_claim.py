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


@pytest.fixture
def host_clock(monkeypatch):
    """This host's monotonic clock, moved by the test: [seconds]."""
    now = [1000.0]
    monkeypatch.setattr(claim, "clock", lambda: now[0], raising=False)
    return now


def test_another_hosts_lock_is_taken_over_only_when_not_refreshed_for_the_stale_time(tmp_path, host_clock):
    path = _write_lock(tmp_path, "node-that-is-gone", 4242, age_s=claim.STALE_S - 60)
    with pytest.raises(UsageError, match="pid 4242 on node-that-is-gone"):
        RunFolderLock(str(tmp_path)).acquire()  # its processes cannot be checked from here: held while fresh
    host_clock[0] += claim.STALE_S + 60  # not refreshed since, by this host's own clock
    lock = RunFolderLock(str(tmp_path)).acquire()
    try:
        assert _holder(path)["pid"] == os.getpid()
    finally:
        lock.release()


def test_a_dead_node_whose_clock_ran_a_day_ahead_blocks_the_name_only_for_the_stale_time(tmp_path, host_clock):
    path = _write_lock(tmp_path, "node-ahead", 4242, age_s=-86400)  # its file time: tomorrow
    before = (path.read_text(), os.stat(path).st_mtime_ns)
    with pytest.raises(UsageError) as e:
        RunFolderLock(str(tmp_path)).acquire()
    line = str(e.value)
    assert "pid 4242 on node-ahead" in line and "8640" in line and "ahead of this host's clock" in line
    assert f"run this again in {claim.STALE_S:.0f} s" in line and "\n" not in line
    assert (path.read_text(), os.stat(path).st_mtime_ns) == before  # the holder's lock untouched
    host_clock[0] += claim.STALE_S - 1
    with pytest.raises(UsageError, match="run this again in 1 s"):
        RunFolderLock(str(tmp_path)).acquire()
    host_clock[0] += 1
    lock = RunFolderLock(str(tmp_path)).acquire()  # 300 s of this host's clock unchanged: gone
    try:
        assert _holder(path)["pid"] == os.getpid()
        assert sorted(os.listdir(tmp_path)) == [claim.LOCK]  # the sightings went with the old lock
    finally:
        lock.release()


def test_a_live_holder_whose_clock_runs_behind_keeps_its_folder_while_it_refreshes(tmp_path, host_clock):
    path = _write_lock(tmp_path, "node-behind", 7, age_s=86400)  # looks a day old: its clock is behind
    with pytest.raises(UsageError, match="pid 7 on node-behind"):
        RunFolderLock(str(tmp_path)).acquire()
    for _ in range(3):  # it refreshes (to times still a day behind) faster than the stale time
        host_clock[0] += claim.STALE_S - 10
        stamp = os.stat(path).st_mtime + claim.REFRESH_S
        os.utime(path, (stamp, stamp))
        with pytest.raises(UsageError, match="pid 7 on node-behind"):
            RunFolderLock(str(tmp_path)).acquire()
    host_clock[0] += claim.STALE_S  # then it stops refreshing: its node is gone
    lock = RunFolderLock(str(tmp_path)).acquire()
    lock.release()


def test_a_sighting_from_before_a_reboot_or_of_another_lock_starts_the_wait_again(tmp_path, host_clock,
                                                                                monkeypatch):
    _write_lock(tmp_path, "node-a", 1)
    with pytest.raises(UsageError):
        RunFolderLock(str(tmp_path)).acquire()
    monkeypatch.setattr(claim, "_boot_id", lambda: "after-a-reboot", raising=False)  # the monotonic clock restarted
    host_clock[0] += claim.STALE_S
    with pytest.raises(UsageError, match=f"again in {claim.STALE_S:.0f} s"):
        RunFolderLock(str(tmp_path)).acquire()
    host_clock[0] += claim.STALE_S - 1
    _write_lock(tmp_path, "node-b", 2)  # another holder took it over meanwhile
    with pytest.raises(UsageError, match="pid 2 on node-b.*again in 300 s"):
        RunFolderLock(str(tmp_path)).acquire()


def test_a_holders_release_removes_the_sightings_of_refused_claims(tmp_path, host_clock):
    lock = RunFolderLock(str(tmp_path)).acquire()
    path = tmp_path / claim.LOCK
    mine = path.read_text()
    path.write_text(mine.replace(socket.gethostname(), "other-node"))  # as another host would see it
    with pytest.raises(UsageError):
        RunFolderLock(str(tmp_path)).acquire()
    assert any(claim.SEEN in name for name in os.listdir(tmp_path))
    path.write_text(mine)
    lock.release()
    assert os.listdir(tmp_path) == []


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
