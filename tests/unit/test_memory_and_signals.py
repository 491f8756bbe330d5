"""The CPU memory peak kept across segments, and a stop signal's reason being the first signal."""

import os
import signal

import torch

from train.launch.signals import StopRequest
from train.measure.memory import MemoryMonitor


def test_the_cpu_peak_is_the_processes_rss_and_the_runs_is_the_max_over_its_segments():
    first = MemoryMonitor(torch.device("cpu"))
    window = first.read_and_reset()
    assert set(window) == {"mem/rss_peak_bytes"} and window["mem/rss_peak_bytes"] > 2**20  # bytes, not KiB
    resumed = MemoryMonitor(torch.device("cpu"))
    resumed.load_state_dict({"peaks": {"mem/rss_peak_bytes": 2**50}})  # an earlier segment on a bigger node
    resumed.read_and_reset()
    assert resumed.state_dict() == {"peaks": {"mem/rss_peak_bytes": 2**50}}


def test_the_first_stop_signal_is_the_reason_and_a_later_one_does_not_replace_it():
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        stop = StopRequest().install()
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGUSR1)  # Slurm's warning before the time limit
        os.kill(os.getpid(), signal.SIGTERM)  # then the elastic agent, while the rank is still saving
        assert stop.requested and stop.signal == signal.SIGUSR1
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
