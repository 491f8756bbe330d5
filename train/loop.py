"""The training step and the epoch loop; everything they use is built by run.py.

Per step only device work is queued: the loss and accuracy sums stay on the device and the step times
are CUDA events. Every --log-every steps (and at each epoch's end) one sync reads the window.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from train import checkpoint, distributed
from train.distributed import Ranks
from train.metrics import MemoryMonitor, StepTimer, Throughput
from train.precision import Precision


@dataclass
class Training:
    model: torch.nn.Module
    policy: Precision
    device: torch.device
    train_loader: object
    test_loader: object | None
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    scheduler: torch.optim.lr_scheduler.LRScheduler
    tracker: object
    console: object
    epochs: int
    total_steps: int
    log_every: int
    ckpt_every: int
    ckpt_path: str
    ckpt_extra: dict  # config and run id, stored with every checkpoint
    warmup_steps: int
    images_per_step: int
    sampler: object | None = None  # telemetry.NvmlSampler on GPUs with NVML
    ranks: Ranks = field(default_factory=Ranks)
    comm: object | None = None  # distributed.CommMeter under DDP
    stop: object | None = None  # run.StopRequest: a signal asked the run to checkpoint and exit
    # Progress carried across a resume.
    step: int = 0
    train_time_s: float = 0.0
    skipped_steps: int = 0
    history: dict = field(default_factory=dict)


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


def evaluate(t: Training) -> dict:
    t.model.eval()
    loss = torch.zeros((), device=t.device)
    correct = torch.zeros((), dtype=torch.long, device=t.device)
    seen = torch.zeros((), dtype=torch.long, device=t.device)
    with torch.no_grad(), t.policy.autocast(t.device.type):
        for x, y in t.test_loader:
            out = t.model(x)
            loss += F.cross_entropy(out.float(), y, reduction="sum")
            correct += (out.argmax(1) == y).sum()
            seen += len(y)
    distributed.sum_across(t.ranks, loss, correct, seen)
    t.model.train()
    return {"test/loss": loss.item() / seen.item(), "test/acc": correct.item() / seen.item()}


def save_checkpoint(t: Training) -> int | None:
    """Rank 0 writes; returns the file's size there, None elsewhere."""
    if not t.ranks.is_main:
        return None
    return checkpoint.save(t.ckpt_path, {
        "model": getattr(t.model, "module", t.model).state_dict(),  # without DDP's "module." prefix
        "optimizer": t.optimizer.state_dict(),
        "scaler": t.scaler.state_dict(),
        "scheduler": t.scheduler.state_dict(),
        "loader": t.train_loader.state_dict(),
        "rng": checkpoint.rng_state(),
        "progress": {"step": t.step, "train_time_s": t.train_time_s, "skipped_steps": t.skipped_steps,
                     "history": t.history},
        **t.ckpt_extra,
    })


