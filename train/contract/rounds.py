"""A benchmark point's rounds: what `python -m train.benchmark` measures and how its figures are made from them.

The benchmark trains its points in turns (train/benchmark/turns.py): in every round each point trains --steps steps
while the others wait, so a machine that gets busier or quieter moves every point of a round alike. A point's run
keeps its rounds' step times in its summary (metrics.BENCHMARK_SUMMARY_KEYS), and both the benchmark's tables and the report make
their figures from them with the functions below:

- a round's images/s: the images of a step over the median of its steps after the round's warm-up steps;
- a round is *disturbed* when one of its timed steps took over DISTURBED times the point's median step, unless
  most of the point's rounds are (then that is how the point runs); disturbed rounds are left out;
- a ratio between two points is the median of their per-round ratios, paired within each round of one benchmark
  invocation, with the range over rounds; a range wider than MAX_SPREAD of the ratio is too wide to conclude.
"""

from __future__ import annotations

import statistics

from train.contract.metrics import BENCHMARK_SUMMARY_KEYS

# A benchmark point's summary keys: the invocation (rounds pair only within one), the rounds, their warm-up steps.
BENCH_ID, ROUND_STEPS, ROUND_WARMUP = BENCHMARK_SUMMARY_KEYS

DISTURBED = 2.0  # a round with a step over this multiple of its point's median step was disturbed
MAX_SPREAD = 0.10  # a ratio's range over rounds wider than this share of it is too wide to conclude


def round_rate(step_times: list[float], warmup: int, images_per_step: float) -> float | None:
    """A round's images/s: from the median step after its warm-up steps (None when none is left)."""
    timed = step_times[warmup:]
    return images_per_step / statistics.median(timed) if timed else None


def disturbed(rounds: list[list[float]], warmup: int) -> list[bool]:
    """Per round of one point: whether another process disturbed it. A runner's own cost never doubles a step;
    a job taking the cores does (seen on a shared 2-core machine: 0.6 s steps became 2-5 s)."""
    timed = [t for steps in rounds for t in steps[warmup:]]
    if not timed:
        return [False] * len(rounds)
    typical = statistics.median(timed)
    slow = [bool(steps[warmup:]) and max(steps[warmup:]) > DISTURBED * typical for steps in rounds]
    if 2 * sum(slow) > len(rounds):  # most rounds: not an exception to leave out but how this point runs
        return [False] * len(rounds)
    return slow


def spread(values: list[float], max_spread: float = MAX_SPREAD) -> dict:
    """Median and range of per-round values; `wide` when the range exceeds max_spread of the median."""
    values = [v for v in values if v is not None]
    if not values:
        return {}
    mid = statistics.median(values)
    lo, hi = min(values), max(values)
    return {"median": mid, "min": lo, "max": hi, "n": len(values),
            "wide": len(values) > 1 and mid > 0 and (hi - lo) / mid > max_spread}


def rates(summary: dict, images_per_step: float) -> dict[tuple[str, int], float]:
    """{(invocation, round): images/s} of a benchmark point's undisturbed rounds, from its run's summary; {} for
    any other run, or one whose rounds are not as the contract says."""
    bench, rounds, warmup = (summary.get(k) for k in BENCHMARK_SUMMARY_KEYS)
    if not isinstance(bench, str) or not isinstance(rounds, list) or isinstance(warmup, bool) \
            or not isinstance(warmup, int) or warmup < 0:
        return {}
    if not all(isinstance(r, list) and all(isinstance(t, (int, float)) and t > 0 for t in r) for r in rounds):
        return {}
    out = {}
    for i, (steps, slow) in enumerate(zip(rounds, disturbed(rounds, warmup))):
        rate = round_rate(steps, warmup, images_per_step)
        if rate is not None and not slow:
            out[(bench, i)] = rate
    return out
