"""Energy you can trust: NVML's energy counter beside the integral of sampled power over the same seconds, the
integral where a GPU has no counter, and idle power taken out, against a double whose counter and power are
known (tests/nvml_double.py)."""

import pytest
import torch
from metric_contract import ENERGY_SOURCES, NVML_ENERGY_SUMMARY_KEYS, NVML_STEP_KEYS
from nvml_double import FakeGpu, FakeNvml

from train.measure import nvml as telemetry
from train.measure.idle_power import measure_idle_power
from train.measure.nvml import NvmlSampler


def _sampler(gpu, **kwargs):
    said = []
    sampler = NvmlSampler(FakeNvml([gpu]), 0, say=said.append, wall_us=lambda: gpu.time_us, **kwargs)
    sampler.discard()  # as the runner does when training starts
    return sampler, said


def _train(sampler, gpu, seconds, watts, counter_gain=1.0, tick_s=0.1):
    """`seconds` at `watts` (instant-power field 186, and nvmlDeviceGetPowerUsage) with the energy counter rising
    at `counter_gain` x `watts`, one sampler tick per `tick_s`."""
    for _ in range(round(seconds / tick_s)):
        gpu.advance(tick_s)
        gpu.fields[83] = (gpu.fields[83][0] + round(watts * tick_s * 1000 * counter_gain), 3)  # mJ
        gpu.fields[186] = (round(watts * 1000), 1)  # mW
        gpu.power_usage_mw = round(watts * 1000)
        sampler.tick()


def test_constant_power_and_a_counter_rising_at_it_agree_per_window_and_per_run():
    gpu = FakeGpu()
    gpu.fields[186] = (300_000, 1)
    s, _ = _sampler(gpu)
    _train(s, gpu, 2.0, 300.0)
    first = s.window()
    _train(s, gpu, 1.0, 300.0)
    s.discard()  # evaluation: out of both, so the run's figures stay over the same seconds
    _train(s, gpu, 3.0, 300.0)
    second = s.window()
    for w, seconds in ((first, 2.0), (second, 3.0)):
        assert w["nvml/energy_j"] == pytest.approx(300.0 * seconds)
        assert w["nvml/power_integral_j"] == pytest.approx(300.0 * seconds, rel=0.01)
        assert w["nvml/energy_counter_vs_power"] == pytest.approx(1.0, rel=0.01)
    summary = s.summary(images=1000)
    assert summary["nvml/energy_counter_vs_power"] == pytest.approx(1.0, rel=0.01)
    assert summary["nvml/power_integral_total_j"] == pytest.approx(1500.0, rel=0.01)
    assert summary["nvml/energy_source"] == "counter"
    assert set(first) <= set(NVML_STEP_KEYS)  # the contract names every key


def test_every_energy_key_of_the_summary_is_in_the_contract():
    gpu = FakeGpu()
    s, _ = _sampler(gpu)
    s.set_idle(100.0)
    _train(s, gpu, 1.0, 300.0)
    energy = {k for k in s.summary(images=10) if "energy" in k or "idle" in k or "integral" in k}
    assert energy == set(NVML_ENERGY_SUMMARY_KEYS)
    assert s.summary(images=10)["nvml/energy_source"] in ENERGY_SOURCES


def test_the_integral_follows_the_samples_own_timestamps_not_their_count():
    gpu = FakeGpu()
    gpu.fields[186] = (100_000, 1)
    s, _ = _sampler(gpu)
    _train(s, gpu, 0.1, 100.0)  # 0.1 s at 100 W
    _train(s, gpu, 0.9, 500.0, tick_s=0.9)  # one slow tick: the trapezoid from 100 W to 500 W over 0.9 s
    w = s.window()
    assert w["nvml/power_integral_j"] == pytest.approx(0.1 * 100 + 0.9 * (100 + 500) / 2)  # 280 J
    assert w["nvml/power_w"] == pytest.approx(300.0)  # the plain mean of the samples, which a sum would use


def test_a_counter_reading_ten_percent_high_shows_as_a_ratio_of_1_10():
    gpu = FakeGpu()
    gpu.fields[186] = (250_000, 1)
    s, _ = _sampler(gpu)
    _train(s, gpu, 2.0, 250.0, counter_gain=1.10)
    assert s.window()["nvml/energy_counter_vs_power"] == pytest.approx(1.10, rel=0.01)
    assert s.summary(images=10)["nvml/energy_counter_vs_power"] == pytest.approx(1.10, rel=0.01)


@pytest.mark.parametrize("unsupported", [{83}, {83, 186}], ids=["instant-power", "power-usage"])
def test_a_gpu_without_the_counter_reports_the_power_integral_and_says_so(unsupported):
    gpu = FakeGpu()
    gpu.unsupported = unsupported
    gpu.fields[186], gpu.power_usage_mw = (200_000, 1), 200_000
    s, said = _sampler(gpu)
    assert s.energy_source == "power_integral"
    _train(s, gpu, 2.0, 200.0)
    w = s.window()
    assert w["nvml/energy_j"] == pytest.approx(400.0, rel=0.01) == w["nvml/power_integral_j"]
    assert "nvml/energy_counter_vs_power" not in w
    summary = s.summary(images=100)
    assert summary["nvml/energy_source"] == "power_integral"
    assert summary["nvml/energy_total_j"] == pytest.approx(400.0, rel=0.01)
    assert summary["nvml/energy_per_image_j"] == pytest.approx(4.0, rel=0.01)
    assert s.energy_j() == pytest.approx(400.0, rel=0.01)  # cum/energy_j and time to accuracy use it too


