import json
import os
import statistics
import subprocess
import sys
import time

from conftest import ROOT

from train.benchmark.cli import bare_table, mark_disturbed, paired, point_of, spread, table
from train.benchmark.turns import ENV as TURNS_ENV


def _bench(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "train.benchmark", "--steps", "2", "--warmup-steps", "1",
                           "--batch-size", "4", "--device", "cpu", "--out-dir", str(tmp_path), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_quick_start_interleaves_rounds_prints_ratios_with_their_range_and_the_reason_for_points_not_run(tmp_path):
    out = _bench(tmp_path, "--precisions", "fp32", "tf32", "--rounds", "2", "--bare", "--wandb-mode", "offline")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    # Interleaved: round 1 gives every point (the runner and its bare loop) a turn before round 2 gives any.
    marks = [line.split(":")[0] for line in text.splitlines() if line.startswith("== round")]
    assert marks == ["== round 1/2"] * 2 + ["== round 2/2"] * 2
    assert text.count("  set up: ") == 2  # each point set up once, for all its rounds
    table_text = text[text.index("depth  precision"):]
    rows = {line.split()[1]: line.split() for line in table_text.splitlines()[2:4]}
    assert rows["fp32"][5:7] == ["1.00x", "[1.00-1.00]"] and rows["fp32"][-1] == "1.00x"  # median [min-max]
    assert rows["tf32"][4] == "-"
    assert "tf32 (resnet18, device, compile none): precision tf32 cannot run on cpu" in table_text
    bare = text[text.index("runner/bare (step)"):].splitlines()[2].split()
    assert bare[:4] == ["18", "fp32", "device", "none"] and bare[4].endswith("x") and bare[5].startswith("[")
    assert "goal >= 0.97" in text
    assert "AVX512-BF16" in text and "AMX-BF16" in text  # CPU ratios name the features they depend on
    runs = [d for d in os.listdir(tmp_path) if d.startswith("r18-") and os.path.isdir(tmp_path / d)]
    assert len(runs) == 1  # one run for the point's two rounds, with its checkpoint and log
    result = json.load(open(tmp_path / runs[0] / "result.json"))
    assert result["train/steps"] == 4 and os.path.exists(tmp_path / runs[0] / "checkpoint.pt")
    assert result["time/setup_s"] > 0 and result["time/compile_s"] is None
    assert "done: " in open(tmp_path / f"{runs[0]}.log").read()


def _start_in_turns(tmp_path, name):
    """The runner as the benchmark starts it: two rounds of two steps, its turns given through two pipes."""
    from_benchmark, to_child = os.pipe()
    from_child, to_benchmark = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "train", "run.py"), "--dataset", "synthetic", "--max-steps", "4",
         "--log-every", "2", "--warmup-steps", "1", "--batch-size", "4", "--device", "cpu", "--wandb-mode",
         "disabled", "--out-dir", str(tmp_path), "--name", name],
        env={**os.environ, TURNS_ENV: f"{from_benchmark},{to_benchmark},2"}, pass_fds=(from_benchmark, to_benchmark),
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
    say("go")
    first = json.loads(reports.readline())
    time.sleep(3)  # another point's turn
    say("go")
    second = json.loads(reports.readline())
    assert len(first["step_times"]) == len(second["step_times"]) == 2
    say("end")
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    result = json.load(open(tmp_path / "paced" / "result.json"))
    assert result["train/steps"] == 4
    # The 3 s between its turns are not training: its training time is its two turns' and little more.
    assert result["time/train_s"] < first["wall_s"] + second["wall_s"] + 1.0


def test_a_run_whose_benchmark_has_gone_ends_with_one_line_and_frees_its_folder(tmp_path):
    proc, go, reports = _start_in_turns(tmp_path, "orphan")
    assert json.loads(reports.readline())["setup_s"] > 0
    go.close()  # the benchmark was killed
    assert proc.wait(timeout=120) == 1
    err = proc.stderr.read()
    assert "error: the benchmark that gave this run its turns has gone" in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "orphan" / ".lock")  # a new run may take the folder


def _row(rnd, prec, ips, kind="runner", wall=1.0):
    return {"round": rnd, "kind": kind, "depth": 18, "precision": prec, "loader": "device", "compile": "none",
            "nvml_hz": 10.0, "batch_size": 8, "device": "cpu", "train/images_per_s": ips, "wall_s": wall,
            "ckpt/size_bytes": 100 if prec == "fp32" else 50, "time/setup_s": 1.0, "mem/rss_peak_bytes": 2**30}


def test_ratios_pair_points_within_a_round_and_a_wide_range_is_flagged():
    steady = [_row(0, "fp32", 100), _row(0, "bf16", 200), _row(1, "fp32", 50), _row(1, "bf16", 100)]
    ratios = paired(steady, point_of, lambda r: (18, "fp32", "device", "none", 10.0), "train/images_per_s", 0.1)
    # The machine halved its speed in round 2, for both points alike: the ratio is still exactly 2.
    assert ratios[(18, "bf16", "device", "none", 10.0)] == spread([2.0, 2.0], 0.1)
    assert "2.00x [2.00-2.00]" in table(steady) and " !" not in table(steady)
    assert table(steady).splitlines()[3].split()[-1] == "0.50x"  # checkpoint sizes do not vary: no range
    noisy = [_row(0, "fp32", 100), _row(0, "bf16", 200), _row(1, "fp32", 100), _row(1, "bf16", 120)]
    assert "1.60x [1.20-2.00] !" in table(noisy)
    assert spread([1.0], 0.1)["wide"] is False  # one round: no range, not "wide"


def test_bare_loop_verdict_is_met_missed_or_inconclusive():
    def rows(*pairs):
        out = []
        for rnd, (runner, bare) in enumerate(pairs):
            out += [_row(rnd, "fp32", runner), _row(rnd, "fp32", bare, kind="bare")]
        return out

    assert "met" in bare_table(rows((99, 100), (98, 100)), 0.1, "cpu")
    assert "missed" in bare_table(rows((90, 100), (91, 100)), 0.1, "cpu")
    assert "inconclusive (range spans" in bare_table(rows((95, 100), (100, 100)), 0.1, "cpu")
    # All rounds below the goal, but 0.3x to 0.6x: a busy machine, not a verdict.
    assert "inconclusive (range too wide)" in bare_table(rows((30, 100), (60, 100)), 0.1, "cpu")


def test_a_round_another_process_disturbed_is_left_out_of_the_ratios_and_said():
    def rows(bf16_steps):
        out = []
        for rnd, steps in enumerate(bf16_steps):
            fp32 = _row(rnd, "fp32", 100)
            fp32["index"], fp32["step_times"] = 0, [0.6, 0.6, 0.6, 0.6]
            bf16 = _row(rnd, "bf16", 8 / statistics.median(steps[1:]))
            bf16["index"], bf16["step_times"] = 1, steps
            out += [fp32, bf16]
        return out

    quiet = [0.3, 0.3, 0.3, 0.3]
    busy = rows([quiet, [0.3, 0.3, 2.5, 4.0], quiet, quiet])  # a job took the cores for two steps of round 2
    assert mark_disturbed(busy, warmup=1) == 1
    assert " !" not in table(busy)
    assert mark_disturbed(rows([quiet] * 4), warmup=1) == 0
    # Slow in most rounds is how the point runs, not a disturbance: nothing is left out, and the range says so.
    always = rows([[0.3, 0.3, 2.5, 4.0]] * 3 + [quiet])
    assert mark_disturbed(always, warmup=1) == 0 and " !" in table(always)
