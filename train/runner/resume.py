"""Which run folder a command is for: a new run's id, name and folder, or the run to continue under --resume
(auto: continue OUT_DIR/NAME if it holds a run, start it if not, skip it if it ended). Resolving --resume gives
a ResumePlan; the RunConfig stays as parsed."""

from __future__ import annotations

import json
import os
import secrets
import string
from dataclasses import dataclass

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
    has: then there is nothing to do."""

    run_dir: str | None = None
    name: str | None = None
    checkpoint: str | None = None
    ended: str | None = None


def plan_resume(cfg: RunConfig) -> ResumePlan:
    """--resume as a plan: a checkpoint file, a run folder holding one, or auto; nothing given, a new run."""
    if cfg.resume == "auto":
        run_dir, name = auto_run_dir(cfg)
        if not (_ended_run(run_dir) or os.path.exists(os.path.join(run_dir, checkpoint.FILENAME))):
            return ResumePlan(run_dir=run_dir, name=name)  # nothing there yet: start it
        resume = run_dir
    elif cfg.resume:
        resume, name = cfg.resume, cfg.name
    else:
        return ResumePlan(name=cfg.name)
    run_dir = resume if os.path.isdir(resume) else os.path.dirname(os.path.abspath(resume))
    if _ended_run(run_dir):
        # A run that reached its end (or diverged) is a result: never run again, never rewritten.
        return ResumePlan(run_dir=run_dir, name=name, ended=_how_it_ended(run_dir))
    return ResumePlan(run_dir=run_dir, name=name, checkpoint=checkpoint.resolve(resume))


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
    if os.path.exists(os.path.join(run_dir, checkpoint.FILENAME)) or _ended_run(run_dir):
        raise UsageError(f"run folder {run_dir} already holds a run; continue it with --resume {run_dir} "
                         "or choose another --name")


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
