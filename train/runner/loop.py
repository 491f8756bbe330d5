"""The training loop: the step, and small components asked when to act (train/runner/setup.py builds them).

fit trains epoch by epoch; in an epoch each step queues only device work, and the log window (window.py) reads
it with one sync every --log-every steps and at the epoch's end, which also says whether training diverged
(divergence.py) or a stop signal ends the run (stopping.py). After each epoch come its record and the
evaluation (evaluation.py: time to accuracy, --stop-at-acc), then a periodic checkpoint (checkpointer.py). The profiler
(train/measure/profiler.py, --profile) says which steps it profiles; the log window leaves them untimed.
What only a tool needs (the benchmark's turns) it does through its hooks (hooks.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from train.launch import distributed
from train.launch.distributed import Ranks
from train.measure.profiler import NoProfile
from train.numerics.precision import Precision
from train.runner.checkpointer import Checkpointer
from train.runner.evaluation import Evaluation
from train.runner.hooks import Hooks
from train.runner.state import TrainingState
from train.runner.stopping import Stopping
from train.runner.summary import summary
from train.runner.window import LogWindow


@dataclass(frozen=True)
class Plan:
    """How far the run trains: --epochs on the full LR schedule, cut short by --max-steps."""

    epochs: int
    schedule_steps: int  # the full run's (--epochs), which the LR schedule spans
    total_steps: int  # where this run stops: --max-steps stops early on the full run's schedule, so a
    # stopped-and-resumed run matches an unbroken one
    log_every: int

    @property
    def steps_only(self) -> bool:
        """Cut by --max-steps: progress reads "step 20/20", not "epoch 1/600"."""
        return self.total_steps < self.schedule_steps

    def continues(self, step: int, epoch: int) -> bool:
        return step < self.total_steps and epoch < self.epochs


@dataclass
class Training:
    """What fit works with: the state it advances, the model that steps, and the components it asks."""

    state: TrainingState  # every part a restart must keep; the loop reads each from it
    model: torch.nn.Module  # the model that steps: compiled and/or DDP-wrapped (state.model is the bare module)
    policy: Precision
    device: torch.device
    plan: Plan
    tracker: object
    console: object
    checkpointer: Checkpointer
    evaluation: Evaluation | None  # None: synthetic data, nothing to evaluate
    stopping: Stopping
    ranks: Ranks = field(default_factory=Ranks)
    comm: object | None = None  # comm.CommMeter under DDP
    hooks: Hooks = field(default_factory=Hooks)
    profiler: NoProfile = field(default_factory=NoProfile)

    def log(self, metrics: dict) -> None:
        self.state.aggregates.add(metrics)
        if self.state.wandb_backlog.add(metrics):
            self.tracker.log(metrics)


class EpochClock:
    """An epoch's training time on the host clock, less the time a hook spent waiting."""

    def __init__(self):
        self.started = time.perf_counter()

    def pause(self, seconds: float) -> None:
        self.started += seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def fit(t: Training) -> dict:
    """Train until --epochs or --max-steps, a stop signal, divergence or --stop-at-acc; returns the run's summary
    values ({"preempted": True, ...} after a stop signal)."""
    t.state.progress.segments += 1
    window = LogWindow(t)
    t.model.train()
    if t.state.nvml:
        t.state.nvml.discard()  # set-up (data to the device, W&B start) is not training
    stopped = _fit(t, window)
    _log_profile(t, t.profiler.finish())  # a run that ended inside the profiled window
    return stopped or summary(t)


def _fit(t: Training, window: LogWindow) -> dict | None:
    """The epochs; {"preempted": True, ...} after a stop signal, else None."""
    progress, loader, sums = t.state.progress, t.state.loader, t.state.epoch
    # An open epoch is closed even with no step left to train: a run stopped at the step that ended its epoch
    # (before its record and evaluation) does them when resumed, as the unbroken run did right after that step.
    while (sums.open or t.plan.continues(progress.step, loader.epoch)) and not progress.end:
        epoch, clock = loader.epoch, EpochClock()
        # "stop" (a signal: checkpoint, to be continued) or "diverged" (a result: the run is over)
        ended = _train_epoch(t, window, clock) if t.plan.continues(progress.step, epoch) else None
        if ended:
            elapsed = clock.elapsed()  # the window's read synced the device
            progress.train_time_s += elapsed
            sums.time_s += elapsed
            if ended == "stop":
                distributed.sum_across(t.ranks, sums.loss, sums.correct, sums.seen)  # the job's, for rank 0 to save
                return {"preempted": True, "train/steps": progress.step}
            break
        if t.device.type == "cuda":
            torch.cuda.synchronize(t.device)
        if _end_epoch(t, epoch, clock.elapsed()):
            break
        finished_epoch = loader.step == 0
        if finished_epoch and t.plan.continues(progress.step, loader.epoch):  # the run's end writes the last
            t.checkpointer.save(loader.epoch)
    return None


