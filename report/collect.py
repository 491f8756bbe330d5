"""Runs, from a folder of W&B offline runs (read with W&B's own reader) or from W&B's API.

A run stopped and continued (preemption, --resume) is several offline folders with one run id: they are
one run here, its state the last folder's and its history all folders' in order.

One unreadable folder (a corrupt or empty .wandb file) does not stop the others: it is returned as an
Unreadable (path, one-line reason) for the report to list.
"""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from train.contract import wandb_offline
from train.contract.errors import first_line


class SourceError(Exception):
    """The runs cannot be read: one line for the user."""


@dataclass
class Run:
    id: str
    name: str
    state: str
    config: dict
    summary: dict
    segments: list[str] = field(default_factory=list)  # offline folders, in order
    api_run: object | None = None

    def history(self, keys: list[str]) -> list[dict]:
        """Logged rows holding any of `keys` (with train/step), in step order."""
        if self.api_run is not None:
            rows = self.api_run.scan_history(keys=["train/step", *keys])
        else:
            rows = (r["history"]["item"] for seg in self.segments for r in _records(seg)
                    if r.get("type") == "history")
        return [row for row in rows if any(k in row and row[k] is not None for k in keys)]


@dataclass
class Unreadable:
    path: str  # the .wandb file, or the folder when it has none
    reason: str  # one line


def _inspect(segment: str, *flags: str) -> str:
    """W&B's own reader on one offline folder (train/contract/wandb_offline.py); its failure in one line."""
    if wandb_offline.run_file(segment) is None:
        raise SourceError(f"{segment} holds no .wandb file")
    out = wandb_offline.inspect(segment, *flags)
    if out.returncode != 0:
        last = out.stderr.strip().splitlines()[-1:] or [f"exit status {out.returncode}"]
        raise SourceError(f"W&B's reader could not read it: {last[0].removeprefix('Error: ')}")
    return out.stdout


def _records(segment: str):
    yield from wandb_offline.records(_inspect(segment))


def _summary(segment: str) -> dict | Unreadable:
    """The reader's summary of one folder, or why it cannot be read."""
    where = wandb_offline.run_file(segment) or segment
    try:
        s = json.loads(_inspect(segment, "--summary"))
    except SourceError as e:
        return Unreadable(where, str(e))
    except (json.JSONDecodeError, subprocess.TimeoutExpired, OSError) as e:
        return Unreadable(where, f"W&B's reader failed on it: {type(e).__name__}")
    if not s.get("run_id"):  # an empty file reads as a run with no records
        return Unreadable(where, "no run record in it (empty or cut off before the run started)")
    return s


def _segments(path: str) -> list[str]:
    """The offline folders under PATH, each once: a symlinked folder is followed the first time its target is
    met, never again (a `ln -s . loop` would otherwise read every run once per level, 40 levels deep). A run
    folder's own insides are not walked: nothing in them is another run."""
    root = os.stat(path)
    seen = {(root.st_dev, root.st_ino)}
    found, todo = [], [path]
    while todo:
        try:
            entries = sorted((e for e in os.scandir(todo.pop()) if e.is_dir()), key=lambda e: e.name)
        except OSError:  # unreadable or vanished: as glob did, not an error of the report
            continue
        # Runs first: wandb/latest-run is a symlink to one of them, which must not hide it.
        for entry in sorted(entries, key=lambda e: not fnmatch.fnmatch(e.name, "offline-run-*")):
            try:
                st = entry.stat()
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            (found if fnmatch.fnmatch(entry.name, "offline-run-*") else todo).append(entry.path)
    return sorted(found)


def from_folder(path: str, workers: int = 8) -> tuple[list[Run], list[Unreadable]]:
    segments = _segments(path)
    if not segments:
        raise SourceError(f"no W&B offline runs (wandb/offline-run-*) under {path}")
    with ThreadPoolExecutor(workers) as pool:  # each read is a subprocess: threads overlap them
        summaries = list(pool.map(_summary, segments))
    unreadable = [s for s in summaries if isinstance(s, Unreadable)]
    if len(unreadable) == len(segments):
        raise SourceError(f"none of the {len(segments)} W&B offline run(s) under {path} could be read "
                          f"({unreadable[0].path}: {unreadable[0].reason})")
    runs: dict[str, Run] = {}
    read = [(seg, s) for seg, s in zip(segments, summaries) if not isinstance(s, Unreadable)]
    # Folder names start with the start time, so sorted order is the order of a run's segments.
    for segment, s in sorted(read, key=lambda p: os.path.basename(p[0])):
        run = runs.get(s["run_id"])
        if run is None:
            runs[s["run_id"]] = Run(id=s["run_id"], name=s.get("name") or s["run_id"], state=s.get("state", "unknown"),
                                    config=s.get("config") or {}, summary=s.get("summary") or {}, segments=[segment])
        else:
            run.segments.append(segment)
            run.state = s.get("state", run.state)
            run.config = s.get("config") or run.config
            run.summary = {**run.summary, **(s.get("summary") or {})}
    return list(runs.values()), unreadable


def from_wandb(path: str, group: str | None = None, sweep: str | None = None) -> list[Run]:
    """ENTITY/PROJECT (optionally a group or sweep id) through wandb.Api."""
    import wandb

    parts = path.strip("/").split("/")
    if len(parts) == 3:
        parts, sweep = parts[:2], sweep or parts[2]
    if len(parts) != 2:
        raise SourceError(f"{path!r} is neither a folder nor ENTITY/PROJECT[/SWEEP_ID]")
    filters = {}
    if group:
        filters["group"] = group
    if sweep:
        filters["sweep"] = sweep
    try:
        api = wandb.Api(timeout=60)
        runs = list(api.runs("/".join(parts), filters=filters, per_page=500))
    except Exception as e:  # noqa: BLE001 - no network, no credentials, no such project: one line
        raise SourceError(f"cannot read {path} from W&B: {first_line(e)}") \
            from None
    return [Run(id=r.id, name=r.name, state=r.state, config={k: v for k, v in r.config.items() if not k.startswith("_")},
                summary=dict(r.summary_metrics), api_run=r) for r in runs]


def looks_local(source: str) -> bool:
    """Whether SOURCE names a local path rather than ENTITY/PROJECT: a typo in a folder name must not go to
    W&B's API (which would answer with a confusing network or permission error)."""
    if source.startswith(("./", "../", "/", "~")) or source in (".", ".."):
        return True
    first = source.replace(os.sep, "/").split("/")[0]
    return "/" in source.replace(os.sep, "/") and os.path.exists(first)


def collect(source: str, group: str | None = None, sweep: str | None = None) -> tuple[list[Run], list[Unreadable]]:
    """(runs, folders that could not be read); raises SourceError when there is nothing to report."""
    path = os.path.expanduser(source)
    if os.path.isdir(path):
        return from_folder(path)
    if os.path.exists(path):
        raise SourceError(f"{source} is a file; give the folder that holds the runs")
    if looks_local(source):
        raise SourceError(f"folder {source} does not exist")
    return from_wandb(source, group, sweep), []
