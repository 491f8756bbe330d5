"""The test set after each epoch, and where the run stood then: the point time to accuracy is read from (time,
images and energy so far), and --stop-at-acc."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from train.contract.metrics import target_key
from train.launch import distributed

if TYPE_CHECKING:
    from train.runner.loop import Training


@dataclass
class Evaluation:
    loader: object  # the test set's
    targets: list  # --target-acc: accuracies whose time to reach is recorded
    stop_at_acc: float | None = None  # --stop-at-acc: end the run at the first epoch reaching it

    def after_epoch(self, t: Training, epoch: int) -> dict:
        """The test metrics and where the run stands at this evaluation (what time to accuracy is read from,
        and checked against)."""
        progress = t.state.progress
        metrics = evaluate(t, self.loader)
        if t.state.nvml:
            t.state.nvml.discard()  # evaluation is not training: keep it out of rates and energy per image
        progress.best_test_acc = max(progress.best_test_acc or 0.0, metrics["test/acc"])
        progress.last_test_acc = metrics["test/acc"]
        energy = job_energy(t)
        images = progress.images * t.ranks.world_size
        metrics.update({"cum/train_s": progress.train_time_s, "cum/images": images})
        if energy is not None:
            metrics["cum/energy_j"] = energy
        if progress.curve is not None:
            progress.curve.append([epoch + 1, progress.step, progress.train_time_s, images, energy, metrics["test/acc"]])
        return metrics

    def target_reached(self, t: Training, epoch: int, metrics: dict) -> bool:
        """--stop-at-acc reached: the run ends here, and a resume from here trains no further."""
        if self.stop_at_acc is None or metrics["test/acc"] < self.stop_at_acc:
            return False
        t.state.progress.end = "target_reached"  # in the training state
        t.console.say(f"test accuracy {metrics['test/acc']:.4f} reached --stop-at-acc {self.stop_at_acc} "
                      f"at epoch {epoch + 1}: the run ends here")
        return True

    def time_to_accuracy(self, curve: list | None) -> dict:
        return time_to_accuracy(curve, self.targets)


def evaluate(t: Training, loader) -> dict:
    t.model.eval()
    loss = torch.zeros((), device=t.device)
    correct = torch.zeros((), dtype=torch.long, device=t.device)
    seen = torch.zeros((), dtype=torch.long, device=t.device)
    with torch.no_grad(), t.policy.autocast(t.device.type):
        for x, y in loader:
            out = t.model(x)
            loss += F.cross_entropy(out.float(), y, reduction="sum")
            correct += (out.argmax(1) == y).sum()
            seen += len(y)
    distributed.sum_across(t.ranks, loss, correct, seen)
    t.model.train()
    return {"test/loss": loss.item() / seen.item(), "test/acc": correct.item() / seen.item()}


def job_energy(t: Training) -> float | None:
    """Training energy so far, summed over the job's GPUs; None unless every rank measured it."""
    energy = t.state.nvml.energy_j() if t.state.nvml else None
    if not t.ranks.enabled:
        return energy
    total = torch.tensor(math.nan if energy is None else energy, dtype=torch.float64, device=t.device)
    distributed.sum_across(t.ranks, total)
    return total.item() if math.isfinite(total.item()) else None


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
