"""Train one CIFAR-10 ResNet at one precision and log it to W&B: `python train/run.py --help`.

The entry point, and nothing else: parse the flags, then either start the workers of a several-process job
(this process stays their elastic agent) or train here (train/runner/session.py), turning the errors a user
can act on into one line and an exit status (2: bad input, 1: a failure it can name, 3: diverged, 75:
stopped by SIGTERM/SIGUSR1 and checkpointed, 130: stopped by Ctrl-C (checkpointed, or aborted by a second one)).
"""

from __future__ import annotations

import os
import sys
import time

_PROCESS_STARTED = time.perf_counter()  # time/setup_s of a command-line run counts from here (imports included)

try:
    from train.runner.options import parse_args
except ModuleNotFoundError as e:  # run from a checkout that was never installed
    if e.name not in ("train", "train.runner", "train.runner.options"):
        raise
    sys.exit(f"error: the suite is not installed in this Python ({sys.executable}): run `pip install -e .` in "
             f"{os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}")

if __name__ == "__main__":
    parse_args(sys.argv[1:])  # --help and flag errors answer before torch is imported (2 s, 700 MB)
    from train.contract.names import torch_temp_dirs

    _TORCH_TEMP = torch_temp_dirs()  # before torch makes its own folder in $TMPDIR
    from train.launch.elastic import job_ended

    _ended = job_ended()
    if _ended is not None:  # restarted after the job ended on purpose: end the same way (it was said already)
        sys.exit(_ended)

import torch  # noqa: E402

from train.contract.errors import EXIT_DIVERGED, EXIT_USAGE, RunFailed, UsageError, first_line  # noqa: E402
from train.contract.names import remove_empty_torch_temp_dirs  # noqa: E402
from train.launch import elastic  # noqa: E402
from train.launch.signals import StopRequest  # noqa: E402
from train.runner.options import RunConfig, check_out_dir  # noqa: E402
from train.runner.resume import restart_env  # noqa: E402
from train.runner.session import pick_device, train  # noqa: E402


def launch_workers(cfg: RunConfig, argv: list[str]) -> int:
    """This process starts the workers (--gpus, --use_ddp, --nodes) and stays as their elastic agent for the
    whole job, so it never touches a GPU: a CUDA context here would hold memory on GPU 0 (inflating its
    readings) and, under EXCLUSIVE_PROCESS compute mode (common on clusters), keep rank 0 from opening its GPU.
    GPUs are counted through NVML; device and precision are checked by the workers, and rank 0 says why not."""
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # is_available/device_count through NVML
    cuda = cfg.device != "cpu" and torch.cuda.is_available()
    if cfg.device == "cuda" and not cuda:
        pick_device("cuda")  # raises the one-line reason
    visible = torch.cuda.device_count() if cuda else 0
    gpus = cfg.gpus or visible or 1
    if cuda and gpus > visible:
        raise UsageError(f"--gpus {gpus}: this node shows {visible} CUDA device(s)")
    env = restart_env(cfg)  # refused (several nodes without --name) before anything is written
    check_out_dir(cfg.out_dir)
    return elastic.launch(gpus, cfg.nodes, cfg.rdzv_endpoint, cfg.rdzv_id, cfg.dist_timeout, argv,
                          cfg.max_restarts, env)


def main(argv: list[str] | None = None) -> int:
    """The command line's run (argv None) counts its set-up from the process's start; a caller that passes argv
    (a test, a driver script: torch already imported) from this call."""
    started = _PROCESS_STARTED if argv is None else time.perf_counter()
    argv = sys.argv[1:] if argv is None else argv
    try:
        worker = elastic.worker_env()
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    code = _main(argv, worker, started)
    if "_TORCH_TEMP" in globals():  # the command line's process: it imported torch itself
        remove_empty_torch_temp_dirs(_TORCH_TEMP)
    if worker is not None:
        elastic.record_end(code)  # an end a restart would repeat: the restarted workers leave at once
    if worker is not None and code != 0:
        # A worker leaving on an error, its W&B run already finished: skip the C++ teardown, which can abort
        # (SIGABRT) when a peer has gone first, and would turn a clear exit status into a signal.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _main(argv: list[str], worker: dict | None, started: float) -> int:
    try:
        cfg = parse_args(argv)
        if worker is None and (cfg.gpus is not None or cfg.use_ddp or cfg.nodes > 1):
            return launch_workers(cfg, argv)
        elastic.check_max_restarts(cfg.max_restarts, worker)
        stop = StopRequest(announce=worker is None or worker["rank"] == 0).install()
        result = train(cfg, worker, stop, started=started)
        if result.get("preempted"):
            return stop.exit_status()
        if result.get("end") == "diverged":
            return EXIT_DIVERGED
    except (UsageError, RunFailed) as e:
        if worker is None or worker["rank"] == 0:  # one line for the job, not one per rank
            print(f"error: {e}", file=sys.stderr)
        else:
            elastic.record_error(str(e))
        return 2 if isinstance(e, UsageError) else 1
    except KeyboardInterrupt:  # Ctrl-C before StopRequest took SIGINT over (parsing flags): nothing to save
        print("interrupted", file=sys.stderr)
        return 130
    except (torch.distributed.DistError, RuntimeError) as e:
        if worker is None or not _is_collective_failure(e):
            raise
        # A peer died or hung: say so in one line; the launcher names the rank that caused it.
        message = f"{elastic.COLLECTIVE_FAILED} ({_innermost(e)})"
        elastic.record_error(message)
        print(f"error: rank {worker['rank']}: {message}; the W&B run is marked failed", file=sys.stderr)
        return 1
    return 0


def _is_collective_failure(e: BaseException) -> bool:
    text = str(e)
    return isinstance(e, torch.distributed.DistError) or any(
        word in text for word in ("gloo", "NCCL", "Connection reset", "Connection closed", "Timed out"))


def _innermost(e: BaseException) -> str:
    return first_line(str(e).split("RuntimeError: ")[-1])[:300]


if __name__ == "__main__":
    sys.exit(main())
