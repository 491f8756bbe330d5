"""Runs -> one row per experiment: medians and spread over repeats (seeds), ratios between comparable rows.

A row is one experiment: every setting in the run's config `experiment` except the seed, plus the GPU model
(`system.device_name`) and the planned steps (`total_steps`), so runs that differ in anything but the seed are
never averaged together or compared as if they were alike. `--group-by` replaces that key by the keys named.

Everything comes from the metric contract (docs/metric-contract.md): summary keys, and facts the runs put in their config
(FLOPs per image, the GPU's peak, link peaks). A missing figure is None (an empty cell), never zero.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field

PRECISION_ORDER = ["fp32", "tf32", "amp_fp16", "amp_bf16", "fp16", "bf16"]

# A run's images/s is the median over its timed steps (after warm-up); below this many the median is mostly
# noise (start-up, first-iteration allocations, clock ramp-up), so its throughput and every ratio built on it
# are flagged and kept out of the Observations.
SHORT_RUN_STEPS = 50
SHORT_MARK = "†"

# Runs older than the `experiment` config are keyed by what they did record.
LEGACY_KEYS = ("precision", "depth", "world_size", "batch_size", "device_name", "total_steps")
# Settings the runner added to `experiment` after runs had been recorded without them, each with the value those
# runs ran with: a run from before --compile and a new `compile: none` run are one experiment, one row.
# (`stop_at_acc` needs no entry: the runner records it only when set, so its absence means the same in old runs.)
EXPERIMENT_DEFAULTS = {"compile": "none"}
# Shown in their own columns (Precision, Depth, GPUs), so never repeated as "differing settings".
SHOWN = ("precision", "depth", "world_size", "device")
# With more GPUs the runner plans fewer steps and may scale the LR: a scaling comparison must not require
# these to match the 1-GPU run's.
FOLLOW_WORLD_SIZE = ("total_steps", "effective_lr")
MIXED = "(varies)"  # a setting that differs between the runs of a --group-by row

# column -> (title, unit) for results.md/.csv, in order
COLUMNS = {
    "train_time_s": ("Training time", "s"),
    "epoch_time_s": ("Time per epoch", "s"),
    "images_per_s": ("Images/s", ""),
    "images_per_s_per_gpu": ("Images/s per GPU", ""),
    "speedup_vs_fp32": ("Speed-up vs fp32", "x"),
    "ckpt_mib": ("Checkpoint", "MiB"),
    "peak_mem_gib": ("Peak memory", "GiB"),
    "params_mib": ("Weights", "MiB"),
    "grads_mib": ("Gradients", "MiB"),
    "optimizer_mib": ("Optimizer state", "MiB"),
    "activations_mib": ("Activations+workspace", "MiB"),
    "other_mib": ("Data set + measurement copy", "MiB"),
    "lost_update_pct": ("Lost updates", "%"),
    "pcie_bytes_per_s": ("PCIe TX+RX", "GB/s"),
    "pcie_share": ("PCIe % of peak", "%"),
    "nvlink_bytes_per_s": ("NVLink TX+RX", "GB/s"),
    "nvlink_share": ("NVLink % of peak", "%"),
    "busbw_bytes_per_s": ("All-reduce busbw", "GB/s"),
    "scaling_efficiency": ("Scaling eff. vs 1 GPU", "%"),
    "best_test_acc": ("Best test acc", "%"),
    "last_test_acc": ("Last test acc", "%"),
    "energy_per_image_j": ("Energy/image", "J"),
    "mfu": ("MFU", "%"),
}
# Time to accuracy: per target (a percentage as in the summary key time_to_acc/<pct>), four columns. The
# runner's default targets always have their columns in results.csv; other targets a run asked for are added.
DEFAULT_TARGETS = ("80", "90", "93", "94")
TTA_PARTS = {  # column prefix -> (title with {pct}, unit)
    "tta_s": ("Time to {pct}%", "s"),
    "tta_speedup": ("Speed-up to {pct}% vs fp32", "x"),
    "tta_epochs": ("Epochs to {pct}%", ""),
    "tta_energy_kj": ("Energy to {pct}%", "kJ"),
}
TTA_PREFIX = "time_to_acc/"


def tta_columns(targets) -> list[str]:
    return [f"{part}_{pct}" for pct in targets for part in TTA_PARTS]


def column_info(column: str) -> tuple[str, str]:
    """(title, unit) of a fixed column or a time-to-accuracy one."""
    if column in COLUMNS:
        return COLUMNS[column]
    part, pct = column.rsplit("_", 1) if not column.startswith("tta_speedup") else ("tta_speedup", column[12:])
    title, unit = TTA_PARTS[part]
    return title.format(pct=pct.replace("_", ".")), unit


def _pct_order(pct: str) -> float:
    return float(pct.replace("_", "."))


def run_targets(config: dict, summary: dict) -> list[str]:
    """The targets a run asked for, as summary-key percentages: its summary's keys (a reached target) and its
    config's target_acc (fractions; an unreached one has no summary key)."""
    out = {k[len(TTA_PREFIX):] for k in summary if k.startswith(TTA_PREFIX)}
    asked = config.get("target_acc")
    if isinstance(asked, list) and summary.get("train/end") is not None:  # runs that record time to accuracy
        out |= {f"{round(100 * float(t), 4):g}".replace(".", "_") for t in asked if isinstance(t, (int, float))}
    return sorted(out, key=_pct_order)


