"""Side-by-side runs of several precisions (and depths, loaders) on one machine, printed as ratios to fp32.

    python -m train.benchmark                      # quick start: ResNet-18, every precision, synthetic data
    python -m train.benchmark --depths 18 34 50 --loaders device torch --steps 300

Each point is a real run of the runner (W&B run, checkpoint) on synthetic data, in a process of its own: its
memory peak (allocator peak on GPUs, peak RSS on CPUs) is its own, not one shared by every point. Points the
device cannot run are listed with the runner's one-line reason. Ratios compare runs of this one invocation only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import uuid

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

from train.checkpoint import RESULT_FILE
from train.config import DEPTHS, PRECISIONS, OneLineParser, positive_int
from train.errors import UsageError

RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "run.py")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m train.benchmark", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--depths", type=int, nargs="+", choices=DEPTHS, default=[18])
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    p.add_argument("--loaders", nargs="+", choices=("device", "torch"), default=["device"])
    p.add_argument("--steps", type=positive_int, help="steps per point (default: 8 on CPU, 300 on GPU)")
    p.add_argument("--warmup-steps", type=int, help="steps left out of each median (default: 2 on CPU, 50 on GPU)")
    p.add_argument("--batch-size", type=positive_int, help="per-process batch (default: 32 on CPU, 256 on GPU)")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    p.add_argument("--out-dir", default="runs/benchmark", help="runs are written here")
    p.add_argument("--nvml-ab", action="store_true",
                   help="run every point twice, NVML sampler off and at --nvml-hz, and print the sampler's cost")
    p.add_argument("--nvml-hz", type=float, default=10.0, help="sampler rate for --nvml-ab")
    p.add_argument("--wandb-mode", choices=("online", "offline", "disabled"),
                   help="as the runner's (default: online with W&B credentials, else offline)")
    return p


def table(rows: list[dict]) -> str:
    base = {(r["depth"], r["loader"]): r for r in rows if r["precision"] == "fp32" and "error" not in r}

    def ratio(r, key):
        b = base.get((r["depth"], r["loader"]))
        return f"{r[key] / b[key]:.2f}x" if b and b.get(key) else "-"

    cpu = all(r.get("device") == "cpu" for r in rows if "error" not in r)
    head = ("depth", "precision", "loader", "images/s", "vs fp32", "step ms",
            "peak RSS MiB" if cpu else "peak alloc MiB", "ckpt MiB", "vs fp32")
    lines = [head]
    for r in rows:
        if "error" in r:
            lines.append((str(r["depth"]), r["precision"], r["loader"], "-", "-", "-", "-", "-", "-"))
            continue
        ips = r["train/images_per_s"]
        # Each point ran in its own process: its peak is its own (allocator on GPUs, RSS on CPUs).
        peak = r.get("mem/peak_allocated_bytes" if r["device"] == "cuda" else "mem/rss_peak_bytes")
        mem = f"{peak / 2**20:,.0f}" if peak else "-"
        lines.append((str(r["depth"]), r["precision"], r["loader"], f"{ips:,.0f}" if ips else "-",
                      ratio(r, "train/images_per_s"), f"{1e3 * r['batch_size'] / ips:.1f}" if ips else "-", mem,
                      f"{r['ckpt/size_bytes'] / 2**20:.1f}", ratio(r, "ckpt/size_bytes")))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"  {r['precision']} (resnet{r['depth']}, {r['loader']}): {r['error']}" for r in rows if "error" in r]
    return "\n".join(out + (["not run:"] + notes if notes else []))


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



def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    gpu = args.device != "cpu" and torch.cuda.is_available()
    steps = args.steps or (300 if gpu else 8)
    warmup = args.warmup_steps if args.warmup_steps is not None else (50 if gpu else 2)
    batch = args.batch_size or (256 if gpu else 32)
    rows = []
    if args.nvml_ab and not gpu:
        raise UsageError("--nvml-ab measures the NVML sampler's cost on a GPU; no CUDA GPU is in use")
    sampler_rates = [0.0, args.nvml_hz] if args.nvml_ab else [args.nvml_hz]
    for depth in args.depths:
        for loader in args.loaders:
            for prec in args.precisions:
                for hz in sampler_rates:
                    argv_run = ["--dataset", "synthetic", "--depth", str(depth), "--precision", prec, "--loader",
                                loader, "--max-steps", str(steps), "--warmup-steps", str(warmup), "--batch-size",
                                str(batch), "--device", args.device, "--out-dir", args.out_dir, "--log-every",
                                str(min(50, steps)), "--group", "benchmark", "--tags", "benchmark", "--nvml-hz",
                                str(hz)]
                    if args.wandb_mode:
                        argv_run += ["--wandb-mode", args.wandb_mode]
                    row = {"depth": depth, "precision": prec, "loader": loader, "batch_size": batch, "nvml_hz": hz}
                    print(f"\n== resnet{depth} {prec} ({loader} loader, NVML {hz:g} Hz): {steps} steps of {batch}",
                          flush=True)
                    row.update(run_point(argv_run, f"r{depth}-{prec}-{loader}-{uuid.uuid4().hex[:8]}"))
                    rows.append(row)
    device = "GPU " + torch.cuda.get_device_name() if gpu else "CPU"
    print(f"\nSynthetic data, {steps} steps per point ({warmup} warm-up steps left out of the median), "
          f"batch {batch}, on {device}, torch {torch.__version__}:\n")
    print(table([r for r in rows if r["nvml_hz"] == sampler_rates[-1]]))
    if args.nvml_ab:
        print(f"\nNVML sampler cost at {args.nvml_hz:g} Hz (median step time, sampler on vs off, same point):")
        off = {(r["depth"], r["precision"], r["loader"]): r for r in rows if r["nvml_hz"] == 0 and "error" not in r}
        for r in rows:
            base = off.get((r["depth"], r["precision"], r["loader"]))
            if r["nvml_hz"] and base and "error" not in r:
                cost = base["train/images_per_s"] / r["train/images_per_s"] - 1
                print(f"  resnet{r['depth']} {r['precision']} ({r['loader']}): {cost:+.2%}")
    return 0 if any("error" not in r for r in rows) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
