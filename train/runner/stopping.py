"""When a stop signal ends the run (to be continued from its checkpoint): one process at its next step; several
at a log window, whose gather tells every rank whether any was asked, so that all leave at the same window."""

from __future__ import annotations

from train.launch.distributed import Ranks


class Stopping:
    def __init__(self, request, ranks: Ranks):
        self.request = request  # train/launch/signals.py's StopRequest, or None
        self.ranks = ranks

    def requested(self) -> bool:
        """This process was asked to stop (host memory only: cheap every step)."""
        return bool(self.request and self.request.requested)

    def now(self, requested: bool) -> bool:
        """Log a window at this step to stop here: a single process does not wait for its next window."""
        return requested and not self.ranks.enabled

    @staticmethod
    def agreed(windows: list[dict]) -> bool:
        """Some rank was asked to stop: every rank stops at this window."""
        return any(w["stop"] for w in windows)
