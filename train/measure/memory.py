"""Memory peaks per log window: the allocator's on GPUs, the process's peak RSS on CPUs."""

from __future__ import annotations

import resource

import torch


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
