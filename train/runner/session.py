"""One run of training in this process: check, set up, fit, finish (summary, checkpoint, result.json).

checks -> data -> model -> claim the run folder -> optimizer, W&B config, NVML, training state (resumed), DDP,
compile, W&B run -> loop.fit -> checkpoint -> summary -> result.json. The parts are built by setup.py."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import time
from dataclasses import dataclass

import torch

from train.contract.errors import EXIT_DIVERGED
from train.contract.files import atomic_write
from train.contract.names import keep_caches_in
from train.launch import distributed, elastic
from train.launch.signals import StopRequest
from train.measure import nvml
from train.numerics import compiling
from train.numerics.data import cifar10_files
from train.numerics.precision import Precision
from train.runner import checkpoint, setup
from train.runner.backlog import Backlog
from train.runner.checkpointer import Checkpointer
from train.runner.claim import checkpoint_bytes, claimed
from train.runner.console import Console
from train.runner.evaluation import Evaluation
from train.runner.hooks import Hooks
from train.runner.loop import Plan, Training, fit
from train.runner.options import RunConfig, check_out_dir, experiment
from train.runner.resume import ResumePlan, plan_resume
from train.runner.setup import pick_device
from train.runner.stopping import Stopping
from train.runner.tracking import Tracker, choose_mode
from train.runner.wandb_config import add_segment, wandb_config


def train(cfg: RunConfig, worker: dict | None = None, stop: StopRequest | None = None,
          started: float | None = None) -> dict:
    """One run in this process; `started`: when its set-up began (the process's start for a command-line run,
    whose imports count in time/setup_s), else now."""
    setup_started = time.perf_counter() if started is None else started
    where = plan_resume(cfg, worker)
    first = worker is None or worker.get("rank", 0) == 0  # one line for the job, not one per worker
    if first:
        _say_restart(worker)
    if where.ended:  # a run that reached its end (or diverged) is a result: never run again, never rewritten
        if first:
            print(f"{where.run_dir} has already ended ({where.ended}); nothing to do: {where.hint}")
        return {"finished_before": True}
    if where.note and first:
        print(f"warning: {where.note}", file=sys.stderr, flush=True)
    if worker is not None:
        ranks, device = distributed.init(worker, cfg.device, cfg.dist_timeout)
    else:
        ranks, device = distributed.Ranks(), pick_device(cfg.device)
    try:
        result = _train(cfg, ranks, device, stop or StopRequest(), setup_started, where)
        if result.get("preempted"):
            # Every rank exits 75 only once rank 0 has saved and finished W&B: one leaving first gets the
            # elastic agent to SIGTERM the others, and SIGKILL them 30 s later.
            distributed.leave_together(ranks)
        return result
    finally:
        distributed.shutdown(ranks)


def _say_restart(worker: dict | None) -> None:
    """Rank 0's line about the elastic agent's restarts: which one this is, or, at the first start, why
    torchrun's would fail."""
    if worker and worker.get("restart"):
        print(f"restart {worker['restart']} of {worker['max_restarts']}: a worker of this job failed; the elastic "
              "agent restarted them all, which continue the run from its latest checkpoint", flush=True)
    elif elastic.restart_warning(worker):
        print(f"warning: {elastic.restart_warning(worker)}", file=sys.stderr, flush=True)


@dataclass
class Built:
    """What is built before the run folder is claimed; none of it has written anything."""

    cfg: RunConfig
    ranks: distributed.Ranks
    device: torch.device
    stop: StopRequest
    hooks: Hooks
    policy: Precision
    backend_flags: dict
    data: setup.Data
    model: torch.nn.Module  # the bare module, still on the CPU
    model_facts: dict
    identity: dict


