"""Where a tool that runs the runner acts in the loop, without a branch in it for that tool.

The runner registers one Hooks object a run; these methods do nothing. The benchmark's turns
(train/benchmark/turns.py) implement them when `python -m train.benchmark` started the process (TRAIN_TURNS):
report each log window's step times, wait for the next turn, and leave the wait out of the measurements.
"""

from __future__ import annotations

from typing import Callable

from train.contract import lineage


class Hooks:
    job_type = lineage.TRAIN  # the W&B run's job_type: a tool that paces the run says what kind of run it is

    def ready(self, setup_s: float, warm_up: Callable[[], float] | None) -> None:
        """Set up, before the first step; `warm_up` (None once compiling has warmed up) runs one untimed forward
        and backward, for a tool that wants the first timed step to find kernels chosen and memory allocated."""

    def on_window(self, step_times: list[float]) -> None:
        """A log window's step times, in order, as the run times them."""

    def after_window(self, step: int, sampler) -> float:
        """After a log window inside an epoch that did not end the run; `sampler`: the run's NVML sampler or None.
        Returns the seconds spent outside training (waiting), which the epoch's training time leaves out."""
        return 0.0

    def summary(self) -> dict:
        """What the tool adds to the run's summary at its end (the benchmark's rounds, bench/*)."""
        return {}
