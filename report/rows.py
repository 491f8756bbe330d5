"""Runs -> one row per experiment: medians and spread over repeats (seeds); the ratios between comparable rows
come from report/compare.py.

A row is one experiment: every setting in the run's config `experiment` except the seed, plus the GPU model
(`system.device_name`) and the planned steps (`total_steps`), so runs that differ in anything but the seed are
never averaged together or compared as if they were alike. `--group-by` replaces that key by the keys named.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field

from report.columns import COLUMNS, SHORT_RUN_STEPS, TIMED_COLUMNS, pct_order
from report.compare import add_ratios
from report.figures import arch, bench_rates, device, energy_source, exclusion, run_metrics, system, timed_steps, world_size
from report.formatting import MIXED, placement, point
from train.contract.experiment import PRECISIONS, with_defaults

# Runs older than the `experiment` config are keyed by what they did record.
LEGACY_KEYS = ("precision", "depth", "world_size", "batch_size", "device_name", "total_steps")


def _value(v):
    """A setting as a hashable, comparable value (dicts and lists as their JSON)."""
    return json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v


def experiment(config: dict) -> dict | None:
    """The run's config `experiment`, settings added since it was recorded at the value it ran with; None for
    runs older than `experiment` itself."""
    recorded = config.get("experiment")
    return with_defaults(recorded) if isinstance(recorded, dict) else None


def settings(config: dict) -> dict:
    """Every setting that changes the result, the seed excepted: the row key by default."""
    identity = experiment(config)
    if identity is not None:
        out = {k: _value(v) for k, v in identity.items() if k != "seed"}
        out["device_name"] = system(config).get("device_name")
        out["total_steps"] = config.get("total_steps")
        return out
    return {k: lookup(config, k) for k in LEGACY_KEYS}


def lookup(config: dict, key: str):
    """A --group-by key: from `experiment`, else the config's top level, else `system`."""
    if key == "gpus":
        key = "world_size"
    if key == "world_size":
        return world_size(config)
    for where in (experiment(config), config, system(config)):
        if isinstance(where, dict) and key in where and not isinstance(where[key], dict):
            return _value(where[key])
    return None


def known_keys(config: dict) -> set:
    keys = {"gpus", "world_size"}
    for where in (experiment(config), config, system(config)):
        if isinstance(where, dict):
            keys |= {k for k, v in where.items() if not isinstance(v, dict)}
    return keys


@dataclass
class Row:
    key: tuple  # sorted (setting, value) pairs: what makes runs one row
    facts: dict = field(default_factory=dict)  # every setting the row's runs share; MIXED where they differ
    runs: list = field(default_factory=list)  # (run id, metrics)
    devices: set = field(default_factory=set)  # "cuda", "cpu"
    timed: list = field(default_factory=list)  # each run's timed steps (None: unknown)
    values: dict = field(default_factory=dict)  # column -> median
    tta: dict = field(default_factory=dict)  # target pct -> (runs that reached it, runs that asked for it)
    spread: dict = field(default_factory=dict)  # column -> (min, max) over repeats
    flagged: set = field(default_factory=set)  # columns computed from a run too short to measure
    energy_sources: set = field(default_factory=set)  # its runs' nvml/energy_source labels (counter, power_integral)
    rates: list = field(default_factory=list)  # per run: a benchmark point's {(invocation, round): images/s}, or {}
    over_rounds: set = field(default_factory=set)  # columns measured over benchmark rounds: spread is over rounds
    noisy: set = field(default_factory=set)  # ratios whose range over rounds is too wide to conclude
    base: Row | None = None  # the fp32 row it is compared with
    one: Row | None = None  # the 1-GPU row its scaling is measured against
    products: list | None = None  # config model.linear_products: [rows per image, K, N, layers], most FLOPs first

    @property
    def precision(self) -> str:
        return str(self.facts.get("precision", MIXED))

    @property
    def depth(self):
        return self.facts.get("depth", MIXED)

    @property
    def model(self) -> str:
        """resnet18, vit-s, ...: rows of different models are never one row, and the study is one model's."""
        return str(self.facts.get("model", MIXED))

    @property
    def gpus(self) -> int:
        ws = self.facts.get("world_size")
        return ws if isinstance(ws, int) else 0

    @property
    def device(self) -> str:
        return next(iter(self.devices)) if len(self.devices) == 1 else MIXED

    @property
    def where(self) -> str:
        return placement(self.device, self.gpus)

    @property
    def integral_energy(self) -> bool:
        """Some run's energy is the integral of sampled power (its GPU had no energy counter)."""
        return "power_integral" in self.energy_sources

    @property
    def by_rounds(self) -> bool:
        """Every run of the row is a benchmark point, measured in the benchmark's interleaved rounds: a sound
        measurement of few steps, its images/s paired within each round with the other points'."""
        return bool(self.rates) and all(self.rates)

    def round_rates(self) -> dict[tuple[str, int], float]:
        """{(invocation, round): images/s} over the row's runs (the median where two runs share a round)."""
        pooled: dict[tuple[str, int], list[float]] = {}
        for rates in self.rates:
            for k, v in rates.items():
                pooled.setdefault(k, []).append(v)
        return {k: statistics.median(v) for k, v in pooled.items()}

    @property
    def short(self) -> bool:
        return not self.by_rounds and any(t is not None and t < SHORT_RUN_STEPS for t in self.timed)


