"""The profiled window (--profile K): torch.profiler over CPU (and CUDA) activity for K steps after the
segment's warm-up, kept as a Chrome/Perfetto trace in the run folder and read into the step-time breakdown by
operation class (profile_classes.py).

The loop asks it at each step's start whether the step is profiled; a profiled step is left out of the step-time
distribution (window.py), so images/s never includes the profiler's overhead. On a GPU each profiled step starts
and ends with a device sync, so its span covers its kernels and nothing of its neighbours'."""

from __future__ import annotations

import json
import os

import torch

from train.measure import profile_classes

TRACE_FOLDER = "profile"  # inside the run folder


class NoProfile:
    """What the loop asks when --profile is off: no step is profiled."""

    result: dict | None = None

    def start_step(self, step: int) -> bool:
        return False

    def data_ready(self) -> None:
        pass

    def end_step(self) -> dict | None:
        return None

    def finish(self) -> dict | None:
        return None


class StepProfiler(NoProfile):
    """K profiled steps, once per process (segment), starting after `after` steps of it; `folder`: the run's."""

    def __init__(self, steps: int, after: int, folder: str, device: torch.device, *, rank: int = 0,
                 images_per_step: int, train_flops_per_image: float | None, peak_flops_per_s: float | None):
        self.steps, self.after, self.folder, self.device, self.rank = steps, after, folder, device, rank
        self.images_per_step, self.flops, self.peak = images_per_step, train_flops_per_image, peak_flops_per_s
        self.seen = 0  # steps this segment has ended
        self.done = 0  # profiled steps ended
        self.first_step: int | None = None
        self._prof = None
        self._open: list = []  # the record_function spans of the step in progress
        self.trace_path: str | None = None

    def start_step(self, step: int = 0) -> bool:
        """True when this step is profiled. A step started again (the loader's epoch ended before its batch)
        leaves its unfinished span in the trace, marked as not to be read."""
        self._close_spans(complete=False)
        profiled = self.after <= self.seen < self.after + self.steps and self.trace_path is None
        if not profiled:
            return False
        if self._prof is None:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if self.device.type == "cuda":
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self._prof = torch.profiler.profile(activities=activities)
            self._prof.__enter__()
            self._complete: list[bool] = []
            self.first_step = step + 1
        self._sync()
        self._open = [torch.profiler.record_function(name).__enter__()
                      for name in (profile_classes.STEP_ANNOTATION, profile_classes.DATA_ANNOTATION)]
        return True

    def data_ready(self) -> None:
        if len(self._open) == 2:
            self._open.pop().__exit__(None, None, None)

    def end_step(self) -> dict | None:
        """After a step: on the window's last step the trace is written and its breakdown returned (prof/*)."""
        self.seen += 1
        if not self._open:
            return None
        self._sync()
        self._close_spans(complete=True)
        self.done += 1
        return self.finish() if self.done >= self.steps else None

    def finish(self) -> dict | None:
        """Stop profiling (the window's end, or the run's before it); the breakdown, None if nothing was."""
        self._close_spans(complete=False)
        if self._prof is None:
            return None
        prof, self._prof = self._prof, None
        prof.__exit__(None, None, None)
        os.makedirs(os.path.join(self.folder, TRACE_FOLDER), exist_ok=True)
        suffix = f"-rank{self.rank}" if self.rank else ""
        self.trace_path = os.path.join(self.folder, TRACE_FOLDER, f"trace-step{self.first_step}{suffix}.json")
        prof.export_chrome_trace(self.trace_path)
        with open(self.trace_path) as f:
            trace = json.load(f)
        result = profile_classes.breakdown(trace, keep=[i for i, ok in enumerate(self._complete) if ok])
        self.result = self._metrics(result) if result else None
        return self.result

    def _metrics(self, result: dict) -> dict:
        out = profile_classes.metrics(result)
        conv_s = result["classes"]["conv_matmul"] / 1e3
        if self.flops and conv_s > 0:  # the counted FLOPs are the convolutions' and the linear layer's
            achieved = self.flops * self.images_per_step / conv_s
            out["prof/conv_matmul_flops_per_s"] = achieved
            out["prof/conv_matmul_peak_frac"] = achieved / self.peak if self.peak else None
        return out

    def _close_spans(self, complete: bool) -> None:
        if not self._open:
            return
        for span in reversed(self._open):
            span.__exit__(None, None, None)
        self._open = []
        self._complete.append(complete)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
