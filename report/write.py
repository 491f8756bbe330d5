"""results.csv, results.md and the self-contained report.html."""

from __future__ import annotations

import base64
import csv
import html
import json
import os

from report.columns import SHORT_MARK, all_columns, column_info, measured
from report.compare import common, differing
from report.formatting import cell, integral_note, md, model_title, noisy_note, rounds_note, short_note
from report.rows import Row


def csv_rows(rows: list[Row]) -> list[list]:
    """Medians with full precision, and min/max over repeats; empty where a figure is missing. Every column is
    always there (even one no row measured), so scripts reading the CSV see one header."""
    columns = all_columns(rows)
    out = [["precision", "model", "depth", "gpus", "device", "runs", "bench_rounds", "too_short", "timed_steps_min",
            "settings", "energy_source"]
           + [c for col in columns for c in (col, f"{col}_min", f"{col}_max")]]
    for r in rows:
        timed = [t for t in r.timed if t is not None]
        line = [r.precision, r.model, r.depth, r.gpus, r.device, len(r.runs), len(r.round_rates()) or "",
                str(r.short).lower(),
                min(timed) if timed else "", json.dumps(r.facts, sort_keys=True, default=str),
                "+".join(sorted(r.energy_sources))]
        for col in columns:
            lo, hi = r.spread.get(col, (None, None))
            line += ["" if v is None else repr(v) for v in (r.values.get(col), lo, hi)]
        out.append(line)
    return out


def write_csv(rows: list[Row], path: str) -> None:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(csv_rows(rows))


def table_lines(rows: list[Row]) -> list[list[str]]:
    """The all-points table: settings that tell rows apart as columns, then the columns some row measured."""
    keys, columns = differing(rows), measured(rows)
    return [_head(keys, columns)] + [_settings(r, keys) + [cell(r, c) for c in columns] for r in rows]


def table_values(rows: list[Row]) -> tuple[list[str], list[list]]:
    """table_lines' columns and rows with the measured cells as numbers (the medians; None where missing), for a
    table a user sorts and filters (the W&B Table of `--publish`)."""
    keys, columns = differing(rows), measured(rows)
    # Settings stay text (a pooled row's are "mixed"), as a Table column holds one type; the run count is one.
    return _head(keys, columns), [_settings(r, keys)[:-1] + [len(r.runs)] + [r.values.get(c) for c in columns]
                                  for r in rows]


def _head(keys: list[str], columns: list[str]) -> list[str]:
    return ["Precision", "Model", "GPUs", *keys, "Runs"] + [
        f"{column_info(c)[0]} ({column_info(c)[1]})" if column_info(c)[1] else column_info(c)[0] for c in columns]


def _settings(r: Row, keys: list[str]) -> list[str]:
    return [r.precision + (f" {SHORT_MARK}" if r.short else ""), model_title(r.model), r.where,
            *(_setting(r.facts.get(k)) for k in keys), str(len(r.runs))]


def _setting(value) -> str:
    return "" if value is None else str(value)


def common_line(rows: list[Row]) -> str:
    same, lacking = common(rows)
    if not same:
        return ""
    return ("Common settings: " + ", ".join(f"{k} {_setting(v) or 'unset'}" for k, v in same.items()) + "."
            + (f" ({lacking} row(s), from older runs, did not record all of these.)" if lacking else ""))


def excluded_lines(excluded: list[tuple]) -> list[list[str]]:
    return [["Run", "Id", "State", "Point"]] + [[name, run_id, state, p or ""] for name, run_id, state, p in excluded]


def unreadable_lines(unreadable) -> list[list[str]]:
    return [["File", "Why"]] + [[u.path, u.reason] for u in unreadable]


def _md_table(lines: list[list[str]]) -> str:
    """Every cell Markdown-safe: a run named `a|b` or `<img ...>` is text in its cell, not a cell end or HTML."""
    out = ["| " + " | ".join(md(c) for c in lines[0]) + " |", "|" + "---|" * len(lines[0])]
    out += ["| " + " | ".join(md(c) for c in line) + " |" for line in lines[1:]]
    return "\n".join(out)


