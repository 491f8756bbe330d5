"""A run folder belongs to one process at a time.

A sweep submitted twice, or a requeued Slurm task racing a live one, must not write one folder from two
processes (two W&B runs, the later checkpoint and result.json winning). The first process creates `.lock` in
the folder atomically (O_EXCL) with its host and pid, and refreshes its time stamp while it runs. A lock is
taken over when its holder is gone: a process of this host that no longer exists, or, for a holder on another
host (whose processes cannot be checked from here), a lock this host has seen unchanged (content and time
stamp) for STALE_S seconds of its own clock. The file's time comes from another host's clock, which may run
ahead (a dead node would block the name for as long) or behind (a live holder would lose its folder): it is
only reported, never trusted. The first sight is recorded beside the lock (`.lock.seen-HOST`), so a claim
refused now takes the lock over when retried after STALE_S if nothing refreshed it meanwhile."""

from __future__ import annotations

import contextlib
import datetime
import glob
import json
import os
import socket
import threading
import time

import torch

from train.contract import files
from train.contract.errors import UsageError
from train.contract.files import atomic_write
from train.launch import distributed
from train.runner import checkpoint
from train.runner.options import RunConfig, differences, saved_experiment
from train.runner.resume import ResumePlan, how_it_ended, refuse_if_it_holds_a_run, run_identity

LOCK = ".lock"
REFRESH_S = 30.0
STALE_S = 300.0  # ten missed refreshes: the holder's node is gone (a node failure leaves its lock behind)
SEEN = ".seen-"  # LOCK + SEEN + host: when this host first saw the lock as it is now, by its monotonic clock
clock = time.monotonic  # this host's own clock, shared by its processes until it reboots (tests replace it)


