"""python -m report SOURCE [--out DIR]: the study's results table, plots and page from a set of runs.

SOURCE is a folder of W&B offline runs (finished runs read in process, the rest with W&B's own reader) or
ENTITY/PROJECT[/SWEEP_ID] (W&B's API).
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter

from report import plots
from report.collect import SourceError, collect
from report.compare import distinguishing
from report.formatting import label, model_title, placement
from report.prose import fp8_observations, observations, original_table, profile_observations
from report.provenance import provenance
from report.rows import build, default_where, known_keys
from report.write import write_csv, write_html, write_markdown
from train.contract.cli import OneLineParser
from train.contract.errors import EXIT_USAGE, first_line


def parse(argv):
    p = OneLineParser(prog="python -m report", description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    p.add_argument("source", help="folder of offline runs (e.g. runs/) or ENTITY/PROJECT[/SWEEP_ID]")
    p.add_argument("--out", default="report_out", help="output folder (default: report_out)")
    p.add_argument("--group", help="W&B group to read (API source)")
    p.add_argument("--sweep", help="W&B sweep id to read (API source)")
    p.add_argument("--depth", type=int, help="ResNet depth of the study's table (same as --model resnet<DEPTH>)")
    p.add_argument("--model", help="model of the study's table and Observations, as config model.arch names it "
                   "(resnet18, vit-s; default: the most common)")
    p.add_argument("--gpus", type=int, help="GPU count of the study's table (default: the smallest; CPU runs when "
                                            "there are no GPU runs)")
    p.add_argument("--group-by", nargs="+", metavar="KEY",
                   help="rows keyed by just these settings (e.g. precision depth world_size), pooling runs that "
                        "differ in others; default: one row per experiment (every setting but the seed)")
    p.add_argument("--publish", action="store_true",
                   help="also log the results table and plots as a W&B run (job_type report, offline for a folder "
                        "of offline runs) that uses the runs' checkpoints, and for ENTITY/PROJECT create a W&B "
                        "Report over the runs (needs wandb-workspaces)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    started = time.perf_counter()
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        print(f"error: --out {args.out} is a file; give a folder for the report", file=sys.stderr)
        return EXIT_USAGE
    try:
        runs, unreadable = collect(args.source, args.group, args.sweep)
    except SourceError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    for u in unreadable:  # one line each; the report goes on with the runs that could be read
        print(f"warning: not read: {u.path}: {u.reason}", file=sys.stderr)
    if args.group_by:
        known = set().union(*(known_keys(r.config) for r in runs)) if runs else set()
        unknown = [k for k in args.group_by if k not in known]
        if unknown:
            print(f"error: --group-by {' '.join(unknown)}: no run has that setting (settings: "
                  f"{', '.join(sorted(known))})", file=sys.stderr)
            return EXIT_USAGE
    rows, excluded = build(runs, args.group_by)
    print(f"{len(runs)} run(s) read in {time.perf_counter() - started:.1f}s: {len(rows)} row(s), "
          f"{len(excluded)} not included" + (f", {len(unreadable)} unreadable" if unreadable else ""), flush=True)
    model = args.model or (f"resnet{args.depth}" if args.depth else None) or (
        Counter(r.model for r in rows).most_common(1)[0][0] if rows else "resnet18")
    where = default_where(rows, model, args.gpus)
    os.makedirs(args.out, exist_ok=True)
    one_each = _one_run_per_row(runs, rows, model, where)
    made = [
        plots.throughput(rows, where, args.out),
        plots.scaling(rows, model, args.out),
        plots.memory_and_size(rows, model, where, args.out),
        plots.lost_updates(rows, model, where, args.out),
        plots.accuracy_vs_time(rows, args.out, one_each),
        plots.bandwidth_over_steps(one_each, args.out),
        plots.step_breakdown(rows, args.out),
    ]
    made = [m for m in made if m]
    context = dict(source=args.source, provenance=provenance(runs), rows=rows, excluded=excluded,
                   unreadable=unreadable, original=original_table(rows, model, where),
                   title=f"{model_title(model)}, {placement(*where)}", observations=" ".join(filter(None, (
                       observations(rows, model, where), profile_observations(rows, model, where),
                       fp8_observations(rows, where).strip()))),
                   plots=made)
    write_csv(rows, os.path.join(args.out, "results.csv"))
    write_markdown(os.path.join(args.out, "results.md"), **context)
    write_html(os.path.join(args.out, "report.html"), args.out, **context)
    print(f"wrote {args.out}/results.md, results.csv, report.html and {len(made)} plot(s) "
          f"in {time.perf_counter() - started:.1f}s")
    if args.publish:
        return _publish(args, runs, rows, made)
    return 0


def _one_run_per_row(runs, rows, model, where) -> dict:
    """{row label: (precision, its first run)} for the study's rows: the bandwidth plot draws one run each."""
    at = [r for r in rows if r.model == model and (r.device, r.gpus) == where]
    keys, by_id = distinguishing(at), {r.id: r for r in runs}
    return {label(r, keys): (r.precision, by_id[r.runs[0][0]]) for r in at if r.runs[0][0] in by_id}


def _publish(args, runs, rows, made) -> int:
    """The report's W&B run (offline for a folder of offline runs, to sync after them), then, for runs on the
    server, the W&B Report."""
    offline = os.path.isdir(args.source)
    try:
        from report.publish import log_results

        logged = log_results(args.out, args.source, runs, rows, made, "offline" if offline else "online")
    except Exception as e:  # noqa: BLE001 - W&B cannot start (no credentials, server refused): one line
        print(f"--publish: not published: {first_line(e)}", file=sys.stderr)
        return 1
    print(f"W&B: report run ({'offline' if offline else 'online'}): results table and {len(made)} plot(s), using "
          f"the checkpoints of {logged.linked} of {len(runs)} run(s): {logged.where}")
    if logged.unlinked:
        print(f"warning: --publish: not linked (they logged no checkpoint): {', '.join(logged.unlinked)}",
              file=sys.stderr)
    if offline:
        print(f"upload: wandb sync the runs' folders first, then wandb sync {logged.where} (synced first, the "
              "report's run would be recorded as making the runs' checkpoints)")
        return 0
    entity, project = args.source.strip("/").split("/")[:2]
    try:
        from report.publish import publish

        print(f"published: {publish(entity, project, 'Precision × depth × GPUs', args.group)}")
    except Exception as e:  # noqa: BLE001 - offline, no credentials, server refused: one line
        print(f"--publish: not published: {first_line(e)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