def fit(t: Training) -> dict:
    """Train until --epochs or --max-steps; returns the run's summary values."""
    model, policy, device = t.model, t.policy, t.device
    timer, memory = StepTimer(device), MemoryMonitor(device)
    throughput = Throughput(t.images_per_step, t.warmup_steps)
    skipped = SkippedSteps(t.scaler, device, t.skipped_steps) if t.scaler.is_enabled() else None
    window_loss = torch.zeros((), device=device)
    window_steps = 0
    model.train()
    if t.sampler:
        t.sampler.discard()  # set-up (data to the device, W&B start) is not training

    def stop_requested() -> bool:
        return bool(t.stop and t.stop.requested)

    def log_window(epoch: int) -> bool:
        """Log the window; True when some rank was asked to stop (every rank learns it from the gather)."""
        nonlocal window_loss, window_steps
        times = timer.collect()  # the one sync of the window
        step_times = [s for s, _ in times]
        throughput.add(step_times)
        timing = throughput.window(step_times)
        local = {
            "train/loss": window_loss.item() / window_steps,
            "train/step_time_s": timing["train/step_time_s"],
            **memory.read_and_reset(),
            **(t.sampler.window() if t.sampler else {}),
        }
        windows = distributed.gather(t.ranks, {**local, "stop": stop_requested()})  # at log time only
        metrics = {
            "train/step": t.step,
            "epoch": epoch,
            "train/lr": t.scheduler.get_last_lr()[0],
            **timing,
            "train/data_time_s": statistics.median(d for _, d in times),
            **local,
            **(t.comm.window() if t.comm else {}),
        }
        if t.ranks.world_size > 1:
            metrics.update(across_ranks(windows))
        if skipped is not None:
            metrics["amp/loss_scale"] = t.scaler.get_scale()
            metrics["amp/skipped_steps"] = t.skipped_steps = int(skipped.count.item())
        t.tracker.log(metrics)
        t.console.progress(epoch, t.step, metrics["train/loss"], metrics["train/images_per_s"])
        window_loss = torch.zeros((), device=device)
        window_steps = 0
        return any(w["stop"] for w in windows)

    preempted = False
    while t.step < t.total_steps and t.train_loader.epoch < t.epochs and not preempted:
        epoch = t.train_loader.epoch
        epoch_loss = torch.zeros((), device=device)
        epoch_correct = torch.zeros((), dtype=torch.long, device=device)
        epoch_seen = torch.zeros((), dtype=torch.long, device=device)
        started = time.perf_counter()
        timer.start()
        for x, y in t.train_loader:
            timer.data_ready()
            with policy.autocast(device.type):
                out = model(x)
                loss = F.cross_entropy(out.float(), y)
            t.optimizer.zero_grad(set_to_none=True)
            t.scaler.scale(loss).backward()
            t.scaler.step(t.optimizer)
            if skipped is not None:
                skipped.before_update()
            t.scaler.update()
            if skipped is not None:
                skipped.after_update()
            t.scheduler.step()
            if t.comm:
                t.comm.end_step()
            loss = loss.detach()
            window_loss += loss
            epoch_loss += loss * len(y)
            epoch_correct += (out.detach().argmax(1) == y).sum()
            epoch_seen += len(y)
            window_steps += 1
            t.step += 1
            timer.end()
            # One process stops at the next step; several agree at a log window, through its gather.
            if t.step % t.log_every == 0 or (stop_requested() and not t.ranks.enabled):
                if log_window(epoch):
                    preempted = True
                    break
            if t.step >= t.total_steps:
                break
            timer.start()
        if window_steps and log_window(epoch):
            preempted = True
        if preempted:
            t.train_time_s += time.perf_counter() - started  # the window's read synced the device
            break
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        epoch_time = time.perf_counter() - started
        t.train_time_s += epoch_time

        epoch_metrics = {"train/step": t.step, "epoch": epoch + 1, "epoch/time_s": epoch_time}
        distributed.sum_across(t.ranks, epoch_loss, epoch_correct, epoch_seen)
        if epoch_seen.item():
            epoch_metrics["train/acc"] = epoch_correct.item() / epoch_seen.item()
            epoch_metrics["train/epoch_loss"] = epoch_loss.item() / epoch_seen.item()
        if t.test_loader is not None:
            epoch_metrics.update(evaluate(t))
            if t.sampler:
                t.sampler.discard()  # evaluation is not training: keep it out of rates and energy per image
            t.history["best_test_acc"] = max(t.history.get("best_test_acc", 0.0), epoch_metrics["test/acc"])
            t.history["last_test_acc"] = epoch_metrics["test/acc"]
        t.tracker.log(epoch_metrics)
        t.console.say("epoch {}/{} done in {:.1f}s: {}".format(
            epoch + 1, t.epochs, epoch_time,
            ", ".join(f"{k} {v:.4f}" for k, v in epoch_metrics.items() if k.startswith(("train/acc", "test/")))
            or "no evaluation (synthetic data)"))
        finished_epoch = t.train_loader.step == 0
        if t.ckpt_every and finished_epoch and t.train_loader.epoch % t.ckpt_every == 0 \
                and t.step < t.total_steps and t.train_loader.epoch < t.epochs:
            save_checkpoint(t)

    images_trained = len(throughput.step_times) * t.images_per_step // t.ranks.world_size  # this GPU's
    run_median = throughput.run_median()
    if preempted:
        return {"preempted": True, "train/steps": t.step}
    return {
        **(t.sampler.summary(images_trained) if t.sampler else {}),
        "train/images_per_s": run_median,
        "train/images_per_s_per_gpu": run_median / t.ranks.world_size if run_median else None,
        "time/train_s": t.train_time_s,
        "train/steps": t.step,
        "mem/peak_allocated_bytes": memory.run_peak_allocated,
        "mem/peak_reserved_bytes": memory.run_peak_reserved,
        "amp/skipped_steps": t.skipped_steps if skipped is not None else None,
        "test/best_acc": t.history.get("best_test_acc"),
        "test/last_acc": t.history.get("last_test_acc"),
    }


def across_ranks(windows: list[dict]) -> dict:
    """Rank 0's view of a window on every rank: the mean loss, stragglers, and each rank's memory and links."""
    out = {
        "train/loss": sum(w["train/loss"] for w in windows) / len(windows),
        "dist/step_time_max_s": max(w["train/step_time_s"] for w in windows),
        "dist/step_time_min_s": min(w["train/step_time_s"] for w in windows),
        "mem/max_allocated_bytes": max(w["mem/max_allocated_bytes"] for w in windows),
        "mem/max_reserved_bytes": max(w["mem/max_reserved_bytes"] for w in windows),
    }
    for rank, w in enumerate(windows):
        for key, value in w.items():
            if key.startswith("mem/") or key.endswith("_bytes_per_s"):
                out[f"rank{rank}/{key}"] = value
    return out
