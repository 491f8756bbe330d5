"""Which run folder a command is for: a new run's id, name and folder, or the run to continue under --resume
(auto: continue OUT_DIR/NAME if it holds a run, start it if not, skip it if it ended). Resolving --resume gives
a ResumePlan; the RunConfig stays as parsed."""

from __future__ import annotations

import dataclasses
import os
import secrets
import string
from dataclasses import dataclass

from train.contract import files
from train.contract.errors import UsageError
from train.contract.names import check_run_name
from train.runner import checkpoint
from train.runner.options import RunConfig


def new_run_id() -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


def default_name(cfg: RunConfig, run_id: str) -> str:
    """The name of a run without --name; the id may come from $WANDB_RUN_ID, which anyone could have set."""
    name = f"r{cfg.depth}-{cfg.precision}-{run_id}"
    return check_run_name(name, made="the run name made from the run id, $WANDB_RUN_ID if set")


@dataclass(frozen=True)
class ResumePlan:
    """What --resume resolved to. checkpoint: the file to continue from, None to start a new run. run_dir: the
    folder it names (None for a new run not started by --resume auto). name: the run's name where --resume auto
    fixed it (--name, or one made from $WANDB_RUN_ID), else --name. ended: how the run in run_dir ended, if it
    has and this command would not train it further: then there is nothing to do, and `hint` says what would.
    extends: the run had finished at a --max-steps this command raises (or drops): it trains on. note: one
    line to tell the user before continuing (a result.json that proves nothing)."""

    run_dir: str | None = None
    name: str | None = None
    checkpoint: str | None = None
    ended: str | None = None
    hint: str | None = None
    extends: bool = False
    note: str | None = None


def plan_resume(cfg: RunConfig, worker: dict | None = None) -> ResumePlan:
    """--resume as a plan: a checkpoint file, a run folder holding one, or auto; nothing given, a new run. In a
    worker group the elastic agent restarted (`worker`'s restart > 0), nothing given is auto: the restart
    continues the run the first start began, from its latest checkpoint."""
    if worker and worker.get("max_restarts"):
        check_restartable(cfg)
    if worker and worker.get("restart") and not cfg.resume:
        cfg = dataclasses.replace(cfg, resume="auto")
    if cfg.resume == "auto":
        run_dir, name = auto_run_dir(cfg)
        if not _holds_a_run(run_dir):
            return ResumePlan(run_dir=run_dir, name=name)  # nothing there yet: start it
        resume = run_dir
    elif cfg.resume:
        resume, name = cfg.resume, cfg.name
    else:
        return ResumePlan(name=cfg.name)
    run_dir = resume if os.path.isdir(resume) else os.path.dirname(os.path.abspath(resume))
    try:
        ended = how_it_ended(run_dir, cfg.max_steps)
    except files.UnreadableResult as e:
        if not os.path.isfile(os.path.join(run_dir, checkpoint.FILENAME)):
            raise UsageError(f"{e}, and {run_dir} has no checkpoint to continue from: move that folder aside (or "
                             "delete it) and run the command again to train the run anew") from None
        note = f"{e}: it proves nothing, so the run continues from its checkpoint and writes it anew at its end"
        return ResumePlan(run_dir=run_dir, name=name, checkpoint=checkpoint.resolve(resume), note=note)
    if ended:
        # A run that reached its end (or diverged) is a result: never run again, never rewritten.
        return ResumePlan(run_dir=run_dir, name=name, ended=ended[0], hint=ended[1])
    extends = os.path.exists(os.path.join(run_dir, checkpoint.RESULT_FILE))  # it proved an end, not this one's
    return ResumePlan(run_dir=run_dir, name=name, checkpoint=checkpoint.resolve(resume), extends=extends)


def check_restartable(cfg: RunConfig) -> None:
    """Under restarts (--max-restarts, torchrun's too) each restart's rank 0 must find the run folder the first
    start used: refused when its name would come from a run id drawn anew by each start."""
    if (cfg.resume and cfg.resume != "auto") or cfg.name or os.environ.get("WANDB_RUN_ID"):
        return
    raise UsageError("restarts (--max-restarts) continue the run from its latest checkpoint, so each must find "
                     "its folder: give --name NAME")


