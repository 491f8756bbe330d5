"""Step timing's arithmetic: the run's images/s leaves out each segment's warm-up, and the p90 interpolates."""

import time

import pytest
import torch

from train.measure.timing import StepTimer, Throughput, quantile


def test_quantile_interpolates_between_the_ordered_values():
    values = [4.0, 1.0, 3.0, 2.0]  # not sorted: the window's step times in step order
    assert quantile(values, 0.0) == 1.0 and quantile(values, 1.0) == 4.0
    assert quantile(values, 0.5) == 2.5
    assert quantile(values, 0.9) == pytest.approx(3.7)
    assert quantile([0.2], 0.9) == 0.2
    assert values == [4.0, 1.0, 3.0, 2.0]  # the caller's list is left as it was


def test_the_warm_up_is_left_out_once_per_segment_across_windows():
    throughput = Throughput(images_per_step=8, warmup_steps=3)
    throughput.add([9.0, 9.0])  # first window: both steps are warm-up
    throughput.add([9.0, 0.5, 0.5])  # the third step ends the warm-up
    throughput.add([0.5])
    assert throughput.timed == [0.5, 0.5, 0.5]
    assert throughput.summary() == {"train/images_per_s": 16.0, "train/step_time_s": 0.5, "train/timed_steps": 3}


def test_a_resumed_segment_warms_up_again_and_keeps_the_earlier_segments_steps():
    first = Throughput(images_per_step=8, warmup_steps=2)
    first.add([5.0, 5.0, 1.0, 1.0])
    resumed = Throughput(images_per_step=8, warmup_steps=2)  # the next process, from the checkpoint
    resumed.load_state_dict(first.state_dict())
    resumed.add([7.0, 7.0, 1.0])  # cuDNN autotunes and the allocator warms up again after a restart
    assert resumed.timed == [1.0, 1.0, 1.0]
    assert resumed.summary()["train/images_per_s"] == 8.0 and resumed.summary()["train/timed_steps"] == 3


def test_a_run_too_short_to_measure_has_no_images_per_s():
    throughput = Throughput(images_per_step=8, warmup_steps=10)
    throughput.add([1.0, 1.0, 1.0])
    assert throughput.summary() == {"train/images_per_s": None, "train/step_time_s": None, "train/timed_steps": 0}


def test_a_windows_figures_are_its_median_and_p90_of_all_its_steps():
    window = Throughput(images_per_step=8, warmup_steps=100).window([1.0, 2.0, 4.0])
    assert window == {"train/step_time_s": 2.0, "train/step_time_p90_s": pytest.approx(3.6),
                      "train/images_per_s": 4.0}


def test_the_cpu_step_timer_returns_each_steps_time_and_data_time_in_order():
    timer = StepTimer(torch.device("cpu"))
    for _ in range(3):
        timer.start()
        timer.data_ready()
        timer.end()
    times = timer.collect()
    assert len(times) == 3 and all(step >= data >= 0 for step, data in times)
    assert timer.collect() == []  # read once per window


def test_an_untimed_step_is_left_out_of_the_step_times():
    """A profiled step (--profile) trains but is not timed: images/s never includes the profiler's overhead."""
    timer = StepTimer(torch.device("cpu"))
    for timed in (True, False, True):
        timer.start(timed)
        timer.data_ready()
        if not timed:
            time.sleep(0.05)
        timer.end()
    times = timer.collect()
    assert len(times) == 2 and all(step < 0.05 for step, _ in times)
