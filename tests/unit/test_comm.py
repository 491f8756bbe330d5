"""The all-reduce meter's arithmetic: time some all-reduce was in flight, and bus bandwidth from it."""

import pytest
import torch

from train.measure.comm import CommMeter
from train.measure.profile_classes import covered


def test_overlapping_buckets_count_their_time_in_flight_once():
    assert covered([(0.0, 1.0), (0.5, 2.0)]) == 2.0  # queued behind each other on the communication stream
    assert covered([(3.0, 4.0), (0.0, 1.0)]) == 2.0  # a gap between them is not communication
    assert covered([(0.0, 4.0), (1.0, 2.0)]) == 4.0  # one inside another
    assert covered([]) == 0.0


def test_a_window_gives_bytes_time_and_the_ring_all_reduces_bus_bandwidth():
    meter = CommMeter(torch.device("cpu"), world_size=4, compress="none")
    # Two steps as the hook records them on CPU: [start, end, bytes] per bucket, host-clock marks.
    meter._steps = [[[10.0, 11.0, 100], [10.5, 12.0, 300]], [[20.0, 21.0, 400]]]
    window = meter.window()
    assert window["comm/allreduce_bytes"] == 800 and window["comm/allreduce_time_s"] == 3.0
    assert window["comm/algbw_bytes_per_s"] == pytest.approx(800 / 3)
    assert window["comm/busbw_bytes_per_s"] == pytest.approx(800 / 3 * 2 * 3 / 4)  # 2(n-1)/n of algbw
    assert meter.window() == {}  # read once per window


def test_a_step_whose_all_reduce_has_not_finished_is_left_for_no_window():
    meter = CommMeter(torch.device("cpu"), world_size=2, compress="bf16")
    meter._steps = [[[0.0, None, 100]], [[5.0, 6.0, 50]]]
    window = meter.window()
    assert window["comm/allreduce_bytes"] == 50 and window["comm/allreduce_time_s"] == 1.0
