"""`python -m train.benchmark --profile`: the points' breakdowns side by side, and a window that must fit a round."""

import pytest

from train.benchmark.breakdown import profile_table
from train.benchmark.cli import build_parser, plan
from train.contract.errors import UsageError
from train.contract.metrics import PROFILE_CLASSES


def _row(index, precision, conv, optimizer, step_time_s):
    classes = {c: 0.0 for c in PROFILE_CLASSES} | {"conv_matmul": conv, "optimizer": optimizer, "host_gap": 10.0}
    step = sum(classes.values())
    return {"index": index, "kind": "runner", "depth": 18, "precision": precision, "loader": "device",
            "compile": "none", "round": 0, "prof/step_ms": step, "train/step_time_s": step_time_s,
            "prof/conv_matmul_flops_per_s": 2e10,
            **{f"prof/{c}_ms": ms for c, ms in classes.items()},
            **{f"prof/{c}_share": ms / step for c, ms in classes.items()}}


def test_breakdown_side_by_side_with_each_class_speed_up_over_fp32():
    rows = [_row(0, "fp32", 60.0, 30.0, 0.1), _row(1, "bf16", 20.0, 30.0, 0.06),
            {**_row(1, "bf16", 20.0, 30.0, 0.06), "round": 1},  # the same point's next round: one column
            {"index": 2, "kind": "bare", "depth": 18, "precision": "fp32"}]  # no profile: no column
    lines = profile_table(rows).splitlines()
    assert lines[0].split() == ["class", "r18", "fp32", "r18", "bf16"]
    conv = next(line for line in lines if "convolution and matmul" in line)
    assert "60.0 (60%)" in conv and "20.0 (33%) 3.00x" in conv
    assert "30.0 (30%)" in next(line for line in lines if "optimizer step" in line)
    assert next(line for line in lines if "sum of classes" in line).split()[-2:] == ["100.0", "60.0"]
    assert "100.0 (1.00x)" in next(line for line in lines if "timed step" in line)  # profiled / unprofiled
    assert "20.0" in next(line for line in lines if "GFLOP/s" in line)
    assert profile_table([{"index": 0, "kind": "runner", "precision": "fp32"}]) == "  (no point was profiled)"


def test_a_profile_window_that_does_not_fit_a_round_is_refused():
    with pytest.raises(UsageError, match="--profile 4 after 1 warm-up"):
        plan(build_parser().parse_args(["--profile", "4", "--steps", "4", "--device", "cpu"]), gpu=False)
    assert plan(build_parser().parse_args(["--profile", "--steps", "4", "--device", "cpu"]), gpu=False).steps == 4
