"""Everything a restart must keep, saved and restored through one path in both directions.

After torchtitan's checkpointing: the training state is a dict of parts that each have `state_dict()` and
`load_state_dict()` (model, optimizer, loss scaler, LR schedule, data position, RNG, progress, and the
measurement accumulators). A part added here is saved and restored; there is no second list to forget.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from train.contract.errors import UsageError

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


@dataclass
class TrainingState:
    parts: dict = field(default_factory=dict)  # name -> object with state_dict/load_state_dict; None: not in use

    def state_dict(self) -> dict:
        return {name: part.state_dict() for name, part in self.parts.items() if part is not None}

    def load_state_dict(self, state: dict) -> None:
        missing = [n for n, p in self.parts.items() if p is not None and n not in state and n not in OPTIONAL]
        if missing:
            raise UsageError(f"the checkpoint lacks {', '.join(missing)}: it was not written by this runner version")
        for name, part in self.parts.items():
            if part is not None and name in state:
                part.load_state_dict(state[name])
