"""Idle power: what one GPU draws while nothing runs on it, read for a few seconds before training, so that a
run's energy above idle can be told from its total (the idle part is paid whether training runs or not).

The runner measures the GPU its process uses, before each segment trains (--idle-power-s); the node check can
call the same function. It reads the instrument the sampler integrates (train/measure/nvml_fields.read_power_w)."""

from __future__ import annotations

import statistics
import time

from train.measure.nvml_fields import read_power_w


def measure_idle_power(nvml, handle, seconds: float = 3.0, hz: float = 10.0, sleep=None) -> dict:
    """{idle_power_w: the mean over `seconds`, idle_power_min_w, idle_power_max_w, idle_seconds, idle_samples}.
    Readings span `seconds` (one more reading than intervals); NVML errors are the caller's to report."""
    sleep = sleep or time.sleep  # looked up when called: tests replace it
    intervals = max(1, round(seconds * hz))
    readings = []
    for i in range(intervals + 1):
        if i:
            sleep(seconds / intervals)
        readings.append(read_power_w(nvml, handle))
    return {"idle_power_w": statistics.fmean(readings), "idle_power_min_w": min(readings),
            "idle_power_max_w": max(readings), "idle_seconds": seconds, "idle_samples": len(readings)}
