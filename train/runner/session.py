"""One run of training in this process: check, set up, fit, finish (summary, checkpoint, result.json).

parse flags -> check device and precision -> data -> model -> W&B run -> loop.fit -> checkpoint -> summary"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import signal
import subprocess
import time

import torch

from train.benchmark.turns import Turns
from train.contract.errors import EXIT_DIVERGED, EXIT_PREEMPTED, UsageError
from train.contract.files import atomic_write
from train.launch import distributed
from train.launch.signals import StopRequest
from train.measure import nvml
from train.measure.aggregates import RunAggregates
from train.measure.memory import MemoryMonitor
from train.measure.peaks import peak_flops
from train.measure.timing import Throughput
from train.numerics import compiling, data, precision
from train.numerics.models import count_params, flops_per_image, resnet
from train.runner import checkpoint
from train.runner.backlog import Backlog
from train.runner.claim import checkpoint_bytes, claimed
from train.runner.console import Console
from train.runner.loop import EpochSums, Training, fit, save_checkpoint
from train.runner.options import RunConfig, check_out_dir, experiment
from train.runner.resume import ResumePlan, plan_resume
from train.runner.state import Progress, RngState, TrainingState
from train.runner.tracking import NullTracker, Tracker, choose_mode


def pick_device(choice: str) -> torch.device:
    if choice == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if choice == "cuda":
        raise UsageError("--device cuda (--use_cuda): no CUDA device is visible to PyTorch "
                         f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); use --device cpu or auto")
    return torch.device("cpu")


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
    return {"peak_flops_per_s": peak, "peak_source": "train/measure/peaks.py (dense, no sparsity)" if peak else None}


def train(cfg: RunConfig, worker: dict | None = None, stop: StopRequest | None = None,
          started: float | None = None) -> dict:
    """One run in this process; `started`: when its set-up began (the process's start for a command-line run,
    whose imports count in time/setup_s), else now."""
    setup_started = time.perf_counter() if started is None else started
    plan = plan_resume(cfg)
    if plan.ended:
        print(f"{plan.run_dir} has already ended ({plan.ended}); nothing to do")
        return {"finished_before": True}
    if worker is not None:
        ranks, device = distributed.init(worker, cfg.device, cfg.dist_timeout)
    else:
        ranks, device = distributed.Ranks(), pick_device(cfg.device)
    try:
        result = _train(cfg, ranks, device, stop or StopRequest(), setup_started, plan)
        if result.get("preempted"):
            # Every rank exits 75 only once rank 0 has saved and finished W&B: one leaving first gets the
            # elastic agent to SIGTERM the others, and SIGKILL them 30 s later.
            distributed.leave_together(ranks)
        return result
    finally:
        distributed.shutdown(ranks)


def provenance() -> dict:
    """Which code produced the run: the suite's git commit and whether it had local changes, and when."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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
           setup_started: float | None, plan: ResumePlan) -> dict:
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
    with claimed(cfg, plan, ranks, identity, checkpoint_bytes(model, cfg.optimizer, cfg.momentum)) as \
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
        sampler, config["nvml"] = nvml.open_for_run(device, cfg.nvml_hz, console.say)

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
    """result.json, whole and durable: its presence marks the run as ended (reruns skip it)."""
    atomic_write(path, lambda f: json.dump(result, f, indent=1, default=str))
