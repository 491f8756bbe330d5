"""Reading checkpoints back: a run folder or a file, and anything not this suite's checkpoint refused in one line."""

import pytest
import torch

from train.contract.errors import UsageError
from train.runner import checkpoint


def _checkpoint(**changes):
    return {"format": checkpoint.FORMAT, "state": {"progress": {"step": 3}}, "config": {"name": "a"},
            "run_id": "abc12345", "experiment": {"depth": 18}, **changes}


def test_a_saved_checkpoint_reads_back_from_its_file_or_its_run_folder(tmp_path):
    path = tmp_path / checkpoint.FILENAME
    size = checkpoint.save(str(path), _checkpoint())
    assert size == path.stat().st_size
    assert checkpoint.resolve(str(tmp_path)) == str(path) == checkpoint.resolve(str(path))
    assert checkpoint.load(str(path)) == _checkpoint()


def test_a_folder_without_a_checkpoint_is_one_line_naming_where_it_looked(tmp_path):
    with pytest.raises(UsageError, match=f"--resume {tmp_path}: no checkpoint at {tmp_path / checkpoint.FILENAME}"):
        checkpoint.resolve(str(tmp_path))


def test_a_torch_file_that_is_not_this_suites_checkpoint_names_what_it_lacks(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"model": {"w": torch.ones(2)}, "run_id": "x"}, path)
    with pytest.raises(UsageError, match=r"is not a checkpoint of this suite \(missing format, state, config, experiment\)"):
        checkpoint.load(str(path))


def test_a_checkpoint_of_another_format_is_refused_naming_both_formats(tmp_path):
    path = tmp_path / checkpoint.FILENAME
    torch.save(_checkpoint(format=1), path)
    with pytest.raises(UsageError, match=f"has format 1, this runner reads format {checkpoint.FORMAT}"):
        checkpoint.load(str(path))


def test_a_checkpoint_holding_code_is_refused_not_run(tmp_path):
    path = tmp_path / checkpoint.FILENAME
    torch.save(_checkpoint(hook=print), path)  # weights_only: a function is not data
    with pytest.raises(UsageError, match="cannot be read"):
        checkpoint.load(str(path))
