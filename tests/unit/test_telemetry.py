"""The NVML sampler's arithmetic and failure handling against a test double (tests/nvml_double.py)."""

import json
import sys

import pytest
import torch
from nvml_double import ALL_LINKS, FakeGpu, FakeNvml

from train.measure import nvml as telemetry
from train.measure.nvml import NvmlSampler
from train.telemetry import probe


def _sampler(gpu=None, **kwargs):
    nvml = FakeNvml([gpu or FakeGpu()])
    said = []
    return NvmlSampler(nvml, 0, say=said.append, **kwargs), nvml, nvml.gpus[0], said


def test_counter_deltas_become_bytes_per_second_over_the_fields_own_time():
    s, _, gpu, _ = _sampler()
    s.discard()
    gpu.advance(0.5)
    gpu.fields[197] = (1_000_000_000, 3)  # 1 GB sent in 0.5 s
    gpu.fields[198] = (250_000_000, 3)
    s.tick()
    w = s.window()
    assert w["nvml/pcie_tx_bytes_per_s"] == pytest.approx(2e9)
    assert w["nvml/pcie_rx_bytes_per_s"] == pytest.approx(5e8)


def test_nvlink_sums_every_link_in_bytes_by_asking_for_scope_all_links():
    s, nvml, gpu, _ = _sampler()
    gpu.advance(1.0)
    gpu.nvlink[138] = [1000] * 18  # KiB per link
    gpu.nvlink[139] = [10] + [0] * 17  # link 0 alone would hide the other 17
    s.tick()
    w = s.window()
    assert w["nvml/nvlink_tx_bytes_per_s"] == pytest.approx(18 * 1000 * 1024)
    assert w["nvml/nvlink_rx_bytes_per_s"] == pytest.approx(10 * 1024)
    requested = nvml.calls[-1][1]
    assert (138, ALL_LINKS) in requested and (139, ALL_LINKS) in requested


def test_a_32_bit_counter_wrapping_between_reads_counts_the_bytes_across_the_wrap():
    gpu = FakeGpu()
    gpu.fields[197] = (2**32 - 100, 1)  # uint32
    s, _, gpu, _ = _sampler(gpu)
    gpu.advance(1.0)
    gpu.fields[197] = (50, 1)
    s.tick()
    assert s.window()["nvml/pcie_tx_bytes_per_s"] == pytest.approx(150)


def test_energy_power_memory_clock_and_throttle_reasons_per_window():
    s, _, gpu, _ = _sampler()
    s.discard()  # as the runner does when training starts
    for seconds, energy_mj, power_mw, used, reason in [(0.1, 50_000, 400_000, 20 * 2**30, 0x4),
                                                       (0.1, 120_000, 600_000, 12 * 2**30, 0x40)]:
        gpu.advance(seconds)
        gpu.fields[83] = (energy_mj, 3)
        gpu.fields[186] = (power_mw, 1)
        gpu.memory_used = used
        gpu.reasons = reason
        s.tick()
    w = s.window()
    assert w["nvml/energy_j"] == pytest.approx(120.0)  # mJ -> J, delta over the window
    assert w["nvml/power_w"] == pytest.approx(500.0)
    assert w["nvml/memory_used_bytes"] == 20 * 2**30  # max
    assert w["nvml/throttle_reasons"] == 0x44  # any reason seen in the window
    assert w["nvml/sm_clock_mhz"] == 1980 and w["nvml/util_pct"] == 97


def test_unsupported_field_is_dropped_after_the_first_probe_with_one_line():
    gpu = FakeGpu()
    gpu.unsupported = {138, 139}
    s, nvml, gpu, said = _sampler(gpu)
    assert sum("nvlink_tx" in line for line in said) == 1 and sum("nvlink_rx" in line for line in said) == 1
    for _ in range(3):
        gpu.advance(0.1)
        s.tick()
    assert all(fid not in (138, 139) for fid, _ in nvml.calls[-1][1])
    w = s.window()
    assert "nvml/nvlink_tx_bytes_per_s" not in w and "nvml/pcie_tx_bytes_per_s" in w
    assert len(said) == 2