def build(runs, group_by: list[str] | None = None) -> tuple[list[Row], list[tuple]]:
    """(rows in display order; excluded runs as (name, id, why, point))."""
    rows: dict[tuple, Row] = {}
    excluded = []
    for run in runs:
        why = exclusion(run)
        if why:
            excluded.append((run.name, run.id, why, point(run.config)))
            continue
        _add(rows, run, group_by)
    for row in rows.values():
        _aggregate(row)
    add_ratios(list(rows.values()))
    order = {p: i for i, p in enumerate(PRECISIONS)}
    return sorted(rows.values(), key=lambda r: (r.model, r.device, r.gpus,
                                                order.get(r.precision, 99), r.precision, str(r.key))), excluded


def _add(rows: dict[tuple, Row], run, group_by: list[str] | None) -> None:
    """The run into the row of its key (a new row if none yet); settings its runs disagree on become MIXED."""
    facts = settings(run.config)
    facts.update(precision=run.config.get("precision", facts.get("precision")),
                 depth=run.config.get("depth", facts.get("depth")), world_size=world_size(run.config),
                 model=arch(run.config))
    keyed = {k: lookup(run.config, k) for k in group_by} if group_by else facts
    key = tuple(sorted(("world_size" if k == "gpus" else k, v) for k, v in keyed.items()))
    row = rows.get(key)
    if row is None:
        row = rows[key] = Row(key, facts=dict(facts))
    else:
        row.facts = {k: (row.facts[k] if row.facts.get(k, MIXED) == facts.get(k, MIXED) else MIXED)
                     for k in {**row.facts, **facts}}
    model = run.config.get("model")
    if row.products is None and isinstance(model, dict) and isinstance(model.get("linear_products"), list):
        row.products = model["linear_products"]  # a fact of the architecture: every run of the row has the same
    rates = bench_rates(run.config, run.summary)
    row.runs.append((run.id, run_metrics(run.config, run.summary, rates)))
    row.devices.add(device(run.config))
    row.timed.append(timed_steps(run.config, run.summary))
    row.rates.append(rates)
    if energy_source(run.summary):
        row.energy_sources.add(energy_source(run.summary))


def _aggregate(row: Row) -> None:
    """The row's medians and spreads over its runs, and the flags for a run too short to measure."""
    for column in COLUMNS:
        values = [m[column] for _, m in row.runs if m.get(column) is not None]
        if values:
            row.values[column] = statistics.median(values)
            row.spread[column] = (min(values), max(values))
    # Time to a target only where every run of the row that asked for it reached it: a median over the
    # runs that happened to get there would flatter the row.
    for pct in sorted({k[len("tta_asked_"):] for _, m in row.runs for k in m if k.startswith("tta_asked_")},
                      key=pct_order):
        asked = [m for _, m in row.runs if m.get(f"tta_asked_{pct}")]
        reached = [m for m in asked if m.get(f"tta_s_{pct}") is not None]
        row.tta[pct] = (len(reached), len(asked))
        if len(reached) < len(asked):
            continue
        for part in ("tta_s", "tta_epochs", "tta_energy_kj"):
            values = [m[f"{part}_{pct}"] for m in reached if m.get(f"{part}_{pct}") is not None]
            if len(values) == len(reached):
                row.values[f"{part}_{pct}"] = statistics.median(values)
                row.spread[f"{part}_{pct}"] = (min(values), max(values))
    if row.by_rounds:  # its images/s spread is over the rounds, not over the (one or few) runs
        rates = [v for r in row.rates for v in r.values()]
        for column, per in (("images_per_s", 1), ("images_per_s_per_gpu", max(row.gpus, 1))):
            if column in row.values:
                row.spread[column] = (min(rates) / per, max(rates) / per)
                row.over_rounds.add(column)
    if row.short:
        row.flagged |= {c for c in TIMED_COLUMNS if c in row.values}


def study(rows: list[Row], model: str, where: tuple[str, int]) -> list[Row]:
    """The rows of one model (resnet18, vit-s) and placement (device, GPU count)."""
    return [r for r in rows if r.model == model and (r.device, r.gpus) == where]


def default_where(rows: list[Row], model: str, gpus: int | None) -> tuple[str, int]:
    """GPU rows when there are any (the fewest GPUs, or --gpus), else CPU rows."""
    at = [r for r in rows if r.model == model] or rows
    pool = [r for r in at if r.device != "cpu"] or at
    if gpus is None:
        gpus = min((r.gpus for r in pool), default=1)
    match = next((r for r in pool if r.gpus == gpus), pool[0] if pool else None)
    return (match.device if match else "cpu"), gpus
