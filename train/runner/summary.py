"""The whole run's figures, from the training state: the same for a run resumed five times as for an unbroken
one (timing noise aside)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from train.runner.state import Progress
from train.runner.tracking import STEP_PREFIXES

if TYPE_CHECKING:
    from train.runner.loop import Training

# The step axis and the epoch counter are W&B's to keep; every other step metric's whole-run aggregates are ours.
NOT_AGGREGATED = ("train/step", "epoch")


def summary(t: Training) -> dict:
    s, p = t.state, t.state.progress
    timing = s.throughput.summary()
    ips = timing["train/images_per_s"]
    return {
        **s.aggregates.summary([k for k in s.aggregates.keys(STEP_PREFIXES) if k not in NOT_AGGREGATED]),
        **s.aggregates.summary(["test/acc"], fields=("max", "last")),
        **(s.nvml.summary(p.images) if s.nvml else {}),
        **timing,
        "train/images_per_s_per_gpu": ips / t.ranks.world_size if ips else None,
        "time/train_s": p.train_time_s,
        "train/steps": p.step,
        "train/images": p.images * t.ranks.world_size,
        "train/segments": p.segments,
        "provenance/segments": p.provenance,  # each segment's commit and local changes
        "train/diverged_at_step": p.diverged_at_step,
        **s.memory.peaks,
        "amp/skipped_steps": p.skipped_steps if s.scaler.is_enabled() else None,
        "test/best_acc": p.best_test_acc,
        "test/last_acc": p.last_test_acc,
        "train/end": end_reason(p),
        **(t.evaluation.time_to_accuracy(p.curve) if t.evaluation else {}),
        **(parts := memory_parts(t)),
        **(t.profiler.result or {}),  # the segment's profiled window (prof/*), where it ran
        **optimizer_traffic(parts, t.profiler.result),
        **t.hooks.summary(),  # a benchmark point's rounds (bench/*)
    }


def optimizer_traffic(parts: dict, profiled: dict | None) -> dict:
    """The bytes an optimizer step must move at the least (read weights, gradients and state; write weights and
    state), exact from the tensors, and that over the profiled optimizer time: the memory-bound class's rate."""
    ms = (profiled or {}).get("prof/optimizer_ms")
    if not ms or parts.get("mem/grads_bytes") is None:
        return {}
    moved = 2 * parts["mem/params_bytes"] + parts["mem/grads_bytes"] + 2 * parts["mem/optimizer_bytes"]
    return {"prof/optimizer_bytes": moved, "prof/optimizer_bytes_per_s": moved / (ms / 1e3)}


def end_reason(p: Progress) -> str:
    """Why the run ended: diverged, target_reached (--stop-at-acc) or finished (--epochs or --max-steps)."""
    if p.diverged_at_step is not None:
        return "diverged"
    return p.end or "finished"


def tensor_bytes(tensors) -> int:
    return sum(x.numel() * x.element_size() for x in tensors)


def memory_parts(t: Training) -> dict:
    """Where training memory goes, from the tensors themselves: weights, gradients and optimizer state (every
    tensor in the optimizer's state); on GPUs also the device-resident data set, the lost-update measurement's
    copy of the trainable weights (held during one step per window), and the rest of the allocator's peak:
    activations and workspace (autocast's low-precision weight copies, cuDNN/cuBLAS workspaces, DDP buckets)."""
    params = list(t.model.parameters())
    weights = tensor_bytes(params)
    # A gradient has its parameter's shape and dtype: counted from the trainable weights, so a segment that
    # trained no step (a resume that only closes the epoch it stopped in) has the same figure.
    grads = [p for p in params if p.requires_grad]
    optimizer = tensor_bytes(v for s in t.state.optimizer.state.values() for v in s.values() if torch.is_tensor(v))
    out = {"mem/params_bytes": weights, "mem/grads_bytes": tensor_bytes(grads) if grads else None,
           "mem/optimizer_bytes": optimizer}
    peak = t.state.memory.peaks.get("mem/peak_allocated_bytes")
    if peak is not None and grads:
        loaders = (t.state.loader, t.evaluation.loader if t.evaluation else None)
        on_device = [x for loader in loaders if loader is not None
                     for x in (getattr(loader, "images", None), getattr(loader, "labels", None))
                     if torch.is_tensor(x) and x.device.type == t.device.type]
        data = tensor_bytes(on_device)
        copy = tensor_bytes(p for p in params if p.requires_grad)
        rest = peak - weights - out["mem/grads_bytes"] - optimizer - data - copy
        out.update({"mem/data_bytes": data, "mem/measurement_bytes": copy,
                    "mem/activations_bytes": rest if rest >= 0 else None})  # below 0: the parts are not all in it
    return out
