"""Train one CIFAR-10 ResNet at one precision and log it to W&B: `python train/run.py --help`.

parse flags -> check device and precision -> data -> model -> W&B run -> loop.fit -> checkpoint -> summary
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import platform
import secrets
import signal
import string
import subprocess
import sys
import time

_PROCESS_STARTED = time.perf_counter()  # time/setup_s of a command-line run counts from here (imports included)

if __package__ in (None, ""):  # run as a script: make `train` importable from the repository root
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if __name__ == "__main__":
    # --help and flag errors answer before torch is imported (2 s, 700 MB); main() parses again.
    from train.config import parse_args as _parse_before_torch

    _parse_before_torch(sys.argv[1:])

import torch

from train import checkpoint, compiling, data, distributed, precision, telemetry
from train.claim import RunFolderLock
from train.config import RunConfig, check_out_dir, differences, experiment, parse_args, saved_experiment
from train.console import Console
from train.turns import Turns
from train.errors import EXIT_DIVERGED, EXIT_PREEMPTED, RunFailed, UsageError
from train.backlog import Backlog
from train.loop import EpochSums, Training, fit, save_checkpoint
from train.metrics import MemoryMonitor, RunAggregates, Throughput
from train.models import count_params, flops_per_image, resnet
from train.peaks import peak_flops
from train.state import Progress, RngState, TrainingState
from train.tracking import NullTracker, Tracker, choose_mode


def pick_device(choice: str) -> torch.device:
    if choice == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if choice == "cuda":
        raise UsageError("--device cuda (--use_cuda): no CUDA device is visible to PyTorch "
                         f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); use --device cpu or auto")
    return torch.device("cpu")


def new_run_id() -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))




class StopRequest:
    """SIGTERM or SIGUSR1 (Slurm's warning before the time limit, scancel, preemption): finish the current step,
    checkpoint, exit. The handler only sets a flag; the loop acts on it at a step boundary."""

    def __init__(self):
        self.signal: int | None = None

    def __call__(self, signum, frame):
        if self.signal is None:  # the first signal is the reason; the elastic agent may SIGTERM a rank still saving
            self.signal = signum

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def install(self) -> "StopRequest":
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self)
        return self


def system_info(device: torch.device, ranks: distributed.Ranks) -> dict:
    info = {
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
        or platform.machine(),
        "world_size": ranks.world_size,
        "nodes": ranks.nodes,
        "gpus_per_node": ranks.local_world_size,
        "backend": ranks.backend,
        "launcher": ranks.launcher,
        **distributed.versions(),
        "hostname": platform.node(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpu_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(compute_capability=f"{props.major}.{props.minor}", device_memory_bytes=props.total_memory)
    return info


def peak_info(device: torch.device, precision_name: str, device_name: str) -> dict:
    """The peak FLOP/s MFU is measured against, and why; None where no peak is known (CPUs, other GPUs)."""
    peak = peak_flops(device_name, precision_name) if device.type == "cuda" else None
    return {"peak_flops_per_s": peak, "peak_source": "train/peaks.py (dense, no sparsity)" if peak else None}


def default_name(cfg: RunConfig, run_id: str) -> str:
    return f"r{cfg.depth}-{cfg.precision}-{run_id}"


def run_identity(cfg: RunConfig) -> tuple[str, str, str]:
    """(run id, name, run folder) of a new run; refuses to reuse a folder that holds a run.
    Under a W&B sweep agent the id is the one the agent chose ($WANDB_RUN_ID), so folder and run match."""
    run_id = os.environ.get("WANDB_RUN_ID") or new_run_id()
    name = cfg.name or default_name(cfg, run_id)
    run_dir = os.path.join(cfg.out_dir, name)
    refuse_if_it_holds_a_run(run_dir)
    return run_id, name, run_dir


def refuse_if_it_holds_a_run(run_dir: str) -> None:
    if os.path.exists(os.path.join(run_dir, checkpoint.FILENAME)) or _ended_run(run_dir):
        raise UsageError(f"run folder {run_dir} already holds a run; continue it with --resume {run_dir} "
                         "or choose another --name")


def resolve_auto_resume(cfg: RunConfig) -> str | None:
    """--resume auto: OUT_DIR/NAME if it holds a run (to continue, or to skip if it ended), None to start it.
    What sweeps and requeued Slurm jobs use, so that running the same command again is always right."""
    agent_id = os.environ.get("WANDB_RUN_ID")
    if not cfg.name and not agent_id:
        raise UsageError("--resume auto needs --name (or a W&B agent's $WANDB_RUN_ID): it continues OUT_DIR/NAME")
    cfg.name = cfg.name or default_name(cfg, agent_id)
    run_dir = os.path.join(cfg.out_dir, cfg.name)
    has_run = _ended_run(run_dir) or os.path.exists(os.path.join(run_dir, checkpoint.FILENAME))
    return run_dir if has_run else None


def _setup_clock() -> float:
    """When this run's set-up began: the process's start for the first run of a command-line process (imports
    count), else now (a run started in-process, e.g. by the tests)."""
    global _PROCESS_STARTED
    started, _PROCESS_STARTED = _PROCESS_STARTED, None
    return started if started is not None and __name__ == "__main__" else time.perf_counter()


def train(cfg: RunConfig, worker: dict | None = None, stop: StopRequest | None = None) -> dict:
    setup_started = _setup_clock()
    if cfg.resume == "auto":
        cfg.resume = resolve_auto_resume(cfg)
    if cfg.resume:
        run_dir = cfg.resume if os.path.isdir(cfg.resume) else os.path.dirname(os.path.abspath(cfg.resume))
        if _ended_run(run_dir):
            # A run that reached its end (or diverged) is a result: never run again, never rewritten.
            print(f"{run_dir} has already ended ({_how_it_ended(run_dir)}); nothing to do")
            return {"finished_before": True}
        cfg.resume = checkpoint.resolve(cfg.resume)
    if worker is not None:
        ranks, device = distributed.init(worker, cfg.device, cfg.dist_timeout)
    else:
        ranks, device = distributed.Ranks(), pick_device(cfg.device)
    try:
        result = _train(cfg, ranks, device, stop or StopRequest(), setup_started)
        if result.get("preempted"):
            # Every rank exits 75 only once rank 0 has saved and finished W&B: one leaving first gets the
            # elastic agent to SIGTERM the others, and SIGKILL them 30 s later.
            distributed.leave_together(ranks)
        return result
    finally:
        distributed.shutdown(ranks)


def _ended_run(run_dir: str) -> str | None:
    return run_dir if os.path.exists(os.path.join(run_dir, checkpoint.RESULT_FILE)) else None


def _how_it_ended(run_dir: str) -> str:
    try:
        with open(os.path.join(run_dir, checkpoint.RESULT_FILE)) as f:
            result = json.load(f)
    except (OSError, ValueError):
        return f"{checkpoint.RESULT_FILE} present"
    if result.get("train/diverged_at_step"):
        return f"diverged at step {result['train/diverged_at_step']}"
    if result.get("end") == "target_reached":
        return f"reached --stop-at-acc at step {result.get('train/steps')}"
    return f"finished at step {result.get('train/steps')}"


def provenance() -> dict:
    """Which code produced the run: the suite's git commit and whether it had local changes, and when."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    commit = dirty = None
    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        if commit:
            status = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=10)
            dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass  # not a git checkout, or no git: unknown, said as such
    return {"git_commit": commit, "git_dirty": dirty,
            "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def _train(cfg: RunConfig, ranks: distributed.Ranks, device: torch.device, stop: StopRequest,
           setup_started: float | None = None) -> dict:
    setup_started = time.perf_counter() if setup_started is None else setup_started
    turns = None if ranks.enabled else Turns.from_env()  # a benchmark's point: train in the turns it gives
    # Everything that can be refused is checked before anything is written.
    policy = precision.get(cfg.precision)
    backend_flags = policy.set_backend_flags()
    policy.check_device(device)
    check_out_dir(cfg.out_dir)
    compiling.check(cfg.compile, device)
    if cfg.dataset == "cifar10":
        train_split, test_split = data.load_cifar10(cfg.data_dir, cfg.download)
    else:
        train_split, test_split = data.synthetic(cfg.seed), None  # random labels: nothing to evaluate
    identity = experiment(cfg, world_size=ranks.world_size, train_images=len(train_split), device=device.type)

    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    loader_args = dict(batch_size=cfg.batch_size, device=device, dtype=policy.input_dtype,
                       memory_format=memory_format, seed=cfg.seed, rank=ranks.rank, world_size=ranks.world_size)
    if cfg.loader == "device":
        make_loader = data.DeviceLoader
    else:
        make_loader = data.TorchLoader
        loader_args["num_workers"] = cfg.num_workers
    train_loader = make_loader(train_split, train=True, **loader_args)
    test_loader = make_loader(test_split, train=False, **loader_args) if test_split is not None else None

    torch.manual_seed(cfg.seed)
    model = resnet(cfg.depth)
    params = count_params(model)
    forward_flops = flops_per_image(cfg.depth, model)
    model = policy.prepare(model)

    # Rank 0 claims the run folder (a new one, or the one to resume) once everything above has passed; every
    # rank learns the run's id, name and folder, or the one line saying why not. The claim ends with the run.
    with claimed(cfg, ranks, identity, checkpoint_bytes(model, cfg.optimizer, cfg.momentum)) as \
            (resumed, run_id, name, run_dir):
        ckpt_path = os.path.join(run_dir, checkpoint.FILENAME)
        model = model.to(device, memory_format=memory_format)
        bare_model = model
        lr = identity["effective_lr"]
        optimizer = precision.make_optimizer(model, cfg.optimizer, lr, cfg.momentum, cfg.weight_decay)
        scaler = policy.grad_scaler(device.type)
        schedule_steps = cfg.epochs * len(train_loader)
        # --max-steps stops early on the full run's schedule, so a stopped-and-resumed run matches an unbroken one.
        total_steps = min(schedule_steps, cfg.max_steps) if cfg.max_steps else schedule_steps
        if cfg.lr_schedule == "cosine":
            schedule = lambda s: 0.5 * (1 + math.cos(math.pi * min(s, schedule_steps) / schedule_steps))  # noqa: E731
        else:
            schedule = lambda s: 1.0  # noqa: E731
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

        console = Console(total_steps, cfg.epochs, enabled=ranks.is_main,
                          steps_only=total_steps < schedule_steps)  # --max-steps: "step 20/20", not "epoch 1/600"
        config = {
            **cfg.as_dict(),
            "name": name,
            "run_dir": run_dir,
            "experiment": identity,
            "effective_lr": lr,
            "provenance": provenance(),
            "precision_settings": {**policy.settings(backend_flags), "memory_format": str(memory_format)},
            "model": {"arch": f"resnet{cfg.depth}", "params": params, "forward_flops_per_image": forward_flops,
                      "train_flops_per_image": 3 * forward_flops},
            "system": (system := system_info(device, ranks)) | peak_info(device, cfg.precision, system["device_name"]),
            "data": {"train_images": len(train_split), "test_images": len(test_split) if test_split else 0,
                     "synthetic": cfg.dataset == "synthetic", "steps_per_epoch": len(train_loader),
                     "global_batch_size": cfg.batch_size * ranks.world_size},
            "total_steps": total_steps,
        }
        mode, why = choose_mode(cfg.wandb_mode)
        processes = f" x {ranks.world_size} processes ({ranks.backend})" if ranks.enabled else ""
        console.say(f"resnet{cfg.depth} {cfg.precision} on {config['system']['device_name']} ({device.type})"
                    f"{processes}: {params:,} parameters, {len(train_split):,} training images"
                    f"{' (synthetic)' if test_split is None else ''}, {total_steps:,} steps of {cfg.batch_size}"
                    f"{' per process' if ranks.enabled else ''}")
        sampler, config["nvml"] = telemetry.open_for_run(device, cfg.nvml_hz, console.say)

        progress, epoch_sums, memory = Progress(), EpochSums(device, ranks.is_main), MemoryMonitor(device)
        throughput, aggregates = Throughput(cfg.batch_size * ranks.world_size, cfg.warmup_steps), RunAggregates()
        backlog = Backlog()
        state = TrainingState({"model": bare_model, "optimizer": optimizer, "scaler": scaler, "scheduler": scheduler,
                               "loader": train_loader, "rng": RngState(), "progress": progress, "epoch": epoch_sums,
                               "throughput": throughput, "memory": memory, "aggregates": aggregates, "nvml": sampler,
                               "wandb_backlog": backlog})
        if resumed is not None:
            state.load_state_dict(resumed["state"])  # before DDP, which broadcasts rank 0's weights
            console.say(f"resumed from {ckpt_path} at step {progress.step} (epoch {train_loader.epoch + 1}, "
                        f"segment {progress.segments + 1})")
        model, comm = distributed.wrap_model(model, ranks, device, cfg.grad_compress)
        compile_s = None
        if cfg.compile != "none":
            console.say(f"compiling the model (torch.compile, mode {cfg.compile}) ...")
            with compiling.failures_in_one_line(cfg.compile, resumed=resumed is not None):
                model = compiling.compile_model(model, cfg.compile)
                compile_s = compiling.warm_up(model, bare_model, policy, device, cfg.batch_size, memory_format)
            if comm:
                comm.end_step()
                comm.window()  # the warm-up's all-reduce is not a training step's
            console.say(f"compiled in {compile_s:.1f}s (time/compile_s; not part of any step time)")
        if ranks.is_main:
            tracker = Tracker(mode=mode, why=why, run_dir=run_dir, run_id=run_id, name=name, project=cfg.project,
                              entity=cfg.entity, group=cfg.group or f"r{cfg.depth}-{cfg.precision}", tags=cfg.tags,
                              config=config, say=console.say, stats_interval=cfg.wandb_stats_interval,
                              world_size=ranks.world_size, init_timeout=cfg.wandb_init_timeout)
            if resumed is not None and tracker.mode == "offline":
                relog(tracker, backlog, progress.step, console.say)
        else:
            tracker = NullTracker()

        t = Training(model=model, policy=policy, device=device, train_loader=train_loader, test_loader=test_loader,
                     optimizer=optimizer, scaler=scaler, scheduler=scheduler, tracker=tracker, console=console,
                     epochs=cfg.epochs, total_steps=total_steps, log_every=cfg.log_every, ckpt_every=cfg.ckpt_every,
                     ckpt_path=ckpt_path, ckpt_meta={"config": cfg.as_dict() | {"name": name}, "run_id": run_id,
                                                     "experiment": identity},
                     images_per_step=cfg.batch_size * ranks.world_size, progress=progress, epoch_sums=epoch_sums,
                     throughput=throughput,
                     memory=memory, aggregates=aggregates, state=state, sampler=sampler, ranks=ranks, comm=comm,
                     stop=stop, backlog=backlog, targets=cfg.target_acc if test_loader is not None else [],
                     stop_at_acc=cfg.stop_at_acc, turns=turns)

        setup_s = time.perf_counter() - setup_started - (compile_s or 0.0)
        console.say(f"set-up {setup_s:.1f}s (imports, data, model, device probe, W&B start; time/setup_s)")
        if turns:  # a benchmark point: an eager one warms up as compiling did (bf16 on a CPU is ~20% slower for
            # its first few steps, which a round of 4 steps cannot leave out)
            turns.ready(setup_s, None if compile_s is not None else lambda: compiling.warm_up(
                model, bare_model, policy, device, cfg.batch_size, memory_format))
        exit_code = 1
        try:
            summary = fit(t)
            size = save_checkpoint(t)
            if summary.get("preempted"):
                console.say(f"stopped by {signal.Signals(stop.signal).name} at step {progress.step}: checkpoint at "
                            f"{ckpt_path}; run the same command (with --resume auto, or --resume RUN_DIR) to continue "
                            "this W&B run")
                tracker.preempting()
                exit_code = EXIT_PREEMPTED
                return {**summary, "run_dir": run_dir, "run_id": run_id}
            state_dict = bare_model.state_dict()
            summary.update({"model/params": params, "ckpt/size_bytes": size, "time/setup_s": setup_s,
                            "time/compile_s": compile_s,
                            "model/size_bytes": sum(v.numel() * v.element_size() for v in state_dict.values())})
            tracker.summarise(summary)
            if cfg.ckpt_artifact:
                tracker.log_checkpoint(ckpt_path, size, aliases=["latest", f"step-{progress.step}"])
            exit_code = EXIT_DIVERGED if progress.diverged_at_step is not None else 0
        finally:
            if sampler is not None:
                sampler.stop()
            tracker.finish(exit_code)
        result = {**summary, "run_dir": run_dir, "run_id": run_id, "precision": cfg.precision, "depth": cfg.depth,
                  "device": device.type, "end": summary["train/end"]}
        if ranks.is_main:
            write_result(os.path.join(run_dir, checkpoint.RESULT_FILE), result)
            if exit_code == EXIT_DIVERGED:
                console.say(f"diverged: the training loss (or a weight) was not finite at step "
                            f"{progress.diverged_at_step}; the run ends here as a result (exit {EXIT_DIVERGED}), "
                            f"recorded in {os.path.join(run_dir, checkpoint.RESULT_FILE)}")
            else:
                ips, timed = summary["train/images_per_s"], summary["train/timed_steps"]
                rate = f"{ips:,.0f} img/s (median of {timed} timed steps)" if ips else \
                    f"img/s not measured (all {progress.step} steps were warm-up: see --warmup-steps)"
                console.say(f"done: {rate}, {summary['time/train_s']:.1f}s training, checkpoint {size / 2**20:.1f} MiB "
                            f"at {ckpt_path}")
        return result


