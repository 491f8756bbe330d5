"""How the report writes things: a figure in its column's format, a cell with its spread and flag, a row and
where it ran in words."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from report.columns import INTEGRAL_MARK, NOISY_MARK, ROUNDS_MARK, SHORT_MARK, SHORT_RUN_STEPS, energy_column
from report.figures import arch, device, world_size
from train.contract.rounds import MAX_SPREAD

if TYPE_CHECKING:
    from report.rows import Row

MIXED = "(varies)"  # a setting that differs between the runs of a --group-by row


def placement(device: str, gpus: int) -> str:
    """'CPU', '1 GPU', '4 GPUs': where a row ran, in words."""
    if device == "cpu":
        return "CPU" if gpus <= 1 else f"CPU ×{gpus}"
    if device == MIXED:  # a --group-by row pooling CPU and GPU runs
        return f"CPU and GPU, {gpus} process(es)" if gpus else "CPU and GPU " + MIXED
    if not gpus:
        return "GPUs " + MIXED
    return f"{gpus} GPU" + ("s" if gpus != 1 else "")


def model_title(name) -> str:
    """resnet18 -> ResNet-18, vit-s -> ViT-S: a model as the report's titles and sentences name it."""
    name = str(name)
    if name.startswith("resnet"):
        return f"ResNet-{name[len('resnet'):]}"
    if name.startswith("vit-"):
        return f"ViT-{name[len('vit-'):].upper()}"
    return name


def point(config: dict) -> str | None:
    """A run's point of the grid in words (precision, model, placement), for the runs left out of the rows."""
    precision, model = config.get("precision"), arch(config)
    if precision is None or model is None:
        return None
    return f"{precision}, {model_title(model)}, {placement(device(config), world_size(config))}"


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
    if column in ("energy_per_image_j", "energy_above_idle_per_image_j"):
        return f"{value:.4f}"
    return f"{value:.1f}" if abs(value) >= 1 or value == 0 else f"{value:.3g}"


def cell(row: Row, column: str) -> str:
    text = fmt(column, row.values.get(column))
    lo_hi = row.spread.get(column)
    over_rounds = column in row.over_rounds
    if text and lo_hi and (len(row.runs) > 1 or over_rounds) and lo_hi[0] != lo_hi[1]:
        text += f" ({fmt(column, lo_hi[0])}–{fmt(column, lo_hi[1])})"
    if text and over_rounds:
        text += f" {ROUNDS_MARK}" + (f" {NOISY_MARK}" if column in row.noisy else "")
    if text and column in row.flagged:
        text += f" {SHORT_MARK}"
    if text and row.integral_energy and energy_column(column):
        text += f" {INTEGRAL_MARK}"
    return text


# What Markdown would read as markup in run names, settings and paths: HTML tags and entities (which
# renderers such as pandoc and MkDocs pass through), table cell ends, emphasis, code, links, strikethrough,
# math. `_` only where it can open or close emphasis: inside a word (amp_bf16, batch_size) it is text.
_MARKUP = re.compile(r"[\\`*\[\]<>|&~$^]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def md(text) -> str:
    """`text` as Markdown that renders as that very text, on one line: a table cell, a list item."""
    return _MARKUP.sub(lambda m: "\\" + m.group(0), " ".join(str(text).splitlines()))


def integral_note() -> str:
    return (f"{INTEGRAL_MARK} energy from the integral of sampled power: a GPU of the row has no energy counter "
            f"(nvml/energy_source); elsewhere the counter's. Above idle: less idle power before training × the "
            f"training seconds.")


def rounds_note() -> str:
    return (f"{ROUNDS_MARK} measured in a benchmark's interleaved rounds (python -m train.benchmark; bench/*): "
            f"images/s is the median over the point's rounds, each round's from its median step after its warm-up "
            f"steps, (min–max) over rounds; a speed-up is the median of the per-round ratios, paired within each "
            f"round of one invocation, (min–max) over rounds. Rounds another process disturbed (a step over twice "
            f"the point's median) are left out.")


def noisy_note() -> str:
    return (f"{NOISY_MARK} range over rounds wider than {MAX_SPREAD:.0%} of the ratio: too wide to conclude (a busy "
            f"machine?); left out of the Observations.")


def short_note() -> str:
    return (f"{SHORT_MARK} too short to measure: fewer than {SHORT_RUN_STEPS} timed steps after warm-up "
            f"(train/timed_steps); its images/s and the ratios built on it are not reliable and are left out "
            f"of the Observations.")