def _train_epoch(t: Training, window: LogWindow, clock: EpochClock) -> str | None:
    """The epoch's steps (the rest of them, after a resume); "stop" or "diverged" when a log window ends the run
    (always one inside the epoch: the loader has not moved on)."""
    progress, loader = t.state.progress, t.state.loader
    epoch = loader.epoch
    _start_step(t, window)
    for x, y in loader:
        window.data_ready()
        t.profiler.data_ready()
        _step(t, window, x, y)
        clock.pause(_end_profiled_step(t))
        t.console.step(epoch, progress.step)  # host clock only: no device sync
        window.after_step()
        # One process stops at the next step; several agree at a log window, through its gather.
        stop_here = t.stopping.requested()
        due = progress.step % t.plan.log_every == 0 or t.stopping.now(stop_here)
        # The epoch's last step (its last batch, or --max-steps) ends a window here, before the loader moves to
        # the next epoch: a stop at it leaves the position inside this epoch, which the resume then closes.
        last = loader.step == len(loader) or progress.step >= t.plan.total_steps
        if due or last:
            ended = window.log(epoch, stop_here)
            if ended:
                return ended
            if due:  # a window only because the epoch ended gives no turn (train/benchmark/turns.py)
                clock.pause(t.hooks.after_window(progress.step, t.state.nvml))
        if progress.step >= t.plan.total_steps:
            break
        _start_step(t, window)
    return None


def _start_step(t: Training, window: LogWindow) -> None:
    # A profiled step is not timed: the profiler's overhead must not reach images/s.
    window.start_step(timed=not t.profiler.start_step(t.state.progress.step))


def _end_profiled_step(t: Training) -> float:
    """After a step; at the profiled window's last one its trace is written, read and logged, which is not
    training: returns the seconds that took, for the epoch's clock to leave out."""
    started = time.perf_counter()
    if not _log_profile(t, t.profiler.end_step()):
        return 0.0
    return time.perf_counter() - started


def _log_profile(t: Training, metrics: dict | None) -> bool:
    if metrics:
        t.log({"train/step": t.state.progress.step, **metrics})
        t.tracker.save_file(t.profiler.trace_path)
    return bool(metrics)


def _step(t: Training, window: LogWindow, x: torch.Tensor, y: torch.Tensor) -> None:
    """One optimizer step: device work only, the loss and accuracy summed on the device."""
    s, skipped = t.state, window.skipped
    with t.policy.autocast(t.device.type):
        out = t.model(x)
        loss = F.cross_entropy(out.float(), y)
    s.optimizer.zero_grad(set_to_none=True)
    s.scaler.scale(loss).backward()
    s.scaler.step(s.optimizer)
    if skipped is not None:
        skipped.before_update()
    s.scaler.update()
    if skipped is not None:
        skipped.after_update()
    s.scheduler.step()
    if t.comm:
        t.comm.end_step()
    loss = loss.detach()
    s.epoch.add(loss, out, y)
    s.progress.step += 1
    s.progress.images += len(y)
    window.end_step(loss)


def _end_epoch(t: Training, epoch: int, elapsed: float) -> bool:
    """The epoch's record (training sums, evaluation, time); True when --stop-at-acc ends the run here."""
    progress, sums = t.state.progress, t.state.epoch
    progress.train_time_s += elapsed
    epoch_time = sums.time_s + elapsed  # the whole epoch's, when a restart split it
    metrics = {"train/step": progress.step, "epoch": epoch + 1, "epoch/time_s": epoch_time}
    distributed.sum_across(t.ranks, sums.loss, sums.correct, sums.seen)
    if sums.seen.item():
        metrics["train/acc"] = sums.correct.item() / sums.seen.item()
        metrics["train/epoch_loss"] = sums.loss.item() / sums.seen.item()
    sums.reset()
    if t.evaluation:
        metrics.update(t.evaluation.after_epoch(t, epoch))
    t.log(metrics)
    t.console.say("{} in {:.1f}s: {}".format(
        t.console.epoch_done(epoch, progress.step), epoch_time,
        ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k.startswith(("train/acc", "test/")))
        or "no evaluation (synthetic data)"))
    return t.evaluation is not None and t.evaluation.target_reached(t, epoch, metrics)