@contextlib.contextmanager
def claimed(cfg: RunConfig, ranks: distributed.Ranks, identity: dict, ckpt_bytes: int):
    """(checkpoint or None, run id, name, folder), the folder held by rank 0 until the run ends."""
    lock, resumed, named = None, None, None
    if ranks.is_main:
        try:
            lock, resumed, named = claim_run(cfg, identity, ckpt_bytes)
        except UsageError as e:
            named = str(e)
    named = distributed.broadcast(ranks, named)
    if isinstance(named, str):
        raise UsageError(named)
    try:
        yield (resumed or (checkpoint.load(cfg.resume) if cfg.resume else None), *named)
    finally:
        if lock is not None:
            lock.release()


def claim_run(cfg: RunConfig, identity: dict, ckpt_bytes: int) -> tuple[RunFolderLock, dict | None, tuple]:
    """(lock, checkpoint or None, (run id, name, folder)): the folder claimed for this process, after checking
    that a resume is the same experiment and that the checkpoint will fit."""
    if cfg.resume:
        run_dir = os.path.dirname(os.path.abspath(cfg.resume))
        lock = RunFolderLock(run_dir).acquire()  # also: the folder can be written
        try:
            if _ended_run(run_dir):  # a process that held the folder until now finished it
                raise UsageError(f"{run_dir} has just ended ({_how_it_ended(run_dir)}); nothing to do")
            resumed = checkpoint.load(cfg.resume)
            changed = differences(saved_experiment(resumed["experiment"]), identity)
            if changed:
                raise UsageError(f"--resume {cfg.resume}: this command is a different experiment from the "
                                 f"checkpoint's ({'; '.join(changed)}); only output, logging and --max-steps may "
                                 "change")
            check_free_space(run_dir, os.path.getsize(cfg.resume))
        except UsageError:
            lock.release()
            raise
        name = resumed["config"].get("name") or os.path.basename(run_dir)
        return lock, resumed, (resumed["run_id"], name, run_dir)
    run_id, name, run_dir = run_identity(cfg)
    check_free_space(cfg.out_dir, ckpt_bytes)
    os.makedirs(run_dir, exist_ok=True)
    lock = RunFolderLock(run_dir).acquire()
    try:
        refuse_if_it_holds_a_run(run_dir)  # again, under the lock: a racing start of the same name may have run
    except UsageError:
        lock.release()
        raise
    return lock, None, (run_id, name, run_dir)


