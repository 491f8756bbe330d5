"""result.json as proof of a run's end: one test (train/contract/files.py read_result) for the runner and the
sweep; and the smoke sweep's points continue a retried run as the grid's do."""

import json
import os

import pytest
from conftest import ROOT

from train.contract.files import UnreadableResult, read_result
from train.sweep.cli import cmd_list, finished, flags, grid, load, point_name


@pytest.mark.parametrize("text, why", [
    ('{"end": "finished", "train/st', "not JSON"),  # cut short mid-write
    ("", "not JSON"),
    ('{"train/steps": 20}', "its 'end' is None"),  # parses, names no end
    ('{"end": "paused"}', "its 'end' is 'paused'"),
    ("[1, 2]", "its 'end' is None"),
])
def test_a_result_json_that_does_not_name_its_end_is_unreadable_and_says_why(tmp_path, text, why):
    (tmp_path / "result.json").write_text(text)
    with pytest.raises(UnreadableResult, match="is unreadable") as e:
        read_result(str(tmp_path))
    assert why in e.value.why and str(tmp_path / "result.json") in str(e.value)


def test_a_result_json_that_parses_and_names_its_end_is_the_result(tmp_path):
    assert read_result(str(tmp_path)) is None  # none: not ended
    for end in ("finished", "diverged", "target_reached"):
        (tmp_path / "result.json").write_text(json.dumps({"end": end, "train/steps": 3}))
        assert read_result(str(tmp_path)) == {"end": end, "train/steps": 3}


def test_the_sweep_counts_a_point_finished_only_with_a_readable_result(tmp_path, capsys):
    config = {"name": "s", "parameters": {"depth": {"values": [18]}}}
    name, _ = point_name("s", grid(config)[0])
    os.makedirs(tmp_path / name)
    (tmp_path / name / "result.json").write_text('{"end": "fini')
    assert not finished(str(tmp_path), name)  # truncated: run again, and the run continues from its checkpoint
    cmd_list(config, str(tmp_path))
    assert json.loads(capsys.readouterr().out)["_finished"] is False
    (tmp_path / name / "result.json").write_text('{"end": "finished"}')
    assert finished(str(tmp_path), name)


def test_the_smoke_sweep_continues_a_retried_point_as_the_grid_does():
    for sweep in ("smoke.yaml", "grid.yaml"):
        points = grid(load(os.path.join(ROOT, "sweeps", sweep)))
        assert all("--resume=auto" in flags(point) for point in points), sweep
