"""Several processes: the elastic launch behind torchrun, rank discovery, the process group, the timed DDP
communication hook, and the cross-rank gathers done at log time (never per step)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from train.errors import EXIT_DIVERGED, EXIT_PREEMPTED, UsageError
from train.metrics import Clock


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


def worker_env() -> dict | None:
    """Rank information when this process is one worker of a launched job, else None.

    torchrun / the elastic agent set RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR/PORT;
    srun sets SLURM_PROCID, SLURM_LOCALID and, for a job step, SLURM_STEP_NUM_TASKS (a batch script has no
    step variables, so a plain `python train/run.py` inside sbatch stays a single process).
    """
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        world = int(env["WORLD_SIZE"])
        local_world = int(env.get("LOCAL_WORLD_SIZE", world))
        return {"rank": int(env["RANK"]), "local_rank": int(env.get("LOCAL_RANK", 0)), "world_size": world,
                "local_world_size": local_world, "nodes": max(1, world // max(1, local_world)),
                "launcher": "torchrun" if "TORCHELASTIC_RUN_ID" in env else "env"}
    if int(env.get("SLURM_STEP_NUM_TASKS", "1")) > 1 and "SLURM_PROCID" in env:
        world = int(env["SLURM_STEP_NUM_TASKS"])
        nodes = int(env.get("SLURM_STEP_NUM_NODES", "1"))
        if "MASTER_ADDR" not in env:
            env["MASTER_ADDR"] = _first_slurm_host()
        # Same port on every rank, from the job id, unless the user chose one.
        env.setdefault("MASTER_PORT", str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000))
        return {"rank": int(env["SLURM_PROCID"]), "local_rank": int(env.get("SLURM_LOCALID", 0)), "world_size": world,
                "local_world_size": max(1, world // nodes), "nodes": nodes, "launcher": "srun"}
    return None


def _first_slurm_host() -> str:
    nodelist = os.environ.get("SLURM_STEP_NODELIST") or os.environ.get("SLURM_JOB_NODELIST", "")
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                             check=True, timeout=30).stdout.split()
        if out:
            return out[0]
    except (OSError, subprocess.SubprocessError):
        pass
    raise UsageError("under srun the rendezvous host is unknown: export MASTER_ADDR (e.g. "
                     "MASTER_ADDR=$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n1)) before srun")


def launch(gpus: int, nodes: int, rdzv_endpoint: str | None, rdzv_id: str | None, timeout_s: float,
           argv: list[str]) -> int:
    """Start `gpus` workers of train/run.py on this node through PyTorch's elastic agent (torchrun's machinery).

    Returns the job's exit status; a failed worker is named with its rank and how it ended. SIGTERM and SIGUSR1
    (Slurm's warning, scancel, preemption) are passed on to the workers, which checkpoint and exit 75 together:
    the job then exits 75 (EXIT_PREEMPTED), so that a script requeues it.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if nodes > 1 and not rdzv_endpoint:
        raise UsageError(f"--nodes {nodes} needs --rdzv-endpoint HOST:PORT, the same on every node")
    # The agent's own SIGTERM handling stops the workers (SIGTERM, then SIGKILL 30 s later) and ends the
    # launcher with 143: SIGTERM is this function's to pass on, like SIGUSR1. torch < 2.9 has no
    # signals_to_handle: there the agent keeps SIGTERM (the workers still checkpoint; the launcher says 143).
    agent_signals = {"signals_to_handle": ",".join(s.name for s in _AGENT_SIGNALS)} \
        if "signals_to_handle" in {f.name for f in dataclasses.fields(LaunchConfig)} else {}
    config = LaunchConfig(
        min_nodes=nodes, max_nodes=nodes, nproc_per_node=gpus,
        rdzv_backend="c10d", rdzv_endpoint=rdzv_endpoint or "localhost:0",
        run_id=rdzv_id or (os.environ.get("SLURM_JOB_ID") if nodes > 1 else None) or uuid.uuid4().hex[:12],
        rdzv_configs={"timeout": int(timeout_s)}, max_restarts=0, monitor_interval=0.5, **agent_signals,
    )
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "run.py")
    stop = _StopForwarder()
    previous = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS}
    try:
        elastic_launch(config, sys.executable)("-u", script, *argv)
    except ChildFailedError as e:
        failures = sorted(e.failures.items())
        if all(f.exitcode == EXIT_PREEMPTED for _, f in failures):
            return EXIT_PREEMPTED  # every worker checkpointed; rank 0 said how to continue
        if all(f.exitcode == EXIT_DIVERGED for _, f in failures):
            return EXIT_DIVERGED  # every rank stopped at the same window; rank 0 recorded where
        usage = [(rank, f) for rank, f in failures if f.exitcode == 2]
        if usage:  # a usage error: rank 0 printed its line; another rank's comes from its error file
            rank, failure = usage[0]
            if rank != 0:
                print(f"error: rank {rank}: {failure.message or 'usage error'}", file=sys.stderr)
            return 2
        # Causes, not consequences: ranks the agent stopped (SIGTERM) or that failed because a peer did are not.
        consequence = [(r, f) for r, f in failures
                       if f.exitcode == -signal.SIGTERM or str(f.message).startswith(COLLECTIVE_FAILED)]
        causes = [(r, f) for r, f in failures if (r, f) not in consequence] or failures
        then = [(r, f) for r, f in failures if (r, f) not in causes]
        text = "; ".join(f"rank {r} {_ending(f.exitcode)}" for r, f in causes)
        if then:
            text += "; then " + "; ".join(f"rank {r} {_ending(f.exitcode)}" for r, f in then)
        if stop.signal is not None:
            text += f" (after {signal.Signals(stop.signal).name}, passed on to the workers)"
        print(f"error: the {gpus * nodes}-process job failed because {text}", file=sys.stderr)
        return 1
    except SignalException as e:
        if e.sigval in STOP_SIGNALS:  # raised by _StopForwarder: no worker was running to pass it on to
            print(f"stopped by {signal.Signals(e.sigval).name} while no worker was running: nothing to "
                  "checkpoint; run the same command again", file=sys.stderr)
            return EXIT_PREEMPTED
        print(f"error: the job was stopped by {signal.Signals(e.sigval).name}", file=sys.stderr)
        return 128 + e.sigval
    except Exception as e:  # noqa: BLE001 - rendezvous timeouts and the like, in one line
        print(f"error: the {gpus * nodes}-process job failed: {type(e).__name__}: "
              f"{str(e).splitlines()[0] if str(e) else ''}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


COLLECTIVE_FAILED = "a collective failed"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)  # checkpoint and exit 75 (train/run.py's StopRequest)
_AGENT_SIGNALS = (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)  # the elastic agent stops the workers


