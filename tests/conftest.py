"""Shared fixtures: tiny CIFAR-10 datasets in the official python layout, built in a temp folder; the runner as a
user starts it; and each test's tier (unit, integration, system) from the folder it is in.

The helpers beside this file (wandb_reader.py, metric_contract.py, nvml_double.py, slurm_cluster.py) are imported
by name from every tier's folder: pytest puts this folder on sys.path when it loads this file (rootdir conftest).
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIERS = ("unit", "integration", "system")  # the folders under tests/, and the markers pyproject.toml registers

# pytest-xdist's workers (pyproject.toml: -n 2) share the cores: torch in each takes its share of threads, not
# all of them, or two workers' OpenMP threads spin against each other (set before any test imports torch).
# A test file runs in one worker (--dist loadfile): its module fixtures are made once, and what must not run
# twice at once (the one-node Slurm cluster of tests/system/test_sweep.py, the GPU tests) is each in one file.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    os.environ.setdefault("OMP_NUM_THREADS",
                          str(max(1, len(os.sched_getaffinity(0)) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))


def pytest_collection_modifyitems(config, items):
    """Mark each test with its folder's tier, so `-m "not system"` runs the fast tiers. A test already marked with
    a tier keeps it: a system test that shares an integration file's fixtures is marked where it is defined."""
    for item in items:
        if any(item.get_closest_marker(tier) for tier in TIERS):
            continue
        tier = item.path.parent.name
        if tier not in TIERS:
            where = item.nodeid.split("::")[0]
            raise pytest.UsageError(f"{where} is in no tier: move it to tests/unit, tests/integration or tests/system "
                                    "(see tests/conftest.py)")
        item.add_marker(tier)


def write_cifar(data_dir: str, per_batch: int = 16, n_test: int = 32, seed: int = 0) -> str:
    """cifar-10-batches-py/ with data_batch_1..5, test_batch and batches.meta, as the official tarball has.

    Images are learnable: each class has its own colour, plus noise, so a few steps must beat chance.
    """
    rng = np.random.default_rng(seed)
    root = os.path.join(data_dir, "cifar-10-batches-py")
    os.makedirs(root, exist_ok=True)
    colours = rng.integers(0, 256, size=(10, 3))

    def batch(n: int, label: bytes) -> dict:
        labels = rng.integers(0, 10, size=n)
        img = colours[labels][:, :, None, None] + rng.normal(0, 20, size=(n, 3, 32, 32))
        data = np.clip(img, 0, 255).astype(np.uint8).reshape(n, 3072)
        return {b"batch_label": label, b"labels": labels.tolist(), b"data": data,
                b"filenames": [b"img%d.png" % i for i in range(n)]}

    for i in range(1, 6):
        with open(os.path.join(root, f"data_batch_{i}"), "wb") as f:
            pickle.dump(batch(per_batch, b"training batch %d of 5" % i), f, protocol=2)
    with open(os.path.join(root, "test_batch"), "wb") as f:
        pickle.dump(batch(n_test, b"testing batch 1 of 1"), f, protocol=2)
    with open(os.path.join(root, "batches.meta"), "wb") as f:
        names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
        pickle.dump({b"label_names": names, b"num_cases_per_batch": per_batch, b"num_vis": 3072}, f, protocol=2)
    return data_dir


@pytest.fixture
def cifar_dir(tmp_path):
    return write_cifar(str(tmp_path / "data"))


def run_cli(*args: str, cwd: str | None = None, env: dict | None = None, timeout: int = 300):
    """The runner as a user starts it: `python train/run.py ...` in a fresh process."""
    full_env = {**os.environ, "WANDB_MODE": "disabled", **(env or {})}
    return subprocess.run([sys.executable, os.path.join(ROOT, "train", "run.py"), *args], cwd=cwd or ROOT,
                          env=full_env, capture_output=True, text=True, timeout=timeout)


def run_in_process(*args: str, cwd: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """The runner's own entry point (train/run.py main) called in this process: what `run_cli` gives (exit status,
    stdout, stderr) without a new interpreter importing torch and W&B again (2-3 s a run on 2 cores). For
    integration tests of what a run does; tests of the process itself (signals, what it imports, how it exits)
    start one with run_cli. The environment, working folder, signal handlers and torch's thread count are
    restored afterwards, so each run starts as a command would."""
    from train import run

    saved_env, saved_cwd, threads = dict(os.environ), os.getcwd(), _torch_threads()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    out, err = io.StringIO(), io.StringIO()
    os.environ.update({"WANDB_MODE": "disabled", **(env or {})})
    try:
        os.chdir(cwd or ROOT)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = run.main(list(args))
            except SystemExit as e:  # argparse's exit for --help and bad flags
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
                if isinstance(e.code, str):
                    print(e.code, file=sys.stderr)
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
    return subprocess.CompletedProcess(["train/run.py", *args], code, out.getvalue(), err.getvalue())


def _torch_threads() -> int | None:
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


def signal_at_line(cmd: list[str], line: str, env: dict | None = None, timeout: int = 120,
                   signals: tuple = (signal.SIGTERM,), gap_s: float = 0.02, group: bool = False):
    """Start a run, send it `signals` (one after another, `gap_s` apart) once its output shows `line` (SIGTERM: a
    preemption; SIGINT: Ctrl-C), and wait for it to leave: (exit status, everything it printed, its stderr).
    group: to its whole process group, children included, as a terminal sends Ctrl-C."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=group)
    printed = []
    for out in proc.stdout:
        printed.append(out)
        if line in out:
            for i, sig in enumerate(signals):
                if i:
                    time.sleep(gap_s)
                if group:
                    os.killpg(proc.pid, sig)
                else:
                    proc.send_signal(sig)
            break
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, "".join(printed) + out, err


sigterm_at_line = signal_at_line  # the default signal, under the name the preemption tests use
