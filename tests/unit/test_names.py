"""A run name is one folder inside --out-dir, whoever made it: --name, the run id ($WANDB_RUN_ID), a sweep point."""

import os

import pytest

from train.contract.errors import UsageError
from train.contract.names import MAX_NAME, check_run_name
from train.runner.options import RunConfig, parse_args
from train.runner.resume import default_name
from train.sweep.cli import main as sweep_main

REFUSED = ["../escape", "a/b", "/abs", "..", ".", "", "x" * (MAX_NAME + 1), ".wandb-cache", "a\\b", "a b", "a\nb"]
ALLOWED = ["r18-fp32-x", "a.b+c=d_e", "depth18-gpus1-precisionfp32-seed0-90726d", "x" * MAX_NAME]


@pytest.mark.parametrize("name", REFUSED)
def test_a_name_that_is_not_one_folder_is_refused_in_one_line_naming_the_flag_and_the_rule(name, capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(["--name", name])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: argument --name: ")
    assert f"1 to {MAX_NAME} of the characters A-Z a-z 0-9 . _ - + = , @" in err


@pytest.mark.parametrize("name", ALLOWED)
def test_a_name_of_safe_characters_is_kept_as_given(name):
    assert parse_args(["--name", name]).name == name == check_run_name(name)


def test_a_run_id_from_the_environment_cannot_make_a_name_that_leaves_the_out_dir():
    with pytest.raises(UsageError, match=r"'r18-fp32-\.\./x' \(the run name made from the run id"):
        default_name(RunConfig(), "../x")
    assert default_name(RunConfig(), "ab12cd34") == "r18-fp32-ab12cd34"


@pytest.mark.parametrize("yaml_name, value, out_dir, refused", [
    ("grid", "../../evil", ["--out-dir", "o"], "'precision../../evil-"),
    ("../../up", "fp32", [], "'../../up' (the name of sweep file"),
])
def test_a_sweep_whose_point_or_default_out_dir_would_leave_its_folder_is_refused_before_listing(
        tmp_path, capsys, yaml_name, value, out_dir, refused):
    path = tmp_path / "sweep.yaml"
    path.write_text(f"method: grid\nname: {yaml_name}\nparameters:\n  precision:\n    values: [fp32, {value!r}]\n")
    assert sweep_main([str(path), "list", *out_dir]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("error: " + refused)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.yaml"]


def test_a_sweep_of_ordinary_values_still_lists_its_points(tmp_path, capsys):
    path = tmp_path / "sweep.yaml"
    path.write_text("method: grid\nparameters:\n  precision:\n    values: [fp32, bf16]\n")
    assert sweep_main([str(path), "list", "--out-dir", str(tmp_path / "o")]) == 0
    assert capsys.readouterr().out.count("\n") == 2


def test_each_in_process_run_keeps_its_caches_in_its_own_out_dir_unless_the_user_chose_a_folder(tmp_path, monkeypatch):
    from train.contract.names import CACHE_VARS, keep_caches_in

    for var in CACHE_VARS:
        monkeypatch.delenv(var, raising=False)
    keep_caches_in(str(tmp_path / "a"))
    keep_caches_in(str(tmp_path / "b"))
    assert {os.environ[var] for var in CACHE_VARS} == {str(tmp_path / "b" / ".wandb-cache")}
    monkeypatch.setenv(CACHE_VARS[0], str(tmp_path / "mine"))
    keep_caches_in(str(tmp_path / "c"))
    assert os.environ[CACHE_VARS[0]] == str(tmp_path / "mine")
    assert os.environ[CACHE_VARS[1]] == str(tmp_path / "c" / ".wandb-cache")
