"""A run writes nothing outside --out-dir: its folder, its W&B files and W&B's caches, whatever --name says
(torch's empty $TMPDIR/torchinductor_$USER included: the run removes it). Real runs in a fresh process, with
$HOME, $TMPDIR and the working folder watched around the out-dir."""

import os
import subprocess
import sys

import pytest
from conftest import ROOT

from train.contract.names import MAX_NAME

# Folders a user may choose for W&B: unset here, so that the run picks its own.
CHOSEN = ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_ARTIFACT_DIR", "WANDB_CONFIG_DIR",
          "WANDB_RUN_ID", "WANDB_SERVICE")


def _everything(root, but: str) -> set[str]:
    """Every path under root, except `but` and what is under it."""
    found = set()
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.path.join(folder, d) != but]
        found.update(os.path.join(folder, name) for name in dirs + files)
    return found


def _run_watched(tmp_path, *args, env=None):
    """A short real run in tmp_path/cwd with --out-dir out, $HOME and $TMPDIR beside it: (the finished process,
    the out-dir, what appeared outside the out-dir in tmp_path and beside it)."""
    for folder in ("cwd", "home", "tmp"):
        (tmp_path / folder).mkdir()
    cwd, out = str(tmp_path / "cwd"), str(tmp_path / "cwd" / "out")
    full_env = {k: v for k, v in os.environ.items() if k not in CHOSEN}
    full_env.update(HOME=str(tmp_path / "home"), TMPDIR=str(tmp_path / "tmp"), **(env or {}))
    before = set(os.listdir(tmp_path.parent)), _everything(tmp_path, out)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "train", "run.py"), "--dataset", "synthetic",
                           "--max-steps", "1", "--device", "cpu", "--wandb-mode", "offline", "--out-dir", "out",
                           *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=300)
    beside, inside = set(os.listdir(tmp_path.parent)) - before[0], _everything(tmp_path, out) - before[1]
    return proc, out, beside | inside


@pytest.mark.parametrize("name", ["../escape", "a/b", "/abs", "..", ".", "", "x" * (MAX_NAME + 1)])
def test_a_name_that_would_leave_the_out_dir_is_refused_before_anything_is_written(tmp_path, name):
    proc, out, appeared = _run_watched(tmp_path, "--name", name)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: argument --name: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "is not allowed: a run name is one folder name" in proc.stderr
    assert appeared == set() and not os.path.exists(out)


def test_a_run_id_from_the_environment_that_would_leave_the_out_dir_is_refused(tmp_path):
    proc, out, appeared = _run_watched(tmp_path, env={"WANDB_RUN_ID": "../../x"})
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: 'r18-fp32-../../x' (the run name made from the run id")
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert appeared == set() and os.listdir(out) == []


@pytest.mark.parametrize("name", ["r18-fp32-x", "a.b+c=d_e"])
def test_a_run_with_a_safe_name_writes_its_folder_w_and_b_files_and_caches_inside_the_out_dir(tmp_path, name):
    proc, out, appeared = _run_watched(tmp_path, "--name", name)
    assert proc.returncode == 0, proc.stderr
    assert appeared == set(), "written outside --out-dir"
    assert {"checkpoint.pt", "result.json", "wandb"} <= set(os.listdir(os.path.join(out, name)))
    assert sorted(os.listdir(out)) == [".wandb-cache", name]
