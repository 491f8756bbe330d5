"""W&B when things go wrong: credentials but no network (the usual compute node), and a run killed with SIGKILL.

Real wandb throughout, offline runs read back with W&B's own reader; the servers here are loopback sockets
that misbehave the way a firewall, a dead proxy or an overloaded W&B server does.
"""

import glob
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from conftest import ROOT, write_cifar
from wandb_reader import _inspect

RUN = [sys.executable, os.path.join(ROOT, "train", "run.py")]
QUICK = ["--device", "cpu", "--dataset", "synthetic", "--max-steps", "2", "--batch-size", "4"]
FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"  # 40 characters, as W&B's keys


def _timed_run(args, env, timeout=300):
    """The runner as a user starts it; returns (exit status, stdout lines with their arrival times, stderr, when
    its output ended: its exit)."""
    full_env = {k: v for k, v in {**os.environ, **env}.items() if v is not None}  # None: unset it
    proc = subprocess.Popen([*RUN, *args], cwd=ROOT, env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append((time.monotonic(), line.rstrip("\n")))
        ended = time.monotonic()
        err = proc.communicate(timeout=timeout)[1]
    finally:
        proc.kill()
    return proc.returncode, lines, err, ended


def _wandb_start(lines) -> tuple[float, str]:
    """Seconds from the run's first line (printed just before W&B starts) to the W&B line, and that line."""
    wandb_lines = [(t, text) for t, text in lines if text.startswith("W&B:")]
    assert len(wandb_lines) == 1, lines  # one line says where the run goes and why
    return wandb_lines[0][0] - lines[0][0], wandb_lines[0][1]


def _one_offline_run(run_dir) -> dict:
    segments = glob.glob(os.path.join(run_dir, "wandb", "*run-*"))
    assert len(segments) == 1 and os.path.basename(segments[0]).startswith("offline-run-"), segments
    return json.loads(_inspect(run_dir, "--summary"))


def _offline_with_credentials(tmp_path, name, base_url=None, timeout_s=5):
    env = {"WANDB_MODE": None, "WANDB_API_KEY": FAKE_KEY, "WANDB_RUN_ID": f"{name}1234"}
    if base_url:
        env["WANDB_BASE_URL"] = base_url
    code, lines, err, ended = _timed_run([*QUICK, "--out-dir", str(tmp_path), "--name", name,
                                          "--wandb-init-timeout", str(timeout_s)], env)
    assert code == 0, err
    assert "Traceback" not in err, err
    # The server does not hold the run's end either: W&B's own usage analytics, still set for online, tried it
    # again as the process exited (10 s more on a port that never answers).
    done = next(t for t, text in lines if text.startswith("done:"))
    assert ended - done < 8, f"the run took {ended - done:.1f} s to exit after it was done"
    waited, line = _wandb_start(lines)
    assert line.startswith("W&B: offline (W&B credentials found, but "), line
    summary = _one_offline_run(tmp_path / name)
    assert summary["run_id"] == f"{name}1234" and summary["state"] == "finished" and summary["exit_code"] == 0
    assert summary["summary"]["train/steps"] == 2
    return waited, line


def test_credentials_without_network_train_offline_at_once(tmp_path):
    # No network here: the name of W&B's host does not resolve. (With network, the fake key fails the
    # online start instead, and the run goes offline the same way.)
    waited, line = _offline_with_credentials(tmp_path, "nonet")
    assert waited < 5 + 10, line  # the timeout, plus W&B's teardown and offline start on a busy machine


class _SilentServer:
    """Accepts TCP connections on loopback and never answers (a firewall's half-open port, a hung proxy).
    It stops by itself after `lifetime` seconds, so a failing test leaves nothing behind."""

    def __init__(self, lifetime: float = 120):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.5)
        self.conns = []
        self.deadline = time.monotonic() + lifetime
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self):
        while time.monotonic() < self.deadline:
            try:
                self.conns.append(self.sock.accept()[0])
            except socket.timeout:
                continue
            except OSError:
                break
        self.close()

    def close(self):
        for c in self.conns:
            c.close()
        self.sock.close()


def test_a_server_that_never_answers_sends_the_run_offline_within_the_timeout(tmp_path):
    server = _SilentServer()
    try:
        waited, line = _offline_with_credentials(tmp_path, "silent", base_url=server.url, timeout_s=4)
    finally:
        server.close()
    assert server.conns, "the runner never tried the server"
    assert "unreachable" in line and "no answer" in line, line
    assert waited < 4 + 10, line


