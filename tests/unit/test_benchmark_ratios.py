"""The benchmark's arithmetic on recorded rounds: ratios paired within a round, the bare loop's verdict, disturbed rounds."""

import statistics

from train.benchmark.cli import bare_table, mark_disturbed, paired, point_of, spread, table


def _row(rnd, prec, ips, kind="runner", wall=1.0):
    return {"round": rnd, "kind": kind, "model": "resnet18", "precision": prec, "loader": "device", "compile": "none",
            "nvml_hz": 10.0, "batch_size": 8, "device": "cpu", "train/images_per_s": ips, "wall_s": wall,
            "ckpt/size_bytes": 100 if prec == "fp32" else 50, "time/setup_s": 1.0, "mem/rss_peak_bytes": 2**30}


def test_ratios_pair_points_within_a_round_and_a_wide_range_is_flagged():
    steady = [_row(0, "fp32", 100), _row(0, "bf16", 200), _row(1, "fp32", 50), _row(1, "bf16", 100)]
    ratios = paired(steady, point_of, lambda r: ("resnet18", "fp32", "device", "none", 10.0, False), "train/images_per_s", 0.1)
    # The machine halved its speed in round 2, for both points alike: the ratio is still exactly 2.
    assert ratios[("resnet18", "bf16", "device", "none", 10.0, False)] == spread([2.0, 2.0], 0.1)
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
