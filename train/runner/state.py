"""Everything a restart must keep, saved and restored through one path in both directions.

After torchtitan's checkpointing: the training state is a set of parts that each have `state_dict()` and
`load_state_dict()` (model, optimizer, loss scaler, LR schedule, data position, RNG, progress, the epoch's
sums, the measurement accumulators and the W&B backlog). The parts are TrainingState's fields, listed once: a
part added there is saved and restored, and the loop reads each part from it; there is no second list.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch

from train.contract.errors import UsageError
from train.measure.aggregates import RunAggregates
from train.measure.memory import MemoryMonitor
from train.measure.nvml import NvmlSampler
from train.measure.timing import Throughput
from train.runner.backlog import Backlog

# Parts a run may lack in one segment and have in another (NVML can fail to start on one node of a cluster):
# missing in a checkpoint, they start empty instead of refusing the resume.
OPTIONAL = ("nvml", "wandb_backlog")  # wandb_backlog: checkpoints of runner versions before it start it empty


@dataclass
class Progress:
    """Where the run is, and what it has learnt so far."""

    step: int = 0
    train_time_s: float = 0.0
    images: int = 0  # training images this process has stepped through (energy per image)
    skipped_steps: int = 0  # steps the loss scaler skipped for inf/NaN gradients
    best_test_acc: float | None = None
    last_test_acc: float | None = None
    diverged_at_step: int | None = None
    segments: int = 0  # processes that have trained this run: 1 for an unbroken run
    # One entry per evaluated epoch, [epoch, step, train_time_s, images (the job's), energy_j (the job's GPUs;
    # None where not measured), test_acc]: time to any accuracy target is read from it, after any number of
    # restarts. None: a checkpoint from before it was kept, so the early epochs are unknown.
    curve: list | None = field(default_factory=list)
    end: str | None = None  # "target_reached" once --stop-at-acc was reached: a resume trains no further
    # One entry per segment, {segment, git_commit, git_dirty, started_at}: the code each part of the run was
    # trained with (train/runner/wandb_config.py). Empty in a checkpoint from before it was kept; runner versions
    # before it keep it as it is, since Progress saves all its attributes.
    provenance: list = field(default_factory=list)

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)
        if "curve" not in state and state.get("step"):
            self.curve = None  # trained before the curve was kept: time to accuracy is not known


class RngState:
    """The CPU and (when in use) CUDA generators; the data order lives in the loader's own position."""

    def state_dict(self) -> dict:
        state = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state()
        return state

    def load_state_dict(self, state: dict) -> None:
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda"])


class EpochSums:
    """The current epoch's training loss and accuracy sums (on the device: no sync per step) and its training
    time so far. Part of the training state, so an epoch split by a restart counts every one of its batches.

    Under DDP the job's sums are summed over ranks when the run stops; rank 0 saves them, and on resume only
    rank 0 takes them back (the others start from zero), so the epoch's all-reduce counts each batch once.

    `open`: steps trained since the last epoch record, whose end (record, evaluation) is still to come. Kept on
    the host and read back from the saved count on every rank, so that all ranks agree on it: a run stopped at
    the step that ended its epoch (its last batch, or --max-steps) still closes that epoch when resumed.
    """

    def __init__(self, device: torch.device, holds_job_totals: bool = True):
        self.device = device
        self.holds_job_totals = holds_job_totals
        self.reset()

    def reset(self) -> None:
        self.loss = torch.zeros((), device=self.device)
        self.correct = torch.zeros((), dtype=torch.long, device=self.device)
        self.seen = torch.zeros((), dtype=torch.long, device=self.device)
        self.time_s = 0.0
        self.open = False

    def add(self, loss: torch.Tensor, out: torch.Tensor, y: torch.Tensor) -> None:
        """One step's batch: device ops only."""
        self.loss += loss * len(y)
        self.correct += (out.detach().argmax(1) == y).sum()
        self.seen += len(y)
        self.open = True

    def state_dict(self) -> dict:
        return {"loss": self.loss.item(), "correct": int(self.correct.item()), "seen": int(self.seen.item()),
                "time_s": self.time_s}

    def load_state_dict(self, state: dict) -> None:
        self.open = state["seen"] > 0  # the job's count (rank 0 saved it): the same on every rank
        if not self.holds_job_totals:
            return
        self.loss.fill_(state["loss"])
        self.correct.fill_(state["correct"])
        self.seen.fill_(state["seen"])
        self.time_s = state["time_s"]


@dataclass
class TrainingState:
    """The training state's parts, each with state_dict/load_state_dict. The field names are the checkpoint's
    keys, in its order: renaming one would keep every earlier checkpoint from resuming."""

    model: torch.nn.Module  # the bare module (not compiled, not DDP-wrapped)
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loader: object  # the training loader: its position in the data
    rng: RngState
    progress: Progress
    epoch: EpochSums
    throughput: Throughput
    memory: MemoryMonitor
    aggregates: RunAggregates
    nvml: NvmlSampler | None  # None: no GPU telemetry in this segment
    wandb_backlog: Backlog

    def parts(self) -> dict:
        """name -> part; None: not in use."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def state_dict(self) -> dict:
        return {name: part.state_dict() for name, part in self.parts().items() if part is not None}

    def load_state_dict(self, state: dict) -> None:
        parts = self.parts()
        missing = [n for n, p in parts.items() if p is not None and n not in state and n not in OPTIONAL]
        if missing:
            raise UsageError(f"the checkpoint lacks {', '.join(missing)}: it was not written by this runner version")
        for name, part in parts.items():
            if part is not None and name in state:
                part.load_state_dict(state[name])
