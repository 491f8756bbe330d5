"""The node check's pure parts: nccl-tests' bus bandwidth, the TF32 judgement against float64, the ✓/✗/– lines
(a check that breaks is a ✗ with its reason, not a crash), NVML's field listing on the simulated NVML, the PCIe
counters-vs-copy check, and which ceilings a run takes from a node check."""

import json
import platform

import pytest
from nvml_double import FakeGpu, FakeNvml

from train.contract import node_ceilings as recorded
from train.nodecheck import allreduce, ceilings, checks, nvml_facts, output, precisions


def test_busbw_is_algbw_times_2_n_minus_1_over_n_as_nccl_tests_defines_it():
    assert allreduce.bus_bandwidth(100.0, 2) == pytest.approx(100.0)
    assert allreduce.bus_bandwidth(100.0, 4) == pytest.approx(150.0)
    assert allreduce.bus_bandwidth(100.0, 8) == pytest.approx(175.0)
    assert [s >> 20 for s in allreduce.sizes(1024)] == [1, 4, 16, 64, 256, 1024]
    rows = [{"dtype": "float32", "busbw_bytes_per_s": 3.0}, {"dtype": "float32", "busbw_bytes_per_s": 5.0},
            {"dtype": "bfloat16", "error": "unsupported"}]
    assert allreduce.best(rows) == {"float32": 5.0}


def test_tf32_judgement_against_float64():
    assert precisions.judge("fp32", 5e-7)[0]
    passed, why = precisions.judge("fp32", 1e-3)
    assert not passed and "NOT strict fp32" in why
    assert precisions.judge("tf32", 1e-3)[0]
    passed, why = precisions.judge("tf32", 5e-7)
    assert not passed and "plain fp32" in why


def test_a_check_that_breaks_is_one_failed_line_with_its_reason():
    def broken():
        raise RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported")

    found = checks.guarded("ceilings", "matmul", broken)
    assert [c.status for c in found] == [checks.FAIL]
    text = output.screen(found + [checks.ok("ceilings", "copy", "2 GB/s"), checks.skip("nvml", "NVML", "no GPU")])
    assert text.splitlines() == ["ceilings:", f"  ✗ {'matmul'.ljust(output.WIDTH)} RuntimeError: CUDA error: out of memory",
                                 f"  ✓ {'copy'.ljust(output.WIDTH)} 2 GB/s", "nvml:",
                                 f"  – {'NVML'.ljust(output.WIDTH)} no GPU"]
    assert output.tally(found) == "0 ✓, 1 ✗, 0 – (not applicable here)"


def test_nvml_field_listing_on_the_simulated_nvml():
    gpu = FakeGpu(links=4)
    gpu.nvlink[138] = [10, 20, 30, 40]
    gpu.unsupported.add(83)  # no energy counter on this GPU
    listing = nvml_facts.field_listing(FakeNvml([gpu]), 0)
    assert listing["fields"] == {"pcie_tx": "uint64", "pcie_rx": "uint64", "nvlink_tx": "uint64",
                                 "nvlink_rx": "uint64", "energy": "unsupported (NVML error 3)", "power": "uint32"}
    assert listing["nvlink_links"] == 4
    assert listing["nvlink"]["nvlink_tx"] == {"links": [10, 20, 30, 40], "summed": 100}
    found = nvml_facts.check(FakeNvml([gpu]), None, quick=True)
    assert [(c.name, c.status) for c in found] == [("GPU 0 fields", checks.FAIL), ("GPU 0 NVLink", checks.PASS),
                                                   ("GPU 0 sampler cost", checks.PASS)]
    assert "energy unsupported" in found[0].reason
    pcie_card = FakeGpu(links=0)
    pcie_card.unsupported |= {138, 139}
    found = nvml_facts.check(FakeNvml([pcie_card]), None, quick=True)
    assert [(c.name, c.status) for c in found] == [("GPU 0 fields", checks.PASS), ("GPU 0 NVLink", checks.SKIP),
                                                   ("GPU 0 sampler cost", checks.PASS)]


