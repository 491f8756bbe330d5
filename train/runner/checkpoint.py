"""Checkpoints: written atomically (temp file, fsync, rename), read back with torch.load(weights_only=True).

A checkpoint holds the training state (train/runner/state.py), the run's config and W&B id, and its experiment
identity, which a resume must match.
"""

from __future__ import annotations

import errno
import glob
import os
import pickle
import socket
import zipfile

import torch

from train.contract.errors import UsageError

FILENAME = "checkpoint.pt"
RESULT_FILE = "result.json"  # the run's summary, written when it finishes: reruns (sweeps, requeues) skip it
FORMAT = 2
REQUIRED = ("format", "state", "config", "run_id", "experiment")


class DiskFull(UsageError):
    """The checkpoint did not fit: the previous one is intact."""


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


def save(path: str, state: dict) -> int:
    """Write `state` to `path` so that a crash mid-write leaves the previous checkpoint intact.

    Returns the file's size in bytes: the suite's model-size measurement (ckpt/size_bytes).
    """
    directory = os.path.dirname(os.path.abspath(path))
    remove_stale_temp_files(path)
    tmp = f"{_tmp_prefix(path)}{socket.gethostname()}-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        # torch.save reports a full disk as "RuntimeError: [enforce fail at inline_container.cc] unexpected pos"
        full = e.errno in (errno.ENOSPC, errno.EDQUOT) if isinstance(e, OSError) else _out_of_space(directory)
        if not full:
            raise
        written = os.path.getsize(tmp) if os.path.exists(tmp) else 0
        if written:
            os.unlink(tmp)  # before measuring what is free
        raise DiskFull(f"no space left for the checkpoint in {directory} ({written / 2**20:,.0f} MiB written before "
                       f"the disk filled, {free_bytes(directory) / 2**20:,.0f} MiB free now): the previous checkpoint "
                       f"{'is intact' if os.path.exists(path) else 'was never written'}; free space, then resume") \
            from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)
    return os.path.getsize(path)


def free_bytes(directory: str) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def _out_of_space(directory: str) -> bool:
    """After a failed write (its temp file still there): is the file system (or quota) full?"""
    return free_bytes(directory) < 2**20


def resolve(path: str) -> str:
    """A checkpoint file, or a run folder holding one."""
    candidate = os.path.join(path, FILENAME) if os.path.isdir(path) else path
    if not os.path.isfile(candidate):
        raise UsageError(f"--resume {path}: no checkpoint at {candidate}")
    return candidate


def load(path: str) -> dict:
    """Read a checkpoint of this suite; anything else is refused in one line."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"checkpoint {path} cannot be read (corrupt or not a checkpoint of this suite): "
                         f"{first}") from None
    missing = [k for k in REQUIRED if not isinstance(state, dict) or k not in state]
    if missing:
        raise UsageError(f"checkpoint {path} is not a checkpoint of this suite (missing {', '.join(missing)})")
    if state["format"] != FORMAT:
        raise UsageError(f"checkpoint {path} has format {state['format']}, this runner reads format {FORMAT}")
    return state
