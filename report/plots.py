"""The report's PNG plots (matplotlib, headless). Each returns its file name, or None when the runs hold no
data for it (CPU runs have no NVML figures, one GPU count has no scaling)."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from report.table import PRECISION_ORDER, Row  # noqa: E402

COLOURS = dict(zip(PRECISION_ORDER, ["#4c72b0", "#8172b3", "#dd8452", "#c44e52", "#55a868", "#937860"]))


def _save(fig, out_dir: str, name: str) -> str:
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, name), dpi=110)
    plt.close(fig)
    return name


def _precisions(rows):
    present = {r.precision for r in rows}
    return [p for p in PRECISION_ORDER if p in present] + sorted(present - set(PRECISION_ORDER))


def throughput(rows: list[Row], gpus: int, out_dir: str) -> str | None:
    rows = [r for r in rows if r.gpus == gpus and r.values.get("images_per_s")]
    if not rows:
        return None
    depths = sorted({r.depth for r in rows})
    precisions = _precisions(rows)
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(precisions)
    for i, p in enumerate(precisions):
        xs, ys = [], []
        for j, d in enumerate(depths):
            r = next((r for r in rows if r.depth == d and r.precision == p), None)
            if r:
                xs.append(j + (i - (len(precisions) - 1) / 2) * width)
                ys.append(r.values["images_per_s"])
        ax.bar(xs, ys, width, label=p, color=COLOURS.get(p))
    ax.set_xticks(range(len(depths)), [f"ResNet-{d}" for d in depths])
    ax.set_ylabel("images/s (median)")
    ax.set_title(f"Training throughput by precision and depth, {gpus} GPU(s)")
    ax.legend(fontsize=8)
    return _save(fig, out_dir, "throughput.png")


def scaling(rows: list[Row], depth: int, out_dir: str) -> str | None:
    rows = [r for r in rows if r.depth == depth and r.values.get("images_per_s")]
    if len({r.gpus for r in rows}) < 2:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for p in _precisions(rows):
        line = sorted((r.gpus, r.values["images_per_s"]) for r in rows if r.precision == p)
        ax.plot([g for g, _ in line], [v for _, v in line], marker="o", label=p, color=COLOURS.get(p))
    ax.set_xlabel("GPUs")
    ax.set_ylabel("images/s, whole job (median)")
    ax.set_title(f"Scaling with GPU count, ResNet-{depth}")
    ax.legend(fontsize=8)
    return _save(fig, out_dir, "scaling.png")


def memory_and_size(rows: list[Row], depth: int, gpus: int, out_dir: str) -> str | None:
    rows = [r for r in rows if r.depth == depth and r.gpus == gpus]
    if not rows:
        return None
    precisions = _precisions(rows)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    for ax, column, label in ((axes[0], "peak_mem_gib", "peak memory (GiB)"),
                              (axes[1], "ckpt_mib", "checkpoint (MiB)")):
        values = [next((r.values.get(column) for r in rows if r.precision == p), None) for p in precisions]
        ax.bar(precisions, [v or 0 for v in values], color=[COLOURS.get(p) for p in precisions])
        for x, v in enumerate(values):
            ax.text(x, v or 0, "n/a" if v is None else f"{v:.1f}", ha="center", va="bottom", fontsize=8)
        ax.set_ylabel(label)
        ax.tick_params(axis="x", labelrotation=30)
    fig.suptitle(f"Memory and model size by precision, ResNet-{depth}, {gpus} GPU(s)")
    return _save(fig, out_dir, "memory_size.png")


def accuracy_vs_time(rows: list[Row], out_dir: str) -> str | None:
    points = [(r, m) for r in rows for _, m in r.runs
              if m.get("best_test_acc") is not None and m.get("train_time_s") is not None]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for p in _precisions([r for r, _ in points]):
        xs = [m["train_time_s"] for r, m in points if r.precision == p]
        ys = [m["best_test_acc"] for r, m in points if r.precision == p]
        ax.scatter(xs, ys, label=p, color=COLOURS.get(p))
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("best test accuracy (%)")
    ax.set_title("Accuracy against training time, every run")
    ax.legend(fontsize=8)
    return _save(fig, out_dir, "accuracy_time.png")


BANDWIDTH_KEYS = ["nvml/pcie_tx_bytes_per_s", "nvml/pcie_rx_bytes_per_s", "nvml/nvlink_tx_bytes_per_s",
                  "nvml/nvlink_rx_bytes_per_s", "comm/busbw_bytes_per_s"]


def bandwidth_over_steps(runs_by_precision: dict, out_dir: str) -> str | None:
    """One run per precision: its link traffic per logged window, on the train/step axis."""
    series = {}
    for precision, run in runs_by_precision.items():
        rows = run.history(BANDWIDTH_KEYS)
        for key in BANDWIDTH_KEYS:
            points = [(row["train/step"], row[key]) for row in rows if row.get(key) is not None]
            if points:
                series[(precision, key)] = points
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(8, 4))
    styles = {"pcie_tx": "-", "pcie_rx": "--", "nvlink_tx": "-.", "nvlink_rx": ":", "busbw": (0, (1, 3))}
    for (precision, key), points in series.items():
        short = key.split("/")[1].removesuffix("_bytes_per_s")
        ax.plot([s for s, _ in points], [v / 1e9 for _, v in points], label=f"{precision} {short}",
                color=COLOURS.get(precision), linestyle=styles.get(short, "-"))
    ax.set_xlabel("train/step")
    ax.set_ylabel("GB/s")
    ax.set_title("Bandwidth over training steps")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, out_dir, "bandwidth.png")
