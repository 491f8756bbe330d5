"""A stop asked by a signal: SIGTERM or SIGUSR1 (Slurm's warning before the time limit, scancel, preemption), or
SIGINT (Ctrl-C), which stops the same way and exits 130, as the shell expects of an interrupt."""

from __future__ import annotations

import os
import signal

from train.contract.errors import EXIT_PREEMPTED

# Checkpoint and exit 75: StopRequest's in each worker; the elastic launcher passes them on to its workers.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130: what a shell reports for Ctrl-C, so scripts see an interrupt


class StopRequest:
    """SIGTERM, SIGUSR1 or a first SIGINT: finish the current step, checkpoint, exit. The handler only sets a
    flag; the loop acts on it at a step boundary. A SIGINT after a stop was asked aborts at once (Ctrl-C twice:
    the user will not wait for the checkpoint): one line, exit 130, no traceback — the handler never raises,
    so no KeyboardInterrupt can surface in a finally block or a W&B thread ("Exception ignored in ...")."""

    def __init__(self, announce: bool = True):
        self.signal: int | None = None
        self.pid = os.getpid()
        self.announce = announce  # this process says what Ctrl-C does (rank 0 of a job, a single process)

    def __call__(self, signum, frame):
        if os.getpid() != self.pid:
            return  # a forked child (a DataLoader worker, which Ctrl-C reaches too): the run's process decides
        if signum == signal.SIGINT and self.signal is not None:
            self._say("interrupted again: aborted without a checkpoint of this segment's steps since the last one; "
                      "run the same command to continue from that one")
            os._exit(EXIT_INTERRUPTED)  # at once: no clean-up that could wait or raise
        if self.signal is None:  # the first signal is the reason; the elastic agent may SIGTERM a rank still saving
            self.signal = signum
            if signum == signal.SIGINT:
                self._say("interrupt: stopping at the next step with a checkpoint (Ctrl-C again to abort without one)")

    def _say(self, line: str) -> None:
        if self.announce:  # os.write, not print: a handler may run inside a print to the same stream
            os.write(2, f"{line}\n".encode())

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def exit_status(self) -> int:
        """The stopped process's exit status: 130 after Ctrl-C, else 75 (EX_TEMPFAIL: run again to continue)."""
        return EXIT_INTERRUPTED if self.signal == signal.SIGINT else EXIT_PREEMPTED

    def install(self) -> "StopRequest":
        for sig in (*STOP_SIGNALS, signal.SIGINT):
            signal.signal(sig, self)
        return self