# figures that come from step timing: unreliable in a run too short to measure
TIMED_COLUMNS = ("images_per_s", "images_per_s_per_gpu", "speedup_vs_fp32", "scaling_efficiency", "mfu")


def _get(d: dict, *path, agg: str | None = None):
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    if isinstance(d, dict):  # define_metric summaries: {"mean", "min", "max", "last"}
        d = d.get(agg or "last")
    if isinstance(d, bool) or not isinstance(d, (int, float)) or not math.isfinite(d):
        return None
    return float(d)


def _sum(*values):
    return None if any(v is None for v in values) else sum(values)


def _system(config: dict) -> dict:
    s = config.get("system")
    return s if isinstance(s, dict) else {}


def world_size(config: dict) -> int:
    ws = _get(config, "experiment", "world_size") or _get(config, "system", "world_size") or 1
    return int(ws)


def device(config: dict) -> str:
    return str(_system(config).get("device") or (config.get("experiment") or {}).get("device") or "?")


def run_metrics(config: dict, summary: dict) -> dict:
    """The per-run figures of a row, before aggregation and ratios."""
    s = lambda *k, agg=None: _get(summary, *k, agg=agg)  # noqa: E731
    c = lambda *k: _get(config, *k)  # noqa: E731
    ips_gpu = s("train/images_per_s_per_gpu") or s("train/images_per_s")
    pcie = _sum(s("nvml/pcie_tx_bytes_per_s_mean"), s("nvml/pcie_rx_bytes_per_s_mean"))
    nvlink = _sum(s("nvml/nvlink_tx_bytes_per_s_mean"), s("nvml/nvlink_rx_bytes_per_s_mean"))
    pcie_peak, nvlink_peak = c("nvml", "pcie_peak_bytes_per_s"), c("nvml", "nvlink_peak_bytes_per_s")
    flops, peak = c("model", "train_flops_per_image"), c("system", "peak_flops_per_s")
    ckpt = s("ckpt/size_bytes")
    # Allocator peak only: older CPU runs wrote the process's RSS under this key, which is not the precision's
    # memory footprint (it includes the interpreter, libraries and the dataset).
    mem = s("mem/peak_allocated_bytes") if device(config) != "cpu" else None
    lost = s("precision/lost_update_frac", agg="mean")
    return {
        "train_time_s": s("time/train_s"),
        "epoch_time_s": s("epoch/time_s", agg="mean"),
        "images_per_s": s("train/images_per_s"),
        "images_per_s_per_gpu": ips_gpu,
        "ckpt_mib": ckpt / 2**20 if ckpt is not None else None,
        "peak_mem_gib": mem / 2**30 if mem is not None else None,
        "lost_update_pct": 100 * lost if lost is not None else None,
        # TX+RX against both directions' peak
        "pcie_bytes_per_s": pcie,
        "pcie_share": 100 * pcie / (2 * pcie_peak) if pcie is not None and pcie_peak else None,
        "nvlink_bytes_per_s": nvlink,
        "nvlink_share": 100 * nvlink / (2 * nvlink_peak) if nvlink is not None and nvlink_peak else None,
        # one process all-reduces nothing: the runner logs 0, which is "not measured", not a bandwidth
        "busbw_bytes_per_s": s("comm/busbw_bytes_per_s", agg="mean") if world_size(config) > 1 else None,
        "best_test_acc": 100 * s("test/best_acc") if s("test/best_acc") is not None else None,
        "last_test_acc": 100 * s("test/last_acc") if s("test/last_acc") is not None else None,
        "energy_per_image_j": s("nvml/energy_per_image_j"),
        "mfu": 100 * flops * ips_gpu / peak if flops and ips_gpu and peak else None,
        **{k: v / 2**20 if v is not None else None for k, v in (
            ("params_mib", s("mem/params_bytes")), ("grads_mib", s("mem/grads_bytes")),
            ("optimizer_mib", s("mem/optimizer_bytes")), ("activations_mib", s("mem/activations_bytes")),
            ("other_mib", _sum(s("mem/data_bytes"), s("mem/measurement_bytes"))))},
        **tta_metrics(config, summary),
    }