def test_energy_above_idle_takes_idle_power_times_the_training_seconds_off_the_total():
    gpu = FakeGpu()
    s, said = _sampler(gpu)
    s.set_idle(100.0)
    _train(s, gpu, 10.0, 300.0)
    s.window()
    summary = s.summary(images=1000)
    assert summary["nvml/energy_total_j"] == pytest.approx(3000.0)
    assert summary["nvml/idle_power_w"] == 100.0
    assert summary["nvml/energy_above_idle_j"] == pytest.approx(2000.0)
    assert summary["nvml/energy_above_idle_per_image_j"] == pytest.approx(2.0)
    assert summary["nvml/energy_above_idle_clamped"] is False and not said


def test_energy_below_idle_is_clamped_at_zero_and_said():
    gpu = FakeGpu()
    s, said = _sampler(gpu)
    s.set_idle(400.0)  # the GPU idled hotter than it trained
    _train(s, gpu, 2.0, 300.0)
    summary = s.summary(images=10)
    assert summary["nvml/energy_above_idle_j"] == 0.0 and summary["nvml/energy_above_idle_clamped"] is True
    assert len(said) == 1 and "below idle power" in said[0] and "400 W" in said[0]


def test_power_integral_and_above_idle_survive_a_resume_with_each_segments_idle_power():
    gpu = FakeGpu()
    first, _ = _sampler(gpu)
    first.set_idle(100.0)
    _train(first, gpu, 2.0, 300.0)  # 600 J, 200 J of it idle
    first.window()
    saved = first.state_dict()
    second, _ = _sampler(gpu)
    second.set_idle(50.0)  # the next segment measured its own idle power
    second.load_state_dict(saved)
    _train(second, gpu, 2.0, 300.0)  # 600 J, 100 J of it idle
    second.window()
    summary = second.summary(images=100)
    assert summary["nvml/energy_total_j"] == pytest.approx(1200.0)
    assert summary["nvml/power_integral_total_j"] == pytest.approx(1200.0, rel=0.01)
    assert summary["nvml/energy_counter_vs_power"] == pytest.approx(1.0, rel=0.01)
    assert summary["nvml/energy_above_idle_j"] == pytest.approx(1200.0 - 200.0 - 100.0)
    assert summary["nvml/idle_power_w"] == 50.0  # the latest segment's
    third, _ = _sampler(gpu)  # a segment run with --idle-power-s 0: above idle is no longer known for all of it
    third.load_state_dict(second.state_dict())
    _train(third, gpu, 1.0, 300.0)
    summary = third.summary(images=100)
    assert "nvml/energy_above_idle_j" not in summary and summary["nvml/idle_power_w"] == 50.0


def test_idle_power_is_the_mean_of_this_gpus_readings_over_the_seconds_asked():
    gpus = [FakeGpu(), FakeGpu()]
    gpus[0].fields[186], gpus[1].fields[186] = (60_000, 1), (90_000, 1)  # two GPUs, each rank its own
    slept = []
    facts = measure_idle_power(FakeNvml(gpus), 1, seconds=2.0, hz=5, sleep=slept.append)
    assert facts["idle_power_w"] == pytest.approx(90.0) and facts["idle_samples"] == 11
    assert sum(slept) == pytest.approx(2.0)
    gpus[0].unsupported = {186}  # no instant power: nvmlDeviceGetPowerUsage, the sampler's fallback too
    gpus[0].power_usage_mw = 70_000
    assert measure_idle_power(FakeNvml(gpus), 0, seconds=0.1, sleep=slept.append)["idle_power_w"] == 70.0


def test_the_run_measures_idle_power_on_its_own_gpu_and_records_it_in_the_config(monkeypatch):
    gpus = [FakeGpu(), FakeGpu()]
    gpus[0].fields[186], gpus[1].fields[186] = (60_000, 1), (90_000, 1)
    gpus[1].unsupported = {83}
    monkeypatch.setattr(telemetry, "handle_for_cuda_device", lambda nvml, index: index)
    monkeypatch.setattr("train.measure.idle_power.time.sleep", lambda seconds: None)
    said = []
    sampler, facts = telemetry.open_for_run(torch.device("cuda", 1), 10, said.append, nvml=FakeNvml(gpus),
                                            idle_s=3.0)
    sampler.stop()
    assert facts["idle_power_w"] == pytest.approx(90.0) and facts["idle_seconds"] == 3.0
    assert facts["energy_source"] == "power_integral"
    assert sampler.summary(images=0).get("nvml/idle_power_w") == pytest.approx(90.0)
    assert any("idle power 90.0 W" in line for line in said)
    sampler, facts = telemetry.open_for_run(torch.device("cuda", 0), 10, said.append, nvml=FakeNvml(gpus),
                                            idle_s=0)
    sampler.stop()
    assert "idle_power_w" not in facts and facts["energy_source"] == "counter"
