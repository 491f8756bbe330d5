"""NVML field values read by their declared type, counters across a wrap, and PCIe link peaks by generation."""

from types import SimpleNamespace

import pytest

from train.measure.nvml_fields import decode, pcie_bandwidth, wrap_delta


def _field(value_type, member, value):
    return SimpleNamespace(valueType=value_type, value=SimpleNamespace(**{member: value}))


def test_a_value_is_read_from_the_member_its_type_names_with_its_counter_width():
    assert decode(_field(1, "uiVal", 7)) == (7.0, 32)  # unsigned int: a 32-bit counter
    assert decode(_field(6, "usVal", 9)) == (9.0, 16)
    assert decode(_field(4, "sllVal", -3)) == (-3.0, None)  # signed: not a counter that wraps
    assert decode(_field(0, "dVal", 1.5)) == (1.5, None)
    assert decode(_field(99, "ullVal", 5)) == (5.0, 64)  # a type this code does not know: the widest counter


def test_an_unsigned_counter_that_wrapped_once_counts_the_bytes_across_the_wrap():
    assert wrap_delta(50.0, 2.0**32 - 100, 32) == 150.0
    assert wrap_delta(10.0, 2.0**16 - 10, 16) == 20.0
    assert wrap_delta(300.0, 100.0, 32) == 200.0  # no wrap
    assert wrap_delta(1.0, 4.0, None) == -3.0  # a signed value that went down did not wrap


@pytest.mark.parametrize("generation, lanes, gb_per_s", [
    (1, 16, 4.0),  # 2.5 GT/s, 8b/10b
    (2, 16, 8.0),  # 5 GT/s, still 8b/10b
    (3, 16, 15.75),  # 8 GT/s, 128b/130b
    (4, 8, 15.75),
    (5, 16, 63.0),
    (6, 16, 121.0),  # 64 GT/s, FLIT mode: 242 of every 256 bytes are data
])
def test_pcie_peak_per_direction_follows_the_generations_rate_and_line_code(generation, lanes, gb_per_s):
    assert pcie_bandwidth(generation, lanes) == pytest.approx(gb_per_s * 1e9, rel=0.005)


def test_an_unknown_pcie_generation_has_no_peak():
    assert pcie_bandwidth(0, 16) is None and pcie_bandwidth(7, 16) is None
