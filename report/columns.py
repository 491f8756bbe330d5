"""The report's columns: for each its title and unit (results.md, .csv), in order, the time-to-accuracy columns
per target, and which of them rest on step timing (flagged in a run too short to measure)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from train.contract.experiment import DEFAULT_TARGETS as DEFAULT_TARGET_FRACTIONS
from train.contract.metrics import PROFILE_CLASS_NAMES, PROFILE_CLASSES, target_pct

if TYPE_CHECKING:
    from report.rows import Row

# A run's images/s is the median over its timed steps (after warm-up); below this many the median is mostly
# noise (start-up, first-iteration allocations, clock ramp-up), so its throughput and every ratio built on it
# are flagged and kept out of the Observations.
SHORT_RUN_STEPS = 50
SHORT_MARK = "†"
# figures measured over a benchmark's interleaved rounds (train/contract/rounds.py), and ratios whose range over
# rounds is too wide to conclude
ROUNDS_MARK = "§"
NOISY_MARK = "!"
# energy figures measured as the integral of sampled power: the GPU had no energy counter (nvml/energy_source)
INTEGRAL_MARK = "‡"

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
    "busbw_share": ("Busbw % of node's all-reduce ceiling", "%"),
    "scaling_efficiency": ("Scaling eff. vs 1 GPU", "%"),
    "best_test_acc": ("Best test acc", "%"),
    "last_test_acc": ("Last test acc", "%"),
    "energy_per_image_j": ("Energy/image", "J"),
    "energy_above_idle_per_image_j": ("Energy/image above idle", "J"),
    "mfu": ("MFU vs datasheet", "%"),
    "mfu_vs_bf16_peak": ("fp8 MFU vs bf16 peak", "%"),  # fp8 rows: "MFU" is against the fp8 peak
    "mfu_measured": ("MFU vs measured peak", "%"),
    # --profile (docs/profile.md): the profiled step and its classes, only where a run was profiled
    "prof_step_ms": ("Profiled step", "ms"),
    **{f"prof_{c}_ms": (f"Profiled: {PROFILE_CLASS_NAMES[c]}", "ms") for c in PROFILE_CLASSES},
    "prof_conv_gflops": ("Conv/matmul achieved", "GFLOP/s"),
    "prof_conv_peak_pct": ("Conv/matmul % of datasheet peak", "%"),
    "prof_conv_nodecheck_pct": ("Conv/matmul % of node-check ceiling", "%"),
    # the optimizer's least traffic (weights, gradients, state) over its profiled time: a memory-bound class
    "prof_optimizer_gbps": ("Optimizer traffic", "GB/s"),
    "prof_optimizer_copy_pct": ("Optimizer % of node-check memory copy", "%"),
}
PROFILE_COLUMNS = [f"prof_{c}_ms" for c in PROFILE_CLASSES]
# Time to accuracy: per target (a percentage as in the summary key time_to_acc/<pct>), four columns. The
# runner's default targets always have their columns in results.csv; other targets a run asked for are added.
DEFAULT_TARGETS = tuple(target_pct(t) for t in DEFAULT_TARGET_FRACTIONS)  # ("80", "90", "93", "94")
TTA_PARTS = {  # column prefix -> (title with {pct}, unit)
    "tta_s": ("Time to {pct}%", "s"),
    "tta_speedup": ("Speed-up to {pct}% vs fp32", "x"),
    "tta_epochs": ("Epochs to {pct}%", ""),
    "tta_energy_kj": ("Energy to {pct}%", "kJ"),
}


def energy_column(column: str) -> bool:
    """A column measured with NVML's energy counter, or its power integral."""
    return column.startswith(("energy_", "tta_energy_kj"))


# figures that come from step timing: unreliable in a run too short to measure
TIMED_COLUMNS = ("images_per_s", "images_per_s_per_gpu", "speedup_vs_fp32", "scaling_efficiency", "mfu",
                 "mfu_vs_bf16_peak", "mfu_measured")


def tta_columns(targets) -> list[str]:
    return [f"{part}_{pct}" for pct in targets for part in TTA_PARTS]


def column_info(column: str) -> tuple[str, str]:
    """(title, unit) of a fixed column or a time-to-accuracy one."""
    if column in COLUMNS:
        return COLUMNS[column]
    part, pct = column.rsplit("_", 1) if not column.startswith("tta_speedup") else ("tta_speedup", column[12:])
    title, unit = TTA_PARTS[part]
    return title.format(pct=pct.replace("_", ".")), unit


def pct_order(pct: str) -> float:
    return float(pct.replace("_", "."))


def targets(rows: list[Row]) -> list[str]:
    """Every target some row asked for, with the runner's defaults: their columns are always in the CSV."""
    return sorted(set(DEFAULT_TARGETS) | {pct for r in rows for pct in r.tta}, key=pct_order)


def all_columns(rows: list[Row]) -> list[str]:
    """COLUMNS with the time-to-accuracy columns after the images/s speed-up, target by target."""
    fixed = list(COLUMNS)
    at = fixed.index("speedup_vs_fp32") + 1
    return fixed[:at] + tta_columns(targets(rows)) + fixed[at:]


def measured(rows: list[Row]) -> list[str]:
    """Columns at least one row has a figure for: the others are left out of the tables people read."""
    return [c for c in all_columns(rows) if any(r.values.get(c) is not None for r in rows)]
