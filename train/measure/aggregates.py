"""Whole-run mean/min/max/last of every logged number, kept as running sums so a resumed run's summary is
the unbroken run's."""

from __future__ import annotations

import math


class RunAggregates:
    """mean/min/max/last of every logged number over the whole run, kept across resumes.

    W&B's define_metric summaries cover only the process that logged them, and a study's runs are several
    processes in a row; the runner writes these whole-run aggregates into the summary instead, in the same shape.
    """

    def __init__(self):
        self.stats: dict[str, list[float]] = {}  # key -> [count, sum, min, max, last]

    def add(self, metrics: dict) -> None:
        for key, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            s = self.stats.get(key)
            if s is None:
                self.stats[key] = [1, value, value, value, value]
            else:
                s[0] += 1
                s[1] += value
                s[2] = min(s[2], value)
                s[3] = max(s[3], value)
                s[4] = value

    def summary(self, keys, fields=("mean", "min", "max", "last")) -> dict:
        out = {}
        for key in keys:
            s = self.stats.get(key)
            if s is not None:
                values = {"mean": s[1] / s[0], "min": s[2], "max": s[3], "last": s[4]}
                out[key] = {f: values[f] for f in fields}
        return out

    def keys(self, prefixes) -> list[str]:
        return [k for k in self.stats if k.split("/")[0] in prefixes]

    def state_dict(self) -> dict:
        return {"stats": {k: list(v) for k, v in self.stats.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.stats = {k: list(v) for k, v in state["stats"].items()}