def _boot_id() -> str:
    """This boot of this host: a monotonic time recorded before a reboot means nothing after it."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


class RunFolderLock:
    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.path = os.path.join(run_dir, LOCK)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mine: str | None = None
        self._seen_s = 0.0  # how long this host has seen another host's lock unchanged, at the last claim

    def acquire(self) -> "RunFolderLock":
        """Claim the folder, or raise a UsageError naming who holds it (or why it cannot be written)."""
        me = json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                         "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
        for _ in range(3):  # a stale lock is moved aside, then the claim is tried again
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if not self._stale(holder):
                    raise UsageError(self._held(holder)) from None
                try:
                    os.rename(self.path, f"{self.path}.stale-{os.getpid()}")
                    os.unlink(f"{self.path}.stale-{os.getpid()}")
                except FileNotFoundError:
                    pass  # another process took it over first: try again, and meet its lock
                continue
            except OSError as e:
                raise UsageError(f"run folder {self.run_dir} cannot be written ({e.strerror}): nothing would be "
                                 "saved; fix its permissions or choose another --out-dir") from None
            with os.fdopen(fd, "w") as f:
                f.write(me)
            self._mine = me
            self._forget_sightings()  # they were of the lock it replaced
            self._thread = threading.Thread(target=self._refresh, name="run-folder-lock", daemon=True)
            self._thread.start()
            return self
        raise UsageError(f"run folder {self.run_dir}: could not claim {self.path}; try again")

    def release(self) -> None:
        self._stop.set()
        if self._mine is not None and self._read() == self._mine:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            self._forget_sightings()  # of waiters refused while it ran: nothing of the lock stays behind
        self._mine = None

    def _forget_sightings(self) -> None:
        for seen in glob.glob(glob.escape(self.path + SEEN) + "*"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(seen)

    def _refresh(self) -> None:
        while not self._stop.wait(REFRESH_S):
            try:
                os.utime(self.path)
            except OSError:
                pass  # the folder went away or became read-only: the run's own writes will say so

    def _read(self) -> str | None:
        try:
            with open(self.path) as f:
                return f.read()
        except OSError:
            return None

    def _holder(self) -> dict | None:
        try:
            holder = json.loads(self._read() or "")
            return holder if {"host", "pid", "since"} <= holder.keys() else None
        except ValueError:
            return None  # being written this instant, or not ours: treat as held

    def _stale(self, holder: dict | None) -> bool:
        """Whether the holder is gone: a dead process of this host at once; any other lock (another host's, or
        one that does not parse) once this host has seen it unchanged for STALE_S."""
        if holder is not None and holder["host"] == socket.gethostname():
            try:
                os.kill(int(holder["pid"]), 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                return False
            return int(holder["pid"]) == os.getpid()  # this very process, claiming again
        self._seen_s = self._unchanged_for()
        return self._seen_s >= STALE_S

    def _unchanged_for(self) -> float:
        """Seconds of this host's clock that it has seen the lock as it is now (content and time stamp); 0 at
        the first sight, which is recorded for a later claim of this host to compare with."""
        try:
            now = f"{os.stat(self.path).st_mtime_ns} {self._read()}"
        except OSError:
            return 0.0  # gone this instant: the next try meets the new state
        record = self.path + SEEN + socket.gethostname()
        try:
            with open(record) as f:
                seen = json.load(f)
            if seen["lock"] == now and seen["boot"] == _boot_id() and clock() >= seen["at"]:
                return clock() - seen["at"]
        except (OSError, ValueError, KeyError, TypeError):
            pass  # no sight yet, or one of a lock since refreshed or replaced: this is the first
        with contextlib.suppress(OSError):  # not recorded: each claim is then a first sight, the lock kept
            atomic_write(record, lambda f: json.dump({"lock": now, "boot": _boot_id(), "at": clock()}, f))
        return 0.0

    def _held(self, holder: dict | None) -> str:
        """The refusal: who holds the folder and, for a holder this host cannot check, when it may retry."""
        who = f"pid {holder['pid']} on {holder['host']} since {holder['since']}" if holder else "another process"
        text = f"run folder {self.run_dir} is in use by {who} ({self.path})"
        if holder is not None and holder["host"] == socket.gethostname():
            return text + "; wait for it to end, or delete that file if that process is gone"
        try:
            age = time.time() - os.path.getmtime(self.path)
            text += (f", last refreshed {age:.0f} s ago by its file time" if age >= 0 else
                     f", its file time {-age:.0f} s ahead of this host's clock")
        except OSError:
            pass
        return (text + " (another host's clock, not trusted); if that holder is gone, run this again in "
                f"{STALE_S - self._seen_s:.0f} s (this host takes over a lock it has seen unchanged for "
                f"{STALE_S:.0f} s), or delete that file")


@contextlib.contextmanager
def claimed(cfg: RunConfig, plan: ResumePlan, ranks: distributed.Ranks, identity: dict, ckpt_bytes: int):
    """(checkpoint or None, run id, name, folder), the folder held by rank 0 until the run ends."""
    lock, resumed, named = None, None, None
    if ranks.is_main:
        try:
            lock, resumed, named = claim_run(cfg, plan, identity, ckpt_bytes)
        except UsageError as e:
            named = str(e)
    named = distributed.broadcast(ranks, named)
    if isinstance(named, str):
        raise UsageError(named)
    try:
        yield (resumed or (checkpoint.load(plan.checkpoint) if plan.checkpoint else None), *named)
    finally:
        if lock is not None:
            lock.release()


def claim_run(cfg: RunConfig, plan: ResumePlan, identity: dict,
              ckpt_bytes: int) -> tuple[RunFolderLock, dict | None, tuple]:
    """(lock, checkpoint or None, (run id, name, folder)): the folder claimed for this process, after checking
    that a resume is the same experiment and that the checkpoint will fit."""
    if plan.checkpoint:
        return _claim_to_continue(plan.checkpoint, identity, cfg.max_steps)
    run_id, name, run_dir = run_identity(cfg, plan.name)
    check_free_space(cfg.out_dir, ckpt_bytes)
    os.makedirs(run_dir, exist_ok=True)
    lock = RunFolderLock(run_dir).acquire()
    try:
        refuse_if_it_holds_a_run(run_dir)  # again, under the lock: a racing start of the same name may have run
    except UsageError:
        lock.release()
        raise
    return lock, None, (run_id, name, run_dir)


def _claim_to_continue(path: str, identity: dict, max_steps: int | None) -> tuple[RunFolderLock, dict, tuple]:
    """claim_run for the checkpoint `path`: its folder, unless the run ended meanwhile (beyond what `max_steps`
    extends) or is another experiment."""
    run_dir = os.path.dirname(os.path.abspath(path))
    lock = RunFolderLock(run_dir).acquire()  # also: the folder can be written
    try:
        try:
            ended = how_it_ended(run_dir, max_steps)
        except files.UnreadableResult:
            ended = None  # said when the resume was planned: the run continues and writes it anew
        if ended:  # a process that held the folder until now finished it
            raise UsageError(f"{run_dir} has just ended ({ended[0]}); nothing to do: {ended[1]}")
        resumed = checkpoint.load(path)
        changed = differences(saved_experiment(resumed["experiment"]), identity)
        if changed:
            raise UsageError(f"--resume {path}: this command is a different experiment from the "
                             f"checkpoint's ({'; '.join(changed)}); only output, logging and --max-steps may "
                             "change")
        check_free_space(run_dir, os.path.getsize(path))
    except UsageError:
        lock.release()
        raise
    name = resumed["config"].get("name") or os.path.basename(run_dir)
    return lock, resumed, (resumed["run_id"], name, run_dir)


def checkpoint_bytes(model: torch.nn.Module, optimizer: str, momentum: float) -> int:
    """About what the checkpoint will take: the weights, plus SGD's momentum or AdamW's two moments."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    state = sum(p.numel() * p.element_size() for p in model.parameters())
    return weights + state * (2 if optimizer == "adamw" else 1 if momentum else 0) + 2**20


def check_free_space(directory: str, needed: int) -> None:
    """Refuse before training, not at the first checkpoint hours later, when the checkpoint cannot fit."""
    free = checkpoint.free_bytes(directory)
    if free < needed:
        raise UsageError(f"not enough free space in {directory} for the checkpoint: it needs about "
                         f"{needed / 2**20:,.0f} MiB, {free / 2**20:,.0f} MiB are free")
