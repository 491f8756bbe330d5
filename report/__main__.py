"""python -m report SOURCE [--out DIR]: the study's results table, plots and page from a set of runs.

SOURCE is a folder of W&B offline runs (read with W&B's own reader) or ENTITY/PROJECT[/SWEEP_ID] (W&B's API).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter

from report import plots
from report.collect import SourceError, collect
from report.table import build, observations, original_table
from report.write import write_csv, write_html, write_markdown


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        sys.stderr.write(f"error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def parse(argv):
    p = _Parser(prog="python -m report", description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    p.add_argument("source", help="folder of offline runs (e.g. runs/) or ENTITY/PROJECT[/SWEEP_ID]")
    p.add_argument("--out", default="report_out", help="output folder (default: report_out)")
    p.add_argument("--group", help="W&B group to read (API source)")
    p.add_argument("--sweep", help="W&B sweep id to read (API source)")
    p.add_argument("--depth", type=int, help="depth of the study's table (default: the most common)")
    p.add_argument("--gpus", type=int, help="GPU count of the study's table (default: the smallest)")
    p.add_argument("--publish", action="store_true",
                   help="also create a W&B Report over these runs (needs W&B online and wandb-workspaces)")
    return p.parse_args(argv)


def hardware(runs) -> str:
    names = Counter(f"{r.config.get('system', {}).get('device_name', '?')} ({r.config.get('system', {}).get('device', '?')})"
                    for r in runs)
    return ", ".join(f"{n} run(s) on {name}" for name, n in names.most_common()) or "unknown"


def main(argv=None) -> int:
    args = parse(argv)
    started = time.perf_counter()
    try:
        runs = collect(args.source, args.group, args.sweep)
    except SourceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows, excluded = build(runs)
    print(f"{len(runs)} run(s) read in {time.perf_counter() - started:.1f}s: {len(rows)} point(s), "
          f"{len(excluded)} not included", flush=True)
    depth = args.depth or (Counter(r.depth for r in rows).most_common(1)[0][0] if rows else 18)
    gpus = args.gpus or (min((r.gpus for r in rows if r.depth == depth), default=1))
    os.makedirs(args.out, exist_ok=True)
    made = [
        plots.throughput(rows, gpus, args.out),
        plots.scaling(rows, depth, args.out),
        plots.memory_and_size(rows, depth, gpus, args.out),
        plots.accuracy_vs_time(rows, args.out),
        plots.bandwidth_over_steps(_one_run_per_precision(runs, rows, depth, gpus), args.out),
    ]
    made = [m for m in made if m]
    context = dict(source=args.source, hardware=hardware(runs), rows=rows, excluded=excluded,
                   original=original_table(rows, depth, gpus), depth=depth, gpus=gpus,
                   observations=observations(rows, depth, gpus), plots=made)
    write_csv(rows, os.path.join(args.out, "results.csv"))
    write_markdown(os.path.join(args.out, "results.md"), **context)
    write_html(os.path.join(args.out, "report.html"), args.out, **context)
    print(f"wrote {args.out}/results.md, results.csv, report.html and {len(made)} plot(s) "
          f"in {time.perf_counter() - started:.1f}s")
    if args.publish:
        return _publish(args)
    return 0


def _one_run_per_precision(runs, rows, depth, gpus) -> dict:
    wanted = {run_id for r in rows if r.depth == depth and r.gpus == gpus for run_id, _ in r.runs[:1]}
    return {r.config.get("precision"): r for r in runs if r.id in wanted}


def _publish(args) -> int:
    if os.path.isdir(args.source):
        print("--publish: not published: the runs are offline; `wandb sync` them, then run the report on "
              "ENTITY/PROJECT", file=sys.stderr)
        return 1
    entity, project = args.source.strip("/").split("/")[:2]
    try:
        from report.publish import publish

        print(f"published: {publish(entity, project, 'Precision × depth × GPUs', args.group)}")
    except Exception as e:  # noqa: BLE001 - offline, no credentials, server refused: one line
        print(f"--publish: not published: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
