"""What the run logged to W&B that W&B's own files may not hold yet: kept in the training state, re-logged on resume.

W&B's offline writer (wandb-core) buffers the .wandb file in 32 KiB blocks and has no flush an offline run can
ask for, so a SIGKILL (OOM killer, Slurm past its KillWait, a node's job cleanup) loses every record since
the last full block, back to the run's start for a short run. The checkpoint keeps those records instead;
a resumed run reads what the earlier segments' files hold (with W&B's reader) and logs the rest again
before training goes on, so the run's history holds each record once, in step order.
"""

from __future__ import annotations


def key(record: dict) -> tuple[int, str]:
    """A record's identity: its step and kind. One window and at most one epoch record share a step."""
    return int(record["train/step"]), "window" if "train/loss" in record else "epoch"


class Backlog:
    """The records logged since W&B's files were last known to hold everything (the run's start, or the
    last resume): a part of the training state."""

    def __init__(self):
        self.records: list[dict] = []
        self.held_ahead: set[tuple[int, str]] = set()  # records past the checkpoint that W&B already holds

    def add(self, record: dict) -> bool:
        """Keep the record; False when W&B holds it already (a killed segment wrote it after the checkpoint
        this segment resumed from), so it is not logged twice."""
        k = key(record)
        if k in self.held_ahead:
            self.held_ahead.discard(k)
            return False
        self.records.append(dict(record))
        return True

    def reconcile(self, held: list[dict], step: int) -> list[dict]:
        """The kept records W&B's earlier files lack, to log again now; `held` is those files' history,
        `step` the checkpoint's. What they hold is dropped from the backlog: it is on disk for good."""
        held_keys = {key(r) for r in held if "train/step" in r}
        missing = [r for r in self.records if key(r) not in held_keys]
        self.records = missing  # logged again in this segment, so not on disk until it writes them
        self.held_ahead = {k for k in held_keys if k[0] > step}
        return missing

    def state_dict(self) -> dict:
        return {"records": self.records}

    def load_state_dict(self, state: dict) -> None:
        self.records = list(state["records"])