def tta_metrics(config: dict, summary: dict) -> dict:
    """Per target the run asked for: tta_asked_<pct> = 1, and where reached its time, epochs and energy."""
    out = {}
    for pct in run_targets(config, summary):
        out[f"tta_asked_{pct}"] = 1.0
        hit = summary.get(TTA_PREFIX + pct)
        if isinstance(hit, dict) and _get(hit, "time_s") is not None:
            energy = _get(hit, "energy_j")
            out.update({f"tta_s_{pct}": _get(hit, "time_s"), f"tta_epochs_{pct}": _get(hit, "epoch"),
                        f"tta_energy_kj_{pct}": energy / 1e3 if energy is not None else None})
    return out


def timed_steps(config: dict, summary: dict) -> int | None:
    """Steps in the run's images/s median; older runs: steps done less the warm-up. None: unknown."""
    timed = _get(summary, "train/timed_steps")
    if timed is None:
        steps, warmup = _get(summary, "train/steps"), _get(config, "warmup_steps")
        timed = max(0.0, steps - warmup) if steps is not None and warmup is not None else None
    return None if timed is None else int(timed)


def _value(v):
    """A setting as a hashable, comparable value (dicts and lists as their JSON)."""
    return json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v


def experiment(config: dict) -> dict | None:
    """The run's config `experiment`, settings added since it was recorded at the value it ran with; None for
    runs older than `experiment` itself."""
    recorded = config.get("experiment")
    return {**EXPERIMENT_DEFAULTS, **recorded} if isinstance(recorded, dict) else None


def settings(config: dict) -> dict:
    """Every setting that changes the result, the seed excepted: the row key by default."""
    identity = experiment(config)
    if identity is not None:
        out = {k: _value(v) for k, v in identity.items() if k != "seed"}
        out["device_name"] = _system(config).get("device_name")
        out["total_steps"] = config.get("total_steps")
        return out
    return {k: lookup(config, k) for k in LEGACY_KEYS}


def lookup(config: dict, key: str):
    """A --group-by key: from `experiment`, else the config's top level, else `system`."""
    if key == "gpus":
        key = "world_size"
    if key == "world_size":
        return world_size(config)
    for where in (experiment(config), config, _system(config)):
        if isinstance(where, dict) and key in where and not isinstance(where[key], dict):
            return _value(where[key])
    return None


def known_keys(config: dict) -> set:
    keys = {"gpus", "world_size"}
    for where in (experiment(config), config, _system(config)):
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
    base: Row | None = None  # the fp32 row it is compared with
    one: Row | None = None  # the 1-GPU row its scaling is measured against

    @property
    def precision(self) -> str:
        return str(self.facts.get("precision", MIXED))

    @property
    def depth(self):
        return self.facts.get("depth", MIXED)

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
    def short(self) -> bool:
        return any(t is not None and t < SHORT_RUN_STEPS for t in self.timed)


def placement(device: str, gpus: int) -> str:
    """'CPU', '1 GPU', '4 GPUs': where a row ran, in words."""
    if device == "cpu":
        return "CPU" if gpus <= 1 else f"CPU ×{gpus}"
    if device == MIXED:  # a --group-by row pooling CPU and GPU runs
        return f"CPU and GPU, {gpus} process(es)" if gpus else "CPU and GPU " + MIXED
    if not gpus:
        return "GPUs " + MIXED
    return f"{gpus} GPU" + ("s" if gpus != 1 else "")


