"""The log window: what the steps since the last window measured, read with one sync every --log-every steps
(and at each epoch's end), logged, and gathered from every rank.

Per step only device work is queued: the losses stay on the device, the step times are CUDA events (the host
clock on CPUs), the loss scaler's skipped steps are counted on the device, and the lost-update probe's copy of
the weights is taken and compared outside the timed span."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

import torch

from train.launch import distributed
from train.measure.lost_updates import LostUpdates
from train.measure.timing import StepTimer
from train.runner.divergence import Divergence
from train.runner.stopping import Stopping

if TYPE_CHECKING:
    from train.runner.loop import Training


class SkippedSteps:
    """Counts the steps GradScaler skipped for inf/NaN gradients, on the device: the scale drops exactly then."""

    def __init__(self, scaler: torch.amp.GradScaler, device: torch.device, start: int):
        self.scaler = scaler
        self.count = torch.tensor(start, device=device)
        self._before = None

    def before_update(self) -> None:
        self._before = self.scaler._scale.clone()  # the scale tensor GradScaler updates in place

    def after_update(self) -> None:
        self.count += self.scaler._scale < self._before


class LogWindow:
    def __init__(self, t: Training):
        self.t = t
        scaler, progress = t.state.scaler, t.state.progress
        self.timer = StepTimer(t.device)
        self.skipped = SkippedSteps(scaler, t.device, progress.skipped_steps) if scaler.is_enabled() else None
        self.lost = LostUpdates(t.model)
        self.divergence = Divergence(self.lost.params)
        self.losses: list[torch.Tensor] = []  # this window's, on the device: no sync per step

    def start_step(self, timed: bool = True) -> None:
        """`timed` False: the step trains but its time is no part of the step-time distribution (profiled)."""
        if not self.losses:
            self.lost.before_step()  # outside the timed span: a copy of the weights for the window's first step
        self.timer.start(timed)

    def data_ready(self) -> None:
        self.timer.data_ready()

    def end_step(self, loss: torch.Tensor) -> None:
        self.losses.append(loss)
        self.timer.end()

    def after_step(self) -> None:
        self.lost.after_step()  # queued after the step's end mark; a no-op unless a copy was taken

    def log(self, epoch: int, stop_here: bool) -> str | None:
        """Log the window; "diverged" or "stop" when the run must end here (every rank learns it from the
        gather, so all ranks leave at the same window)."""
        t, progress = self.t, self.t.state.progress
        times = self.timer.collect()  # with the read below, the one sync of the window
        step_times = [s for s, _ in times]
        t.state.throughput.add(step_times)
        t.hooks.on_window(step_times)
        timing = t.state.throughput.window(step_times) if step_times else {}  # {}: every step was profiled
        final = stop_here or not t.plan.continues(progress.step, t.state.loader.epoch)
        loss_mean, diverged_at = self.divergence.read(self.losses, progress.step, final)
        self.losses.clear()
        local = {
            "train/loss": loss_mean,
            **({"train/step_time_s": timing["train/step_time_s"]} if timing else {}),
            **t.state.memory.read_and_reset(),
            **(t.state.nvml.window() if t.state.nvml else {}),
        }
        windows = distributed.gather(t.ranks, {**local, "stop": stop_here, "diverged_at": diverged_at})
        metrics = self._metrics(epoch, times, timing, local, windows)
        t.log(metrics)
        t.console.progress(epoch, progress.step, metrics["train/loss"], metrics.get("train/images_per_s"))
        diverged_at = Divergence.agreed(windows)
        if diverged_at is not None:
            progress.diverged_at_step = diverged_at
            return "diverged"
        return "stop" if Stopping.agreed(windows) else None

    def _metrics(self, epoch: int, times: list, timing: dict, local: dict, windows: list[dict]) -> dict:
        t, progress = self.t, self.t.state.progress
        metrics = {
            "train/step": progress.step,
            "epoch": epoch,
            "train/lr": t.state.scheduler.get_last_lr()[0],
            **timing,
            **({"train/data_time_s": statistics.median(d for _, d in times)} if times else {}),
            **local,
            **self.lost.read(),
            **(t.comm.window() if t.comm else {}),
        }
        if t.ranks.world_size > 1:
            metrics.update(across_ranks(windows))
        if self.skipped is not None:
            metrics["amp/loss_scale"] = t.state.scaler.get_scale()
            metrics["amp/skipped_steps"] = progress.skipped_steps = int(self.skipped.count.item())
        return metrics


def across_ranks(windows: list[dict]) -> dict:
    """Rank 0's view of a window on every rank: the mean loss, stragglers, and each rank's memory and links."""
    out = {"train/loss": sum(w["train/loss"] for w in windows) / len(windows)}
    if all("train/step_time_s" in w for w in windows):  # not in a window of profiled steps only
        out["dist/step_time_max_s"] = max(w["train/step_time_s"] for w in windows)
        out["dist/step_time_min_s"] = min(w["train/step_time_s"] for w in windows)
    for key in windows[0]:
        if key.startswith("mem/"):  # allocator peaks on GPUs, peak RSS on CPUs: the job's is the max over ranks
            out[key] = max(w[key] for w in windows)
    for rank, w in enumerate(windows):
        for key, value in w.items():
            if key.startswith("mem/") or key.endswith("_bytes_per_s"):
                out[f"rank{rank}/{key}"] = value
    return out
