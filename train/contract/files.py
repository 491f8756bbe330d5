"""The files a run leaves for others to read, and the one way they are written: whole or not at all.

A reader (a resume, a sweep's rerun, the elastic agent) may look at any moment, and a node may die mid-write:
each file is written to a temp file beside it, fsynced, renamed into place, and the rename made durable by
fsyncing the folder.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import socket
from typing import IO, Callable

from train.contract.errors import first_line

RESULT_FILE = "result.json"  # the run's summary, written when it finishes: reruns (sweeps, requeues) skip it
ENDS = ("finished", "diverged", "target_reached")  # result.json's `end` (train/end): how the run ended


class UnreadableResult(ValueError):
    """A result.json that proves nothing: cut short, not JSON, or naming no end. `why` says which."""

    def __init__(self, path: str, why: str):
        super().__init__(f"{path} is unreadable ({why})")
        self.path, self.why = path, why


def read_result(run_dir: str) -> dict | None:
    """The run's result.json when it proves the run ended: it parses and its `end` is one of ENDS. None: there
    is none. Any other file there raises UnreadableResult: a presence alone is no proof (a node that died
    mid-write before writes were atomic, a disk error or a hand edit leave such files)."""
    path = os.path.join(run_dir, RESULT_FILE)
    try:
        with open(path, "rb") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise UnreadableResult(path, e.strerror or type(e).__name__) from None
    try:
        result = json.loads(text)
    except ValueError as e:
        raise UnreadableResult(path, f"not JSON: {first_line(e)}") from None
    if not isinstance(result, dict) or result.get("end") not in ENDS:
        end = result.get("end") if isinstance(result, dict) else None
        raise UnreadableResult(path, f"its 'end' is {end!r}, not one of {', '.join(ENDS)}")
    return result


class DiskFull(OSError):
    """The file did not fit (file system or quota full): the previous version is intact, the temp file gone."""

    def __init__(self, path: str, errno_: int, written: int):
        super().__init__(errno_, os.strerror(errno_), path)
        self.directory = os.path.dirname(os.path.abspath(path))
        self.written = written  # bytes of the temp file before the disk filled
        self.free = free_bytes(self.directory)  # measured with the temp file removed


def _tmp_prefix(path: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.tmp-")


def remove_stale_temp_files(path: str) -> None:
    """Temp files of writers on this host that died mid-write (kill -9, node failure): they are never
    renamed into place, and at a checkpoint's size each they eat HPC quotas silently."""
    host = socket.gethostname()
    for tmp in glob.glob(glob.escape(_tmp_prefix(path)) + "*"):
        owner_host, _, pid = tmp[len(_tmp_prefix(path)):].rpartition("-")
        if owner_host != host or not pid.isdigit() or int(pid) == os.getpid():
            continue  # another node's writer may be alive: only this host's processes can be checked
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        except PermissionError:
            pass  # alive, someone else's


def atomic_write(path: str, write: Callable[[IO], None], *, binary: bool = False) -> None:
    """Call `write` on a temp file beside `path`, then put it in place so that a crash at any point leaves the
    previous file (or none) there. A full disk is DiskFull; any other failure propagates, the temp file removed.

    `write` may raise RuntimeError for a full disk (torch.save's "[enforce fail at inline_container.cc]
    unexpected pos"): the free space then decides whether it was one.
    """
    directory = os.path.dirname(os.path.abspath(path))
    remove_stale_temp_files(path)
    tmp = f"{_tmp_prefix(path)}{socket.gethostname()}-{os.getpid()}"
    try:
        with open(tmp, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        if isinstance(e, OSError):
            full = e.errno in (errno.ENOSPC, errno.EDQUOT)
        else:
            full = free_bytes(directory) < 2**20  # measured with the failed temp file still there
        if not full:
            raise
        written = os.path.getsize(tmp) if os.path.exists(tmp) else 0
        if written:
            os.unlink(tmp)  # before DiskFull measures what is free
        raise DiskFull(path, e.errno if isinstance(e, OSError) else errno.ENOSPC, written) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def free_bytes(directory: str) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize
