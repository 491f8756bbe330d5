"""What a person watching the run sees: a progress bar in a terminal, plain lines under Slurm or in a log file."""

from __future__ import annotations

import os
import sys
import time


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Console:
    def __init__(self, total_steps: int, epochs: int, stream=None, enabled: bool = True):
        self.enabled = enabled  # ranks other than 0 stay quiet
        self.stream = stream or sys.stdout
        # A batch job's output is a file someone tails or greps: carriage-return bars would garble it.
        self.bar = self.stream.isatty() and "SLURM_JOB_ID" not in os.environ
        self.total_steps, self.epochs = total_steps, epochs
        self.started = time.perf_counter()
        self.first_step: int | None = None
        self._bar_shown = False

    def say(self, message: str) -> None:
        if not self.enabled:
            return
        if self._bar_shown:
            self.stream.write("\n")
            self._bar_shown = False
        self.stream.write(message + "\n")
        self.stream.flush()

    def progress(self, epoch: int, step: int, loss: float, images_per_s: float) -> None:
        if not self.enabled:
            return
        if self.first_step is None:
            self.first_step, self.started = step, time.perf_counter()
        done = step / self.total_steps
        elapsed = time.perf_counter() - self.started
        rate = (step - self.first_step) / elapsed if elapsed > 0 and step > self.first_step else 0.0
        eta = f" eta {_duration((self.total_steps - step) / rate)}" if rate else ""
        text = (f"epoch {epoch + 1}/{self.epochs} step {step}/{self.total_steps} loss {loss:.4f} "
                f"{images_per_s:,.0f} img/s{eta}")
        if self.bar:
            filled = int(24 * done)
            self.stream.write(f"\r[{'#' * filled}{'.' * (24 - filled)}] {done:6.1%} {text}\033[K")
            self._bar_shown = True
            self.stream.flush()
        else:
            self.say(text)