def point(config: dict) -> str | None:
    precision, depth = config.get("precision"), config.get("depth")
    if precision is None or depth is None:
        return None
    return f"{precision}, ResNet-{depth}, {placement(device(config), world_size(config))}"


def exclusion(run) -> str | None:
    """Why a run is listed but not averaged in, or None."""
    diverged = _get(run.summary, "train/diverged_at_step")
    if diverged is not None:  # the runner stopped it on a non-finite loss: its state is "failed", but why matters
        return f"diverged at step {int(diverged)}"
    if run.state != "finished":
        return run.state
    loss = run.summary.get("train/loss")
    last = loss.get("last") if isinstance(loss, dict) else loss
    if isinstance(last, (int, float)) and not math.isfinite(last):
        return "diverged (loss not finite)"
    if isinstance(last, str) and last.lower() in ("nan", "inf", "-inf", "infinity"):
        return "diverged (loss not finite)"
    if run.config.get("precision") is None or run.config.get("depth") is None:
        return "not a run of this suite (no precision/depth in its config)"
    return None


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


def build(runs, group_by: list[str] | None = None) -> tuple[list[Row], list[tuple]]:
    """(rows in display order; excluded runs as (name, id, why, point))."""
    rows: dict[tuple, Row] = {}
    excluded = []
    for run in runs:
        why = exclusion(run)
        if why:
            excluded.append((run.name, run.id, why, point(run.config)))
            continue
        facts = settings(run.config)
        facts.update(precision=run.config.get("precision", facts.get("precision")),
                     depth=run.config.get("depth", facts.get("depth")), world_size=world_size(run.config))
        keyed = {k: lookup(run.config, k) for k in group_by} if group_by else facts
        key = tuple(sorted(("world_size" if k == "gpus" else k, v) for k, v in keyed.items()))
        row = rows.get(key)
        if row is None:
            row = rows[key] = Row(key, facts=dict(facts))
        else:
            row.facts = {k: (row.facts[k] if row.facts.get(k, MIXED) == facts.get(k, MIXED) else MIXED)
                         for k in {**row.facts, **facts}}
        row.runs.append((run.id, run_metrics(run.config, run.summary)))
        row.devices.add(device(run.config))
        row.timed.append(timed_steps(run.config, run.summary))
    for row in rows.values():
        for column in COLUMNS:
            values = [m[column] for _, m in row.runs if m.get(column) is not None]
            if values:
                row.values[column] = statistics.median(values)
                row.spread[column] = (min(values), max(values))
        # Time to a target only where every run of the row that asked for it reached it: a median over the
        # runs that happened to get there would flatter the row.
        for pct in sorted({k[len("tta_asked_"):] for _, m in row.runs for k in m if k.startswith("tta_asked_")},
                          key=_pct_order):
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
        if row.short:
            row.flagged |= {c for c in TIMED_COLUMNS if c in row.values}
    # Ratios only between rows identical but for precision (resp. GPU count), from the medians.
    by_key, by_scaling_key = _index(rows.values()), _index(rows.values(), FOLLOW_WORLD_SIZE)
    for row in rows.values():
        ips = row.values.get("images_per_s")
        row.base = _partner(row, by_key, precision="fp32") if row.precision != "fp32" else None
        if row.base and row.base.values.get("images_per_s") and ips:
            row.values["speedup_vs_fp32"] = ips / row.base.values["images_per_s"]
            if row.short or row.base.short:
                row.flagged.add("speedup_vs_fp32")
        if row.base:
            for pct in row.tta:
                a, b = row.values.get(f"tta_s_{pct}"), row.base.values.get(f"tta_s_{pct}")
                if a and b:
                    row.values[f"tta_speedup_{pct}"] = b / a
        row.one = _partner(row, by_scaling_key, FOLLOW_WORLD_SIZE, world_size=1) if row.gpus > 1 else None
        if row.one and row.one.values.get("images_per_s") and ips:
            row.values["scaling_efficiency"] = 100 * ips / (row.gpus * row.one.values["images_per_s"])
            if row.short or row.one.short:
                row.flagged.add("scaling_efficiency")
    order = {p: i for i, p in enumerate(PRECISION_ORDER)}
    return sorted(rows.values(), key=lambda r: (str(r.depth).zfill(4), r.device, r.gpus,
                                                order.get(r.precision, 99), r.precision, str(r.key))), excluded


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


