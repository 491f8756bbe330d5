"""A run stopped by the code before the restructuring (issue 17) continues under today's code as if unbroken.

The old tree is the commit before the new layout, taken out of this clone with `git archive` (nothing to clean
up in git's metadata); its `train/run.py` puts its own tree first on sys.path, so it runs its own modules."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, sigterm_at_line, write_cifar

OLD_COMMIT = "2bf6370"  # the flat train/ layout, the last commit before the restructuring


def _old_tree(dest) -> str:
    """The old commit's files in `dest`, or a skip saying why they cannot be had (no git, a shallow clone)."""
    try:
        found = subprocess.run(["git", "-C", ROOT, "cat-file", "-e", f"{OLD_COMMIT}^{{commit}}"], capture_output=True)
    except FileNotFoundError:
        pytest.skip("git is not installed: the old commit's tree cannot be taken out")
    if found.returncode != 0:
        pytest.skip(f"commit {OLD_COMMIT} is not in this clone (a shallow clone or an export): "
                    "the old code that writes the checkpoint is not available")
    os.makedirs(dest)
    archive = subprocess.run(["git", "-C", ROOT, "archive", "--format=tar", OLD_COMMIT, "train"], capture_output=True,
                             check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return str(dest)


@pytest.fixture(scope="module")
def old_then_new(tmp_path_factory):
    """The same 2-epoch run twice: stopped by SIGTERM by the old code and resumed by today's, and unbroken under
    today's code. Side by side, one thread each, as tests/integration/test_study.py does."""
    root = tmp_path_factory.mktemp("old-checkpoint")
    old = _old_tree(root / "old")
    data = write_cifar(str(root / "data"), per_batch=16, n_test=32)
    flags = ["--data-dir", data, "--epochs", "2", "--batch-size", "16", "--log-every", "1", "--warmup-steps", "1",
             "--device", "cpu", "--wandb-mode", "offline", "--out-dir", str(root / "runs"), "--resume", "auto"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    whole = subprocess.Popen([sys.executable, os.path.join(ROOT, "train", "run.py"), *flags, "--name", "whole"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    # The old runner, with its own tree first on the path (as its run.py does too), stopped at a log window.
    status, printed, err = sigterm_at_line([sys.executable, os.path.join(old, "train", "run.py"), *flags,
                                            "--name", "part"], "step 3/10", env={**env, "PYTHONPATH": old})
    assert status == 75, err
    assert "stopped by SIGTERM" in printed
    saved = torch.load(root / "runs" / "part" / "checkpoint.pt", weights_only=True)
    progress = saved["state"]["progress"]
    assert 3 <= progress["step"] < 10 and progress["segments"] == 1  # stopped mid-run: the next step ends it
    again = subprocess.run([sys.executable, os.path.join(ROOT, "train", "run.py"), *flags, "--name", "part"],
                           capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0 and "resumed from" in again.stdout, again.stderr
    _, err = whole.communicate(timeout=300)
    assert whole.returncode == 0, err
    return root / "runs" / "whole", root / "runs" / "part"


def test_a_checkpoint_of_the_old_code_resumes_and_finishes_as_the_unbroken_run(old_then_new):
    whole_dir, part_dir = old_then_new
    whole = json.load(open(whole_dir / "result.json"))
    part = json.load(open(part_dir / "result.json"))
    assert (part["train/segments"], whole["train/segments"]) == (2, 1)
    assert part["train/end"] == whole["train/end"] == "finished"
    for key in ("train/steps", "train/images"):
        assert part[key] == whole[key], key
    assert part["train/steps"] == 10
    # One W&B run in two offline segments: the old code's and today's continuation of it.
    segments = sorted(d for d in os.listdir(part_dir / "wandb") if d.startswith("offline-run-"))
    assert len(segments) == 2 and len({s.rsplit("-", 1)[-1] for s in segments}) == 1
