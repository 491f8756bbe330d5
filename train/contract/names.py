"""Run names, one folder inside --out-dir whoever chose them (--name, --resume auto, a sweep's point), and
W&B's caches, inside --out-dir too."""

from __future__ import annotations

import os
import re
import tempfile

from train.contract.errors import UsageError

MAX_NAME = 200  # below the file systems' 255 bytes, leaving room for the suffixes of lock and temporary files
# Letters, digits and . _ - + = , @ after a letter or digit: no separator, never '.', '..' or a hidden folder
# (which could be the out-dir's .wandb-cache), nothing a shell or a URL would read otherwise.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=,@-]*")
NAME_RULE = (f"a run name is one folder name: 1 to {MAX_NAME} of the characters A-Z a-z 0-9 . _ - + = , @, "
             "starting with a letter or digit")


def check_run_name(name: str, made: str = "") -> str:
    """`name` if it is a run name, else a UsageError that gives the rule and, for a made name, what made it."""
    shown = f"{name[:40]!r}... ({len(name)} characters)" if len(name) > MAX_NAME else repr(name)
    if len(name) > MAX_NAME or not _NAME.fullmatch(name):
        raise UsageError(f"{shown}{f' ({made})' if made else ''} is not allowed: {NAME_RULE}")
    return name


CACHE_VARS = ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_ARTIFACT_DIR")


def keep_caches_in(out_dir: str) -> None:
    """W&B's staging copies and caches default to the home folder, which fills small HPC home quotas: they go
    to OUT_DIR/.wandb-cache unless the user chose a folder (the variable is set)."""
    cache = os.path.join(os.path.abspath(out_dir), ".wandb-cache")
    for var in CACHE_VARS:
        # A value this process set for an earlier run (runs in-process: tests, a notebook) is not the user's
        # choice: the next run's caches go in its own --out-dir, not the earlier one's.
        if var not in os.environ or os.environ[var] == _set_here.get(var):
            os.environ[var] = _set_here[var] = cache


_set_here: dict[str, str] = {}  # the cache folders keep_caches_in set, by variable


def torch_temp_dirs() -> set[str]:
    """$TMPDIR's torchinductor_* folders now: importing torch._dynamo (every optimizer does) makes an empty
    torchinductor_$USER there, where inductor would cache compiled kernels."""
    try:
        return {n for n in os.listdir(tempfile.gettempdir()) if n.startswith("torchinductor_")}
    except OSError:
        return set()


def remove_empty_torch_temp_dirs(before: set[str]) -> None:
    """Remove what torch_temp_dirs() finds now but did not `before` (this process made it) if it is still empty:
    a run leaves nothing outside --out-dir. A compiled run's kernel cache is not empty, and stays."""
    for name in torch_temp_dirs() - before:
        try:
            os.rmdir(os.path.join(tempfile.gettempdir(), name))  # only an empty folder: never a cache in use
        except OSError:
            pass