def label(row: Row, keys: list[str]) -> str:
    """The row in words: its precision, then the settings that tell it apart from its neighbours."""
    extra = ", ".join(f"{k} {show(row.facts.get(k))}" for k in keys)
    return row.precision + (f" ({extra})" if extra else "")


def show(value) -> str:
    return "" if value is None else str(value)


def fmt(column: str, value) -> str:
    if value is None:
        return ""
    if column.endswith("bytes_per_s"):
        return f"{value / 1e9:.2f}"
    if column in ("images_per_s", "images_per_s_per_gpu"):
        return f"{value:,.0f}"
    if column == "speedup_vs_fp32" or column.startswith("tta_speedup"):
        return f"{value:.2f}"
    if column.startswith("tta_epochs"):
        return f"{value:g}"
    if column == "energy_per_image_j":
        return f"{value:.4f}"
    return f"{value:.1f}" if abs(value) >= 1 or value == 0 else f"{value:.3g}"


def cell(row: Row, column: str) -> str:
    text = fmt(column, row.values.get(column))
    lo_hi = row.spread.get(column)
    if text and lo_hi and len(row.runs) > 1 and lo_hi[0] != lo_hi[1]:
        text += f" ({fmt(column, lo_hi[0])}–{fmt(column, lo_hi[1])})"
    if text and column in row.flagged:
        text += f" {SHORT_MARK}"
    return text


def targets(rows: list[Row]) -> list[str]:
    """Every target some row asked for, with the runner's defaults: their columns are always in the CSV."""
    return sorted(set(DEFAULT_TARGETS) | {pct for r in rows for pct in r.tta}, key=_pct_order)


def all_columns(rows: list[Row]) -> list[str]:
    """COLUMNS with the time-to-accuracy columns after the images/s speed-up, target by target."""
    fixed = list(COLUMNS)
    at = fixed.index("speedup_vs_fp32") + 1
    return fixed[:at] + tta_columns(targets(rows)) + fixed[at:]


def measured(rows: list[Row]) -> list[str]:
    """Columns at least one row has a figure for: the others are left out of the tables people read."""
    return [c for c in all_columns(rows) if any(r.values.get(c) is not None for r in rows)]


def short_note() -> str:
    return (f"{SHORT_MARK} too short to measure: fewer than {SHORT_RUN_STEPS} timed steps after warm-up "
            f"(train/timed_steps); its images/s and the ratios built on it are not reliable and are left out "
            f"of the Observations.")


def study(rows: list[Row], depth, where: tuple[str, int]) -> list[Row]:
    """The rows of one depth and placement (device, GPU count)."""
    return [r for r in rows if r.depth == depth and (r.device, r.gpus) == where]


def default_where(rows: list[Row], depth, gpus: int | None) -> tuple[str, int]:
    """GPU rows when there are any (the fewest GPUs, or --gpus), else CPU rows."""
    at = [r for r in rows if r.depth == depth] or rows
    pool = [r for r in at if r.device != "cpu"] or at
    if gpus is None:
        gpus = min((r.gpus for r in pool), default=1)
    match = next((r for r in pool if r.gpus == gpus), pool[0] if pool else None)
    return (match.device if match else "cpu"), gpus


def original_table(rows: list[Row], depth, where: tuple[str, int]) -> list[list[str]]:
    """The study's table as it was: Precision | Training Time | Model Size | Bandwidth."""
    out = [["Precision", "Training Time (s)", "Model Size (MiB)", "Bandwidth (GB/s)"]]
    at = study(rows, depth, where)
    keys = distinguishing(at)
    for row in at:
        bandwidth = row.values.get("nvlink_bytes_per_s") if row.gpus > 1 else None
        bandwidth = bandwidth or row.values.get("pcie_bytes_per_s") or row.values.get("busbw_bytes_per_s")
        out.append([label(row, keys) + (f" {SHORT_MARK}" if row.short else ""),
                    fmt("train_time_s", row.values.get("train_time_s")),
                    fmt("ckpt_mib", row.values.get("ckpt_mib")), fmt("pcie_bytes_per_s", bandwidth)])
    return out


