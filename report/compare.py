"""Rows against each other: the ratios between rows identical but for precision (against fp32) or GPU count
(against one GPU), and the settings that tell rows apart or that they share."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from train.contract.rounds import spread

if TYPE_CHECKING:
    from report.rows import Row

# Shown in their own columns (Precision, Depth, GPUs), so never repeated as "differing settings".
SHOWN = ("precision", "depth", "model", "arch", "world_size", "device")  # arch: --model, shown as the model
# With more GPUs the runner plans fewer steps and may scale the LR: a scaling comparison must not require
# these to match the 1-GPU run's.
FOLLOW_WORLD_SIZE = ("total_steps", "effective_lr")


def _index(rows, ignore=()) -> dict:
    """Rows by their key without `ignore`; a key that two rows share is ambiguous and maps to None."""
    out = {}
    for row in rows:
        k = tuple((n, v) for n, v in row.key if n not in ignore)
        out[k] = None if k in out else row
    return out


def _partner(row: Row, index: dict, ignore=(), **change):
    names = {n for n, _ in row.key}
    if not set(change) <= names:  # --group-by without that setting: rows are not comparable along it
        return None
    want = tuple((n, change.get(n, v)) for n, v in row.key if n not in ignore)
    other = index.get(want)
    return other if other is not row else None


def add_ratios(rows: list[Row]) -> None:
    """Speed-up (images/s and time to each target) against the fp32 row and scaling efficiency against the
    1-GPU row, each from the medians; ratios only between rows identical but for precision (resp. GPU count)."""
    by_key, by_scaling_key = _index(rows), _index(rows, FOLLOW_WORLD_SIZE)
    for row in rows:
        ips = row.values.get("images_per_s")
        row.base = _partner(row, by_key, precision="fp32") if row.precision != "fp32" else None
        if row.base and row.base.values.get("images_per_s") and ips:
            _speed_ratio(row, row.base, "speedup_vs_fp32", ips / row.base.values["images_per_s"])
        if row.base:
            for pct in row.tta:
                a, b = row.values.get(f"tta_s_{pct}"), row.base.values.get(f"tta_s_{pct}")
                if a and b:
                    row.values[f"tta_speedup_{pct}"] = b / a
        row.one = _partner(row, by_scaling_key, FOLLOW_WORLD_SIZE, world_size=1) if row.gpus > 1 else None
        if row.one and row.one.values.get("images_per_s") and ips:
            row.values["scaling_efficiency"] = 100 * ips / (row.gpus * row.one.values["images_per_s"])
            if row.short or row.one.short or row.by_rounds or row.one.by_rounds:  # rounds pair one GPU count only
                row.flagged.add("scaling_efficiency")


def _speed_ratio(row: Row, base: Row, column: str, of_medians: float) -> None:
    """row/base images/s into `column`. Two benchmark points of one invocation: the median of their per-round
    ratios, with the range over rounds (train/contract/rounds.py); else the ratio of medians, flagged when either
    row is too short to measure (a benchmark point is, outside its rounds)."""
    if row.by_rounds and base.by_rounds:
        a, b = row.round_rates(), base.round_rates()
        paired = spread([a[k] / b[k] for k in sorted(a.keys() & b.keys())])
        if paired:
            row.values[column] = paired["median"]
            row.spread[column] = (paired["min"], paired["max"])
            row.over_rounds.add(column)
            if paired["wide"]:
                row.noisy.add(column)
            return
    row.values[column] = of_medians
    if row.short or base.short or row.by_rounds or base.by_rounds:
        row.flagged.add(column)


def differing(rows: list[Row]) -> list[str]:
    """Settings (besides precision, depth and placement) that two rows recorded with different values. A
    setting only some rows recorded (older runs have no `experiment`) does not make a column on its own."""
    keys = sorted({k for r in rows for k in r.facts} - set(SHOWN))
    return [k for k in keys
            if len({json.dumps(r.facts[k], default=str) for r in rows if k in r.facts}) > 1]


def distinguishing(rows: list[Row]) -> list[str]:
    """The fewest differing settings that still tell the rows apart, for short labels (plots, sentences):
    settings that follow from others (the planned steps follow from the batch size) are dropped first."""
    keys = differing(rows)
    for k in sorted(keys, key=lambda k: (k not in (*FOLLOW_WORLD_SIZE, "device_name"), k)):
        rest = [x for x in keys if x != k]
        if len({(r.precision, r.depth, r.where, *(json.dumps(r.facts.get(x), default=str) for x in rest))
                for r in rows}) == len(rows):
            keys = rest
    return keys


def common(rows: list[Row]) -> tuple[dict, int]:
    """(settings with one value across the rows that recorded them, how many rows recorded none of them): said
    once, not as a column."""
    diff = set(differing(rows))
    same = {}
    for k in sorted({k for r in rows for k in r.facts} - diff - set(SHOWN)):
        same[k] = next(r.facts[k] for r in rows if k in r.facts)
    lacking = sum(1 for r in rows if any(k not in r.facts for k in same))
    return same, lacking
