"""When the run's training state is written (after torchtitan's `checkpointer.save(step, last_step=...)`): at
the end of every --ckpt-every-th epoch, and once when the run ends or stops, whatever the reason. Rank 0
writes; the file format and the atomic write are train/runner/checkpoint.py's."""

from __future__ import annotations

from train.launch.distributed import Ranks
from train.runner import checkpoint
from train.runner.state import TrainingState


class Checkpointer:
    def __init__(self, path: str, state: TrainingState, meta: dict, every_epochs: int, ranks: Ranks):
        self.path = path
        self.state = state
        self.meta = meta  # config, run id and experiment identity, stored with every checkpoint
        self.every_epochs = every_epochs  # --ckpt-every; 0: only at the run's end
        self.ranks = ranks

    def save(self, epoch: int, last_step: bool = False) -> int | None:
        """After `epoch` epochs: written every --ckpt-every epochs, and always at the `last_step`. Returns the
        file's size where it was written (rank 0), else None."""
        if not last_step and not (self.every_epochs and epoch % self.every_epochs == 0):
            return None
        if not self.ranks.is_main:
            return None
        return checkpoint.save(self.path, {"state": self.state.state_dict(), **self.meta})
