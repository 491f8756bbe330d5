"""Checkpoints: written atomically (temp file, fsync, rename), read back with torch.load(weights_only=True)."""

from __future__ import annotations

import os
import pickle
import zipfile

import torch

from train.errors import UsageError

FILENAME = "checkpoint.pt"
RESULT_FILE = "result.json"  # the run's summary, written when it finishes: reruns (sweeps, requeues) skip it
FORMAT = 1
REQUIRED = ("format", "model", "optimizer", "scaler", "scheduler", "loader", "rng", "progress", "config", "run_id")


def save(path: str, state: dict) -> int:
    """Write `state` to `path` so that a crash mid-write leaves the previous checkpoint intact.

    Returns the file's size in bytes: the suite's model-size measurement (ckpt/size_bytes).
    """
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)
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
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"checkpoint {path} cannot be read (corrupt or not a checkpoint of this suite): "
                         f"{first}") from None
    missing = [k for k in REQUIRED if not isinstance(state, dict) or k not in state]
    if missing:
        raise UsageError(f"checkpoint {path} is not a checkpoint of this suite (missing {', '.join(missing)})")
    if state["format"] != FORMAT:
        raise UsageError(f"checkpoint {path} has format {state['format']}, this runner reads format {FORMAT}")
    return state


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
