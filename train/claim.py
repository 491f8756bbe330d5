"""A run folder belongs to one process at a time.

A sweep submitted twice, or a requeued Slurm task racing a live one, must not write one folder from two
processes (two W&B runs, the later checkpoint and result.json winning). The first process creates `.lock` in
the folder atomically (O_EXCL) with its host and pid, and refreshes its time stamp while it runs. A lock is
taken over when its holder is gone: a process of this host that no longer exists, or, for a holder on another
host (whose processes cannot be checked from here), a lock not refreshed for STALE_S seconds.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import threading
import time

from train.errors import UsageError

LOCK = ".lock"
REFRESH_S = 30.0
STALE_S = 300.0  # ten missed refreshes: the holder's node is gone (a node failure leaves its lock behind)


class RunFolderLock:
    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.path = os.path.join(run_dir, LOCK)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mine: str | None = None

    def acquire(self) -> "RunFolderLock":
        """Claim the folder, or raise a UsageError naming who holds it (or why it cannot be written)."""
        me = json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                         "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
        for _ in range(3):  # a stale lock is moved aside, then the claim is tried again
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None or not self._stale(holder):
                    who = (f"pid {holder['pid']} on {holder['host']} since {holder['since']}" if holder
                           else "another process")
                    raise UsageError(f"run folder {self.run_dir} is in use by {who} ({self.path}); wait for it to "
                                     f"end, or delete that file if that process is gone") from None
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
        self._mine = None

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

    def _stale(self, holder: dict) -> bool:
        if holder["host"] == socket.gethostname():
            try:
                os.kill(int(holder["pid"]), 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                return False
            return int(holder["pid"]) == os.getpid()  # this very process, claiming again
        try:
            return time.time() - os.path.getmtime(self.path) > STALE_S
        except OSError:
            return False