def test_pcie_falls_back_to_the_blocking_throughput_call_at_most_once_a_second():
    gpu = FakeGpu()
    gpu.unsupported = {197, 198}
    now = [0.0]
    s, nvml, gpu, said = _sampler(gpu, clock=lambda: now[0])
    assert any("nvmlDeviceGetPcieThroughput" in line for line in said)
    before = sum(c[0] == "nvmlDeviceGetPcieThroughput" for c in nvml.calls)
    for _ in range(10):  # 10 ticks in 0.5 s: one read of each direction
        now[0] += 0.05
        s.tick()
    reads = sum(c[0] == "nvmlDeviceGetPcieThroughput" for c in nvml.calls) - before
    assert reads == 2
    w = s.window()
    assert w["nvml/pcie_tx_bytes_per_s"] == 1000 * 1024 and w["nvml/pcie_rx_bytes_per_s"] == 2000 * 1024


def test_a_gpu_lost_mid_run_stops_the_sampler_not_the_run():
    s, _, gpu, said = _sampler()
    gpu.advance(0.1)
    s.tick()
    gpu.lost = True
    s.tick()  # must not raise
    s.tick()
    assert s.stopped_reason and "lost" in s.stopped_reason
    assert sum("stopped" in line for line in said) == 1
    assert "nvml/stopped" in s.summary(images=100)
    s.window()  # still answers


def test_the_thread_samples_and_stops_cleanly():
    s, nvml, gpu, _ = _sampler(hz=200)
    s.start()
    import time

    time.sleep(0.2)
    s.stop()
    ticks = sum(c[0] == "nvmlDeviceGetFieldValues" for c in nvml.calls)
    assert ticks > 5
    assert not s._thread.is_alive()


def test_run_summary_gives_energy_per_training_image_excluding_discarded_spans():
    s, _, gpu, _ = _sampler()
    s.discard()
    gpu.advance(1.0)
    gpu.fields[83] = (300_000, 3)  # 300 J of training
    s.tick()
    s.window()
    gpu.advance(1.0)
    gpu.fields[83] = (400_000, 3)  # 100 J of evaluation, discarded
    s.tick()
    s.discard()
    summary = s.summary(images=1000)
    assert summary["nvml/energy_total_j"] == pytest.approx(300.0)
    assert summary["nvml/energy_per_image_j"] == pytest.approx(0.3)


def test_static_facts_give_link_peaks():
    nvml = FakeNvml()
    facts = telemetry.static_facts(nvml, 0)
    assert facts["gpu_name"] == "NVIDIA H200" and facts["driver_version"] == "580.00"
    assert facts["pcie_peak_bytes_per_s"] == pytest.approx(63.0e9, rel=0.01)  # gen5 x16
    assert facts["nvlink_active_links"] == 18 and facts["nvlink_version"] == "4.0"
    assert facts["nvlink_peak_bytes_per_s"] == pytest.approx(450e9)


def test_one_nvlink_that_cannot_be_read_leaves_out_that_link_only():
    # One nvmlDeviceGetNvLinkState call raising used to drop every NVLink fact (0 active links, no peak).
    gpu = FakeGpu()
    gpu.failing_links = {3}
    facts = telemetry.static_facts(FakeNvml([gpu]), 0)
    assert facts["nvlink_active_links"] == 17 and facts["nvlink_unreadable_links"] == 1
    assert facts["nvlink_version"] == "4.0" and facts["nvlink_peak_bytes_per_s"] == pytest.approx(17 * 25e9)


def test_missing_library_leaves_the_run_without_telemetry_and_says_why(monkeypatch):

    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails as if not installed
    nvml, why = telemetry.load_nvml()
    assert nvml is None and "nvidia-ml-py" in why
    said = []
    sampler, facts = telemetry.open_for_run(torch.device("cuda", 0), 10, said.append)
    assert sampler is None and facts == {"available": False, "reason": why} and len(said) == 1


def test_probe_with_the_double_lists_metrics_with_the_runners_names(capsys):
    import io

    out = io.StringIO()
    assert probe.probe(0.05, as_json=True, nvml=FakeNvml([FakeGpu(), FakeGpu(links=0)]), out=out) == 0
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["index"] for r in rows] == [0, 1]
    assert "nvlink_tx" in rows[0]["supported"] and rows[1]["nvlink_active_links"] == 0
    assert rows[0]["nvml/memory_used_bytes"] == 10 * 2**30
