"""--compile on CPU (Inductor's C++ backend): ResNet-18, batch 4, 2 steps, so the compile stays the bulk of the
cost (~45 s cold on the 2-core CI machine, Inductor's cache empty; a few seconds warm); and a compile that fails."""

import os
import shutil

import pytest
import torch
from conftest import run_cli

from train.contract.errors import UsageError
from train.numerics import compiling
from train.runner.options import EXPERIMENT_FLAGS, parse_args
from train.runner.session import train


def _args(out_dir, *extra):
    return ["--dataset", "synthetic", "--max-steps", "2", "--batch-size", "4", "--log-every", "1", "--warmup-steps",
            "1", "--device", "cpu", "--wandb-mode", "disabled", "--out-dir", str(out_dir), *extra]


@pytest.fixture(scope="module")
def eager_and_compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("compile")
    eager = train(parse_args(_args(out, "--name", "eager")))
    compiled = train(parse_args(_args(out, "--name", "compiled", "--compile", "default")))
    return eager, compiled


def test_a_compiled_run_trains_the_same_steps_and_reports_its_compile_time_apart(eager_and_compiled):
    eager, compiled = eager_and_compiled
    assert compiled["train/steps"] == 2 and compiled["train/images_per_s"] > 0
    assert compiled["time/compile_s"] > 0 and eager["time/compile_s"] is None
    assert compiled["time/setup_s"] > 0
    # BatchNorm's running statistics were put back after the compile's warm-up pass: same losses as eager.
    for field in ("min", "max"):
        assert compiled["train/loss"][field] == pytest.approx(eager["train/loss"][field], rel=1e-3)


def test_the_checkpoint_holds_the_uncompiled_model_and_the_experiment_names_the_mode(eager_and_compiled):
    eager, compiled = eager_and_compiled
    load = lambda r: torch.load(os.path.join(r["run_dir"], "checkpoint.pt"), weights_only=True)  # noqa: E731
    e, c = load(eager), load(compiled)
    assert list(c["state"]["model"]) == list(e["state"]["model"])  # no "_orig_mod." keys
    assert c["experiment"]["compile"] == "default" and e["experiment"]["compile"] == "none"
    assert "compile" in EXPERIMENT_FLAGS


def test_resume_refuses_a_changed_compile_mode(eager_and_compiled, tmp_path):
    _, compiled = eager_and_compiled
    run_dir = tmp_path / "stopped"
    shutil.copytree(compiled["run_dir"], run_dir)
    os.unlink(run_dir / "result.json")  # as if stopped: a checkpoint to continue from
    with pytest.raises(UsageError) as e:
        train(parse_args(_args(tmp_path, "--resume", str(run_dir), "--max-steps", "3")))
    assert "compile" in str(e.value) and "'default' -> 'none'" in str(e.value)


def test_no_cpp_compiler_is_one_line_before_anything_is_written(monkeypatch):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(compiling.shutil, "which", lambda name: None)
    with pytest.raises(UsageError) as e:
        compiling.check("default", torch.device("cpu"))
    assert "C++ compiler" in str(e.value) and "--compile none" in str(e.value)
    compiling.check("none", torch.device("cpu"))  # eager needs no compiler


# A C++ compiler that answers Inductor's `--version` probe but cannot build anything (a broken toolchain).
BROKEN_CXX = """#!/bin/sh
case "$*" in *--version*) echo "g++ (Debian 12.2.0-14) 12.2.0"; exit 0;; esac
echo "c++: internal compiler error: Segmentation fault signal terminated program cc1plus" >&2
exit 1
"""


def test_a_compile_that_fails_is_one_line_and_leaves_the_run_folder_free_for_the_same_name(tmp_path):
    cxx = tmp_path / "broken-c++"
    cxx.write_text(BROKEN_CXX)
    cxx.chmod(0o755)
    args = _args(tmp_path / "runs", "--name", "again")
    # Its own Inductor cache: kernels cached by another compile of this model would never reach the compiler.
    env = {"CXX": str(cxx), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    failed = run_cli(*args, "--compile", "default", env=env)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr, failed.stderr[-3000:]
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --compile default failed before any training step"), lines
    assert "internal compiler error: Segmentation fault" in lines[0] and "--compile none" in lines[0]
    assert os.listdir(tmp_path / "runs" / "again") == []  # no checkpoint, no W&B files, no lock left holding it
    eager = train(parse_args([*args, "--compile", "none"]))  # the advice, under the same name
    assert eager["train/steps"] == 2 and eager["run_dir"] == str(tmp_path / "runs" / "again")
