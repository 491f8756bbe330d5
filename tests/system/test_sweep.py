"""Sweeps: the YAMLs against W&B's own rules and grid order, offline runs here and as Slurm job arrays on a
real one-node cluster, and preemption (signal -> checkpoint -> the same W&B run continues)."""

import glob
import json
import os
import subprocess
import sys
import time

import pytest
import slurm_cluster
import yaml
from conftest import ROOT, sigterm_at_line
from wandb_reader import _inspect

SWEEPS = [os.path.join(ROOT, "sweeps", f) for f in ("grid.yaml", "smoke.yaml", "time_to_acc.yaml", "vit.yaml")]
SWEEP = [sys.executable, "-m", "train.sweep"]


def _sweep(*args, env=None, timeout=600):
    return subprocess.run([*SWEEP, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("path", SWEEPS, ids=os.path.basename)
def test_sweep_yaml_follows_wandbs_rules_and_grid_order(path):
    from sweeps.grid_search import grid_search_next_runs

    from sweeps import schema_violations_from_proposed_config

    config = yaml.safe_load(open(path))
    assert schema_violations_from_proposed_config(config) == []
    assert all("." not in name for name in config["parameters"])  # flat names only
    wandb_order = [{k: v["value"] for k, v in run.config.items()}
                   for run in grid_search_next_runs(runs=[], sweep_config=config, validate=True, n=10_000) if run]
    result = _sweep(path, "list")
    assert result.returncode == 0, result.stderr
    ours = [{k: v for k, v in json.loads(line).items() if not k.startswith("_")} for line in result.stdout.splitlines()]
    assert ours == wandb_order
    if path.endswith("grid.yaml"):
        assert len(ours) == 6 * 3 * 4
    if path.endswith("vit.yaml"):
        assert len(ours) == 2 * 8 * 4 and {p["precision"] for p in ours} >= {"fp8_tensorwise", "fp8_rowwise"}


@pytest.mark.parametrize("text, words", [
    ("method: random\nparameters: {depth: {values: [18]}}\n", ["only grid"]),
    ("method: grid\nparameters: {depth: {values: [18]}, warp_speed: {value: 9}}\n", ["warp_speed"]),
    ("method: grid\nparameters: [\n", ["not valid YAML"]),
    ("method: grid\nparameters: {depth: {values: []}}\n", ["depth"]),
])
def test_a_bad_sweep_file_gets_one_line_and_exit_2(tmp_path, text, words):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = _sweep(str(path), "list")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and all(w in result.stderr for w in words)


def test_local_runs_each_point_once_and_counts_a_refused_point_apart(tmp_path):
    path = tmp_path / "one.yaml"
    path.write_text("name: one\nmethod: grid\nprogram: train/run.py\nparameters:\n"
                    "  precision: {values: [fp32, bf16, fp8_tensorwise]}\n"
                    "  dataset: {value: synthetic}\n  max_steps: {value: 2}\n  batch_size: {value: 4}\n"
                    "  device: {value: cpu}\n")
    first = _sweep(str(path), "local", "--out-dir", str(tmp_path / "runs"))
    assert first.returncode == 1, first.stderr  # fp8 on a CPU: refused in one line, the rest of the grid runs
    assert "3 point(s) run, 0 skipped as finished, 0 diverged, 0 failed, 1 refused" in first.stdout
    assert "precisionfp8_tensorwise" in next(line for line in first.stdout.splitlines() if ": refused (exit 2" in line)
    assert [line for line in first.stderr.splitlines() if "fp8_tensorwise" in line][0].startswith("error: ")
    run_dirs = glob.glob(str(tmp_path / "runs" / "*"))
    assert len(run_dirs) == 2  # the refused point wrote nothing
    for run_dir in run_dirs:
        assert json.loads(_inspect(run_dir, "--summary"))["state"] == "finished"
    again = _sweep(str(path), "local", "--out-dir", str(tmp_path / "runs"))
    assert "1 point(s) run, 2 skipped as finished, 0 diverged, 0 failed, 1 refused" in again.stdout


def _history_steps(run_dir) -> tuple[set, list]:
    ids, steps = set(), []
    for wandb_dir in sorted(glob.glob(os.path.join(run_dir, "wandb", "offline-run-*"))):
        ids.add(json.loads(_inspect(wandb_dir, "--summary"))["run_id"])
        for line in _inspect(wandb_dir).splitlines():
            record = json.loads(line)
            if record.get("type") == "history" and "train/loss" in record["history"]["item"]:
                steps.append(record["history"]["item"]["train/step"])
    return ids, steps


def test_sigterm_checkpoints_and_the_same_command_continues_the_same_wandb_run(tmp_path):
    cmd = [sys.executable, os.path.join(ROOT, "train", "run.py"), "--dataset", "synthetic", "--max-steps", "12",
           "--batch-size", "4", "--log-every", "1", "--out-dir", str(tmp_path), "--name", "pre", "--resume", "auto",
           "--wandb-mode", "offline", "--device", "cpu"]
    status, out, err = sigterm_at_line(cmd, "step 4/12")
    assert status == 75, err
    assert "stopped by SIGTERM" in out
    assert not os.path.exists(tmp_path / "pre" / "result.json")
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "resumed from" in again.stdout
    ids, steps = _history_steps(tmp_path / "pre")
    assert len(ids) == 1 and len(glob.glob(str(tmp_path / "pre" / "wandb" / "offline-run-*"))) == 2
    assert steps == list(range(1, 13))  # no gap, no duplicate
    third = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0 and "has already ended (finished at step 12)" in third.stdout


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = slurm_cluster.available()
    if why:
        pytest.skip(why)
    c = slurm_cluster.Cluster(str(tmp_path_factory.mktemp("slurm"))).start()
    yield c
    c.stop()


def test_smoke_sweep_as_slurm_job_arrays_then_resubmit_skips_all(cluster, tmp_path):
    out = str(tmp_path / "runs")
    first = _sweep(os.path.join(ROOT, "sweeps", "smoke.yaml"), "slurm", "--out-dir", out, "--gpu-request", "none",
                   env=cluster.env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("submitted job array") == 2  # one array per GPU count
    cluster.wait_jobs_done(timeout=600)
    runs = sorted(glob.glob(os.path.join(out, "depth18-*")))
    assert len(runs) == 4
    for run_dir in runs:
        assert os.path.exists(os.path.join(run_dir, "result.json")), open(
            glob.glob(os.path.join(out, ".sweep", "logs", "*"))[0]).read()
        summary = json.loads(_inspect(run_dir, "--summary"))
        assert summary["state"] == "finished" and summary["summary"]["train/steps"] == 3
        gpus = 2 if "gpus2" in run_dir else 1
        assert summary["config"]["system"]["world_size"] == gpus
        # Each task was given one CPU (sbatch's default): its workers train on that one core's thread, not on a
        # thread per core of the node, which two tasks side by side would fight over.
        assert summary["config"]["system"]["cpu_threads"] == 1
    again = _sweep(os.path.join(ROOT, "sweeps", "smoke.yaml"), "slurm", "--out-dir", out, "--gpu-request", "none",
                   env=cluster.env)
    assert again.returncode == 0 and "nothing to submit" in again.stdout


def _wait_for(cluster, what: str, ready, timeout: float) -> None:
    """Poll `ready()` every 0.5 s; on timeout fail with what Slurm says about its jobs and node."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ready():
            return
        time.sleep(0.5)
    pytest.fail(f"{what} within {timeout:.0f} s\n{cluster.diagnose()}")


def test_slurm_warning_signal_checkpoints_requeues_and_continues_the_run(cluster, tmp_path):
    path = tmp_path / "long.yaml"
    # Through the launcher, as every point of the study's grid (gpus is one of its axes): 2 workers on CPU.
    path.write_text("name: long\nmethod: grid\nprogram: train/run.py\nparameters:\n  precision: {values: [fp32]}\n"
                    "  gpus: {value: 2}\n  dataset: {value: synthetic}\n  max_steps: {value: 24}\n"
                    "  batch_size: {value: 16}\n  log_every: {value: 1}\n")  # ~0.4 s a step: the signal lands mid-run
    out = str(tmp_path / "runs")
    submitted = _sweep(str(path), "slurm", "--out-dir", out, "--gpu-request", "none", "--cpus-per-task", "2",
                       env=cluster.env)  # a CPU for each worker: the task is bound to what it asked for
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.split("job array ")[1].split(":")[0]

    def log_text() -> str:
        logs = glob.glob(os.path.join(out, ".sweep", "logs", "*.out"))
        return open(logs[0]).read() if logs else ""

    _wait_for(cluster, "the task never started training", lambda: "step 3/24" in log_text(), 300)
    cluster.run("scancel", "--signal=USR1", "--batch", f"{job}_0")  # what --signal=B:USR1@120 sends
    _wait_for(cluster, "the task did not checkpoint and requeue itself", lambda: "requeueing" in log_text(), 120)
    # Slurm holds the requeued task (Reason=BeginTime) for the cluster's cred_expire + 1 s, then starts it by
    # itself: nothing is released by hand (see slurm_cluster.py for why that can lose the task).
    _wait_for(cluster, "the requeued task did not start again", lambda: "(restart 1)" in log_text(), 90)
    _wait_for(cluster, "the continued run did not finish",
              lambda: glob.glob(os.path.join(out, "*", "result.json")), 300)
    text = log_text()
    assert "stopped by SIGUSR1" in text and "resumed from" in text
    run_dir = glob.glob(os.path.join(out, "*precisionfp32*"))[0]
    ids, steps = _history_steps(run_dir)
    assert len(ids) == 1 and steps == list(range(1, 25))
    cluster.wait_jobs_done(timeout=60)
    info = cluster.run("scontrol", "-o", "show", "job", job, check=False).stdout
    assert "Restarts=1" in info and "ExitCode=0:0" in info, info


AGENT_SCRIPT = os.path.join(ROOT, "sweeps", "slurm", "agents.sbatch")
# Stands in for `wandb agent --count 1 --forward-signals SWEEP`: it passes a stop signal on to its run and, like
# the real agent, exits 0 whatever the run's status (here the run stops at once and exits 75).
FAKE_WANDB = """#!/bin/bash
echo "fake wandb $* (restart ${SLURM_RESTART_COUNT:-0})"
[ "${SLURM_RESTART_COUNT:-0}" -gt 0 ] && { echo "agent ran a point"; exit 0; }
sleep 300 &
run=$!
trap 'kill "$run"; echo "run checkpointed, exit 75"' USR1 TERM
echo "agent running a point"
wait "$run"
exit 0
"""


def test_agents_array_task_requeues_itself_when_stopped(cluster, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "wandb").write_text(FAKE_WANDB)
    (bin_dir / "wandb").chmod(0o755)
    log = tmp_path / "agent.out"
    env = {**cluster.env, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    job = subprocess.run(["sbatch", "--parsable", "--array=0-0", f"--output={log}", AGENT_SCRIPT, "ent/proj/sweep1"],
                         env=env, capture_output=True, text=True, check=True).stdout.strip().split(";")[0]
    text = lambda: log.read_text() if log.exists() else ""  # noqa: E731
    _wait_for(cluster, "the agent never started", lambda: "agent running a point" in text(), 120)
    cluster.run("scancel", "--signal=USR1", "--batch", f"{job}_0")
    _wait_for(cluster, "the stopped task did not start again", lambda: "agent ran a point" in text(), 120)
    cluster.wait_jobs_done(timeout=60)
    assert f"stopped by SIGUSR1, agent status 0: requeueing {job}_0" in text(), text()
    info = cluster.run("scontrol", "-o", "show", "job", job, check=False).stdout
    assert "Restarts=1" in info and "ExitCode=0:0" in info, info  # the second start ended on its own: no requeue
