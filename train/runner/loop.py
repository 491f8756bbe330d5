"""The training step and the epoch loop; everything they use is built by run.py.

Per step only device work is queued: the loss and accuracy sums stay on the device and the step times
are CUDA events. Every --log-every steps (and at each epoch's end) one sync reads the window.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from train.contract.metrics import target_key
from train.launch import distributed
from train.launch.distributed import Ranks
from train.measure.aggregates import RunAggregates
from train.measure.lost_updates import LostUpdates
from train.measure.memory import MemoryMonitor
from train.measure.timing import StepTimer, Throughput
from train.numerics.precision import Precision
from train.runner import checkpoint
from train.runner.backlog import Backlog
from train.runner.state import Progress, TrainingState
from train.runner.tracking import STEP_PREFIXES

# The step axis and the epoch counter are W&B's to keep; every other step metric's whole-run aggregates are ours.
NOT_AGGREGATED = ("train/step", "epoch")


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
    ckpt_meta: dict  # config, run id and experiment identity, stored with every checkpoint
    images_per_step: int  # the whole job's
    progress: Progress
    epoch_sums: EpochSums
    throughput: Throughput
    memory: MemoryMonitor
    aggregates: RunAggregates
    state: TrainingState  # every part above that a restart must keep, saved and restored as one
    sampler: object | None = None  # nvml.NvmlSampler on GPUs with NVML
    ranks: Ranks = field(default_factory=Ranks)
    comm: object | None = None  # comm.CommMeter under DDP
    stop: object | None = None  # signals.StopRequest: a signal asked the run to checkpoint and exit
    backlog: Backlog = field(default_factory=Backlog)  # what W&B's files may lack until they are closed
    targets: list = field(default_factory=list)  # --target-acc: accuracies whose time to reach is recorded
    stop_at_acc: float | None = None  # --stop-at-acc: end the run at the first epoch reaching it
    turns: object | None = None  # turns.Turns: a benchmark runs this process in turns with others

    def log(self, metrics: dict) -> None:
        self.aggregates.add(metrics)
        if self.backlog.add(metrics):
            self.tracker.log(metrics)


class EpochSums:
    """The current epoch's training loss and accuracy sums (on the device: no sync per step) and its training
    time so far. Part of the training state, so an epoch split by a restart counts every one of its batches.

    Under DDP the job's sums are summed over ranks when the run stops; rank 0 saves them, and on resume only
    rank 0 takes them back (the others start from zero), so the epoch's all-reduce counts each batch once.
    """

    def __init__(self, device: torch.device, holds_job_totals: bool = True):
        self.device = device
        self.holds_job_totals = holds_job_totals
        self.reset()

    def reset(self) -> None:
        self.loss = torch.zeros((), device=self.device)
        self.correct = torch.zeros((), dtype=torch.long, device=self.device)
        self.seen = torch.zeros((), dtype=torch.long, device=self.device)
        self.time_s = 0.0

    def state_dict(self) -> dict:
        return {"loss": self.loss.item(), "correct": int(self.correct.item()), "seen": int(self.seen.item()),
                "time_s": self.time_s}

    def load_state_dict(self, state: dict) -> None:
        if not self.holds_job_totals:
            return
        self.loss.fill_(state["loss"])
        self.correct.fill_(state["correct"])
        self.seen.fill_(state["seen"])
        self.time_s = state["time_s"]


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
    return checkpoint.save(t.ckpt_path, {"state": t.state.state_dict(), **t.ckpt_meta})


def _first_non_finite(losses: list[torch.Tensor], params: list[torch.Tensor]) -> torch.Tensor:
    """On the device: (mean loss, index of the first step whose loss is not finite or -1, weights all finite;
    1 when `params` is empty)."""
    stacked = torch.stack(losses).float()
    bad = ~stacked.isfinite()
    index = torch.where(bad.any(), bad.int().argmax(), torch.tensor(-1, device=stacked.device))
    # Every weight is finite when each tensor's min and max are (NaN and inf both show in them): one reduction
    # a tensor, ~8x cheaper on a CPU than isfinite().all(), which writes a mask first.
    weights_ok = torch.cat([torch.stack(torch.aminmax(p.detach())).float() for p in params]).isfinite().all() \
        if params else torch.tensor(True, device=stacked.device)
    return torch.stack([stacked.mean(), index.float(), weights_ok.float()])


def fit(t: Training) -> dict:
    """Train until --epochs or --max-steps, a stop signal or divergence; returns the run's summary values."""
    model, policy, device, progress, sums = t.model, t.policy, t.device, t.progress, t.epoch_sums
    progress.segments += 1
    timer = StepTimer(device)
    skipped = SkippedSteps(t.scaler, device, progress.skipped_steps) if t.scaler.is_enabled() else None
    lost = LostUpdates(model)
    params = lost.params
    step_losses: list[torch.Tensor] = []  # this window's, on the device: no sync per step
    model.train()
    if t.sampler:
        t.sampler.discard()  # set-up (data to the device, W&B start) is not training

    def stop_requested() -> bool:
        return bool(t.stop and t.stop.requested)

    def log_window(epoch: int, stop_here: bool) -> str | None:
        """Log the window; "diverged" or "stop" when the run must end here (every rank learns it from the
        gather, so all ranks leave at the same window)."""
        times = timer.collect()  # with the read below, the one sync of the window
        step_times = [s for s, _ in times]
        t.throughput.add(step_times)
        if t.turns:
            t.turns.add(step_times)
        timing = t.throughput.window(step_times)
        # A weight that is not finite makes the next step's loss so (NaN and inf survive every layer), so the
        # weights themselves are checked only where no next step will: the run's last window, or a stop's.
        final = stop_here or progress.step >= t.total_steps or t.train_loader.epoch >= t.epochs
        loss_mean, bad_index, weights_ok = _first_non_finite(step_losses, params if final else []).tolist()
        if bad_index >= 0:  # the first step whose loss was not finite
            diverged_at = progress.step - len(step_losses) + 1 + int(bad_index)
        elif not weights_ok:  # finite losses but a weight that is not: known only at the window's end
            diverged_at = progress.step
        else:
            diverged_at = None
        step_losses.clear()
        local = {
            "train/loss": loss_mean,
            "train/step_time_s": timing["train/step_time_s"],
            **t.memory.read_and_reset(),
            **(t.sampler.window() if t.sampler else {}),
        }
        windows = distributed.gather(t.ranks, {**local, "stop": stop_here, "diverged_at": diverged_at})
        metrics = {
            "train/step": progress.step,
            "epoch": epoch,
            "train/lr": t.scheduler.get_last_lr()[0],
            **timing,
            "train/data_time_s": statistics.median(d for _, d in times),
            **local,
            **lost.read(),
            **(t.comm.window() if t.comm else {}),
        }
        if t.ranks.world_size > 1:
            metrics.update(across_ranks(windows))
        if skipped is not None:
            metrics["amp/loss_scale"] = t.scaler.get_scale()
            metrics["amp/skipped_steps"] = progress.skipped_steps = int(skipped.count.item())
        t.log(metrics)
        t.console.progress(epoch, progress.step, metrics["train/loss"], metrics["train/images_per_s"])
        diverged = [w["diverged_at"] for w in windows if w["diverged_at"] is not None]
        if diverged:
            progress.diverged_at_step = min(diverged)
            return "diverged"
        return "stop" if any(w["stop"] for w in windows) else None

    ended = None  # "stop" (a signal: checkpoint, to be continued) or "diverged" (a result: the run is over)
    while progress.step < t.total_steps and t.train_loader.epoch < t.epochs and not ended and not progress.end:
        epoch = t.train_loader.epoch
        started = time.perf_counter()
        if not step_losses:
            lost.before_step()  # outside the timed span: a copy of the weights for the window's first step
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
            step_losses.append(loss)
            sums.loss += loss * len(y)
            sums.correct += (out.detach().argmax(1) == y).sum()
            sums.seen += len(y)
            progress.step += 1
            progress.images += len(y)
            timer.end()
            t.console.step(epoch, progress.step)  # host clock only: no device sync
            lost.after_step()  # queued after the step's end mark; a no-op unless a copy was taken
            # One process stops at the next step; several agree at a log window, through its gather.
            stop_here = stop_requested()
            if progress.step % t.log_every == 0 or (stop_here and not t.ranks.enabled):
                ended = log_window(epoch, stop_here)
                if ended:
                    break
                if t.turns and t.turns.ends_turn(progress.step):
                    started += t.turns.next()  # waiting for the next turn is not training time
                    if t.sampler:
                        t.sampler.discard()  # nor are the other points' turns, which NVML saw meanwhile
            if progress.step >= t.total_steps:
                break
            if not step_losses:
                lost.before_step()
            timer.start()
        if step_losses and not ended:
            ended = log_window(epoch, stop_requested())
        if ended:
            elapsed = time.perf_counter() - started  # the window's read synced the device
            progress.train_time_s += elapsed
            sums.time_s += elapsed
            if ended == "stop":
                distributed.sum_across(t.ranks, sums.loss, sums.correct, sums.seen)  # the job's, for rank 0 to save
            break
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - started
        progress.train_time_s += elapsed
        epoch_time = sums.time_s + elapsed  # the whole epoch's, when a restart split it

        epoch_metrics = {"train/step": progress.step, "epoch": epoch + 1, "epoch/time_s": epoch_time}
        distributed.sum_across(t.ranks, sums.loss, sums.correct, sums.seen)
        if sums.seen.item():
            epoch_metrics["train/acc"] = sums.correct.item() / sums.seen.item()
            epoch_metrics["train/epoch_loss"] = sums.loss.item() / sums.seen.item()
        sums.reset()
        if t.test_loader is not None:
            epoch_metrics.update(evaluate(t))
            if t.sampler:
                t.sampler.discard()  # evaluation is not training: keep it out of rates and energy per image
            progress.best_test_acc = max(progress.best_test_acc or 0.0, epoch_metrics["test/acc"])
            progress.last_test_acc = epoch_metrics["test/acc"]
            # Where the run stands at this evaluation: what time to accuracy is read from (and checked against).
            energy = job_energy(t)
            epoch_metrics.update({"cum/train_s": progress.train_time_s,
                                  "cum/images": progress.images * t.ranks.world_size})
            if energy is not None:
                epoch_metrics["cum/energy_j"] = energy
            if progress.curve is not None:
                progress.curve.append([epoch + 1, progress.step, progress.train_time_s,
                                       progress.images * t.ranks.world_size, energy, epoch_metrics["test/acc"]])
        t.log(epoch_metrics)
        t.console.say("{} in {:.1f}s: {}".format(
            t.console.epoch_done(epoch, progress.step), epoch_time,
            ", ".join(f"{k} {v:.4f}" for k, v in epoch_metrics.items() if k.startswith(("train/acc", "test/")))
            or "no evaluation (synthetic data)"))
        if t.stop_at_acc is not None and epoch_metrics.get("test/acc", -1.0) >= t.stop_at_acc:
            progress.end = "target_reached"  # in the training state: a resume from here trains no further
            t.console.say(f"test accuracy {epoch_metrics['test/acc']:.4f} reached --stop-at-acc {t.stop_at_acc} "
                          f"at epoch {epoch + 1}: the run ends here")
            break
        finished_epoch = t.train_loader.step == 0
        if t.ckpt_every and finished_epoch and t.train_loader.epoch % t.ckpt_every == 0 \
                and progress.step < t.total_steps and t.train_loader.epoch < t.epochs:
            save_checkpoint(t)

    if ended == "stop":
        return {"preempted": True, "train/steps": progress.step}
    return summary(t)


