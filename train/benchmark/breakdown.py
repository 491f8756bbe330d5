"""The benchmark's side-by-side table of step time by operation class (--profile): one column per point, read
from each point's run summary (prof/*, docs/profile.md)."""

from __future__ import annotations

from train.measure.profile_classes import CLASS_NAMES, CLASSES


def _label(r: dict) -> str:
    extra = "" if r.get("compile", "none") == "none" else f" {r['compile']}"
    return f"{r['model'].replace('resnet', 'r')} {r['precision']}{extra}"  # r18 bf16, vit-s fp8_rowwise


def _fp32(points: list[dict], r: dict) -> dict | None:
    for x in points:
        if x["precision"] == "fp32" and x["model"] == r["model"] and x.get("compile") == r.get("compile") \
                and x.get("loader") == r.get("loader"):
            return x
    return None


def profile_table(rows: list[dict]) -> str:
    """Rows: the classes, then the profiled step, the classes' sum, the unprofiled (timed) step and the
    convolutions' achieved rate; a cell: ms (share of the profiled step) and, beside fp32, the class's speed-up."""
    points, seen = [], set()
    for r in sorted(rows, key=lambda r: r.get("index", 0)):
        if r.get("kind", "runner") == "runner" and "prof/step_ms" in r and r["index"] not in seen:
            seen.add(r["index"])
            points.append(r)
    if not points:
        return "  (no point was profiled)"
    lines = [("class", *(_label(r) for r in points))]
    for cls in CLASSES:
        cells = []
        for r in points:
            ms, base = r.get(f"prof/{cls}_ms"), _fp32(points, r)
            cell = f"{ms:,.1f} ({r[f'prof/{cls}_share']:.0%})"
            if base is not None and base is not r and ms and base.get(f"prof/{cls}_ms"):
                cell += f" {base[f'prof/{cls}_ms'] / ms:.2f}x"
            cells.append(cell)
        lines.append((CLASS_NAMES[cls], *cells))
    lines.append(("profiled step", *(f"{r['prof/step_ms']:,.1f}" for r in points)))
    lines.append(("sum of classes", *(f"{sum(r[f'prof/{c}_ms'] for c in CLASSES):,.1f}" for r in points)))
    lines.append(("timed step (unprofiled)", *(
        f"{1e3 * r['train/step_time_s']:,.1f} ({r['prof/step_ms'] / (1e3 * r['train/step_time_s']):.2f}x)"
        if r.get("train/step_time_s") else "-" for r in points)))
    lines.append(("conv/matmul GFLOP/s", *(
        f"{r['prof/conv_matmul_flops_per_s'] / 1e9:,.1f}" if r.get("prof/conv_matmul_flops_per_s") else "-"
        for r in points)))
    lines.append(("optimizer GB/s", *(
        f"{r['prof/optimizer_bytes_per_s'] / 1e9:,.1f}" if r.get("prof/optimizer_bytes_per_s") else "-"
        for r in points)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join("  " + "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                                      enumerate(zip(line, widths))).rstrip() for line in lines)
