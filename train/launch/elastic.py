"""Several processes on one node or many: the elastic launch behind torchrun, the worker's view of its
launcher's environment, and the stop signals and errors passed between launcher and workers."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

from train.contract.errors import EXIT_DIVERGED, EXIT_PREEMPTED, EXIT_USAGE, UsageError, first_line
from train.contract.files import atomic_write
from train.launch.signals import EXIT_INTERRUPTED, STOP_SIGNALS


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
                "launcher": "torchrun" if "TORCHELASTIC_RUN_ID" in env else "env",
                # The elastic agent's count of this worker group's restarts, and how many it may make.
                "restart": int(env.get("TORCHELASTIC_RESTART_COUNT", 0)),
                "max_restarts": int(env.get("TORCHELASTIC_MAX_RESTARTS", 0))}
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
           argv: list[str], max_restarts: int = 0, env: dict | None = None) -> int:
    """Start `gpus` workers of train/run.py on this node through PyTorch's elastic agent (torchrun's machinery);
    `env`: variables the workers get (set in this process while it launches them, then restored).

    Returns the job's exit status; a failed worker is named with its rank and how it ended. SIGTERM and SIGUSR1
    (Slurm's warning, scancel, preemption) are passed on to the workers, which checkpoint and exit 75 together:
    the job then exits 75 (EXIT_PREEMPTED), so that a script requeues it. Ctrl-C (SIGINT) is passed on the same
    way: the workers checkpoint and the job exits 130; a second Ctrl-C, passed on too, aborts them at once.

    A worker that dies otherwise (killed, a failed collective) gets the agent to restart the whole worker group,
    up to `max_restarts` times; each restart continues the run from its latest checkpoint (train/runner/resume.py).
    A deliberate end (stopped, diverged, a usage error) is not retried: see job_ended.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch

    if nodes > 1 and not rdzv_endpoint:
        raise UsageError(f"--nodes {nodes} needs --rdzv-endpoint HOST:PORT, the same on every node")
    # The agent's log folder (the workers' error files), otherwise a $TMPDIR/torchelastic_* it never removes.
    logs = tempfile.mkdtemp(prefix="torchelastic_")
    config = _launch_config(gpus, nodes, rdzv_endpoint, rdzv_id, timeout_s, logs, max_restarts)
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "run.py")
    stop = _StopForwarder()
    previous = {sig: signal.signal(sig, stop) for sig in _FORWARDED}
    # The workers inherit this process's environment when the agent starts them, restarts included.
    env = {**(env or {}), _ENDED: os.path.join(logs, "ended")}
    if max_restarts and _SHARED_STORE_OFF not in os.environ:
        # The agent's TCP store, shared with the workers, outlives a restart with the dead group's keys in it:
        # the restarted workers read their peers' old addresses and cannot connect (pytorch/pytorch#135712).
        # Off, rank 0 of each worker group hosts a store of its own, as before torch 2.5.
        env[_SHARED_STORE_OFF] = "1"
    saved_env = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        elastic_launch(config, sys.executable)("-u", script, *argv)
    except ChildFailedError as e:
        return _failed_job_status(sorted(e.failures.items()), gpus * nodes, stop.signal, max_restarts)
    except SignalException as e:
        if e.sigval in _FORWARDED:  # raised by _StopForwarder: no worker was running to pass it on to
            print(f"stopped by {signal.Signals(e.sigval).name} while no worker was running: nothing to "
                  "checkpoint; run the same command again", file=sys.stderr)
            return EXIT_INTERRUPTED if e.sigval == signal.SIGINT else EXIT_PREEMPTED
        print(f"error: the job was stopped by {signal.Signals(e.sigval).name}", file=sys.stderr)
        return 128 + e.sigval
    except Exception as e:  # noqa: BLE001 - rendezvous timeouts and the like, in one line
        print(f"error: the {gpus * nodes}-process job failed: {type(e).__name__}: "
              f"{first_line(e, empty='')}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(logs, ignore_errors=True)  # the failures above were read from it already
    return 0


def _launch_config(gpus: int, nodes: int, rdzv_endpoint: str | None, rdzv_id: str | None, timeout_s: float,
                   log_dir: str, max_restarts: int = 0):
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.launcher.api import LaunchConfig

    # The agent's own SIGTERM handling stops the workers (SIGTERM, then SIGKILL 30 s later) and ends the
    # launcher with 143: SIGTERM is launch()'s to pass on, like SIGUSR1. torch < 2.9 has no
    # signals_to_handle: there the agent keeps SIGTERM (the workers still checkpoint; the launcher says 143).
    agent_signals = {"signals_to_handle": ",".join(s.name for s in _AGENT_SIGNALS)} \
        if "signals_to_handle" in {f.name for f in dataclasses.fields(LaunchConfig)} else {}
    return LaunchConfig(
        min_nodes=nodes, max_nodes=nodes, nproc_per_node=gpus,
        rdzv_backend="c10d", rdzv_endpoint=rdzv_endpoint or "localhost:0",
        run_id=rdzv_id or (os.environ.get("SLURM_JOB_ID") if nodes > 1 else None) or uuid.uuid4().hex[:12],
        rdzv_configs={"timeout": int(timeout_s)}, max_restarts=max_restarts, monitor_interval=0.5,
        logs_specs=DefaultLogsSpecs(log_dir=log_dir), **agent_signals,
    )


def _failed_job_status(failures: list, processes: int, stop_signal: int | None, restarts: int = 0) -> int:
    """The job's exit status when workers failed, and its one line: the ranks that caused it, then the rest
    (those of the last worker group, once the agent has made its `restarts`)."""
    if all(f.exitcode == EXIT_PREEMPTED for _, f in failures):
        return EXIT_PREEMPTED  # every worker checkpointed; rank 0 said how to continue
    if stop_signal == signal.SIGINT and all(f.exitcode == EXIT_INTERRUPTED for _, f in failures):
        return EXIT_INTERRUPTED  # Ctrl-C: every worker checkpointed (or a second one aborted them); rank 0 said so
    if all(f.exitcode == EXIT_DIVERGED for _, f in failures):
        return EXIT_DIVERGED  # every rank stopped at the same window; rank 0 recorded where
    usage = [(rank, f) for rank, f in failures if f.exitcode == EXIT_USAGE]
    if usage:  # a usage error: rank 0 printed its line; another rank's comes from its error file
        rank, failure = usage[0]
        if rank != 0:
            print(f"error: rank {rank}: {failure.message or 'usage error'}", file=sys.stderr)
        return EXIT_USAGE
    # Causes, not consequences: ranks the agent stopped (SIGTERM) or that failed because a peer did are not.
    consequence = [(r, f) for r, f in failures
                   if f.exitcode == -signal.SIGTERM or str(f.message).startswith(COLLECTIVE_FAILED)]
    causes = [(r, f) for r, f in failures if (r, f) not in consequence] or failures
    then = [(r, f) for r, f in failures if (r, f) not in causes]
    text = "; ".join(f"rank {r} {_ending(f.exitcode)}" for r, f in causes)
    if then:
        text += "; then " + "; ".join(f"rank {r} {_ending(f.exitcode)}" for r, f in then)
    if stop_signal is not None:
        text += f" (after {signal.Signals(stop_signal).name}, passed on to the workers)"
    elif restarts:  # a failure the agent restarts is only reported once none is left
        text += f", after {restarts} restart{'s' if restarts > 1 else ''} (all that --max-restarts {restarts} allows)"
    print(f"error: the {processes}-process job failed because {text}", file=sys.stderr)
    return 1


COLLECTIVE_FAILED = "a collective failed"
_AGENT_SIGNALS = (signal.SIGHUP, signal.SIGQUIT)  # the elastic agent stops the workers
# Passed on to the workers by launch(): the stop signals, and Ctrl-C, which the workers' own sessions (the agent
# starts each in one) keep from reaching them from the terminal.
_FORWARDED = (*STOP_SIGNALS, signal.SIGINT)


class _StopForwarder:
    """The launcher's handler for STOP_SIGNALS and SIGINT: pass the signal on to the workers, which checkpoint
    and exit 75 (130 after SIGINT; the job's status is then the same). With no worker running (still in
    rendezvous, or already gone) there is nothing to checkpoint: stop the launch as the agent would, and launch()
    answers 75 (130) all the same."""

    def __init__(self):
        self.signal: int | None = None
        self.passed_on = False

    def __call__(self, signum, frame):
        from torch.distributed.elastic.multiprocessing.api import SignalException

        if self.signal is None:
            self.signal = signum
            record_end(EXIT_INTERRUPTED if signum == signal.SIGINT else EXIT_PREEMPTED)  # not to be restarted
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
            atomic_write(path, lambda f: json.dump({"message": message, "timestamp": int(time.time())}, f))
        except OSError:
            pass


_SHARED_STORE_OFF = "TORCH_DISABLE_SHARE_RDZV_TCP_STORE"
# The file, in the launcher's log folder, where a deliberate end of the job is recorded for the agent's restarts.
_ENDED = "PRECISION_DEPTH_GPUS_JOB_ENDED"
# Ends a restart would only repeat: a usage error, a divergence (a result), a stop asked by a signal.
DELIBERATE_ENDS = (2, EXIT_DIVERGED, EXIT_PREEMPTED, EXIT_INTERRUPTED)


def record_end(status: int) -> None:
    """Record that the job ended deliberately with `status` (a worker's, or the launcher's on a stop signal).

    The elastic agent restarts the worker group after any failed worker, whatever its exit status: the
    restarted workers find this record and leave at once with the same status (job_ended), so that the job
    ends as it would have without restarts. No record under a launcher other than launch() (torchrun)."""
    path = os.environ.get(_ENDED)
    if path and status in DELIBERATE_ENDS:
        try:
            atomic_write(path, lambda f: f.write(str(status)))
        except OSError:
            pass  # the restart repeats the end (and says it again)


def job_ended() -> int | None:
    """In a restarted worker of launch(): the exit status of a deliberate end of the job (record_end), else
    None (train on). Torch-free, for run.py to answer before it imports torch."""
    path = os.environ.get(_ENDED)
    if not path or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0":
        return None
    try:
        with open(path) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def check_max_restarts(max_restarts: int, worker: dict | None) -> None:
    """--max-restarts N is the launcher's (this command's, under --gpus/--nodes): refused where nothing would
    restart the processes, and in workers whose launcher was not given it."""
    if not max_restarts or (worker and worker["max_restarts"] == max_restarts):
        return
    if worker is None:
        raise UsageError(f"--max-restarts {max_restarts} restarts the workers of a job this command launches "
                         "(--gpus N, --nodes N; --gpus 1 for one process); a single process is continued by "
                         "running the same command again with --resume auto")
    raise UsageError(f"--max-restarts {max_restarts}: these workers were started by {worker['launcher']}, which "
                     "restarts them (or not) itself: pass it to torchrun (`torchrun --max-restarts "
                     f"{max_restarts} ... train/run.py --name NAME`), not to train/run.py")


def restart_warning(worker: dict | None) -> str | None:
    """What to tell a torchrun user whose restarts would fail to connect (launch() avoids it: see there)."""
    if worker and worker["max_restarts"] and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        return (f"the agent's TCP store is shared with the workers, which a restart cannot reconnect through "
                f"(pytorch/pytorch#135712): export {_SHARED_STORE_OFF}=1 before torchrun --max-restarts")
    return None


def _ending(exitcode: int) -> str:
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with status {exitcode}"