def summary(t: Training) -> dict:
    """The whole run's figures, from the training state: the same for a run resumed five times as for an
    unbroken one (timing noise aside)."""
    p = t.progress
    timing = t.throughput.summary()
    ips = timing["train/images_per_s"]
    return {
        **t.aggregates.summary([k for k in t.aggregates.keys(STEP_PREFIXES) if k not in NOT_AGGREGATED]),
        **t.aggregates.summary(["test/acc"], fields=("max", "last")),
        **(t.sampler.summary(p.images) if t.sampler else {}),
        **timing,
        "train/images_per_s_per_gpu": ips / t.ranks.world_size if ips else None,
        "time/train_s": p.train_time_s,
        "train/steps": p.step,
        "train/images": p.images * t.ranks.world_size,
        "train/segments": p.segments,
        "train/diverged_at_step": p.diverged_at_step,
        **t.memory.peaks,
        "amp/skipped_steps": p.skipped_steps if t.scaler.is_enabled() else None,
        "test/best_acc": p.best_test_acc,
        "test/last_acc": p.last_test_acc,
        "train/end": end_reason(p),
        **time_to_accuracy(p.curve, t.targets),
        **memory_parts(t),
    }


def end_reason(p: Progress) -> str:
    """Why the run ended: diverged, target_reached (--stop-at-acc) or finished (--epochs or --max-steps)."""
    if p.diverged_at_step is not None:
        return "diverged"
    return p.end or "finished"


