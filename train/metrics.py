"""Step timing, window aggregates, memory peaks and throughput: read at log time, never per step."""

from __future__ import annotations

import resource
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

    def start(self) -> None:
        self._current = [self.clock.mark()]

    def data_ready(self) -> None:
        self._current.append(self.clock.mark())

    def end(self) -> None:
        self._current.append(self.clock.mark())
        self._pending.append(tuple(self._current))

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


class MemoryMonitor:
    """Allocator peaks since the last read (CUDA), or the process's peak RSS (CPU: cannot be reset)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.run_peak_allocated = 0
        self.run_peak_reserved = 0

    def read_and_reset(self) -> dict:
        if self.device.type == "cuda":
            allocated = torch.cuda.max_memory_allocated(self.device)
            reserved = torch.cuda.max_memory_reserved(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            allocated = reserved = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
        self.run_peak_allocated = max(self.run_peak_allocated, allocated)
        self.run_peak_reserved = max(self.run_peak_reserved, reserved)
        return {"mem/max_allocated_bytes": allocated, "mem/max_reserved_bytes": reserved}


class Throughput:
    """Images/s per step over the whole run, for the run's median with warm-up steps left out."""

    def __init__(self, images_per_step: int, warmup_steps: int):
        self.images_per_step = images_per_step
        self.warmup_steps = warmup_steps
        self.step_times: list[float] = []

    def add(self, step_times: list[float]) -> None:
        self.step_times.extend(step_times)

    def window(self, step_times: list[float]) -> dict:
        median = statistics.median(step_times)
        return {
            "train/step_time_s": median,
            "train/step_time_p90_s": quantile(step_times, 0.9),
            "train/images_per_s": self.images_per_step / median,
        }

    def run_median(self) -> float | None:
        """Median images/s after the warm-up steps; a run shorter than that keeps all but its first step."""
        if not self.step_times:
            return None
        skip = min(self.warmup_steps, len(self.step_times) - 1)
        return self.images_per_step / statistics.median(self.step_times[skip:])
