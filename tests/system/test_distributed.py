"""Several processes on CPU with gloo, started the ways users start them: --gpus N (PyTorch's elastic agent),
torchrun, two "nodes" on localhost; and a worker killed mid-run."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import ROOT
from metric_contract import COMM_STEP_KEYS
from wandb_reader import _inspect

RUN = os.path.join(ROOT, "train", "run.py")
TORCHRUN = os.path.join(os.path.dirname(sys.executable), "torchrun")
COMMON = ["--dataset", "synthetic", "--max-steps", "4", "--batch-size", "4", "--log-every", "2", "--warmup-steps", "1",
          "--wandb-mode", "offline", "--dist-timeout", "60", "--device", "cpu"]  # gloo, also on a GPU node
RESNET18_GRAD_BYTES = 11_173_962 * 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "WANDB_MODE")}
    return env


def _one_run_with_world_size_2(out_dir, name, grad_bytes=RESNET18_GRAD_BYTES):
    runs = [d for d in os.listdir(out_dir) if not d.startswith(".")]
    assert runs == [name]
    wandb_runs = [d for d in os.listdir(os.path.join(out_dir, name, "wandb")) if d.startswith("offline-run-")]
    assert len(wandb_runs) == 1  # only rank 0 makes a W&B run
    summary = json.loads(_inspect(os.path.join(out_dir, name), "--summary"))
    assert summary["state"] == "finished"
    system = summary["config"]["system"]
    assert system["world_size"] == 2 and system["backend"] == "gloo"
    assert summary["config"]["data"]["global_batch_size"] == 8
    s = summary["summary"]
    assert s["train/images_per_s_per_gpu"] == pytest.approx(s["train/images_per_s"] / 2)
    records = [json.loads(line) for line in _inspect(os.path.join(out_dir, name)).splitlines() if line.strip()]
    windows = [r["history"]["item"] for r in records if r.get("type") == "history"
               and "train/loss" in r["history"]["item"]]
    assert len(windows) == 2
    for w in windows:
        for key in COMM_STEP_KEYS + ["rank0/mem/rss_peak_bytes", "rank1/mem/rss_peak_bytes"]:  # CPU: peak RSS
            assert key in w, key
        assert w["comm/allreduce_bytes"] == 2 * grad_bytes  # 2 steps a window; fp32 gradients unless compressed
        assert w["comm/busbw_bytes_per_s"] == pytest.approx(w["comm/algbw_bytes_per_s"])  # 2(n-1)/n = 1 at n=2
        assert w["dist/step_time_max_s"] >= w["dist/step_time_min_s"]
    return summary


def test_gpus_2_starts_two_workers_through_the_elastic_launcher(tmp_path):
    out, tmp = tmp_path / "runs", tmp_path / "tmp"
    tmp.mkdir()
    result = subprocess.run([sys.executable, RUN, "--gpus", "2", *COMMON, "--out-dir", str(out), "--name", "g2"],
                            env={**_env(), "TMPDIR": str(tmp)}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = _one_run_with_world_size_2(out, "g2")
    assert summary["config"]["system"]["launcher"] == "torchrun"
    assert result.stdout.count("done:") == 1  # rank 1 prints nothing
    assert not [d for d in os.listdir(tmp) if d.startswith("torchelastic_")]  # the agent's log folder is removed


def test_torchrun_runs_the_same_script_unchanged_and_compression_halves_the_all_reduce_bytes(tmp_path):
    # One job for both (a 2-process job is ~10 s here): --gpus 2 above all-reduces the fp32 gradients' bytes.
    result = subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node", "2", RUN, *COMMON, "--out-dir",
                             str(tmp_path), "--name", "tr", "--grad-compress", "fp16"], env=_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    _one_run_with_world_size_2(tmp_path, "tr", grad_bytes=RESNET18_GRAD_BYTES // 2)


@pytest.mark.parametrize("how", ["torchrun", "run.py --nodes"])
def test_two_nodes_on_localhost_make_one_job(tmp_path, how):
    port = _free_port()
    if how == "torchrun":
        cmd = [TORCHRUN, "--nnodes", "2", "--nproc_per_node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint",
               f"127.0.0.1:{port}", "--rdzv-id", "two-nodes", RUN]
    else:
        cmd = [sys.executable, RUN, "--gpus", "1", "--nodes", "2", "--rdzv-endpoint", f"127.0.0.1:{port}",
               "--rdzv-id", "two-nodes"]
    # Each "node" on its own core, as a real node has its own CPUs: two threads each on one machine's 2 cores
    # would wait on each other at every step.
    cores = sorted(os.sched_getaffinity(0))
    nodes = [subprocess.Popen([*cmd, *COMMON, "--out-dir", str(tmp_path), "--name", "n2"], env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              preexec_fn=lambda core=cores[i % len(cores)]: os.sched_setaffinity(0, {core}))
             for i in range(2)]
    outputs = [p.communicate(timeout=300) for p in nodes]
    assert all(p.returncode == 0 for p in nodes), [o[1][-2000:] for o in outputs]
    summary = _one_run_with_world_size_2(tmp_path, "n2")
    assert summary["config"]["system"]["nodes"] == 2 and summary["config"]["system"]["gpus_per_node"] == 1
    assert summary["config"]["system"]["cpu_threads"] == 1  # the cores it may run on, not the machine's


@pytest.mark.parametrize("restarts", [[], ["--max-restarts", "2"]], ids=["", "not retried by --max-restarts"])
def test_a_usage_error_in_the_workers_is_one_line_for_the_whole_job(tmp_path, restarts):
    result = subprocess.run([sys.executable, RUN, "--gpus", "2", "--data-dir", str(tmp_path / "none"), "--out-dir",
                             str(tmp_path / "runs"), "--wandb-mode", "offline", *restarts], env=_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "CIFAR-10 not found" in errors[0] and "Traceback" not in result.stderr


def test_killing_a_worker_ends_the_job_non_zero_naming_the_rank_and_fails_the_wandb_run(tmp_path):
    proc = subprocess.Popen([sys.executable, RUN, "--gpus", "2", "--dataset", "synthetic", "--max-steps", "10000",
                             "--batch-size", "4", "--log-every", "1", "--wandb-mode", "offline", "--dist-timeout", "30",
                             "--out-dir", str(tmp_path), "--name", "killed"], env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until training runs: its first window is printed
        line = proc.stdout.readline()
        if "step 1/" in line:
            break
    victim = _rank_pid(str(tmp_path), 1)
    assert victim, "rank 1 not found"
    killed_at = time.time()
    os.kill(victim, signal.SIGKILL)
    _, stderr = proc.communicate(timeout=60)
    assert time.time() - killed_at < 30 + 15  # within --dist-timeout (it is seconds in practice)
    assert proc.returncode != 0
    assert "job failed because rank 1 was killed by SIGKILL" in stderr
    summary = json.loads(_inspect(tmp_path / "killed", "--summary"))
    assert summary["state"] == "failed"


def _rank_pid(marker: str, rank: int) -> int | None:
    """The pid of the worker with RANK=rank whose command line holds `marker` (its --out-dir)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ and marker.encode() in cmdline:
            return int(pid)
    return None


