"""The process group a worker joins, its rank facts, DDP wrapping, and the cross-rank gathers done at log
time (never per step)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from train.contract.errors import UsageError
from train.measure.comm import CommMeter


@dataclass
class Ranks:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    nodes: int = 1
    backend: str | None = None  # None: a plain single-process run, no process group
    launcher: str = "none"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.backend is not None


def init(info: dict, device_choice: str, timeout_s: float) -> tuple[Ranks, torch.device]:
    """Join the process group: NCCL between GPUs, gloo on CPU; each worker on the GPU of its local rank."""
    use_cuda = device_choice != "cpu" and torch.cuda.is_available()
    if device_choice == "cuda" and not use_cuda:
        raise UsageError("--device cuda: no CUDA device is visible to this worker")
    if use_cuda:
        if info["local_rank"] >= torch.cuda.device_count():
            raise UsageError(f"local rank {info['local_rank']} has no GPU: this node shows "
                             f"{torch.cuda.device_count()} CUDA device(s)")
        torch.cuda.set_device(info["local_rank"])
        device = torch.device("cuda", info["local_rank"])
    else:
        device = torch.device("cpu")
        # Each process gets its share of the cores it may run on, not all of them each.
        torch.set_num_threads(max(1, _usable_cpus() // info["local_world_size"]))
    backend = "nccl" if use_cuda else "gloo"
    dist.init_process_group(backend, rank=info["rank"], world_size=info["world_size"],
                            timeout=timedelta(seconds=timeout_s),
                            **({"device_id": device} if use_cuda else {}))
    ranks = Ranks(rank=info["rank"], local_rank=info["local_rank"], world_size=info["world_size"],
                  local_world_size=info["local_world_size"], nodes=info["nodes"], backend=backend,
                  launcher=info["launcher"])
    global _METRICS_GROUP
    # Log-time gathers of Python objects go over gloo, keeping NCCL for gradients.
    _METRICS_GROUP = dist.new_group(backend="gloo") if backend != "gloo" else None
    return ranks, device


_METRICS_GROUP = None


def _usable_cpus() -> int:
    """The CPUs this process may run on: a Slurm task bound to the CPUs it asked for (task/affinity, cgroups) or
    a taskset sees those, not the node's. Threads beyond them make every step wait on threads that cannot run
    (two 1-CPU tasks on a 2-core node, each with 2 threads: 3 steps took 17 s instead of 1-2 s)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity masks (macOS): the machine's count
        return os.cpu_count() or 1


def gather(ranks: Ranks, obj) -> list:
    """Every rank's `obj`, in rank order (one collective; call on every rank at the same point)."""
    if not ranks.enabled:
        return [obj]
    out = [None] * ranks.world_size
    dist.all_gather_object(out, obj, group=_METRICS_GROUP)
    return out


def sum_across(ranks: Ranks, *tensors: torch.Tensor) -> None:
    """In-place sums over ranks of device tensors (epoch accuracy, evaluation sums)."""
    if ranks.enabled:
        for t in tensors:
            dist.all_reduce(t)


def broadcast(ranks: Ranks, value):
    if not ranks.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, group=_METRICS_GROUP)
    return box[0]


def leave_together(ranks: Ranks) -> None:
    """After a stop signal, on every rank once its part is done: wait until every rank (rank 0 last, having
    written the checkpoint and finished the W&B run) is here, so that all exit 75 together.

    A rank that exits first makes the elastic agent SIGTERM the others and SIGKILL them 30 s later (a fixed
    grace in torch's PContext, not LaunchConfig.shutdown_timeout), rank 0 in the middle of saving included.
    A barrier over gloo (the metrics group under NCCL), bounded by --dist-timeout; if rank 0 dies meanwhile it
    fails at once and the rank ends as a collective failure, not as a checkpointed one."""
    if ranks.enabled and ranks.world_size > 1 and dist.is_initialized():
        dist.barrier(group=_METRICS_GROUP)


def shutdown(ranks: Ranks) -> None:
    if ranks.enabled and dist.is_initialized():
        dist.destroy_process_group()


def versions() -> dict:
    out = {}
    if torch.cuda.is_available() and hasattr(torch.cuda, "nccl"):
        try:
            out["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
        except Exception:  # noqa: BLE001 - a torch built without NCCL
            pass
    return out


def wrap_model(model: torch.nn.Module, ranks: Ranks, device: torch.device, compress: str):
    """DDP with the timed hook; (model, meter). A plain run keeps the model as it is."""
    if not ranks.enabled:
        return model, None
    from torch.nn.parallel import DistributedDataParallel as DDP

    ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None, gradient_as_bucket_view=True)
    meter = CommMeter(device, ranks.world_size, compress)
    ddp.register_comm_hook(None, meter.hook)
    return ddp, meter