def time_to_accuracy(curve: list | None, targets) -> dict:
    """{time_to_acc/<pct>: {time_s, epoch, step, images[, energy_j]} at the first evaluation whose test accuracy
    reached the target, or None when none did}. Empty when the curve is unknown (an older checkpoint)."""
    if curve is None:
        return {}
    out = {}
    for target in targets:
        hit = next((c for c in curve if c[5] >= target), None)
        if hit is None:
            out[target_key(target)] = None
            continue
        epoch, step, time_s, images, energy, acc = hit
        out[target_key(target)] = {"time_s": time_s, "epoch": epoch, "step": step, "images": images,
                                   "test_acc": acc, **({"energy_j": energy} if energy is not None else {})}
    return out


def job_energy(t: Training) -> float | None:
    """Training energy so far, summed over the job's GPUs; None unless every rank measured it."""
    energy = t.sampler.energy_j() if t.sampler else None
    if not t.ranks.enabled:
        return energy
    total = torch.tensor(math.nan if energy is None else energy, dtype=torch.float64, device=t.device)
    distributed.sum_across(t.ranks, total)
    return total.item() if math.isfinite(total.item()) else None


def tensor_bytes(tensors) -> int:
    return sum(x.numel() * x.element_size() for x in tensors)


def memory_parts(t: Training) -> dict:
    """Where training memory goes, from the tensors themselves: weights, gradients and optimizer state (every
    tensor in the optimizer's state); on GPUs also the device-resident data set, the lost-update measurement's
    copy of the trainable weights (held during one step per window), and the rest of the allocator's peak:
    activations and workspace (autocast's low-precision weight copies, cuDNN/cuBLAS workspaces, DDP buckets)."""
    params = list(t.model.parameters())
    weights = tensor_bytes(params)
    grads = [p.grad for p in params if p.grad is not None]
    optimizer = tensor_bytes(v for s in t.optimizer.state.values() for v in s.values() if torch.is_tensor(v))
    out = {"mem/params_bytes": weights, "mem/grads_bytes": tensor_bytes(grads) if grads else None,
           "mem/optimizer_bytes": optimizer}
    peak = t.memory.peaks.get("mem/peak_allocated_bytes")
    if peak is not None and grads:
        on_device = [x for loader in (t.train_loader, t.test_loader) if loader is not None
                     for x in (getattr(loader, "images", None), getattr(loader, "labels", None))
                     if torch.is_tensor(x) and x.device.type == t.device.type]
        data = tensor_bytes(on_device)
        copy = tensor_bytes(p for p in params if p.requires_grad)
        rest = peak - weights - out["mem/grads_bytes"] - optimizer - data - copy
        out.update({"mem/data_bytes": data, "mem/measurement_bytes": copy,
                    "mem/activations_bytes": rest if rest >= 0 else None})  # below 0: the parts are not all in it
    return out


def across_ranks(windows: list[dict]) -> dict:
    """Rank 0's view of a window on every rank: the mean loss, stragglers, and each rank's memory and links."""
    out = {
        "train/loss": sum(w["train/loss"] for w in windows) / len(windows),
        "dist/step_time_max_s": max(w["train/step_time_s"] for w in windows),
        "dist/step_time_min_s": min(w["train/step_time_s"] for w in windows),
    }
    for key in windows[0]:
        if key.startswith("mem/"):  # allocator peaks on GPUs, peak RSS on CPUs: the job's is the max over ranks
            out[key] = max(w[key] for w in windows)
    for rank, w in enumerate(windows):
        for key, value in w.items():
            if key.startswith("mem/") or key.endswith("_bytes_per_s"):
                out[f"rank{rank}/{key}"] = value
    return out
