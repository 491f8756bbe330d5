"""The report's step-time breakdown (--profile runs): the per-class columns, the speed-up decomposed in the
Observations, the stacked bar, and nothing said where a run was not profiled (rows from Run objects)."""

import matplotlib
import pytest

from report import plots
from report.collect import Run
from report.prose import profile_observations
from report.rows import build
from report.write import table_lines
from train.contract.metrics import PROFILE_CLASSES

FP32 = {"conv_matmul": 58.0, "norm": 15.0, "elementwise": 12.0, "optimizer": 10.0, "data": 2.0, "host_gap": 3.0}
BF16 = {"conv_matmul": 18.7, "norm": 12.5, "elementwise": 10.0, "optimizer": 10.0, "data": 2.0, "host_gap": 3.0}
# a class that got slower bounds the speed-up with the time it takes now
AMP = {**FP32, "conv_matmul": 19.0, "copy": 12.0}


def _run(name, precision, classes=None, ips=100.0, flops=None, nodecheck=None):
    # 10 images a step: at 100 images/s a 100 ms step, the profiled windows' length (the runs agree with themselves)
    config = {"precision": precision, "depth": 18, "batch_size": 10, "seed": 0, "total_steps": 1000,
              "system": {"device": "cuda", "device_name": "NVIDIA H100 80GB HBM3", "world_size": 1,
                         "peak_flops_per_s": 989.4e12}}
    summary = {"train/images_per_s": ips, "train/timed_steps": 400, "train/steps": 410}
    if classes is not None:
        summary.update({f"prof/{c}_ms": classes.get(c, 0.0) for c in PROFILE_CLASSES})
        summary["prof/step_ms"] = sum(classes.values())
    if flops:
        summary["prof/conv_matmul_flops_per_s"] = flops
    if nodecheck:
        config["nodecheck"] = {"used": True, "matmul_flops_per_s": nodecheck}
    return Run(id=name, name=name, state="finished", config=config, summary=summary)


def test_observations_decompose_the_speed_up_by_class_and_bound_it_by_what_did_not_speed_up():
    rows, _ = build([_run("fp32", "fp32", FP32), _run("bf16", "bf16", BF16, ips=180.0)])
    text = profile_observations(rows, "resnet18", ("cuda", 1))
    assert "bf16 is 1.78× fp32 over the profiled step at ResNet-18, images/s 1.80×" in text
    assert "convolution and matmul 3.1× faster (58% → 33% of the step)" in text
    assert "normalisation 1.2× faster" in text and "optimizer step unchanged (10% → 18% of the step)" in text
    # elementwise 1.2x is faster; unchanged: optimizer 10 + data 2 + host gap 3 = 15% of fp32's step
    assert ("what did not get faster (optimizer step, data and augmentation, host gaps) takes 15% of fp32's step "
            "time, which bounds the speed-up at 6.7×") in text
    assert "gradient scaling" not in text and "communication" not in text  # not measured: nothing said
    rows, _ = build([_run("fp32", "fp32", {**FP32, "copy": 1.0}), _run("amp", "amp_bf16", AMP, ips=120.0)])
    text = profile_observations(rows, "resnet18", ("cuda", 1))
    assert "memory copies and casts 12.0× slower (1% → 16% of the step)" in text
    # unchanged and slower: norm 15 + elementwise 12 + optimizer 10 + data 2 + host 3 + copies 12 = 54 of 101
    assert "takes 53% of fp32's step time, which bounds the speed-up at 1.9×" in text


def test_nothing_is_said_or_drawn_without_profiled_runs(tmp_path):
    rows, _ = build([_run("fp32", "fp32"), _run("bf16", "bf16", BF16, ips=180.0)])  # fp32 was not profiled
    assert profile_observations(rows, "resnet18", ("cuda", 1)) == ""
    rows, _ = build([_run("fp32", "fp32"), _run("bf16", "bf16")])
    assert plots.step_breakdown(rows, str(tmp_path)) is None
    assert not any("Profiled" in title for title in table_lines(rows)[0])


def test_class_columns_achieved_rate_against_peak_and_node_check(tmp_path, monkeypatch):
    rows, _ = build([_run("fp32", "fp32", FP32, flops=50e12, nodecheck=40e12 / 0.8),
                     _run("bf16", "bf16", BF16, flops=400e12)])
    lines = table_lines(rows)
    table = [dict(zip(lines[0], line)) for line in lines[1:]]
    assert table[0]["Profiled: convolution and matmul (ms)"] == "58.0"
    assert table[0]["Conv/matmul achieved (GFLOP/s)"] == "50000.0"
    assert table[1]["Conv/matmul % of datasheet peak (%)"] == f"{100 * 400e12 / 989.4e12:.1f}"
    assert table[0]["Conv/matmul % of node-check ceiling (%)"] == "100.0"  # 50 of a measured 50 TFLOP/s
    assert table[1]["Conv/matmul % of node-check ceiling (%)"] == ""  # no node check in that run
    saved = {}
    monkeypatch.setattr(plots, "_save", lambda fig, out, name: saved.setdefault(name, fig) and name)
    assert plots.step_breakdown(rows, str(tmp_path)) == "step_breakdown.png"
    ax = saved["step_breakdown.png"].axes[0]
    assert {"100 ms", "56 ms"} <= {t.get_text() for t in ax.texts}
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[0] == "convolution and matmul" and "gradient scaling" not in legend
    matplotlib.pyplot.close("all")


@pytest.fixture(autouse=True)
def _headless():
    matplotlib.use("Agg")


def test_the_optimizers_memory_rate_is_said_beside_its_speed_up():
    fp32, bf16 = _run("fp32", "fp32", FP32), _run("bf16", "bf16", {**BF16, "optimizer": 16.0}, ips=160.0)
    fp32.summary["prof/optimizer_bytes_per_s"], bf16.summary["prof/optimizer_bytes_per_s"] = 16.9e9, 5.2e9
    bf16.config["nodecheck"] = {"used": True, "memory_copy_bytes_per_s": 52e9}
    rows, _ = build([fp32, bf16])
    text = profile_observations(rows, "resnet18", ("cuda", 1))
    assert ("optimizer step 1.6× slower (10% → 26% of the step; 5.2 vs 16.9 GB/s of the tensors it must read and "
            "write, 10% of the node's memory copy)") in text