def _train(cfg: RunConfig, ranks: distributed.Ranks, device: torch.device, stop: StopRequest,
           setup_started: float, where: ResumePlan) -> dict:
    # The config as the run records it (W&B config, checkpoint): --resume as the checkpoint continued from (None
    # for a new run) and the name --resume auto fixed, as runs have always recorded them.
    cfg = dataclasses.replace(cfg, resume=where.checkpoint, name=where.name)
    hooks = setup.build_hooks(ranks)  # a benchmark's point: train in the turns it gives
    # Everything that can be refused is checked before anything is written.
    policy, backend_flags = setup.build_policy(cfg)
    setup.check_model_precision(cfg, policy)
    policy.check_device(device)
    check_out_dir(cfg.out_dir)
    keep_caches_in(cfg.out_dir)
    compiling.check(cfg.compile, device)
    data = setup.build_data(cfg, policy, device, ranks)
    identity = experiment(cfg, world_size=ranks.world_size, train_images=len(data.train_split), device=device.type)
    model, model_facts = setup.build_model(cfg, policy)
    built = Built(cfg=cfg, ranks=ranks, device=device, stop=stop, hooks=hooks, policy=policy,
                  backend_flags=backend_flags, data=data, model=model, model_facts=model_facts, identity=identity)

    # Rank 0 claims the run folder (a new one, or the one to resume) once everything above has passed; every
    # rank learns the run's id, name and folder, or the one line saying why not. The claim ends with the run.
    with claimed(cfg, where, ranks, identity, checkpoint_bytes(model, cfg.optimizer, cfg.momentum)) as \
            (resumed, run_id, name, run_dir):
        t, compile_s = _set_up(built, resumed, run_id, name, run_dir, where.extends)
        setup_s = time.perf_counter() - setup_started - (compile_s or 0.0)
        t.console.say(f"set-up {setup_s:.1f}s (imports, data, model, device probe, W&B start; time/setup_s)")
        # An eager benchmark point warms up as compiling did (bf16 on a CPU is ~20% slower for its first few
        # steps, which a round of 4 steps cannot leave out).
        hooks.ready(setup_s, None if compile_s is not None else lambda: compiling.warm_up(
            t.model, t.state.model, policy, device, cfg.batch_size, data.memory_format))
        summary, size = _fit_and_close(t, built, model_facts["params"], setup_s, compile_s)
        if summary.get("preempted"):
            return {**summary, "run_dir": run_dir, "run_id": run_id}
        result = {**summary, "run_dir": run_dir, "run_id": run_id, "precision": cfg.precision, "depth": cfg.depth,
                  "arch": model_facts["arch"],
                  "device": device.type, "device_name": setup.device_name(device), "end": summary["train/end"]}
        if ranks.is_main:
            write_result(os.path.join(run_dir, checkpoint.RESULT_FILE), result)
            _say_done(t, summary, size, run_dir)
        return result


