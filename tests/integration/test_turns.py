"""One runner process paced by the benchmark's turns protocol, the benchmark played by the test through two pipes."""

import json
import os
import subprocess
import sys
import time

from conftest import ROOT, run_in_process
from metric_contract import BENCHMARK_SUMMARY_KEYS

from train.benchmark.turns import ENV as TURNS_ENV


def _start_in_turns(tmp_path, name):
    """The runner as the benchmark starts it: two rounds of two steps, its turns given through two pipes."""
    from_benchmark, to_child = os.pipe()
    from_child, to_benchmark = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "train", "run.py"), "--dataset", "synthetic", "--max-steps", "4",
         "--log-every", "2", "--warmup-steps", "1", "--batch-size", "4", "--device", "cpu", "--wandb-mode",
         "disabled", "--out-dir", str(tmp_path), "--name", name],
        env={**os.environ, TURNS_ENV: f"{from_benchmark},{to_benchmark},2,0,test"}, pass_fds=(from_benchmark, to_benchmark),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    os.close(from_benchmark)
    os.close(to_benchmark)
    return proc, os.fdopen(to_child, "w"), os.fdopen(from_child, "r")


def test_a_run_trains_only_in_its_turns_and_its_waits_are_not_training_time(tmp_path):
    proc, go, reports = _start_in_turns(tmp_path, "paced")
    say = lambda word: (go.write(word + "\n"), go.flush())  # noqa: E731
    assert json.loads(reports.readline())["setup_s"] > 0  # set up, then nothing until its turn to warm up
    say("go")
    assert json.loads(reports.readline())["warm_up_s"] > 0  # one untimed forward and backward
    say("go 0")  # timed round 0
    first = json.loads(reports.readline())
    time.sleep(3)  # another point's turn
    say("go 1")
    second = json.loads(reports.readline())
    assert len(first["step_times"]) == len(second["step_times"]) == 2
    say("end")
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    result = json.load(open(tmp_path / "paced" / "result.json"))
    assert result["train/steps"] == 4
    # The 3 s between its turns are not training: its training time is its two turns' and little more.
    assert result["time/train_s"] < first["wall_s"] + second["wall_s"] + 1.0
    # Its rounds' step times are the run's own, for the report to measure it as the benchmark did.
    bench_id, round_steps, warmup = BENCHMARK_SUMMARY_KEYS
    assert result[round_steps] == [first["step_times"], second["step_times"]]  # the warm-up's turn is no round
    assert result[bench_id] == "test" and result[warmup] == 0


def test_a_run_whose_benchmark_has_gone_ends_with_one_line_and_frees_its_folder(tmp_path):
    proc, go, reports = _start_in_turns(tmp_path, "orphan")
    assert json.loads(reports.readline())["setup_s"] > 0
    go.close()  # the benchmark was killed
    assert proc.wait(timeout=120) == 1
    err = proc.stderr.read()
    assert "error: the benchmark that gave this run its turns has gone" in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "orphan" / ".lock")  # a new run may take the folder


def test_a_turns_variable_not_the_benchmarks_is_one_line_and_exit_2(tmp_path):
    out = run_in_process("--dataset", "synthetic", "--max-steps", "1", "--device", "cpu", "--out-dir",
                         str(tmp_path / "runs"), env={TURNS_ENV: "3,4,2"})  # left over from an older benchmark
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        "error: TRAIN_TURNS='3,4,2' is not the benchmark's '<read fd>,<write fd>,<steps>,<warm-up steps>,<id>' with "
        "open pipes; unset it to run on your own"]
    assert not (tmp_path / "runs").exists()  # nothing written