class _HangingGraphQL(http.server.ThreadingHTTPServer):
    """Answers HTTP, but holds W&B's API calls (POST /graphql) without answering: an overloaded server or a
    proxy that passes the TCP and HTTP checks. The online start then times out in wandb itself."""

    daemon_threads = True

    def __init__(self, lifetime: float = 120):
        self.stop = threading.Event()
        self.graphql_calls = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def _empty(handler, status):
                handler.send_response(status)
                handler.send_header("Content-Length", "0")
                handler.end_headers()

            def do_HEAD(handler):
                handler._empty(200)

            def do_GET(handler):
                handler._empty(404)

            def do_POST(handler):
                if handler.path.startswith("/graphql"):
                    self.graphql_calls += 1
                    self.stop.wait(lifetime)
                    return
                handler._empty(404)  # W&B's usage telemetry and anything else: not here

            def log_message(handler, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()
        threading.Timer(lifetime, self.close).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def close(self):
        self.stop.set()
        self.shutdown()
        self.server_close()


def test_an_online_start_that_times_out_goes_offline_in_the_same_process(tmp_path):
    # What used to end in "run ID ... is in use" (wandb/wandb#9865) after a 60 s wait.
    server = _HangingGraphQL()
    try:
        waited, line = _offline_with_credentials(tmp_path, "hung", base_url=server.url, timeout_s=5)
    finally:
        server.close()
    assert server.graphql_calls, "the online start never reached the server"
    assert "the online start failed after" in line, line
    assert waited < 5 + 10 + 10, line  # the timeout, W&B's teardown of the failed start, the offline start


def test_a_run_started_by_a_process_that_uses_wandb_still_goes_offline_after_a_failed_online_start(tmp_path):
    # A parent that uses W&B itself (a driver script, a notebook, this test process after an in-process run)
    # leaves its service's address in $WANDB_SERVICE. A runner that shared that service could not free the
    # failed online start's run id ("run ID ... is in use"): it must start a service of its own.
    import wandb

    wandb.teardown()  # an earlier in-process run's service (its token already taken off the environment)
    wandb.init(mode="offline", dir=str(tmp_path), project="parent").finish()  # a new service, its token exported
    assert os.environ.get("WANDB_SERVICE"), "the parent's W&B service token, which the runner inherits"
    server = _HangingGraphQL()
    try:
        waited, line = _offline_with_credentials(tmp_path, "child", base_url=server.url, timeout_s=5)
    finally:
        server.close()
        wandb.teardown()  # the parent's service, and its token in this process's environment
    assert "the online start failed after" in line, line


def test_sigkill_then_resume_keeps_every_logged_window_once(tmp_path):
    data_dir = write_cifar(str(tmp_path / "data"), per_batch=8, n_test=16)  # 40 images: 5 steps of 8 an epoch
    cmd = [*RUN, "--data-dir", data_dir, "--out-dir", str(tmp_path), "--name", "killed", "--resume", "auto",
           "--epochs", "3", "--batch-size", "8", "--log-every", "1", "--ckpt-every", "1", "--device", "cpu",
           "--wandb-mode", "offline"]
    ckpt = tmp_path / "killed" / "checkpoint.pt"
    # Its own session: the kill takes wandb-core with it, as Slurm's or the OOM killer's would.
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    seen, deadline = set(), time.monotonic() + 600
    try:
        while len(seen) < 2 and proc.poll() is None and time.monotonic() < deadline:
            try:
                st = os.stat(ckpt)
                seen.add((st.st_ino, st.st_mtime_ns))  # a new file is renamed over the old one at each save
            except FileNotFoundError:
                pass
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert len(seen) == 2, proc.stderr.read()  # killed right after the second checkpoint (step 10)
    import torch

    saved_step = torch.load(ckpt, weights_only=True)["state"]["progress"]["step"]
    assert saved_step == 10

    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "resumed from" in again.stdout and "W&B: logged again" in again.stdout, again.stdout

    segments = sorted(glob.glob(str(tmp_path / "killed" / "wandb" / "offline-run-*")))
    assert len(segments) == 2
    history = [json.loads(line)["history"]["item"] for seg in segments for line in _inspect(seg).splitlines()
               if line.strip() and json.loads(line).get("type") == "history"]
    windows = [h["train/step"] for h in history if "train/loss" in h]
    epochs = [h["train/step"] for h in history if "test/acc" in h]
    assert windows == list(range(1, 16))  # every window, once, in step order
    assert epochs == [5, 10, 15]
    assert [h["train/step"] for h in history] == sorted(h["train/step"] for h in history)
