"""Runs, from a folder of W&B offline runs or from W&B's API.

A finished run's .wandb file is read in this process (train/contract/wandb_log.py: W&B's own protobuf records,
the same values as W&B's reader gives, ~1 ms a run); any other (failed, still running, cut off, corrupt) by
W&B's own reader, `wandb-core leet inspect` (train/contract/wandb_offline.py, ~15 ms of CPU a process).

A run stopped and continued (preemption, --resume) is several offline folders with one run id: they are
one run here, its state the last folder's and its history all folders' in order.

One unreadable folder (a corrupt or empty .wandb file) does not stop the others: it is returned as an
Unreadable (path, one-line reason) for the report to list.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from train.contract import lineage, wandb_log, wandb_offline
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
            rows = (row for seg in self.segments for row in _history(seg))
        return [row for row in rows if any(k in row and row[k] is not None for k in keys)]


    def checkpoint(self) -> dict | None:
        """The last checkpoint version this offline run logged (its artifact record), for the report's run to
        use; None for runs read through the API, or that logged none."""
        for segment in reversed(self.segments):
            try:
                found = lineage.last_checkpoint(_records(segment))
            except SourceError:
                continue  # its summary was read; its records not: as holding none
            if found:
                return found
        return None


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
    """Every record of the folder as W&B's reader gives them (only --publish needs more than the summary and
    history: the checkpoint artifact each run logged)."""
    yield from wandb_offline.records(_inspect(segment))


def _history(segment: str) -> list[dict]:
    try:
        return wandb_log.history(wandb_offline.run_file(segment) or segment)
    except (wandb_log.NotHere, OSError):
        return [r["history"]["item"] for r in wandb_offline.records(_inspect(segment)) if r.get("type") == "history"]


def _quick_summary(segment: str) -> dict | None:
    """The summary read in this process (train/contract/wandb_log.py), or None where W&B's reader must say."""
    found = wandb_offline.run_file(segment)
    try:
        return wandb_log.summary(found) if found else None
    except (wandb_log.NotHere, OSError):
        return None


def _summary(segment: str) -> dict | Unreadable:
    """W&B's reader's summary of one folder, or why it cannot be read."""
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
    # Most runs read in this process (a leet process costs ~15 ms of CPU to start, the file ~1 ms to read);
    # the rest (failed, running, cut off, corrupt) through W&B's reader, whose subprocesses threads overlap.
    summaries = [_quick_summary(seg) for seg in segments]
    asked = [seg for seg, s in zip(segments, summaries) if s is None]
    with ThreadPoolExecutor(workers) as pool:
        answers = dict(zip(asked, pool.map(_summary, asked)))
    summaries = [answers[seg] if s is None else s for seg, s in zip(segments, summaries)]
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
    """ENTITY/PROJECT (optionally a group or sweep id) through wandb.Api. Its SourceError says why W&B could
    not read it, for collect to put beside why it is no folder."""
    parts = path.strip("/").split("/")
    if len(parts) == 3:
        parts, sweep = parts[:2], sweep or parts[2]
    if len(parts) != 2 or not all(parts):
        raise SourceError("it is not W&B's ENTITY/PROJECT[/SWEEP_ID] either")
    import wandb

    filters = {}
    if group:
        filters["group"] = group
    if sweep:
        filters["sweep"] = sweep
    try:
        api = wandb.Api(timeout=60)
        runs = list(api.runs("/".join(parts), filters=filters, per_page=500))
    except Exception as e:  # noqa: BLE001 - no network, no credentials, no such project: one line
        raise SourceError(f"W&B could not read it as ENTITY/PROJECT: {first_line(e)}") from None
    return [Run(id=r.id, name=r.name, state=r.state, config={k: v for k, v in r.config.items() if not k.startswith("_")},
                summary=dict(r.summary_metrics), api_run=r) for r in runs]


def looks_local(source: str) -> bool:
    """Whether SOURCE names a local path rather than ENTITY/PROJECT: a typo in a folder name must not go to
    W&B's API (which would answer with a confusing network or permission error)."""
    return _why_a_path(source) is not None


def _why_a_path(source: str) -> str | None:
    """Why SOURCE is read as a local path and not sent to W&B, or None where it may be ENTITY/PROJECT."""
    if source.startswith(("./", "../", "/", "~")) or source in (".", ".."):
        return "it is a path, not W&B's ENTITY/PROJECT, so W&B was not asked"
    first = source.replace(os.sep, "/").split("/")[0]
    if "/" in source.replace(os.sep, "/") and os.path.exists(first):
        kind = "/ is a folder" if os.path.isdir(first) else " is a file"
        return f"{first}{kind} here, so W&B was not asked for it as ENTITY/PROJECT"
    return None


def nearest_folder(path: str) -> str | None:
    """The existing folder closest to a missing `path`: a sibling whose name is close to the first missing
    part (a typo), else the deepest part of the path that exists (None when that is just the current folder)."""
    parts = os.path.normpath(path).split(os.sep)
    for depth in range(len(parts) - 1, -1, -1):  # the deepest existing prefix, then the part below it
        base = os.sep.join(parts[:depth]) or (os.sep if path.startswith(os.sep) else "")
        if os.path.isdir(base or "."):
            break
    try:
        folders = [e.name for e in os.scandir(base or ".") if e.is_dir()]
    except OSError:
        folders = []
    close = difflib.get_close_matches(parts[depth], folders, n=1, cutoff=0.6)
    if close:
        return os.path.join(base, close[0])
    return base if base not in ("", ".", os.sep) else None  # the current folder or / tells nothing


def _not_a_folder(source: str) -> str:
    near = nearest_folder(os.path.expanduser(source))
    return f"folder {source} does not exist" + (f" (nearest existing folder: {near})" if near else "")


def collect(source: str, group: str | None = None, sweep: str | None = None) -> tuple[list[Run], list[Unreadable]]:
    """(runs, folders that could not be read); raises SourceError when there is nothing to report. A SOURCE
    that is neither a folder nor a readable W&B project gets one line saying both."""
    path = os.path.expanduser(source)
    if os.path.isdir(path):
        return from_folder(path)
    if os.path.exists(path):
        raise SourceError(f"{source} is a file; give the folder that holds the runs")
    local = _why_a_path(source)
    if local:
        raise SourceError(f"{_not_a_folder(source)}, and {local}")
    try:
        return from_wandb(source, group, sweep), []
    except SourceError as e:
        raise SourceError(f"{_not_a_folder(source)}, and {e}") from None
