"""A stop asked by a signal: SIGTERM or SIGUSR1 (Slurm's warning before the time limit, scancel, preemption)."""

from __future__ import annotations

import signal

# Checkpoint and exit 75: StopRequest's in each worker; the elastic launcher passes them on to its workers.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StopRequest:
    """SIGTERM or SIGUSR1 (Slurm's warning before the time limit, scancel, preemption): finish the current step,
    checkpoint, exit. The handler only sets a flag; the loop acts on it at a step boundary."""

    def __init__(self):
        self.signal: int | None = None

    def __call__(self, signum, frame):
        if self.signal is None:  # the first signal is the reason; the elastic agent may SIGTERM a rank still saving
            self.signal = signum

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def install(self) -> "StopRequest":
        for sig in STOP_SIGNALS:
            signal.signal(sig, self)
        return self
