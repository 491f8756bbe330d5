"""What a person watching the run sees: a progress bar in a terminal, plain lines under Slurm or in a log file.

The bar advances every step, its rate and ETA from the host clock (no device sync: on a GPU the host runs
ahead of the device by a few steps, which the rate averages out); loss and measured images/s are shown from
the log windows, where the runner reads them anyway. Without a terminal (a pipe, a Slurm output file) a plain
line is printed at every log window, after the first step, and at least every `interval_s` seconds between.
"""

from __future__ import annotations

import os
import sys
import time

PLAIN_INTERVAL_S = 30.0  # a line at least this often without a terminal
BAR_REFRESH_S = 0.2  # the bar is redrawn at most this often


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Console:
    def __init__(self, total_steps: int, epochs: int, stream=None, enabled: bool = True, steps_only: bool = False,
                 interval_s: float = PLAIN_INTERVAL_S):
        self.enabled = enabled  # ranks other than 0 stay quiet
        self.stream = stream or sys.stdout
        # A batch job's output is a file someone tails or greps: carriage-return bars would garble it.
        self.bar = self.stream.isatty() and "SLURM_JOB_ID" not in os.environ
        self.total_steps, self.epochs = total_steps, epochs
        self.steps_only = steps_only  # a --max-steps run: "step 20/20", not "epoch 1/600"
        self.interval_s = interval_s
        self.started = time.perf_counter()
        self.first_step: int | None = None  # the rate counts from this process's first step
        self.loss: float | None = None
        self.images_per_s: float | None = None
        self._last_shown = 0.0
        self._bar_shown = False

    def say(self, message: str) -> None:
        if not self.enabled:
            return
        if self._bar_shown:
            self.stream.write("\n")
            self._bar_shown = False
        self.stream.write(message + "\n")
        self.stream.flush()

    def step(self, epoch: int, step: int) -> None:
        """After every optimizer step: host clock only, cheap when nothing is shown."""
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.first_step is None:
            self.first_step, self.started = step, now
            self._show(epoch, step, now)
            return
        due = self.bar and now - self._last_shown >= BAR_REFRESH_S
        due = due or (not self.bar and now - self._last_shown >= self.interval_s)
        if due or (self.bar and step >= self.total_steps):  # plain lines: the last window prints the end
            self._show(epoch, step, now)

    def progress(self, epoch: int, step: int, loss: float, images_per_s: float) -> None:
        """At a log window: the window's loss and measured images/s."""
        if not self.enabled:
            return
        self.loss, self.images_per_s = loss, images_per_s
        if self.first_step is None:
            self.first_step = step
        self._show(epoch, step, time.perf_counter())

    def epoch_done(self, epoch: int, step: int) -> str:
        """How the end of an epoch (or of a --max-steps run, which stops inside one) is announced."""
        if self.steps_only:
            return f"step {step}/{self.total_steps} done"
        return f"epoch {epoch + 1}/{self.epochs} done"

    def _text(self, epoch: int, step: int, now: float) -> str:
        where = f"step {step}/{self.total_steps}" if self.steps_only else \
            f"epoch {epoch + 1}/{self.epochs} step {step}/{self.total_steps}"
        parts = [where]
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        if self.images_per_s:
            parts.append(f"{self.images_per_s:,.0f} img/s")
        elapsed = now - self.started
        done_here = step - self.first_step
        if done_here > 0 and elapsed > 0:
            rate = done_here / elapsed
            parts.append(f"{rate:.2f} step/s" if rate < 10 else f"{rate:,.0f} step/s")
            if step < self.total_steps:
                parts.append(f"eta {_duration((self.total_steps - step) / rate)}")
        return " ".join(parts)

    def _show(self, epoch: int, step: int, now: float) -> None:
        self._last_shown = now
        text = self._text(epoch, step, now)
        if self.bar:
            done = step / self.total_steps
            filled = int(24 * done)
            self.stream.write(f"\r[{'#' * filled}{'.' * (24 - filled)}] {done:6.1%} {text}\033[K")
            self._bar_shown = True
            self.stream.flush()
        else:
            self.say(text)
