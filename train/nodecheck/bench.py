"""A short benchmark: ResNet-18 in every precision that runs here, the runner and the bare loop interleaved in
rounds, by train/benchmark's own planning, turns and statistics (one process per point), with the runner/bare
ratio: the runner's own cost (W&B, telemetry, checkpoint) on this node; and, from the runner's profiled round,
where each precision's step time goes on this node (docs/profile.md)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

from train.nodecheck.checks import Check, bad, ok, skip

SECTION = "benchmark"
# per device: (batch, steps per round, warm-up steps of each round, rounds). On a 2-core CPU each point's process
# takes ~15 s to set up and a ResNet-18 step of 32 images ~0.5 s; on a GPU 50 steps of 512 take a few seconds.
SETTINGS = {"cuda": (512, 50, 10, 2), "cpu": (32, 3, 1, 2)}
LOG = "nodecheck-benchmark.log"


def run(device_type: str, precisions: list[str], out_dir: str) -> tuple[list[dict], dict, str]:
    """The benchmark's rows, the runner/bare ratios {precision: spread}, and its tables as text."""
    from train.benchmark import cli
    from train.benchmark.breakdown import profile_table

    batch, steps, warmup, rounds = SETTINGS[device_type]
    args = cli.build_parser().parse_args(
        ["--precisions", *precisions, "--bare", "--rounds", str(rounds), "--steps", str(steps), "--warmup-steps",
         str(warmup), "--batch-size", str(batch), "--device", device_type, "--out-dir", out_dir,
         "--wandb-mode", "offline"])  # the benchmark's default profiled round: the breakdown, untimed
    os.makedirs(out_dir, exist_ok=True)
    pl = cli.plan(args, device_type == "cuda")
    rows = list(pl.refused)
    with open(os.path.join(out_dir, LOG), "w") as log, contextlib.redirect_stdout(log):
        for i in range(0, len(pl.points), args.live):
            cli.run_group(pl, pl.points[i:i + args.live], rows)
    cli.mark_disturbed(rows, pl.warmup)
    ratios = cli.paired(rows, lambda r: (r["kind"], r["precision"]), lambda r: ("bare", r["precision"]),
                        "train/images_per_s", args.max_spread)
    text = "\n\n".join((cli.table(rows, args.max_spread), cli.bare_table(rows, args.max_spread, pl.device),
                         "step time by operation class, ms per profiled step (share of it); x: speed-up over fp32:\n"
                         + profile_table(rows)))
    return rows, {p: s for (kind, p), s in ratios.items() if kind == "runner"}, text


def check(device, precisions: list[str], out_dir: str, quick: bool) -> list[Check]:
    if quick:
        return [skip(SECTION, "short benchmark", "skipped with --quick (one process per precision and loop)")]
    from train.benchmark.cli import BARE_GOAL, bare_verdict, fmt_ratio

    # Its runs (checkpoints, W&B offline runs) go in a folder removed afterwards: left in --out-dir (runs/ by
    # default) they would join the user's study in `python -m report runs`. Its log and tables are kept.
    work = tempfile.mkdtemp(prefix=".nodecheck-benchmark-", dir=out_dir)
    log = os.path.join(out_dir, LOG)
    try:
        rows, ratios, text = run(device.type, precisions, work)
    finally:
        if os.path.exists(os.path.join(work, LOG)):
            shutil.copy(os.path.join(work, LOG), log)
        shutil.rmtree(work, ignore_errors=True)
    goal = BARE_GOAL[device.type]
    out = []
    for p in precisions:
        mine = [r for r in rows if r["precision"] == p and r.get("kind") == "runner"]
        failed = next((r["error"] for r in mine if "error" in r), None)
        speeds = sorted(r["train/images_per_s"] for r in mine if r.get("train/images_per_s"))
        if failed or not speeds:
            out.append(bad(SECTION, f"resnet18 {p}", failed or "no round finished"))
            continue
        ratio, ips = ratios.get(p, {}), speeds[len(speeds) // 2]
        verdict = bare_verdict(ratio, goal)
        mark = {"met": ok, "missed": bad}.get(verdict, skip)
        out.append(mark(SECTION, f"resnet18 {p}", f"{ips:,.1f} images/s; runner/bare {fmt_ratio(ratio)}: goal >= "
                        f"{goal:.2f} {verdict}", images_per_s=ips, runner_over_bare=ratio, verdict=verdict))
    out.append(ok(SECTION, "benchmark tables", f"in {os.path.join(out_dir, 'nodecheck.md')}; progress in {log}",
                  tables=text))
    return out

