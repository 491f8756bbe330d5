"""Runs -> one row per (precision, depth, GPUs): medians and spread over repeats, ratios between rows.

Everything comes from the metric contract (README): summary keys, and facts the runs put in their config
(FLOPs per image, the GPU's peak, link peaks). A missing figure is None (an empty cell), never zero.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

PRECISION_ORDER = ["fp32", "tf32", "amp_fp16", "amp_bf16", "fp16", "bf16"]

# column -> (title, unit) for results.md/.csv, in order
COLUMNS = {
    "train_time_s": ("Training time", "s"),
    "epoch_time_s": ("Time per epoch", "s"),
    "images_per_s": ("Images/s", ""),
    "images_per_s_per_gpu": ("Images/s per GPU", ""),
    "speedup_vs_fp32": ("Speed-up vs fp32", "x"),
    "ckpt_mib": ("Checkpoint", "MiB"),
    "peak_mem_gib": ("Peak memory", "GiB"),
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


def run_metrics(config: dict, summary: dict) -> dict:
    """The per-run figures of a row, before aggregation and ratios."""
    s = lambda *k, agg=None: _get(summary, *k, agg=agg)  # noqa: E731
    c = lambda *k: _get(config, *k)  # noqa: E731
    ips_gpu = s("train/images_per_s_per_gpu") or s("train/images_per_s")
    pcie = _sum(s("nvml/pcie_tx_bytes_per_s_mean"), s("nvml/pcie_rx_bytes_per_s_mean"))
    nvlink = _sum(s("nvml/nvlink_tx_bytes_per_s_mean"), s("nvml/nvlink_rx_bytes_per_s_mean"))
    pcie_peak, nvlink_peak = c("nvml", "pcie_peak_bytes_per_s"), c("nvml", "nvlink_peak_bytes_per_s")
    flops, peak = c("model", "train_flops_per_image"), c("system", "peak_flops_per_s")
    ckpt, mem = s("ckpt/size_bytes"), s("mem/peak_allocated_bytes")
    return {
        "train_time_s": s("time/train_s"),
        "epoch_time_s": s("epoch/time_s", agg="mean"),
        "images_per_s": s("train/images_per_s"),
        "images_per_s_per_gpu": ips_gpu,
        "ckpt_mib": ckpt / 2**20 if ckpt is not None else None,
        "peak_mem_gib": mem / 2**30 if mem is not None else None,
        # TX+RX against both directions' peak
        "pcie_bytes_per_s": pcie,
        "pcie_share": 100 * pcie / (2 * pcie_peak) if pcie is not None and pcie_peak else None,
        "nvlink_bytes_per_s": nvlink,
        "nvlink_share": 100 * nvlink / (2 * nvlink_peak) if nvlink is not None and nvlink_peak else None,
        "busbw_bytes_per_s": s("comm/busbw_bytes_per_s", agg="mean"),
        "best_test_acc": 100 * s("test/best_acc") if s("test/best_acc") is not None else None,
        "last_test_acc": 100 * s("test/last_acc") if s("test/last_acc") is not None else None,
        "energy_per_image_j": s("nvml/energy_per_image_j"),
        "mfu": 100 * flops * ips_gpu / peak if flops and ips_gpu and peak else None,
    }


@dataclass
class Row:
    precision: str
    depth: int
    gpus: int
    runs: list = field(default_factory=list)  # (run id, metrics)
    devices: set = field(default_factory=set)  # "cuda", "cpu"
    values: dict = field(default_factory=dict)  # column -> median
    spread: dict = field(default_factory=dict)  # column -> (min, max) over repeats

    @property
    def key(self):
        return (self.precision, self.depth, self.gpus)


def point(config: dict) -> tuple[str, int, int] | None:
    precision, depth = config.get("precision"), config.get("depth")
    gpus = _get(config, "system", "world_size") or 1
    if precision is None or depth is None:
        return None
    return str(precision), int(depth), int(gpus)


def exclusion(run) -> str | None:
    """Why a run is listed but not averaged in, or None."""
    if run.state != "finished":
        return run.state
    loss = run.summary.get("train/loss")
    last = loss.get("last") if isinstance(loss, dict) else loss
    if isinstance(last, (int, float)) and not math.isfinite(last):
        return "diverged (loss not finite)"
    if isinstance(last, str) and last.lower() in ("nan", "inf", "-inf", "infinity"):
        return "diverged (loss not finite)"
    if point(run.config) is None:
        return "not a run of this suite (no precision/depth in its config)"
    return None


def build(runs) -> tuple[list[Row], list[tuple]]:
    """(rows sorted by depth, GPUs, precision; excluded runs as (name, id, state, point))."""
    rows: dict[tuple, Row] = {}
    excluded = []
    for run in runs:
        why = exclusion(run)
        if why:
            excluded.append((run.name, run.id, why, point(run.config)))
            continue
        key = point(run.config)
        row = rows.setdefault(key, Row(*key))
        row.runs.append((run.id, run_metrics(run.config, run.summary)))
        row.devices.add(str(run.config.get("system", {}).get("device", "?")))
    for row in rows.values():
        for column in COLUMNS:
            values = [m[column] for _, m in row.runs if m.get(column) is not None]
            if values:
                row.values[column] = statistics.median(values)
                row.spread[column] = (min(values), max(values))
    for row in rows.values():  # ratios between rows, from the medians
        base = rows.get(("fp32", row.depth, row.gpus))
        if base and base.values.get("images_per_s") and row.values.get("images_per_s"):
            row.values["speedup_vs_fp32"] = row.values["images_per_s"] / base.values["images_per_s"]
        one = rows.get((row.precision, row.depth, 1))
        if one and one.values.get("images_per_s") and row.values.get("images_per_s"):
            row.values["scaling_efficiency"] = 100 * row.values["images_per_s"] / (row.gpus * one.values["images_per_s"])
    order = {p: i for i, p in enumerate(PRECISION_ORDER)}
    return sorted(rows.values(), key=lambda r: (r.depth, r.gpus, order.get(r.precision, 99), r.precision)), excluded


def fmt(column: str, value) -> str:
    if value is None:
        return ""
    if column.endswith("bytes_per_s"):
        return f"{value / 1e9:.2f}"
    if column in ("images_per_s", "images_per_s_per_gpu"):
        return f"{value:,.0f}"
    if column == "speedup_vs_fp32":
        return f"{value:.2f}"
    if column == "energy_per_image_j":
        return f"{value:.4f}"
    return f"{value:.1f}" if abs(value) >= 1 or value == 0 else f"{value:.3g}"


def cell(row: Row, column: str) -> str:
    text = fmt(column, row.values.get(column))
    lo_hi = row.spread.get(column)
    if text and lo_hi and len(row.runs) > 1 and lo_hi[0] != lo_hi[1]:
        text += f" ({fmt(column, lo_hi[0])}–{fmt(column, lo_hi[1])})"
    return text


def original_table(rows: list[Row], depth: int, gpus: int) -> list[list[str]]:
    """The study's table as it was: Precision | Training Time | Model Size | Bandwidth."""
    out = [["Precision", "Training Time (s)", "Model Size (MiB)", "Bandwidth (GB/s)"]]
    for row in rows:
        if row.depth == depth and row.gpus == gpus:
            bandwidth = row.values.get("nvlink_bytes_per_s") if gpus > 1 else None
            bandwidth = bandwidth or row.values.get("pcie_bytes_per_s") or row.values.get("busbw_bytes_per_s")
            out.append([row.precision, fmt("train_time_s", row.values.get("train_time_s")),
                        fmt("ckpt_mib", row.values.get("ckpt_mib")), fmt("pcie_bytes_per_s", bandwidth)])
    return out


