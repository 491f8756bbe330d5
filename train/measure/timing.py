"""Step timing without a host-device sync per step (CUDA events on GPUs, the host clock on CPUs), and
images/s from the timed steps: read at log time, never per step."""

from __future__ import annotations

import statistics
import time

import torch


class Clock:
    """Time marks that cost no host-device sync: CUDA events recorded on the current stream (pooled) on a GPU,
    the host clock on CPU, where work is synchronous. Read them after `wait` on the latest."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self._free: list[torch.cuda.Event] = []

    def mark(self):
        if not self.cuda:
            return time.perf_counter()
        try:  # the comm hook marks from autograd's and the collective's threads: pop, not check-then-pop
            event = self._free.pop()
        except IndexError:
            event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def wait(self, mark) -> None:
        if self.cuda:
            mark.synchronize()

    def seconds(self, start, end) -> float:
        return start.elapsed_time(end) / 1e3 if self.cuda else end - start

    def recycle(self, marks) -> None:
        if self.cuda:
            self._free.extend(marks)


class StepTimer:
    """Per-step (step time, data time) without a host-device sync per step: three marks a step (start, batch
    ready, step done), read all at once by `collect()`, once per log window."""

    def __init__(self, device: torch.device):
        self.clock = Clock(device)
        self._pending: list[tuple] = []
        self._current: list = []
        self._timed = True

    def start(self, timed: bool = True) -> None:
        """`timed` False: the step is left out of what `collect()` returns (a profiled step)."""
        self._current = [self.clock.mark()]
        self._timed = timed

    def data_ready(self) -> None:
        self._current.append(self.clock.mark())

    def end(self) -> None:
        self._current.append(self.clock.mark())
        if self._timed:
            self._pending.append(tuple(self._current))
        else:
            self.clock.recycle(self._current)

    def collect(self) -> list[tuple[float, float]]:
        """(step_s, data_s) of every step since the last call, in order."""
        pending, self._pending = self._pending, []
        if not pending:
            return []
        self.clock.wait(pending[-1][2])
        out = [(self.clock.seconds(start, end), self.clock.seconds(start, ready)) for start, ready, end in pending]
        for marks in pending:
            self.clock.recycle(marks)
        return out


def quantile(values: list[float], q: float) -> float:
    """Linear-interpolated quantile (q in [0, 1]) of a non-empty list."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


class Throughput:
    """The run's step-time distribution for its images/s median, kept across resumes.

    The first `warmup_steps` steps of every process (segment) are left out: after a restart cuDNN autotunes
    and the allocator warms up again, so a resumed run times the same steady state as an unbroken one.
    """

    def __init__(self, images_per_step: int, warmup_steps: int):
        self.images_per_step = images_per_step
        self.warmup_steps = warmup_steps
        self.timed: list[float] = []  # step times after each segment's warm-up, whole run
        self._seen_this_segment = 0

    def add(self, step_times: list[float]) -> None:
        skip = max(0, self.warmup_steps - self._seen_this_segment)
        self._seen_this_segment += len(step_times)
        self.timed.extend(step_times[skip:])

    def window(self, step_times: list[float]) -> dict:
        median = statistics.median(step_times)
        return {
            "train/step_time_s": median,
            "train/step_time_p90_s": quantile(step_times, 0.9),
            "train/images_per_s": self.images_per_step / median,
        }

    def summary(self) -> dict:
        """Median images/s over the timed steps; None when no step was timed (a run too short to measure)."""
        if not self.timed:
            return {"train/images_per_s": None, "train/step_time_s": None, "train/timed_steps": 0}
        median = statistics.median(self.timed)
        return {"train/images_per_s": self.images_per_step / median, "train/step_time_s": median,
                "train/timed_steps": len(self.timed)}

    def state_dict(self) -> dict:
        return {"timed": torch.tensor(self.timed, dtype=torch.float64)}

    def load_state_dict(self, state: dict) -> None:
        self.timed = state["timed"].tolist()