def _set_up(b: Built, resumed: dict | None, run_id: str, name: str, run_dir: str,
            extends: bool = False) -> tuple[Training, float | None]:
    """From the claimed folder to the first step: optimizer, W&B config, NVML, training state (resumed), DDP,
    compile and the W&B run; `extends`: the resumed run had finished at a smaller --max-steps. Returns the
    training and the compile's seconds (None: eager)."""
    cfg, ranks, device = b.cfg, b.ranks, b.device
    model = b.model.to(device, memory_format=b.data.memory_format)
    plan = setup.build_plan(cfg, len(b.data.train_loader))
    opt = setup.build_optimization(cfg, model, b.policy, device, plan, ranks.world_size)
    console = Console(plan.total_steps, cfg.epochs, enabled=ranks.is_main, steps_only=plan.steps_only)
    settings = {**b.policy.settings(b.backend_flags), "memory_format": str(b.data.memory_format)}
    config = wandb_config(cfg, name=name, run_dir=run_dir, identity=b.identity, settings=settings,
                          model=b.model_facts, device=device, ranks=ranks, data=b.data, plan=plan)
    mode, why = choose_mode(cfg.wandb_mode)
    console.say(_describe(b, config, plan))
    sampler, config["nvml"] = nvml.open_for_run(device, cfg.nvml_hz, console.say, idle_s=cfg.idle_power_s)
    state = setup.build_state(cfg, model, opt, b.data.train_loader, sampler, device, ranks)
    ckpt_path = os.path.join(run_dir, checkpoint.FILENAME)
    if resumed is not None:
        state.load_state_dict(resumed["state"])  # before DDP, which broadcasts rank 0's weights
        if extends:
            _extend(state, plan, console)
        console.say(f"resumed from {ckpt_path} at step {state.progress.step} (epoch {state.loader.epoch + 1}, "
                    f"segment {state.progress.segments + 1})")
    changed = add_segment(state.progress, config["provenance"])  # before W&B starts: the config holds the list
    if changed:
        console.say(changed)
    stepping, comm, compile_s = _stepping_model(b, model, resumed is not None, console)
    tracker = setup.build_tracker(cfg, ranks, mode=mode, why=why, run_dir=run_dir, run_id=run_id, name=name,
                                  config=config, say=console.say, job_type=b.hooks.job_type)
    _use_inputs(tracker, cfg, config["data"], ckpt_path if resumed is not None else None)
    if resumed is not None and tracker.mode == "offline":
        relog(tracker, state.wandb_backlog, state.progress.step, console.say)
    meta = {"config": cfg.as_dict() | {"name": name}, "run_id": run_id, "experiment": b.identity}
    evaluation = Evaluation(b.data.test_loader, cfg.target_acc, cfg.stop_at_acc) \
        if b.data.test_loader is not None else None
    t = Training(state=state, model=stepping, policy=b.policy, device=device, plan=plan, tracker=tracker,
                 console=console, checkpointer=Checkpointer(ckpt_path, state, meta, cfg.ckpt_every, ranks),
                 evaluation=evaluation, stopping=Stopping(b.stop, ranks), ranks=ranks, comm=comm, hooks=b.hooks,
                 profiler=setup.build_profiler(cfg, config, run_dir, device, ranks))
    return t, compile_s


def _use_inputs(tracker, cfg: RunConfig, data_facts: dict, resumed_from: str | None) -> None:
    """The W&B run's inputs in the lineage graph: the data set (none for synthetic data: nothing was read) and,
    on a resume, the checkpoint it continues from (before training rewrites the file)."""
    if cfg.dataset == "cifar10":
        tracker.use_dataset(cifar10_files(cfg.data_dir), {"train_images": data_facts["train_images"],
                                                          "test_images": data_facts["test_images"]})
    if resumed_from is not None:
        tracker.use_checkpoint(resumed_from)


def _extend(state, plan: Plan, console: Console) -> None:
    """Train on a run that finished at --max-steps. Its end closed the epoch it was in (the epoch's record and
    evaluation are logged): one cut at the epoch's last batch goes on with the next epoch, not with an empty
    rest of that one, which would log its end a second time."""
    if state.loader.step >= len(state.loader):
        state.loader.load_state_dict({"epoch": state.loader.epoch + 1, "step": 0})
    console.say(f"extending the run, which had finished at step {state.progress.step}, to step {plan.total_steps} "
                "in the same W&B run; result.json is written anew at its end")


def _describe(b: Built, config: dict, plan: Plan) -> str:
    cfg, ranks, train_images = b.cfg, b.ranks, len(b.data.train_split)
    processes = f" x {ranks.world_size} processes ({ranks.backend})" if ranks.enabled else ""
    return (f"{b.model_facts['arch']} {cfg.precision} on {config['system']['device_name']} ({b.device.type})"
            f"{processes}: {b.model_facts['params']:,} parameters, {train_images:,} training images"
            f"{' (synthetic)' if b.data.test_split is None else ''}, {plan.total_steps:,} steps of {cfg.batch_size}"
            f"{' per process' if ranks.enabled else ''}"
            + ("; fp8 without --compile: its casts run as separate kernels (torchao recommends torch.compile)"
               if b.policy.fp8_recipe and cfg.compile == "none" else ""))