def checkpoint_bytes(model: torch.nn.Module, optimizer: str, momentum: float) -> int:
    """About what the checkpoint will take: the weights, plus SGD's momentum or AdamW's two moments."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    state = sum(p.numel() * p.element_size() for p in model.parameters())
    return weights + state * (2 if optimizer == "adamw" else 1 if momentum else 0) + 2**20


def check_free_space(directory: str, needed: int) -> None:
    """Refuse before training, not at the first checkpoint hours later, when the checkpoint cannot fit."""
    free = checkpoint.free_bytes(directory)
    if free < needed:
        raise UsageError(f"not enough free space in {directory} for the checkpoint: it needs about "
                         f"{needed / 2**20:,.0f} MiB, {free / 2**20:,.0f} MiB are free")


def relog(tracker: Tracker, backlog: Backlog, step: int, say) -> None:
    """Log again what the checkpoint kept and the earlier segments' W&B files lack (a killed segment's
    buffered records), before training continues: the step axis stays in order."""
    missing = backlog.reconcile(tracker.held_history(), step)
    for record in missing:
        tracker.log(record)
    if missing:
        steps = [r["train/step"] for r in missing]
        say(f"W&B: logged again {len(missing)} record(s) of steps {min(steps)}-{max(steps)} that the earlier "
            "segment's W&B files lacked (it was killed before W&B wrote them)")


def write_result(path: str, result: dict) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1, default=str)
    os.replace(tmp, path)


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
    check_out_dir(cfg.out_dir)
    return distributed.launch(gpus, cfg.nodes, cfg.rdzv_endpoint, cfg.rdzv_id, cfg.dist_timeout, argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        worker = distributed.worker_env()
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    code = _main(argv, worker)
    if worker is not None and code != 0:
        # A worker leaving on an error, its W&B run already finished: skip the C++ teardown, which can abort
        # (SIGABRT) when a peer has gone first, and would turn a clear exit status into a signal.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _main(argv: list[str], worker: dict | None) -> int:
    try:
        cfg = parse_args(argv)
        if worker is None and (cfg.gpus is not None or cfg.use_ddp or cfg.nodes > 1):
            return launch_workers(cfg, argv)
        stop = StopRequest().install()
        result = train(cfg, worker, stop)
        if result.get("preempted"):
            return EXIT_PREEMPTED
        if result.get("end") == "diverged":
            return EXIT_DIVERGED
    except (UsageError, RunFailed) as e:
        if worker is None or worker["rank"] == 0:  # one line for the job, not one per rank
            print(f"error: {e}", file=sys.stderr)
        else:
            distributed.record_error(str(e))
        return 2 if isinstance(e, UsageError) else 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (torch.distributed.DistError, RuntimeError) as e:
        if worker is None or not _is_collective_failure(e):
            raise
        # A peer died or hung: say so in one line; the launcher names the rank that caused it.
        message = f"{distributed.COLLECTIVE_FAILED} ({_innermost(e)})"
        distributed.record_error(message)
        print(f"error: rank {worker['rank']}: {message}; the W&B run is marked failed", file=sys.stderr)
        return 1
    return 0


def _is_collective_failure(e: BaseException) -> bool:
    text = str(e)
    return isinstance(e, torch.distributed.DistError) or any(
        word in text for word in ("gloo", "NCCL", "Connection reset", "Connection closed", "Timed out"))


def _innermost(e: BaseException) -> str:
    return str(e).split("RuntimeError: ")[-1].splitlines()[0][:300]


if __name__ == "__main__":
    sys.exit(main())
