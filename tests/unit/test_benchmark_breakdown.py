"""`python -m train.benchmark --profile`: the points' breakdowns side by side, and a window that must fit a round."""

import pytest

from train.benchmark.breakdown import profile_table
from train.benchmark.cli import build_parser, plan, profiler_cost_table
from train.contract.errors import UsageError
from train.contract.metrics import PROFILE_CLASSES


def _row(index, precision, conv, optimizer, step_time_s, model="resnet18"):
    classes = {c: 0.0 for c in PROFILE_CLASSES} | {"conv_matmul": conv, "optimizer": optimizer, "host_gap": 10.0}
    step = sum(classes.values())
    return {"index": index, "kind": "runner", "model": model, "precision": precision, "loader": "device",
            "compile": "none", "round": 0, "prof/step_ms": step, "train/step_time_s": step_time_s,
            "prof/conv_matmul_flops_per_s": 2e10,
            **{f"prof/{c}_ms": ms for c, ms in classes.items()},
            **{f"prof/{c}_share": ms / step for c, ms in classes.items()}}


def test_breakdown_side_by_side_with_each_class_speed_up_over_fp32():
    rows = [_row(0, "fp32", 60.0, 30.0, 0.1), _row(1, "bf16", 20.0, 30.0, 0.06),
            {**_row(1, "bf16", 20.0, 30.0, 0.06), "round": 1},  # the same point's next round: one column
            {"index": 2, "kind": "bare", "model": "resnet18", "precision": "fp32"}]  # no profile: no column
    lines = profile_table(rows).splitlines()
    assert lines[0].split() == ["class", "r18", "fp32", "r18", "bf16"]
    conv = next(line for line in lines if "convolution and matmul" in line)
    assert "60.0 (60%)" in conv and "20.0 (33%) 3.00x" in conv
    assert "30.0 (30%)" in next(line for line in lines if "optimizer step" in line)
    assert next(line for line in lines if "sum of classes" in line).split()[-2:] == ["100.0", "60.0"]
    assert "100.0 (1.00x)" in next(line for line in lines if "timed step" in line)  # profiled / unprofiled
    assert "20.0" in next(line for line in lines if "GFLOP/s" in line)
    assert profile_table([{"index": 0, "kind": "runner", "precision": "fp32"}]) == "  (no point was profiled)"


def test_each_models_classes_are_compared_with_its_own_fp32():
    rows = [_row(0, "fp32", 60.0, 30.0, 0.1, "vit-s"), _row(1, "fp32", 90.0, 30.0, 0.1, "vit-b"),
            _row(2, "bf16", 30.0, 30.0, 0.06, "vit-b"), _row(3, "bf16", 20.0, 30.0, 0.06)]  # resnet18: no fp32
    lines = profile_table(rows).splitlines()
    assert lines[0].split() == ["class", "vit-s", "fp32", "vit-b", "fp32", "vit-b", "bf16", "r18", "bf16"]
    conv = next(line for line in lines if "convolution and matmul" in line)
    assert conv.split()[-5:] == ["30.0", "(43%)", "3.00x", "20.0", "(33%)"]  # over vit-b's fp32; r18 has none


def test_a_profile_window_that_does_not_fit_a_round_is_refused():
    with pytest.raises(UsageError, match="--profile 4 after 1 warm-up"):
        plan(build_parser().parse_args(["--profile", "4", "--steps", "4", "--device", "cpu"]), gpu=False)
    assert plan(build_parser().parse_args(["--profile", "--steps", "4", "--device", "cpu"]), gpu=False).steps == 4


def test_the_default_profile_fits_the_round_and_profile_ab_runs_each_point_profiled_and_not():
    parse = lambda *a: plan(build_parser().parse_args([*a, "--device", "cpu"]), gpu=False)  # noqa: E731
    assert parse().profile == 3 and parse("--steps", "2").profile == 1  # on by default, in what a round has
    assert parse("--profile", "0").profile == 0
    with pytest.raises(UsageError, match="--profile-ab compares runs with and without"):
        parse("--profile", "0", "--profile-ab")
    points = parse("--precisions", "fp32", "bf16", "--profile-ab", "--bare").points
    assert [(p["precision"], p["kind"], p["profiled"]) for p in points] == [
        ("fp32", "runner", True), ("fp32", "runner", False), ("fp32", "bare", False),
        ("bf16", "runner", True), ("bf16", "runner", False), ("bf16", "bare", False)]


def test_the_profilers_cost_is_the_profiled_runs_images_per_s_over_its_twins_paired_in_rounds():
    def row(rnd, profiled, ips):
        return {"round": rnd, "kind": "runner", "model": "resnet18", "precision": "fp32", "loader": "device",
                "compile": "none", "nvml_hz": 10.0, "profiled": profiled, "train/images_per_s": ips}

    # round 1 ran slower for both: paired, the profiler costs nothing in either round
    rows = [row(0, True, 100), row(0, False, 100), row(1, True, 50), row(1, False, 50)]
    assert "1.00x [1.00-1.00]" in profiler_cost_table(rows, 0.1)
    assert profiler_cost_table([row(0, True, 90), row(0, False, 100)], 0.1).endswith(" 0.90x")  # one round
