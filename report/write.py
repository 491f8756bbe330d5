"""results.csv, results.md and the self-contained report.html."""

from __future__ import annotations

import base64
import csv
import html
import os

from report.table import COLUMNS, Row, cell


def header() -> list[str]:
    return ["Precision", "Depth", "GPUs", "Runs"] + [f"{t} ({u})" if u else t for t, u in COLUMNS.values()]


def csv_rows(rows: list[Row]) -> list[list]:
    """Medians with full precision, and min/max over repeats; empty where a figure is missing."""
    out = [["precision", "depth", "gpus", "runs"] + [c for col in COLUMNS for c in (col, f"{col}_min", f"{col}_max")]]
    for r in rows:
        line = [r.precision, r.depth, r.gpus, len(r.runs)]
        for col in COLUMNS:
            lo, hi = r.spread.get(col, (None, None))
            line += ["" if v is None else repr(v) for v in (r.values.get(col), lo, hi)]
        out.append(line)
    return out


def write_csv(rows: list[Row], path: str) -> None:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(csv_rows(rows))


def _md_table(lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(lines[0]) + " |", "|" + "---|" * len(lines[0])]
    out += ["| " + " | ".join(str(c) for c in line) + " |" for line in lines[1:]]
    return "\n".join(out)


def table_lines(rows: list[Row]) -> list[list[str]]:
    return [header()] + [[r.precision, str(r.depth), str(r.gpus), str(len(r.runs))] + [cell(r, c) for c in COLUMNS]
                         for r in rows]


def excluded_lines(excluded: list[tuple]) -> list[list[str]]:
    return [["Run", "Id", "State", "Point"]] + [
        [name, run_id, state, f"{p[0]}, ResNet-{p[1]}, {p[2]} GPU(s)" if p else ""]
        for name, run_id, state, p in excluded]


def write_markdown(path: str, *, source: str, hardware: str, rows, excluded, original, depth, gpus, observations,
                   plots: list[str]) -> None:
    parts = [f"# Results: precision × depth × GPUs\n\nSource: `{source}`. Hardware: {hardware}.\n",
             f"## The study's table (ResNet-{depth}, {gpus} GPU(s))\n", _md_table(original),
             "\n### Observations\n", observations + "\n",
             "## All points\n",
             "Medians over repeated runs, with (min–max) where they differ; empty cells: not measured by those "
             "runs (CPU runs have no NVML figures, 1-GPU runs no all-reduce).\n",
             _md_table(table_lines(rows)) if rows else "No finished runs.",
             ]
    if excluded:
        parts += ["\n## Runs not included\n", _md_table(excluded_lines(excluded))]
    if plots:
        parts += ["\n## Plots\n"] + [f"![{p}]({p})" for p in plots]
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")


def _html_table(lines: list[list[str]], cls: str) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in lines[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in line) + "</tr>" for line in lines[1:])
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%;margin:1em 0;display:block}
.note{color:#555}"""

# The page reports whether every plot decoded: a headless browser test reads this back from the DOM.
CHECK = """<script>window.addEventListener('load',()=>{const imgs=[...document.images];
document.body.dataset.imagesOk=String(imgs.length>0&&imgs.every(i=>i.complete&&i.naturalWidth>0));
document.body.dataset.images=String(imgs.length);});</script>"""


def write_html(path: str, out_dir: str, *, source: str, hardware: str, rows, excluded, original, depth, gpus,
               observations, plots: list[str]) -> None:
    images = []
    for name in plots:
        data = base64.b64encode(open(os.path.join(out_dir, name), "rb").read()).decode()
        images.append(f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">')
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Results: precision × depth × GPUs</title>"
             f"<style>{STYLE}</style>{CHECK}</head><body>",
             "<h1>Results: precision × depth × GPUs</h1>",
             f"<p class='note'>Source: {html.escape(source)}. Hardware: {html.escape(hardware)}.</p>",
             f"<h2>The study's table (ResNet-{depth}, {gpus} GPU(s))</h2>", _html_table(original, "original"),
             f"<h3>Observations</h3><p>{html.escape(observations)}</p>",
             "<h2>All points</h2><p class='note'>Medians over repeated runs, (min–max) where they differ; empty "
             "cells: not measured by those runs.</p>",
             _html_table(table_lines(rows), "points") if rows else "<p>No finished runs.</p>"]
    if excluded:
        parts += ["<h2>Runs not included</h2>", _html_table(excluded_lines(excluded), "excluded")]
    if images:
        parts += ["<h2>Plots</h2>"] + images
    parts.append("</body></html>")
    with open(path, "w") as f:
        f.write("\n".join(parts))