class _StopForwarder:
    """The launcher's handler for STOP_SIGNALS: pass the signal on to the workers, which checkpoint and exit 75
    (the job's status is then 75). With no worker running (still in rendezvous, or already gone) there is
    nothing to checkpoint: stop the launch as the agent would, and launch() answers 75 all the same."""

    def __init__(self):
        self.signal: int | None = None
        self.passed_on = False

    def __call__(self, signum, frame):
        from torch.distributed.elastic.multiprocessing.api import SignalException

        if self.signal is None:
            self.signal = signum
        if _signal_children(signum):
            self.passed_on = True
        elif not self.passed_on:
            raise SignalException(f"Process {os.getpid()} got signal: {signum}", sigval=signal.Signals(signum))


def _signal_children(signum: int) -> int:
    """Pass a signal to this process's children (the elastic agent's workers); how many got it."""
    me, sent = os.getpid(), 0
    for task in os.listdir(f"/proc/{me}/task"):
        try:
            children = open(f"/proc/{me}/task/{task}/children").read().split()
        except OSError:
            continue
        for pid in children:
            try:
                os.kill(int(pid), signum)
                sent += 1
            except (ProcessLookupError, ValueError):
                pass
    return sent


def record_error(message: str) -> None:
    """Leave a worker's one-line error where the elastic agent collects it (its error file), for the launcher."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path:
        try:  # whole or not at all: the agent parses it as soon as this process is gone
            tmp = f"{path}.tmp-{os.getpid()}"
            with open(tmp, "w") as f:
                json.dump({"message": message, "timestamp": int(time.time())}, f)
            os.replace(tmp, path)
        except OSError:
            pass


def _ending(exitcode: int) -> str:
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with status {exitcode}"


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


class CommMeter:
    """A DDP communication hook that runs one of PyTorch's hooks and times it: bytes, and the time some
    all-reduce of the step was in flight (the union of the buckets' intervals, since buckets queue behind
    each other on the communication stream). Read once per log window, like the step timer."""

    def __init__(self, device: torch.device, world_size: int, compress: str):
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

        self.clock = Clock(device)
        self.world_size = world_size
        self.compress = compress
        self.inner = {"none": default_hooks.allreduce_hook, "fp16": default_hooks.fp16_compress_hook,
                      "bf16": default_hooks.bf16_compress_hook}[compress]
        self._step: list[list] = []
        self._steps: list[list[list]] = []

    def hook(self, state, bucket):
        buffer = bucket.buffer()
        nbytes = buffer.numel() * (2 if self.compress != "none" else buffer.element_size())
        record = [self.clock.mark(), None, nbytes]
        self._step.append(record)

        def done(fut):
            record[1] = self.clock.mark()  # on CUDA, the current stream here waits for the collective
            return fut.value()

        return self.inner(state, bucket).then(done)

    def end_step(self) -> None:
        if self._step:
            self._steps.append(self._step)
            self._step = []

    def window(self) -> dict:
        steps, self._steps = self._steps, []
        steps = [s for s in steps if all(r[1] is not None for r in s)]
        if not steps:
            return {}
        total_bytes, total_time = 0, 0.0
        for records in steps:
            self.clock.wait(records[-1][1])
            ref = records[0][0]
            total_time += _union([(self.clock.seconds(ref, s), self.clock.seconds(ref, e)) for s, e, _ in records])
            total_bytes += sum(r[2] for r in records)
            self.clock.recycle([mark for s, e, _ in records for mark in (s, e)])
        algbw = total_bytes / total_time if total_time > 0 else 0.0
        return {"comm/allreduce_bytes": total_bytes, "comm/allreduce_time_s": total_time,
                "comm/algbw_bytes_per_s": algbw,
                "comm/busbw_bytes_per_s": algbw * 2 * (self.world_size - 1) / self.world_size}


def _union(spans: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for start, stop in sorted(spans):
        if stop <= end:
            continue
        total += stop - max(start, end)
        end = stop
    return total


def wrap_model(model: torch.nn.Module, ranks: Ranks, device: torch.device, compress: str):
    """DDP with the timed hook; (model, meter). A plain run keeps the model as it is."""
    if not ranks.enabled:
        return model, None
    from torch.nn.parallel import DistributedDataParallel as DDP

    ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None, gradient_as_bucket_view=True)
    meter = CommMeter(device, ranks.world_size, compress)
    ddp.register_comm_hook(None, meter.hook)
    return ddp, meter