def _stepping_model(b: Built, model: torch.nn.Module, resumed: bool, console: Console):
    """(the model that steps: DDP-wrapped and/or compiled, the all-reduce meter or None, compile seconds or None)."""
    cfg = b.cfg
    bare_model = model
    model, comm = distributed.wrap_model(model, b.ranks, b.device, cfg.grad_compress)
    if cfg.compile == "none":
        return model, comm, None
    console.say(f"compiling the model (torch.compile, mode {cfg.compile}) ...")
    with compiling.failures_in_one_line(cfg.compile, resumed=resumed):
        model = compiling.compile_model(model, cfg.compile)
        compile_s = compiling.warm_up(model, bare_model, b.policy, b.device, cfg.batch_size, b.data.memory_format)
    if comm:
        comm.end_step()
        comm.window()  # the warm-up's all-reduce is not a training step's
    console.say(f"compiled in {compile_s:.1f}s (time/compile_s; not part of any step time)")
    return model, comm, compile_s


def _fit_and_close(t: Training, b: Built, params: int, setup_s: float, compile_s: float | None) -> tuple[dict, int]:
    """Fit, write the last checkpoint, and close the W&B run (and NVML) with the run's exit status, whatever
    happens. Returns the summary and the checkpoint's size (rank 0's)."""
    exit_code = 1
    try:
        summary = fit(t)
        size = t.checkpointer.save(t.state.loader.epoch, last_step=True)
        t.tracker.log_segment_checkpoint(t.checkpointer.path, size, t.state.progress.step, t.state.progress.segments)
        if summary.get("preempted"):
            t.console.say(f"stopped by {signal.Signals(b.stop.signal).name} at step {t.state.progress.step}: "
                          f"checkpoint at {t.checkpointer.path}; run the same command (with --resume auto, or "
                          "--resume RUN_DIR) to continue this W&B run")
            t.tracker.preempting()
            exit_code = b.stop.exit_status()  # 130 after Ctrl-C, else 75
            return summary, size
        state_dict = t.state.model.state_dict()
        summary.update({"model/params": params, "ckpt/size_bytes": size, "time/setup_s": setup_s,
                        "time/compile_s": compile_s,
                        "model/size_bytes": sum(v.numel() * v.element_size() for v in state_dict.values())})
        t.tracker.summarise(summary)
        if b.cfg.ckpt_artifact:
            t.tracker.log_checkpoint(t.checkpointer.path, size, aliases=["latest", f"step-{t.state.progress.step}"])
        exit_code = EXIT_DIVERGED if t.state.progress.diverged_at_step is not None else 0
        return summary, size
    finally:
        if t.state.nvml is not None:
            t.state.nvml.stop()
        t.tracker.finish(exit_code)


def _say_done(t: Training, summary: dict, size: int, run_dir: str) -> None:
    progress, result_file = t.state.progress, os.path.join(run_dir, checkpoint.RESULT_FILE)
    if progress.diverged_at_step is not None:
        t.console.say(f"diverged: the training loss (or a weight) was not finite at step "
                      f"{progress.diverged_at_step}; the run ends here as a result (exit {EXIT_DIVERGED}), "
                      f"recorded in {result_file}")
        return
    ips, timed = summary["train/images_per_s"], summary["train/timed_steps"]
    rate = f"{ips:,.0f} img/s (median of {timed} timed steps)" if ips else \
        f"img/s not measured (all {progress.step} steps were warm-up: see --warmup-steps)"
    t.console.say(f"done: {rate}, {summary['time/train_s']:.1f}s training, checkpoint {size / 2**20:.1f} MiB "
                  f"at {t.checkpointer.path}")


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
