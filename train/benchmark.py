"""Side-by-side runs of several precisions (and depths, loaders, --compile modes) on one machine, printed as
ratios with their spread.

    python -m train.benchmark                      # quick start: ResNet-18, every precision, synthetic data
    python -m train.benchmark --precisions fp32 bf16 --compile none default --bare --rounds 5
    python -m train.benchmark --depths 18 34 50 --loaders device torch --steps 300

Each point is a real run of the runner (W&B run, checkpoint) on synthetic data, in a process of its own: its
memory peak (allocator peak on GPUs, peak RSS on CPUs) is its own, not one shared by every point. The points
are interleaved and repeated: each round runs every point once, in an order rotated from round to round, so
a machine that gets busier or quieter for a while moves every point alike rather than one precision. A ratio
is the median of its per-round ratios (both runs of a round ran minutes apart at most), shown with the range
over rounds; a range wider than --max-spread is flagged as too wide to conclude. --bare adds a minimal
training loop of the same model, batch, precision and data (train/bare.py) to every round and prints the
runner's speed as a share of it. Points the device cannot run are listed with the runner's one-line reason.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from train.config import COMPILE_MODES, DEPTHS, PRECISIONS, HelpFormatter, OneLineParser, positive_int
from train.errors import UsageError

RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "run.py")
BARE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bare.py")
RESULT_FILE = "result.json"  # train.checkpoint.RESULT_FILE, without importing torch before the flags are parsed
BARE_GOAL = {"cpu": 0.97, "cuda": 0.99}  # the runner's speed as a share of the bare loop's, at least


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m train.benchmark", description=__doc__.split("\n\n")[0],
                      formatter_class=HelpFormatter)
    p.add_argument("--depths", type=int, nargs="+", choices=DEPTHS, default=[18])
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    p.add_argument("--loaders", nargs="+", choices=("device", "torch"), default=["device"])
    p.add_argument("--compile", nargs="+", choices=COMPILE_MODES, default=["none"],
                   help="--compile modes to run side by side (e.g. none default); the gain is printed per point")
    p.add_argument("--bare", action="store_true",
                   help="also run a minimal training loop of each point (train/bare.py), interleaved, and print "
                   "the runner's speed as a share of it")
    p.add_argument("--rounds", type=positive_int, help="times every point runs, interleaved (default: 3)")
    p.add_argument("--max-spread", type=float, default=0.10,
                   help="a ratio whose range over rounds is wider than this share of it is flagged as too wide")
    p.add_argument("--steps", type=positive_int, help="steps per point (default: 4 on CPU, 300 on GPU)")
    p.add_argument("--warmup-steps", type=int, help="steps left out of each median (default: 1 on CPU, 50 on GPU)")
    p.add_argument("--batch-size", type=positive_int, help="per-process batch (default: 32 on CPU, 256 on GPU)")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    p.add_argument("--out-dir", default="runs/benchmark", help="runs are written here")
    p.add_argument("--nvml-ab", action="store_true",
                   help="run every point twice, NVML sampler off and at --nvml-hz, and print the sampler's cost")
    p.add_argument("--nvml-hz", type=float, default=10.0, help="sampler rate for --nvml-ab")
    p.add_argument("--wandb-mode", choices=("online", "offline", "disabled"),
                   help="as the runner's (default: online with W&B credentials, else offline)")
    return p


# --- statistics over rounds --------------------------------------------------------------------------------

def spread(values: list[float], max_spread: float) -> dict:
    """Median and range of per-round values; `wide` when the range exceeds max_spread of the median."""
    values = [v for v in values if v is not None]
    if not values:
        return {}
    mid = statistics.median(values)
    lo, hi = min(values), max(values)
    return {"median": mid, "min": lo, "max": hi, "n": len(values),
            "wide": len(values) > 1 and mid > 0 and (hi - lo) / mid > max_spread}


def fmt_ratio(s: dict) -> str:
    if not s:
        return "-"
    if s["n"] == 1:
        return f"{s['median']:.2f}x"
    return f"{s['median']:.2f}x [{s['min']:.2f}-{s['max']:.2f}]{' !' if s['wide'] else ''}"


def paired(rows: list[dict], key, base_key, value: str, max_spread: float) -> dict:
    """Per-point ratio to its base point, paired within each round: {point: spread of ratios}."""
    by_round = {(r["round"], key(r)): r for r in rows if "error" not in r}
    out = {}
    for (rnd, point), r in by_round.items():
        b = by_round.get((rnd, base_key(r)))
        if b is None or not r.get(value) or not b.get(value):
            continue
        out.setdefault(point, []).append(r[value] / b[value])
    return {point: spread(v, max_spread) for point, v in out.items()}


# --- points ------------------------------------------------------------------------------------------------

def run_point(argv: list[str], name: str) -> dict:
    """One point in a fresh process; its result.json, or {"error": the runner's one line}."""
    out_dir = argv[argv.index("--out-dir") + 1]
    proc = subprocess.run([sys.executable, RUNNER, *argv, "--name", name], stdout=None, stderr=subprocess.PIPE,
                          text=True)
    errors = [line.removeprefix("error: ") for line in proc.stderr.splitlines() if line.startswith("error: ")]
    if proc.returncode != 0:
        reason = errors[0] if errors else (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        print(f"not run: {reason}", flush=True)
        return {"error": reason}
    with open(os.path.join(out_dir, name, RESULT_FILE)) as f:
        return json.load(f)


def run_bare(argv: list[str], out_path: str) -> dict:
    """The minimal loop of one point, in a fresh process like the runner's."""
    proc = subprocess.run([sys.executable, BARE, *argv, "--out", out_path], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        print(f"bare loop failed: {reason}", flush=True)
        return {"error": reason}
    with open(out_path) as f:
        return json.load(f)


def cpu_features() -> str:
    """The CPU and the instruction-set extensions its bf16 speed depends on (Linux: /proc/cpuinfo)."""
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and not model:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        return "CPU features unknown (no /proc/cpuinfo)"
    has = lambda *names: "yes" if all(n in flags for n in names) else "no"  # noqa: E731
    return (f"{model or 'CPU'} ({os.cpu_count()} logical cores): AVX-512 {has('avx512f')}, AVX512-BF16 "
            f"{has('avx512_bf16')}, AVX512-FP16 {has('avx512_fp16')}, AMX-BF16 {has('amx_bf16', 'amx_tile')}. "
            "bf16 speed-ups on CPU come from oneDNN's AVX512-BF16 / AMX kernels: without them bf16 is emulated "
            "and can be slower than fp32, so CPU ratios hold for CPUs with the same features only")


def refusal(device_choice: str, prec: str, compile_mode: str) -> str | None:
    """The runner's one-line refusal of a point, checked here (by the same code) instead of in a process."""
    import torch

    from train import compiling, precision

    cuda = device_choice != "cpu" and torch.cuda.is_available()
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    try:
        precision.get(prec).check_device(device)
        compiling.check(compile_mode, device)
    except UsageError as e:
        return str(e)
    return None


# --- output ------------------------------------------------------------------------------------------------

def _columns(lines: list[tuple]) -> list[str]:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return out


def point_of(r: dict) -> tuple:
    return r["depth"], r["precision"], r["loader"], r["compile"], r["nvml_hz"]


def table(rows: list[dict], max_spread: float = 0.10) -> str:
    """One line per point: medians over rounds, and ratios to fp32 (same depth, loader, compile) with range."""
    runs = sorted((r for r in rows if r.get("kind", "runner") == "runner"), key=lambda r: r.get("index", 0))
    speed = paired(runs, point_of, lambda r: (r["depth"], "fp32", *point_of(r)[2:]), "train/images_per_s",
                   max_spread)
    size = paired(runs, point_of, lambda r: (r["depth"], "fp32", *point_of(r)[2:]), "ckpt/size_bytes", max_spread)
    cpu = all(r.get("device") == "cpu" for r in runs if "error" not in r)
    head = ("depth", "precision", "loader", "compile", "images/s", "vs fp32", "step ms", "setup s",
            "peak RSS MiB" if cpu else "peak alloc MiB", "ckpt MiB", "vs fp32")
    lines, notes, seen = [head], [], set()
    for r in runs:
        point = point_of(r)
        if point in seen:
            continue
        seen.add(point)
        label = (str(r["depth"]), r["precision"], r["loader"], r["compile"])
        if "error" in r:
            lines.append((*label, *["-"] * (len(head) - 4)))
            notes.append(f"  {r['precision']} (resnet{r['depth']}, {r['loader']}, compile {r['compile']}): "
                         f"{r['error']}")
            continue
        same = [x for x in runs if point_of(x) == point and "error" not in x]
        med = lambda key: statistics.median(v for x in same if (v := x.get(key)) is not None) \
            if any(x.get(key) is not None for x in same) else None  # noqa: E731
        ips, setup = med("train/images_per_s"), med("time/setup_s")
        peak = med("mem/peak_allocated_bytes" if r["device"] == "cuda" else "mem/rss_peak_bytes")
        lines.append((*label, f"{ips:,.0f}" if ips else "-", fmt_ratio(speed.get(point, {})),
                      f"{1e3 * r['batch_size'] / ips:.1f}" if ips else "-", f"{setup:.1f}" if setup else "-",
                      f"{peak / 2**20:,.0f}" if peak else "-", f"{med('ckpt/size_bytes') / 2**20:.1f}",
                      f"{size[point]['median']:.2f}x" if point in size else "-"))  # sizes do not vary
    return "\n".join(_columns(lines) + (["not run:"] + notes if notes else []))


def compile_table(rows: list[dict], max_spread: float) -> str:
    runs = [r for r in rows if r.get("kind", "runner") == "runner"]
    gain = paired(runs, point_of, lambda r: (*point_of(r)[:3], "none", r["nvml_hz"]), "train/images_per_s",
                  max_spread)
    lines = [("depth", "precision", "loader", "compile", "images/s vs none", "compile s")]
    for point, s in gain.items():
        if point[3] == "none":
            continue
        compile_s = [r["time/compile_s"] for r in runs if point_of(r) == point and r.get("time/compile_s")]
        lines.append((str(point[0]), point[1], point[2], point[3], fmt_ratio(s),
                      f"{statistics.median(compile_s):.1f}" if compile_s else "-"))
    return "\n".join(_columns(lines)) if len(lines) > 1 else "  (no compiled point ran)"


def bare_table(rows: list[dict], max_spread: float, device: str) -> str:
    """Runner vs bare loop per point: median step (the images/s statistic) and loop wall time, per round."""
    goal = BARE_GOAL[device]
    key = lambda r: point_of(r)[:4]  # noqa: E731
    pairs: dict[tuple, dict[str, list[float]]] = {}
    by_round = {(r["round"], r.get("kind", "runner"), key(r)): r for r in rows if "error" not in r}
    for (rnd, kind, point), r in by_round.items():
        b = by_round.get((rnd, "bare", point))
        if kind != "runner" or b is None or not r.get("train/images_per_s") or not b.get("train/images_per_s"):
            continue
        d = pairs.setdefault(point, {"step": [], "wall": []})
        d["step"].append(r["train/images_per_s"] / b["train/images_per_s"])
        d["wall"].append(b["time/train_s"] / r["time/train_s"])
    lines = [("depth", "precision", "loader", "compile", "runner/bare (step)", "runner/bare (loop wall)",
              f"goal >= {goal:.2f}")]
    for point, d in pairs.items():
        step, wall = spread(d["step"], max_spread), spread(d["wall"], max_spread)
        if step["wide"]:
            verdict = "inconclusive (range too wide)"  # a wide range below the goal is noise as likely as cost
        elif step["min"] >= goal:
            verdict = "met"
        elif step["max"] < goal:
            verdict = "missed"
        else:
            verdict = "inconclusive (range spans the goal)"
        lines.append((*(str(x) for x in point), fmt_ratio(step), fmt_ratio(wall), verdict))
    return "\n".join(_columns(lines)) if len(lines) > 1 else "  (no pair of runner and bare loop ran)"


# --- main --------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    import torch  # after the flags: --help and flag errors answer at once

    gpu = args.device != "cpu" and torch.cuda.is_available()
    device = "cuda" if gpu else "cpu"
    steps = args.steps or (300 if gpu else 4)
    warmup = args.warmup_steps if args.warmup_steps is not None else (50 if gpu else 1)
    batch = args.batch_size or (256 if gpu else 32)
    rounds = args.rounds or 3
    if args.nvml_ab and not gpu:
        raise UsageError("--nvml-ab measures the NVML sampler's cost on a GPU; no CUDA GPU is in use")
    sampler_rates = [0.0, args.nvml_hz] if args.nvml_ab else [args.nvml_hz]
    os.makedirs(args.out_dir, exist_ok=True)

    points, rows = [], []
    for depth in args.depths:
        for loader in args.loaders:
            for prec in args.precisions:
                for mode in args.compile:
                    reason = refusal(args.device, prec, mode)
                    for hz in sampler_rates:
                        row = {"depth": depth, "precision": prec, "loader": loader, "compile": mode,
                               "batch_size": batch, "nvml_hz": hz, "round": 0, "kind": "runner",
                               "index": len(points) + len(rows)}  # the table's order
                        if reason:
                            rows.append({**row, "error": reason})
                        else:
                            points.append(row)
                    if args.bare and not reason:
                        points.append({"depth": depth, "precision": prec, "loader": loader, "compile": mode,
                                       "batch_size": batch, "nvml_hz": sampler_rates[-1], "kind": "bare"})
    for rnd in range(rounds):
        shift = rnd % len(points) if points else 0
        order = points[shift:] + points[:shift]  # rotated: no point always runs first, or after the same one
        if rnd % 2:
            order.reverse()
        for i, p in enumerate(order):
            print(f"\n== round {rnd + 1}/{rounds}, point {i + 1}/{len(order)}: {p['kind']} resnet{p['depth']} "
                  f"{p['precision']} ({p['loader']} loader, compile {p['compile']}"
                  f"{', NVML %g Hz' % p['nvml_hz'] if args.nvml_ab else ''}): {steps} steps of {batch}", flush=True)
            common = ["--depth", str(p["depth"]), "--precision", p["precision"], "--loader", p["loader"],
                      "--steps" if p["kind"] == "bare" else "--max-steps", str(steps), "--warmup-steps", str(warmup),
                      "--batch-size", str(batch), "--device", args.device, "--compile", p["compile"]]
            if p["kind"] == "bare":
                result = run_bare(common, os.path.join(args.out_dir, f"bare-{uuid.uuid4().hex[:8]}.json"))
            else:
                argv_run = [*common, "--dataset", "synthetic", "--out-dir", args.out_dir, "--log-every",
                            str(min(50, steps)), "--group", "benchmark", "--tags", "benchmark", "--nvml-hz",
                            str(p["nvml_hz"])]
                if args.wandb_mode:
                    argv_run += ["--wandb-mode", args.wandb_mode]
                name = f"r{p['depth']}-{p['precision']}-{p['loader']}-{p['compile']}-{uuid.uuid4().hex[:8]}"
                result = run_point(argv_run, name)
            rows.append({**p, "round": rnd, **result})

    where = f"GPU {torch.cuda.get_device_name()}" if gpu else "CPU"
    print(f"\nSynthetic data, {steps} steps per point ({warmup} warm-up steps left out of the median), batch "
          f"{batch}, {rounds} round(s) of {len(points)} interleaved run(s), on {where}, torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d')}:\n")
    shown = [table([r for r in rows if r["nvml_hz"] == sampler_rates[-1]], args.max_spread)]
    print(shown[-1])
    if len(args.compile) > 1:
        print("\ntorch.compile gain (images/s compiled vs eager, same round; compile time is not in images/s):")
        shown.append(compile_table([r for r in rows if r["nvml_hz"] == sampler_rates[-1]], args.max_spread))
        print(shown[-1])
    if args.bare:
        print("\nThe runner (W&B, telemetry, checkpoint) vs a minimal loop of the same model, batch, precision and "
              "data, paired within each round. step: median step time, as images/s is measured; loop wall: the "
              "whole training loop, log windows included:")
        shown.append(bare_table(rows, args.max_spread, device))
        print(shown[-1])
    if args.nvml_ab:
        print(f"\nNVML sampler cost at {args.nvml_hz:g} Hz (images/s sampler off / on, same round):")
        cost = paired([r for r in rows if r["kind"] == "runner"], point_of,
                      lambda r: (*point_of(r)[:4], 0.0), "train/images_per_s", args.max_spread)
        for point, s in cost.items():
            if point[4]:
                print(f"  resnet{point[0]} {point[1]} ({point[2]}): {1 / s['median'] - 1:+.2%} "
                      f"[{1 / s['max'] - 1:+.2%} to {1 / s['min'] - 1:+.2%}]")
    wide = any(" !" in text for text in shown)
    print(f"\nRatios: median over {rounds} round(s) [min-max over rounds]. "
          + ("'!' marks a range wider than {:.0%} of the ratio: too wide to conclude (a busy machine?); rerun with "
             "more --rounds, more --steps or on a quieter machine.".format(args.max_spread) if wide else
             ("Every range is within {:.0%}.".format(args.max_spread) if rounds > 1 else
              "One round gives no range: use --rounds 3 or more to judge a ratio.")))
    if not gpu:
        print(cpu_features())
    print(f"Benchmark wall time {time.perf_counter() - started:.0f}s.")
    return 0 if any("error" not in r for r in rows) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