def _alive(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("sig, restarts", [(signal.SIGUSR1, []), (signal.SIGTERM, []), (signal.SIGINT, []),
                                           (signal.SIGUSR1, ["--max-restarts", "1"])],
                         ids=["SIGUSR1", "SIGTERM", "SIGINT", "SIGUSR1 not retried by --max-restarts"])
def test_a_stop_signal_to_the_launcher_checkpoints_every_worker_and_the_job_continues(tmp_path, sig, restarts):
    """Slurm's warning signal (SIGUSR1) or SIGTERM (time limit, scancel, preemption) reaches the launcher; its
    workers agree at a log window, checkpoint, exit 75, and so does the launcher; the same command continues the
    one W&B run. Under SIGTERM rank 0 is stalled (SIGSTOP) in the middle of writing its checkpoint: no rank may
    leave before it has saved and finished W&B, or the elastic agent would SIGTERM it and SIGKILL it 30 s on.
    The continuation is run once, after SIGTERM: a checkpoint does not depend on the signal that asked for it.
    Ctrl-C (SIGINT) on the launcher stops the workers the same way, and the job exits 130, as an interrupt.
    Under --max-restarts the agent would restart workers that exited 75: a stop is not retried, the job exits 75."""
    cmd = [sys.executable, RUN, "--gpus", "2", "--dataset", "synthetic", "--max-steps", "12", "--batch-size", "4",
           "--log-every", "1", "--wandb-mode", "offline", "--dist-timeout", "60", "--out-dir", str(tmp_path),
           "--name", "ddp-pre", "--resume", "auto", *restarts]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if "step 3/12" in line:
            ranks = [_rank_pid(str(tmp_path), r) for r in (0, 1)]
            proc.send_signal(sig)
            break
    assert all(ranks), ranks
    if sig == signal.SIGTERM:
        saving = tmp_path / "ddp-pre" / f".checkpoint.pt.tmp-{socket.gethostname()}-{ranks[0]}"  # checkpoint.py's
        deadline = time.time() + 60
        while not saving.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.002)
        assert saving.exists(), "rank 0 was not seen writing its checkpoint"
        os.kill(ranks[0], signal.SIGSTOP)  # a slow save (a stalled file system, a big model)
        try:
            for _ in range(40):
                time.sleep(0.1)
                assert _alive(ranks[1]), "rank 1 left while rank 0 was still writing its checkpoint"
        finally:
            os.kill(ranks[0], signal.SIGCONT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == (130 if sig == signal.SIGINT else 75), err[-2000:]
    assert f"stopped by {sig.name}" in out and "error" not in err.lower()
    assert not (tmp_path / "ddp-pre" / "result.json").exists()
    assert (tmp_path / "ddp-pre" / "checkpoint.pt").exists()
    if sig != signal.SIGTERM:
        return
    again = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resumed from" in again.stdout
    segments = sorted((tmp_path / "ddp-pre" / "wandb").glob("offline-run-*"))
    assert len(segments) == 2
    steps, ids, states = [], set(), []
    for segment in segments:
        summary = json.loads(_inspect(segment, "--summary"))
        ids.add(summary["run_id"])
        states.append(summary["state"])
        for line in _inspect(segment).splitlines():
            record = json.loads(line)
            if record.get("type") == "history" and "train/loss" in record["history"]["item"]:
                steps.append(record["history"]["item"]["train/step"])
    assert len(ids) == 1 and steps == list(range(1, 13))
    assert states[-1] == "finished"


def test_a_worker_killed_once_is_restarted_and_the_job_ends_as_the_unbroken_one(tmp_path):
    """--max-restarts 1: rank 1 SIGKILLed after the first periodic checkpoint gets the elastic agent to restart
    both workers; the command has no --resume, yet the restart continues the run from that checkpoint, in the
    same folder and W&B run, and ends with the unbroken job's steps, accuracy and weights."""
    from conftest import write_cifar

    data = write_cifar(str(tmp_path / "data"), per_batch=8, n_test=8)  # 40 images: 5 steps an epoch per rank
    env = {**_env(), "OMP_NUM_THREADS": "1"}  # one thread a worker: the two jobs compute bit for bit alike
    common = [sys.executable, RUN, "--gpus", "2", "--data-dir", data, "--epochs", "2", "--batch-size", "4",
              "--ckpt-every", "1", "--log-every", "1", "--warmup-steps", "1", "--wandb-mode", "offline",
              "--dist-timeout", "30", "--device", "cpu", "--max-restarts", "1"]
    out = tmp_path / "killed"
    jobs = [subprocess.Popen([*common, "--out-dir", str(d)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for d in (tmp_path / "whole", out)]  # side by side: the test takes less
    deadline = time.time() + 120
    while not list(out.glob("*/checkpoint.pt")) and time.time() < deadline and jobs[1].poll() is None:
        time.sleep(0.01)  # the checkpoint at the end of epoch 1 (step 5)
    victim = _rank_pid(str(out), 1)
    assert victim, "rank 1 not found"
    os.kill(victim, signal.SIGKILL)  # once: the restarted rank 1 is another process
    (_, whole_err), (stdout, stderr) = (job.communicate(timeout=240) for job in jobs)
    assert jobs[0].returncode == 0, whole_err[-2000:]
    assert jobs[1].returncode == 0, stderr[-2000:]
    assert "restart 1 of 1" in stdout and "at step 5 (epoch 2" in stdout, stdout
    [run_dir] = [d for d in out.iterdir() if not d.name.startswith(".")]  # one run folder: the restart's too
    [whole_dir] = [d for d in (tmp_path / "whole").iterdir() if not d.name.startswith(".")]
    a, b = (json.load(open(d / "result.json")) for d in (whole_dir, run_dir))
    assert (a["train/segments"], b["train/segments"]) == (1, 2)
    for key in ("train/steps", "train/images", "test/last_acc", "test/loss"):
        assert b[key] == a[key], key
    import torch

    wa, wb = (torch.load(d / "checkpoint.pt", weights_only=True)["state"]["model"] for d in (whole_dir, run_dir))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    segments = sorted((run_dir / "wandb").glob("offline-run-*"))
    summaries = [json.loads(_inspect(s, "--summary")) for s in segments]
    assert len(segments) == 2 and len({s["run_id"] for s in summaries}) == 1
    assert summaries[-1]["state"] == "finished"
    steps = [json.loads(line)["history"]["item"]["train/step"] for line in _inspect(segments[-1]).splitlines()
             if '"train/loss"' in line and json.loads(line).get("type") == "history"]
    assert steps == list(range(6, 11))  # the restart logged on from its checkpoint's step


def test_torchrun_max_restarts_continues_the_run_named_with_resume_auto(tmp_path):
    """The torchrun command docs/cluster.md gives: torchrun's own restarts, with --name and --resume auto (and
    the agent's store sharing off), continue the run after rank 1 is SIGKILLed."""
    from conftest import write_cifar

    data = write_cifar(str(tmp_path / "data"), per_batch=8, n_test=8)
    env = {**_env(), "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    proc = subprocess.Popen([TORCHRUN, "--standalone", "--nproc_per_node", "2", "--max-restarts", "1", RUN,
                             "--name", "tr", "--resume", "auto", "--data-dir", data, "--epochs", "2", "--batch-size",
                             "4", "--ckpt-every", "1", "--wandb-mode", "offline", "--dist-timeout", "30", "--device",
                             "cpu", "--out-dir", str(tmp_path / "runs")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    checkpoint = tmp_path / "runs" / "tr" / "checkpoint.pt"
    deadline = time.time() + 120
    while not checkpoint.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    victim = _rank_pid(str(tmp_path / "runs"), 1)
    assert victim, "rank 1 not found"
    os.kill(victim, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr[-2000:]
    assert "restart 1 of 1" in stdout and "at step 5 (epoch 2" in stdout, stdout
    assert "#135712" not in stderr  # the store sharing is off: nothing to warn of
    assert json.load(open(tmp_path / "runs" / "tr" / "result.json"))["train/steps"] == 10
    assert len(list((tmp_path / "runs" / "tr" / "wandb").glob("offline-run-*"))) == 2


def test_a_worker_killed_again_after_the_last_restart_ends_the_job_saying_the_restarts_are_used_up(tmp_path):
    """--max-restarts 1, rank 1 killed before any checkpoint and again after the restart: the restart started
    the run anew in the same folder (the launcher fixed its id); the second death ends the job, naming it."""
    proc = subprocess.Popen([sys.executable, RUN, "--gpus", "2", "--dataset", "synthetic", "--max-steps", "10000",
                             "--batch-size", "4", "--log-every", "1", "--wandb-mode", "offline", "--dist-timeout", "30",
                             "--device", "cpu", "--max-restarts", "1", "--out-dir", str(tmp_path)], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = []
    deadline = time.time() + 240
    for line in proc.stdout:  # training runs (a step is printed): kill rank 1, once in each worker group
        if "step 1/" in line and time.time() < deadline:
            victim = _rank_pid(str(tmp_path), 1)
            assert victim and victim not in killed, "rank 1 not found"
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
            if len(killed) == 2:
                break
    _, stderr = proc.communicate(timeout=120)
    assert len(killed) == 2 and proc.returncode == 1, stderr[-2000:]
    assert "rank 1 was killed by SIGKILL" in stderr.splitlines()[-1]
    assert "after 1 restart (all that --max-restarts 1 allows)" in stderr.splitlines()[-1]
    [run_dir] = [d for d in tmp_path.iterdir() if not d.name.startswith(".")]
    segments = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(segments) == 2 and len({json.loads(_inspect(s, "--summary"))["run_id"] for s in segments}) == 1
