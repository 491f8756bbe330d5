"""Step timing, window aggregates, memory peaks and throughput: read at log time, never per step."""

from __future__ import annotations

import math
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
    """Memory peaks of this run, kept across resumes.

    CUDA: allocator peaks per window (reset after each read, and once at the start so that nothing allocated
    before this run, e.g. an earlier benchmark point in the same process, counts). CPU has no allocator peak:
    the process's peak RSS is what there is, and it cannot be reset, so it is reported under its own name and
    never as a per-precision allocator figure.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.peaks: dict[str, int] = {}  # summary key -> bytes, max over every segment of the run
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def read_and_reset(self) -> dict:
        if self.device.type == "cuda":
            window = {"mem/max_allocated_bytes": torch.cuda.max_memory_allocated(self.device),
                      "mem/max_reserved_bytes": torch.cuda.max_memory_reserved(self.device)}
            torch.cuda.reset_peak_memory_stats(self.device)
            run = {"mem/peak_allocated_bytes": window["mem/max_allocated_bytes"],
                   "mem/peak_reserved_bytes": window["mem/max_reserved_bytes"]}
        else:
            window = {"mem/rss_peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}  # KiB
            run = dict(window)
        for key, value in run.items():
            self.peaks[key] = max(self.peaks.get(key, 0), value)
        return window

    def state_dict(self) -> dict:
        return {"peaks": dict(self.peaks)}

    def load_state_dict(self, state: dict) -> None:
        self.peaks = dict(state["peaks"])


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


class RunAggregates:
    """mean/min/max/last of every logged number over the whole run, kept across resumes.

    W&B's define_metric summaries cover only the process that logged them, and a study's runs are several
    processes in a row; the runner writes these whole-run aggregates into the summary instead, in the same shape.
    """

    def __init__(self):
        self.stats: dict[str, list[float]] = {}  # key -> [count, sum, min, max, last]

    def add(self, metrics: dict) -> None:
        for key, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            s = self.stats.get(key)
            if s is None:
                self.stats[key] = [1, value, value, value, value]
            else:
                s[0] += 1
                s[1] += value
                s[2] = min(s[2], value)
                s[3] = max(s[3], value)
                s[4] = value

    def summary(self, keys, fields=("mean", "min", "max", "last")) -> dict:
        out = {}
        for key in keys:
            s = self.stats.get(key)
            if s is not None:
                values = {"mean": s[1] / s[0], "min": s[2], "max": s[3], "last": s[4]}
                out[key] = {f: values[f] for f in fields}
        return out

    def keys(self, prefixes) -> list[str]:
        return [k for k in self.stats if k.split("/")[0] in prefixes]

    def state_dict(self) -> dict:
        return {"stats": {k: list(v) for k, v in self.stats.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.stats = {k: list(v) for k, v in state["stats"].items()}


class LostUpdates:
    """The share of weight elements whose update one optimizer step rounded away: gradient non-zero, weight
    bit-identical afterwards. Pure fp16/bf16 keep no fp32 master weights, so an update
    smaller than half a unit in the last place of the weight vanishes; this makes that visible.

    Measured on one step per log window: a copy of the weights before the step and a few whole-tensor ops
    after it, all queued on the device; the counts are read with the window's one sync.
    """

    def __init__(self, model: torch.nn.Module):
        self.params = [p for p in model.parameters() if p.requires_grad]
        self._before: list[torch.Tensor] | None = None
        self._counts: torch.Tensor | None = None  # (lost, eligible, elements the step changed)

    def before_step(self) -> None:
        self._before = [p.detach().clone() for p in self.params]

    def after_step(self) -> None:
        if self._before is None:
            return
        lost = eligible = unchanged = None
        for p, old in zip(self.params, self._before):
            if p.grad is None:
                continue
            # Non-finite gradients need no mask of their own: they either leave a non-finite weight (not "same")
            # or were not applied at all (a skipped step: nothing changed, which read() leaves out).
            moving = p.grad != 0
            same = p.detach() == old
            # count_nonzero, not sum(): a bool tensor's sum widens every element to int64 (~15x slower on a CPU)
            n_lost, n_eligible, n_same = (torch.count_nonzero(moving & same), torch.count_nonzero(moving),
                                          torch.count_nonzero(same))
            lost = n_lost if lost is None else lost + n_lost
            eligible = n_eligible if eligible is None else eligible + n_eligible
            unchanged = n_same if unchanged is None else unchanged + n_same
        self._before = None
        if lost is not None:
            total = sum(p.numel() for p in self.params if p.grad is not None)
            self._counts = torch.stack([lost, eligible, total - unchanged])

    def read(self) -> dict:
        """{precision/lost_update_frac} for the measured step, or {} (none measured, or a step the loss
        scaler skipped: nothing changed because nothing was applied, which is not rounding)."""
        counts, self._counts = self._counts, None
        if counts is None:
            return {}
        lost, eligible, changed = counts.tolist()
        if eligible == 0 or changed == 0:
            return {}
        return {"precision/lost_update_frac": lost / eligible}
