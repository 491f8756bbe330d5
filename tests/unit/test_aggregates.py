"""Whole-run mean/min/max/last of every logged number: a resumed run's summary is the unbroken run's."""

import math

from train.measure.aggregates import RunAggregates


def test_mean_min_max_last_over_every_window():
    agg = RunAggregates()
    for loss in (4.0, 1.0, 2.0, 3.0):
        agg.add({"train/loss": loss})
    assert agg.summary(["train/loss"]) == {"train/loss": {"mean": 2.5, "min": 1.0, "max": 4.0, "last": 3.0}}
    assert agg.summary(["train/loss"], fields=("max", "last")) == {"train/loss": {"max": 4.0, "last": 3.0}}


def test_a_run_stopped_and_resumed_through_its_state_gives_the_unbroken_runs_summary():
    windows = [{"train/loss": v, "test/acc": a} for v, a in ((2.0, 0.1), (1.5, 0.4), (0.5, 0.3), (1.0, 0.2))]
    whole = RunAggregates()
    for w in windows:
        whole.add(w)
    first = RunAggregates()
    for w in windows[:2]:
        first.add(w)
    second = RunAggregates()  # the next process, from the checkpoint
    second.load_state_dict(first.state_dict())
    for w in windows[2:]:
        second.add(w)
    keys = ["train/loss", "test/acc"]
    assert second.summary(keys) == whole.summary(keys)
    assert whole.summary(keys)["test/acc"]["max"] == 0.4 and whole.summary(keys)["test/acc"]["last"] == 0.2


def test_what_is_not_a_finite_number_is_left_out():
    agg = RunAggregates()
    agg.add({"train/loss": 1.0, "train/diverged": True, "train/end": "finished", "nvml/power_w": None})
    agg.add({"train/loss": math.nan, "nvml/power_w": math.inf})
    assert agg.summary(["train/loss", "train/diverged", "train/end", "nvml/power_w"]) == \
        {"train/loss": {"mean": 1.0, "min": 1.0, "max": 1.0, "last": 1.0}}  # a NaN window does not poison it


def test_keys_by_prefix_and_keys_never_logged_are_absent():
    agg = RunAggregates()
    agg.add({"train/loss": 1.0, "nvml/power_w": 300.0, "mem/rss_peak_bytes": 2**30})
    assert sorted(agg.keys({"train", "nvml"})) == ["nvml/power_w", "train/loss"]
    assert agg.summary(["test/acc"]) == {}


def test_the_saved_state_is_a_copy_not_the_live_counters():
    agg = RunAggregates()
    agg.add({"train/loss": 1.0})
    saved = agg.state_dict()
    agg.add({"train/loss": 3.0})
    restored = RunAggregates()
    restored.load_state_dict(saved)
    assert restored.summary(["train/loss"])["train/loss"]["max"] == 1.0
