"""python -m report.read_speed [--runs 500]: time the report on N real W&B offline runs.

The runs are made once with W&B itself (config, 40 logged windows and a summary shaped as the runner's, over a
precision x depth x GPU-count grid with repeats, some failed) and kept in --dir for later timings; the report
reads the first N of them (through a folder of links when --dir holds more). It prints the report's wall and
CPU time and its peak memory (max RSS).
Target (issue 18): 10,000 runs in under 60 s on a 2-core machine; the figures measured are in docs/report.md.
"""

from __future__ import annotations

import argparse
import glob
import itertools
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool

from train.contract.experiment import PRECISIONS


def _make(args):
    index, root = args
    os.environ["WANDB_DISABLE_GIT"] = "true"  # the runs' folders are not git checkouts
    import wandb

    rng = random.Random(index)
    precision, depth, gpus = list(itertools.product(PRECISIONS, (18, 34, 50), (1, 2, 4, 8)))[index % 72]
    ips = 20_000 / (depth / 18) * (2 if precision != "fp32" else 1) * gpus * rng.uniform(0.9, 1.1)
    config = {"precision": precision, "depth": depth, "batch_size": 128,
              "system": {"world_size": gpus, "device": "cuda", "device_name": "benchmark (synthetic runs)",
                         "peak_flops_per_s": 989.4e12},
              "model": {"train_flops_per_image": 3.333e9 * depth / 18},
              "nvml": {"available": True, "pcie_peak_bytes_per_s": 63e9, "nvlink_peak_bytes_per_s": 450e9}}
    run = wandb.init(mode="offline", dir=os.path.join(root, f"run{index:04d}"), project="benchmark", config=config,
                     settings=wandb.Settings(silent=True, x_disable_stats=True))
    run.define_metric("train/step")
    run.define_metric("*", step_metric="train/step", summary="mean,min,max,last")
    for step in range(1, 41):
        run.log({"train/step": step * 50, "train/loss": 2.3 / step, "train/images_per_s": ips,
                 "nvml/pcie_tx_bytes_per_s": rng.uniform(1e9, 2e9), "comm/busbw_bytes_per_s": 1e11 if gpus > 1 else 0})
    run.summary.update({"train/images_per_s": ips, "train/images_per_s_per_gpu": ips / gpus, "time/train_s": 1e6 / ips,
                        "ckpt/size_bytes": 45e6 * depth / 18, "mem/peak_allocated_bytes": 3e9,
                        "test/best_acc": rng.uniform(0.9, 0.95), "test/last_acc": 0.9,
                        "nvml/energy_per_image_j": 0.01, "nvml/pcie_tx_bytes_per_s_mean": 1.5e9,
                        "nvml/pcie_rx_bytes_per_s_mean": 1e9})
    run.finish(exit_code=1 if index % 50 == 49 else 0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m report.read_speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=500)
    p.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "report-benchmark-runs"),
                   help="where the generated runs are kept (made once)")
    args = p.parse_args(argv)
    have = len(glob.glob(os.path.join(args.dir, "run*", "wandb", "offline-run-*")))
    if have < args.runs:
        print(f"making {args.runs - have} W&B offline runs in {args.dir} (once)...", flush=True)
        started = time.perf_counter()
        with Pool(os.cpu_count() or 2) as pool:
            pool.map(_make, [(i, args.dir) for i in range(have, args.runs)])
        print(f"made in {time.perf_counter() - started:.0f}s", flush=True)
    scratch = tempfile.mkdtemp()
    try:
        return _time_report(_first(args.dir, args.runs, scratch), args.runs, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _first(root: str, n: int, scratch: str) -> str:
    """A folder of exactly the first N runs: ROOT itself, or links to its first N run folders."""
    folders = sorted(glob.glob(os.path.join(root, "run*")))
    if len(folders) == n:
        return root
    view = os.path.join(scratch, "runs")
    os.makedirs(view)
    for folder in folders[:n]:
        os.symlink(os.path.abspath(folder), os.path.join(view, os.path.basename(folder)))
    return view


def _time_report(source: str, n: int, scratch: str) -> int:
    """The report on SOURCE as its own process; its rusage (CPU, max RSS) comes from wait4 on it alone."""
    with open(os.path.join(scratch, "stdout"), "w+") as out, open(os.path.join(scratch, "stderr"), "w+") as err:
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "report", source, "--out", os.path.join(scratch, "out")],
                                 stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        out.seek(0), err.seek(0)
        print(out.read().strip())
        if child.returncode != 0:
            print(err.read().strip(), file=sys.stderr)
            return 1
    cpu = usage.ru_utime + usage.ru_stime  # with the W&B reader processes it waited for (Linux wait4)
    per_run = seconds / n
    print(f"report on {n} runs: {seconds:.1f}s wall, {cpu:.1f}s CPU, max RSS {usage.ru_maxrss / 1024:.0f} MiB, "
          f"{1000 * per_run:.1f} ms a run on {os.cpu_count()} cores (load average {os.getloadavg()[0]:.1f}): "
          f"10,000 runs would take {10_000 * per_run:.0f}s (target: under 60 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
