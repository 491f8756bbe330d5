"""Checkpoints: written atomically (temp file, fsync, rename), read back with torch.load(weights_only=True).

A checkpoint holds the training state (train/runner/state.py), the run's config and W&B id, and its experiment
identity, which a resume must match.
"""

from __future__ import annotations

import os
import pickle
import zipfile

import torch

from train.contract import files
from train.contract.errors import UsageError, first_line
from train.contract.files import RESULT_FILE as RESULT_FILE  # where the runner's callers look for it
from train.contract.files import free_bytes as free_bytes
from train.contract.files import remove_stale_temp_files as remove_stale_temp_files

FILENAME = "checkpoint.pt"
FORMAT = 2
REQUIRED = ("format", "state", "config", "run_id", "experiment")


class DiskFull(UsageError):
    """The checkpoint did not fit: the previous one is intact."""


def save(path: str, state: dict) -> int:
    """Write `state` to `path` so that a crash mid-write leaves the previous checkpoint intact.

    Returns the file's size in bytes: the suite's model-size measurement (ckpt/size_bytes).
    """
    try:
        files.atomic_write(path, lambda f: torch.save({"format": FORMAT, **state}, f), binary=True)
    except files.DiskFull as e:
        raise DiskFull(f"no space left for the checkpoint in {e.directory} ({e.written / 2**20:,.0f} MiB written "
                       f"before the disk filled, {e.free / 2**20:,.0f} MiB free now): the previous checkpoint "
                       f"{'is intact' if os.path.exists(path) else 'was never written'}; free space, then resume") \
            from None
    return os.path.getsize(path)


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
        raise UsageError(f"checkpoint {path} cannot be read (corrupt or not a checkpoint of this suite): "
                         f"{first_line(e)}") from None
    missing = [k for k in REQUIRED if not isinstance(state, dict) or k not in state]
    if missing:
        raise UsageError(f"checkpoint {path} is not a checkpoint of this suite (missing {', '.join(missing)})")
    if state["format"] != FORMAT:
        raise UsageError(f"checkpoint {path} has format {state['format']}, this runner reads format {FORMAT}")
    return state