def test_pcie_counters_must_see_the_bytes_copied_within_15_percent():
    assert ceilings.counters_agree(1e9, 1.1e9)[0]
    assert ceilings.counters_agree(1e9, 0.9e9)[0]
    passed, why = ceilings.counters_agree(1e9, 0.5e9)
    assert not passed and "50%" in why
    assert not ceilings.counters_agree(1e9, None)[0]


def _nodecheck(path, host, device_name):
    doc = output.document([checks.ok("ceilings", "matmul bf16", "", kind="bf16", flops_per_s=3e11,
                                     datasheet_flops_per_s=None),
                           checks.ok("ceilings", "matmul fp32", "", kind="fp32", flops_per_s=1e11,
                                     datasheet_flops_per_s=None),
                           checks.ok("all-reduce", "all-reduce sweep", "", backend="gloo", world_size=2, rows=[],
                                     best_busbw_bytes_per_s={"float32": 4e8, "bfloat16": 7e8}),
                           checks.ok("ceilings", "device memory copy", "", bytes_per_s=2.5e10, size=2**27)],
                          {"host": host, "device_name": device_name, "checked_at": "2026-12-01T12:00:00+00:00",
                           "quick": False})
    path.write_text(json.dumps(doc))
    return str(path)


def test_a_run_takes_the_ceilings_of_its_precision_from_a_check_of_its_own_node(tmp_path):
    path = _nodecheck(tmp_path / "nodecheck.json", platform.node(), "x86_64")
    got = recorded.for_run(recorded.find(None, str(tmp_path)), platform.node(), "x86_64", "amp_bf16", "float32")
    assert got["used"] and got["matmul_kind"] == "bf16" and got["matmul_flops_per_s"] == 3e11
    assert got["allreduce_busbw_bytes_per_s"] == 4e8 and got["allreduce_world_size"] == 2
    assert got["memory_copy_bytes_per_s"] == 2.5e10  # for the optimizer's memory rate
    other = recorded.for_run(path, "another-node", "x86_64", "fp32", "float32")
    assert not other["used"] and "not this node's another-node" in other["reason"]
    assert recorded.for_run(recorded.find(None, str(tmp_path / "empty")), "h", "d", "fp32", "float32") == \
        {"used": False, "reason": "no node check (run python -m train.nodecheck)"}


def test_the_report_sets_mfu_and_busbw_against_the_measured_ceilings():
    from report.figures import run_metrics

    config = {"model": {"train_flops_per_image": 1e9}, "system": {"peak_flops_per_s": 1e12},
              "experiment": {"world_size": 2},
              "nodecheck": {"used": True, "matmul_flops_per_s": 5e11, "allreduce_busbw_bytes_per_s": 2e8}}
    summary = {"train/images_per_s_per_gpu": 100.0, "comm/busbw_bytes_per_s": {"mean": 1e8}}
    m = run_metrics(config, summary)
    assert m["mfu"] == pytest.approx(10.0) and m["mfu_measured"] == pytest.approx(20.0)
    assert m["busbw_share"] == pytest.approx(50.0)
    bare = run_metrics({**config, "nodecheck": {"used": False, "reason": "no node check"}}, summary)
    assert bare["mfu_measured"] is None and bare["busbw_share"] is None


def test_the_report_sets_the_optimizers_memory_rate_against_the_node_checks_memory_copy():
    from report.figures import run_metrics

    config = {"nodecheck": {"used": True, "memory_copy_bytes_per_s": 2.5e10}}
    summary = {"prof/step_ms": 100.0, "prof/optimizer_ms": 10.0, "prof/optimizer_bytes_per_s": 5e9}
    m = run_metrics(config, summary)
    assert m["prof_optimizer_gbps"] == pytest.approx(5.0) and m["prof_optimizer_copy_pct"] == pytest.approx(20.0)
    assert run_metrics({}, summary)["prof_optimizer_copy_pct"] is None  # no node check: the rate alone