def _notes(rows) -> list[str]:
    notes = ["Medians over repeated runs (seeds), with (min–max) where they differ. A row is one experiment: "
             "runs that differ in any setting but the seed are separate rows. Empty cells: not measured by "
             "those runs; columns no row measured are left out (results.csv keeps them). Time to a test "
             "accuracy (training time, evaluation excluded) is given only where every run of the row reached it; "
             "its speed-up is fp32's time over the row's."]
    if any(r.over_rounds for r in rows):
        notes.append(rounds_note())
    if any(r.noisy for r in rows):
        notes.append(noisy_note())
    if any(r.short for r in rows):
        notes.append(short_note())
    if any(r.integral_energy for r in rows):
        notes.append(integral_note())
    if common_line(rows):
        notes.append(common_line(rows))
    return notes


def write_markdown(path: str, *, source: str, provenance, rows, excluded, unreadable, original, title,
                   observations, plots: list[str]) -> None:
    # names, settings and paths come from the runs and the user: each is escaped (md), never markup
    parts = ["# Results: precision × model × GPUs\n", f"Source: {md(source)}.\n"]
    parts += [f"- **{md(fact)}:** {md(text)}" for fact, text in provenance]
    parts += [f"\n## The study's table ({md(title)})\n", _md_table(original),
              "\n### Observations\n", md(observations) + "\n", "## All points\n"]
    parts += [md(n) + "\n" for n in _notes(rows)]
    parts.append(_md_table(table_lines(rows)) if rows else "No finished runs.")
    if excluded:
        parts += ["\n## Runs not included\n", _md_table(excluded_lines(excluded))]
    if unreadable:
        parts += ["\n## Runs that could not be read\n", _md_table(unreadable_lines(unreadable))]
    if plots:
        parts += ["\n## Plots\n"] + [f"![{p}]({p})" for p in plots]
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")


def _html_table(lines: list[list[str]], cls: str) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in lines[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in line) + "</tr>" for line in lines[1:])
    # wide tables scroll inside their own box instead of widening the page
    return f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;padding:0 1em;max-width:1200px;color:#222}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:1em 0;font-size:12px}th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f3f3f3;vertical-align:bottom}td{white-space:nowrap}td:first-child,th:first-child{text-align:left}
table.excluded td,table.unreadable td{white-space:normal;text-align:left}
img{max-width:100%;margin:1em 0;display:block}.note{color:#555}dl.provenance{display:grid;
grid-template-columns:max-content auto;gap:2px 12px;font-size:14px}dl.provenance dt{font-weight:600}dl.provenance dd{margin:0}"""

# The page reports whether every plot decoded and whether it fits the window (no sideways scrolling of the
# whole page): a headless browser test reads these back from the DOM.
CHECK = """<script>window.addEventListener('load',()=>{const imgs=[...document.images];
document.body.dataset.imagesOk=String(imgs.length>0&&imgs.every(i=>i.complete&&i.naturalWidth>0));
document.body.dataset.images=String(imgs.length);
document.body.dataset.pageWidth=String(document.documentElement.scrollWidth);
document.body.dataset.windowWidth=String(window.innerWidth);});</script>"""


def write_html(path: str, out_dir: str, *, source: str, provenance, rows, excluded, unreadable, original, title,
               observations, plots: list[str]) -> None:
    images = []
    for name in plots:
        data = base64.b64encode(open(os.path.join(out_dir, name), "rb").read()).decode()
        images.append(f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">')
    facts = "".join(f"<dt>{html.escape(f)}</dt><dd>{html.escape(t)}</dd>" for f, t in provenance)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Results: precision × model × GPUs</title>"
             f"<meta name='viewport' content='width=device-width'><style>{STYLE}</style>{CHECK}</head><body>",
             "<h1>Results: precision × model × GPUs</h1>",
             f"<p class='note'>Source: {html.escape(source)}.</p><dl class='provenance'>{facts}</dl>",
             f"<h2>The study's table ({html.escape(title)})</h2>", _html_table(original, "original"),
             f"<h3>Observations</h3><p>{html.escape(observations)}</p>", "<h2>All points</h2>"]
    parts += [f"<p class='note'>{html.escape(n)}</p>" for n in _notes(rows)]
    parts.append(_html_table(table_lines(rows), "points") if rows else "<p>No finished runs.</p>")
    if excluded:
        parts += ["<h2>Runs not included</h2>", _html_table(excluded_lines(excluded), "excluded")]
    if unreadable:
        parts += ["<h2>Runs that could not be read</h2>", _html_table(unreadable_lines(unreadable), "unreadable")]
    if images:
        parts += ["<h2>Plots</h2>"] + images
    parts.append("</body></html>")
    with open(path, "w") as f:
        f.write("\n".join(parts))