def observations(rows: list[Row], depth: int, gpus: int) -> str:
    """Measured ratios against fp32 at one depth and GPU count, as sentences: no canned prose."""
    at = {r.precision: r for r in rows if r.depth == depth and r.gpus == gpus}
    base = at.get("fp32")
    if base is None:
        return (f"No finished fp32 run at ResNet-{depth} on {gpus} GPU(s): ratios need it as the baseline. "
                f"Precisions present: {', '.join(at) or 'none'}.")
    sentences = []
    for precision, row in at.items():
        if precision == "fp32":
            continue
        parts = []
        for column, what in (("images_per_s", "throughput"), ("ckpt_mib", "checkpoint size"),
                             ("peak_mem_gib", "peak memory"), ("pcie_bytes_per_s", "PCIe traffic"),
                             ("energy_per_image_j", "energy per image")):
            if column == "peak_mem_gib" and "cpu" in row.devices | base.devices:
                continue  # on CPU it is the process's RSS, not the precision's allocator footprint
            a, b = row.values.get(column), base.values.get(column)
            if a is not None and b:
                parts.append(f"{what} {a / b:.2f}× fp32's ({fmt(column, a)} vs {fmt(column, b)}"
                             f"{' ' + COLUMNS[column][1] if COLUMNS[column][1] else ''})")
        a, b = row.values.get("best_test_acc"), base.values.get("best_test_acc")
        if a is not None and b is not None:
            parts.append(f"best test accuracy {a - b:+.1f} points ({a:.1f}% vs {b:.1f}%)")
        if parts:
            sentences.append(f"{precision}: " + "; ".join(parts) + ".")
    if not sentences:
        return f"Only fp32 finished at ResNet-{depth} on {gpus} GPU(s): nothing to compare yet."
    return (f"At ResNet-{depth} on {gpus} GPU(s), medians over the runs of each precision — " + " ".join(sentences))