def observations(rows: list[Row], depth, where: tuple[str, int]) -> str:
    """Measured ratios against fp32 at one depth and placement, as sentences: no canned prose."""
    at = study(rows, depth, where)
    keys = distinguishing(at)
    place = placement(*where)
    bases = [r for r in at if r.precision == "fp32"]
    if not bases:
        return (f"No finished fp32 run at ResNet-{depth} on {place}: ratios need it as the baseline. "
                f"Precisions present: {', '.join(dict.fromkeys(r.precision for r in at)) or 'none'}.")
    sentences, short = [], [label(r, keys) for r in at if r.short]
    unmatched = [label(r, keys) for r in at if r.precision != "fp32" and r.base is None]
    for row in at:
        if row.precision == "fp32" or row.base is None or row.short or row.base.short:
            continue
        base, parts = row.base, []
        for column, what in (("images_per_s", "throughput"), ("ckpt_mib", "checkpoint size"),
                             ("peak_mem_gib", "peak memory"), ("pcie_bytes_per_s", "PCIe traffic"),
                             ("energy_per_image_j", "energy per image")):
            a, b = row.values.get(column), base.values.get(column)
            if a is not None and b:
                parts.append(f"{what} {a / b:.2f}× fp32's ({fmt(column, a)} vs {fmt(column, b)}"
                             f"{' ' + COLUMNS[column][1] if COLUMNS[column][1] else ''})")
            if column == "images_per_s":  # how fast it learns, right beside how fast it processes images
                parts += _tta_parts(row, base)
        a, b = row.values.get("best_test_acc"), base.values.get("best_test_acc")
        if a is not None and b is not None:
            parts.append(f"best test accuracy {a - b:+.1f} points ({a:.1f}% vs {b:.1f}%)")
        a = row.values.get("lost_update_pct")
        if a is not None:
            b = base.values.get("lost_update_pct")
            parts.append(f"{fmt('lost_update_pct', a)}% of weight updates rounded away "
                         f"(fp32: {fmt('lost_update_pct', b) + '%' if b is not None else 'not measured'})")
        if parts:
            sentences.append(f"{label(row, keys)}: " + "; ".join(parts) + ".")
    left_out = (f" Left out, too short to measure ({SHORT_MARK}): {', '.join(short)}." if short else "")
    if unmatched:
        left_out += f" No fp32 row with the same settings for: {', '.join(unmatched)}."
    if not sentences:
        return f"Nothing to compare with fp32 at ResNet-{depth} on {place} yet." + left_out
    return (f"At ResNet-{depth} on {place}, medians over the runs of each row against the fp32 row with the same "
            f"settings — " + " ".join(sentences) + left_out)


def _tta_parts(row: Row, base: Row) -> list[str]:
    """Time to accuracy against fp32: the highest target both reached (time, epochs, energy), and targets fp32
    reached that this row did not. Only measured crossings; a target not reached is said so, never estimated."""
    parts = []
    both = [pct for pct in row.tta if row.values.get(f"tta_s_{pct}") and base.values.get(f"tta_s_{pct}")]
    if both:
        pct = max(both, key=_pct_order)
        a, b = row.values[f"tta_s_{pct}"], base.values[f"tta_s_{pct}"]
        speed = b / a
        text = (f"time to {pct.replace('_', '.')}% {speed:.2f}× fp32's speed" if speed >= 1
                else f"time to {pct.replace('_', '.')}% {1 / speed:.2f}× fp32's time")
        text += f" ({fmt('tta_s', a)} vs {fmt('tta_s', b)} s"
        ea, eb = row.values.get(f"tta_epochs_{pct}"), base.values.get(f"tta_epochs_{pct}")
        if ea and eb:
            more = 100 * (ea / eb - 1)
            text += (f"; {ea:g} vs {eb:g} epochs, {abs(more):.0f}% {'more' if more > 0 else 'fewer'}" if round(more)
                     else f"; the same {ea:g} epochs")
        ja, jb = row.values.get(f"tta_energy_kj_{pct}"), base.values.get(f"tta_energy_kj_{pct}")
        if ja is not None and jb:
            text += f"; energy {ja / jb:.2f}× fp32's"
        parts.append(text + ")")
    for pct, (reached, asked) in row.tta.items():
        if base.values.get(f"tta_s_{pct}") and asked and reached < asked:
            parts.append(f"{pct.replace('_', '.')}% reached by {reached} of {asked} run(s), which fp32 reached")
    return parts
