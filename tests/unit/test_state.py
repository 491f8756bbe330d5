"""The training state: one dict of parts saved and restored by one path, and checkpoints of older versions."""

import dataclasses

import pytest
import torch

from train.contract.errors import UsageError
from train.runner.state import Progress, RngState, TrainingState


def _state(**parts):
    """A TrainingState with the given parts and every other part not in use (None)."""
    return TrainingState(**{f.name: parts.get(f.name) for f in dataclasses.fields(TrainingState)})


class _Part:
    def __init__(self, value=0):
        self.value = value

    def state_dict(self):
        return {"value": self.value}

    def load_state_dict(self, state):
        self.value = state["value"]


def test_every_part_in_use_is_saved_and_restored_and_parts_not_in_use_are_neither():
    saved = _state(progress=Progress(step=7, segments=1), scaler=None, nvml=_Part(3)).state_dict()
    assert set(saved) == {"progress", "nvml"}
    progress, nvml = Progress(), _Part()
    _state(progress=progress, scaler=None, nvml=nvml).load_state_dict(saved)
    assert (progress.step, progress.segments, nvml.value) == (7, 1, 3)


def test_a_checkpoint_lacking_a_required_part_is_refused_naming_it():
    with pytest.raises(UsageError, match="the checkpoint lacks optimizer: it was not written by this runner"):
        _state(progress=Progress(), optimizer=_Part()).load_state_dict({"progress": {"step": 3}})


def test_optional_parts_missing_from_a_checkpoint_start_empty():
    # NVML may have failed to start on the node that wrote it; older runners kept no W&B backlog.
    nvml, backlog = _Part(0), _Part(0)
    progress = Progress()
    _state(progress=progress, nvml=nvml, wandb_backlog=backlog).load_state_dict(
        {"progress": {"step": 3}})
    assert progress.step == 3 and nvml.value == 0 and backlog.value == 0


def test_progress_from_an_older_runner_keeps_todays_defaults_for_what_it_lacks():
    progress = Progress()
    progress.load_state_dict({"step": 0, "train_time_s": 0.0})  # a run saved before its first step
    assert progress.curve == [] and progress.segments == 0 and progress.end is None
    again = Progress()
    again.load_state_dict(Progress(step=4, images=64, curve=[[1, 4, 2.0, 64, None, 0.3]], segments=2).state_dict())
    assert again == Progress(step=4, images=64, curve=[[1, 4, 2.0, 64, None, 0.3]], segments=2)


def test_the_random_generators_continue_where_the_checkpoint_left_them():
    rng = RngState()
    saved = rng.state_dict()
    expected = torch.rand(4)
    torch.rand(100)  # the rest of the stopped process
    rng.load_state_dict(saved)
    assert torch.equal(torch.rand(4), expected)