def restart_env(cfg: RunConfig) -> dict:
    """What launch() passes to its workers so that every restart continues the same run: a run id fixed before
    the first start ($WANDB_RUN_ID, as a W&B agent fixes it), so a restart before the first checkpoint starts
    the same W&B run in the same folder. On one node only: each node's launcher would draw another, and a
    restart may make another node's worker rank 0; several nodes need --name (or --resume PATH)."""
    if not cfg.max_restarts or os.environ.get("WANDB_RUN_ID"):
        return {}
    if cfg.nodes > 1 or cfg.resume == "auto":  # a fixed id would name a new run of --resume auto without --name
        check_restartable(cfg)
    return {} if cfg.nodes > 1 else {"WANDB_RUN_ID": new_run_id()}


def auto_run_dir(cfg: RunConfig) -> tuple[str, str]:
    """--resume auto: (OUT_DIR/NAME, NAME), the folder to continue, to skip if it ended, or to start.
    What sweeps and requeued Slurm jobs use, so that running the same command again is always right."""
    agent_id = os.environ.get("WANDB_RUN_ID")
    if not cfg.name and not agent_id:
        raise UsageError("--resume auto needs --name (or a W&B agent's $WANDB_RUN_ID): it continues OUT_DIR/NAME")
    name = cfg.name or default_name(cfg, agent_id)
    return os.path.join(cfg.out_dir, name), name


def run_identity(cfg: RunConfig, name: str | None) -> tuple[str, str, str]:
    """(run id, name, run folder) of a new run named `name` (None: one made from the run id); refuses to reuse
    a folder that holds a run. Under a W&B sweep agent the id is the one the agent chose ($WANDB_RUN_ID), so
    folder and run match."""
    run_id = os.environ.get("WANDB_RUN_ID") or new_run_id()
    name = name or default_name(cfg, run_id)
    run_dir = os.path.join(cfg.out_dir, name)
    refuse_if_it_holds_a_run(run_dir)
    return run_id, name, run_dir


def refuse_if_it_holds_a_run(run_dir: str) -> None:
    if _holds_a_run(run_dir):
        raise UsageError(f"run folder {run_dir} already holds a run; continue it with --resume {run_dir} "
                         "or choose another --name")


def _holds_a_run(run_dir: str) -> bool:
    """A checkpoint or a result.json, readable or not: a folder a new run must not take over."""
    return any(os.path.exists(os.path.join(run_dir, f)) for f in (checkpoint.FILENAME, checkpoint.RESULT_FILE))


def how_it_ended(run_dir: str, max_steps: int | None) -> tuple[str, str] | None:
    """(how the run ended, what would continue it) when its result.json proves it ended and a run to
    `max_steps` (--max-steps; None: to the end of its epochs) would not train it further; None when it has not
    ended, or ended only at a --max-steps that this command raises (or drops): the run is then extended.
    Raises files.UnreadableResult for a result.json that proves nothing."""
    result = files.read_result(run_dir)
    if result is None:
        return None
    steps = result.get("train/steps")
    if result["end"] == "diverged":
        return (f"diverged at step {result.get('train/diverged_at_step')}",
                "a diverged run is a result; train it again under another --name")
    if result["end"] == "target_reached":
        return (f"reached --stop-at-acc at step {steps}",
                "a run to another --stop-at-acc (or to its --epochs) is another experiment: use another --name")
    try:
        cut_at = _cut_by_max_steps(run_dir, steps)
    except UsageError as e:
        return f"finished at step {steps}", f"it cannot be extended: {e}"
    if cut_at is None:
        return f"finished at step {steps}", "it trained all its --epochs; more epochs are another experiment: " \
            "use another --name"
    if max_steps is None or max_steps > steps:
        return None  # cut_at is not None: steps is a number
    return f"finished at step {steps}", f"it stopped at --max-steps {cut_at}: resume with a larger --max-steps " \
        "(or none) to train on"


def _cut_by_max_steps(run_dir: str, steps: int) -> int | None:
    """The --max-steps the finished run stopped at, when it stopped there before the end of its epochs (from its
    checkpoint's experiment: epochs of whole batches per process); None when it trained all its epochs. A
    checkpoint that cannot be read is a UsageError: the run cannot be continued."""
    saved = checkpoint.load(os.path.join(run_dir, checkpoint.FILENAME))
    try:
        e, max_steps = saved["experiment"], saved["config"].get("max_steps")
        schedule_steps = e["epochs"] * (e["train_images"] // e["world_size"] // e["batch_size"])
        return max_steps if max_steps is not None and steps < schedule_steps else None
    except (KeyError, TypeError, ZeroDivisionError):
        return None  # an experiment without these: trained before they were kept, not to be extended
