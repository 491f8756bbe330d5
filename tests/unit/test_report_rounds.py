"""Benchmark points in the report: measured over their interleaved rounds as the benchmark measures them (bench/*,
train/contract/rounds.py), so the quick start's report has ratios with ranges and Observations (rows from Run
objects)."""

from report.collect import Run
from report.formatting import cell
from report.prose import observations, profile_observations
from report.rows import build
from report.write import csv_rows, table_lines
from train.contract.metrics import PROFILE_CLASSES

BATCH = 32
WARM = 1.0  # each round's first step: left out of its median


def _steps(rates: list[float]) -> list[list[float]]:
    """Rounds of three timed steps (after one warm-up step) whose images/s are `rates`."""
    return [[WARM] + [BATCH / r] * 3 for r in rates]


def _point(name, precision, rates=None, bench="20261201-1", rounds=None, timed=9, prof_ms=None):
    config = {"precision": precision, "depth": 18, "batch_size": BATCH, "seed": 0, "total_steps": 16,
              "system": {"device": "cpu", "device_name": "x86_64", "world_size": 1}}
    # the run's own whole-run figure, which a benchmark point's rounds replace
    summary = {"train/images_per_s": 1.0, "train/timed_steps": timed, "train/steps": 16}
    if rates is not None or rounds is not None:
        summary.update({"bench/id": bench, "bench/warmup_steps": 1,
                        "bench/round_step_s": rounds if rounds is not None else _steps(rates)})
    if prof_ms is not None:
        summary.update({f"prof/{c}_ms": 0.0 for c in PROFILE_CLASSES})
        summary.update({"prof/step_ms": prof_ms, "prof/conv_matmul_ms": prof_ms})
    return Run(id=name, name=name, state="finished", config=config, summary=summary)


def _rows(*runs):
    rows, _ = build(list(runs))
    return {r.precision: r for r in rows}


def test_a_speed_up_is_paired_within_rounds_with_its_range_and_said_in_the_observations():
    # Round 2 ran on a slower machine for both points: paired, every round says 2.1 or 2.0, while the ratio of
    # the medians (128 / 64) would say 2.0.
    rows = _rows(_point("a", "fp32", [80, 40, 64]), _point("b", "bf16", [168, 84, 128]))
    bf16, fp32 = rows["bf16"], rows["fp32"]
    assert not bf16.short and not fp32.short  # 9 timed steps, but a sound measurement in rounds
    assert round(fp32.values["images_per_s"], 6) == 64  # the median over rounds, not the run's own figure
    assert round(bf16.values["speedup_vs_fp32"], 6) == 2.1
    assert cell(bf16, "speedup_vs_fp32") == "2.10 (2.00–2.10) §"
    assert cell(fp32, "images_per_s") == "64 (40–80) §"  # its spread is over rounds, though it is one run
    text = observations(list(rows.values()), "resnet18", ("cpu", 1))
    assert "bf16: throughput 2.10× fp32's (2.00–2.10 over 3 interleaved round(s); 128 vs 64 images/s)" in text
    assert "too short" not in text and "Nothing to compare" not in text
    lines = table_lines(list(rows.values()))
    assert "§" in lines[2][lines[0].index("Images/s")] and "†" not in " ".join(lines[2])
    head, *csv = csv_rows(list(rows.values()))
    assert {r[head.index("precision")]: r[head.index("bench_rounds")] for r in csv} == {"fp32": 3, "bf16": 3}
    assert {r[head.index("precision")]: r[head.index("too_short")] for r in csv} == {"fp32": "false", "bf16": "false"}


def test_a_disturbed_round_is_left_out_of_both_the_rate_and_the_ratio():
    fp32 = _steps([80, 80, 80])
    fp32[1][2] = 5 * BATCH / 80  # another process took the cores for a step of round 1
    rows = _rows(_point("a", "fp32", rounds=fp32), _point("b", "bf16", [160, 240, 160]))
    assert rows["bf16"].spread["speedup_vs_fp32"] == (2.0, 2.0)  # round 1's 3.0 is not paired: fp32's is gone
    assert rows["fp32"].spread["images_per_s"] == (80, 80)


def test_a_range_too_wide_is_marked_and_left_out_of_the_observations():
    rows = _rows(_point("a", "fp32", [80, 80, 80]), _point("b", "bf16", [160, 120, 200]))
    assert cell(rows["bf16"], "speedup_vs_fp32") == "2.00 (1.50–2.50) § !"
    text = observations(list(rows.values()), "resnet18", ("cpu", 1))
    assert "bf16: throughput" not in text
    assert "Left out, its range over rounds too wide to conclude (!): bf16." in text


def test_rounds_of_different_benchmarks_are_not_paired_and_too_short_alone():
    rows = _rows(_point("a", "fp32", [80, 80, 80], bench="one"), _point("b", "bf16", [160, 160, 160], bench="two"))
    assert "speedup_vs_fp32" in rows["bf16"].flagged and cell(rows["bf16"], "speedup_vs_fp32") == "2.00 †"
    assert "bf16: throughput" not in observations(list(rows.values()), "resnet18", ("cpu", 1))
    # nor against an ordinary run: a benchmark point's few steps measure nothing outside its rounds
    rows = _rows(_point("a", "fp32", timed=400), _point("b", "bf16", [160, 160, 160]))
    assert "speedup_vs_fp32" in rows["bf16"].flagged


def test_rounds_not_as_the_contract_says_leave_an_ordinary_run():
    for bad in ("1,2", [[0.1, "x"]], [[0.1, -1.0]], [0.1, 0.2]):
        row = _rows(_point("a", "fp32", rounds=bad))["fp32"]
        assert not row.by_rounds and row.short and row.values["images_per_s"] == 1.0


def test_a_profiled_step_unlike_the_timed_step_is_left_out_and_said_to_be_so():
    # timed steps: 32 / 64 images/s = 500 ms; fp32's profiled window took 850 ms, bf16's 250 ms as it timed
    rows = _rows(_point("a", "fp32", [64, 64, 64], prof_ms=850.0), _point("b", "bf16", [128, 128, 128], prof_ms=250.0))
    text = profile_observations(list(rows.values()), "resnet18", ("cpu", 1))
    assert "bf16 is" not in text  # fp32's disturbed window decomposes nothing (it would say 3.40×)
    assert text.endswith("Left out, their profiled step not their timed step's length (the machine was busier or "
                         "quieter during the profiled window, or the profiler cost that much; profile again): fp32 "
                         "(1.70× its timed step).")
    rows = _rows(_point("a", "fp32", [64, 64, 64], prof_ms=550.0), _point("b", "bf16", [128, 128, 128], prof_ms=250.0))
    text = profile_observations(list(rows.values()), "resnet18", ("cpu", 1))
    assert "bf16 is 2.20× fp32 over the profiled step at ResNet-18, images/s 2.00×" in text and "Left out" not in text
