"""`python -m train.nodecheck`: before submitting a grid, will this node give trustworthy numbers? One line per
check (✓ passed, ✗ failed, – not applicable here, each with its reason), and nodecheck.json / nodecheck.md in
--out-dir, where runs find the node's measured ceilings (docs/nodecheck.md).

    python -m train.nodecheck [--quick] [--device cpu] [--out-dir runs] [--wandb]
    python -m train.nodecheck --gpu-suite [--out-dir gpu-suite]     # the project's one-command GPU proof"""

from __future__ import annotations

import datetime
import os
import sys
import time

from train.contract.cli import OneLineParser
from train.contract.errors import EXIT_USAGE, UsageError, first_line
from train.nodecheck import allreduce, bench, ceilings, environment, nvml_facts, output, precisions, storage
from train.nodecheck.checks import FAIL, guarded


def build_parser() -> OneLineParser:
    p = OneLineParser(prog="python -m train.nodecheck", description=__doc__.split("\n\n")[0])
    p.add_argument("--out-dir", help="where nodecheck.json and nodecheck.md go (default: runs, where runs with the "
                   "runner's default --out-dir find them; with --gpu-suite: gpu-suite)")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto", help="auto: CUDA when available")
    p.add_argument("--quick", action="store_true",
                   help="under a minute: smaller measurements, no all-reduce sweep and no benchmark")
    p.add_argument("--allreduce-max-mib", type=int, default=1024, metavar="MIB",
                   help="largest all-reduce of the sweep (from 1 MiB, x4 per step)")
    p.add_argument("--wandb", action="store_true", help="also log the check as one W&B run (job_type node-check); "
                   "offline where the server does not answer")
    p.add_argument("--project", default="precision-depth-gpus", help="W&B project for --wandb")
    p.add_argument("--gpu-suite", action="store_true",
                   help="the node check, the GPU test tier and a short study table, all under --out-dir")
    return p


def pick_device(torch, choice: str):
    if choice == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: torch sees no CUDA GPU here (use --device auto or cpu)")
    if choice != "cpu" and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def prepare_out_dir(path: str) -> str:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out-dir {path}: cannot create it ({e.strerror or first_line(e)})") from None
    if not os.access(path, os.W_OK):
        raise UsageError(f"--out-dir {path}: not writable")
    return path


def node_check(args, say=print) -> tuple[int, dict]:
    """Every check, each line shown as it is found; the files written. (exit status, nodecheck.json's content)."""
    started = time.perf_counter()
    out_dir = prepare_out_dir(args.out_dir)
    import torch

    from train.measure.nvml import load_nvml

    device = pick_device(torch, args.device)
    nvml, nvml_why = load_nvml()
    checks, shown = [], [None]

    def add(section, name, run):
        found = guarded(section, name, run)
        checks.extend(found)
        say(output.screen(found, after=shown[0]), flush=True)
        shown[0] = found[-1].section
        return found

    env = add(environment.SECTION, "environment", lambda: environment.check(torch, device, nvml, nvml_why))
    facts = {k: env[0].data.get(k) for k in ("host", "device", "device_name")}
    runnable: list[str] = []

    def find_runnable():
        names, found = precisions.runnable(torch, device)
        runnable.extend(names)
        return found

    add(precisions.SECTION, "runnable precisions", find_runnable)
    add(precisions.SECTION, "TF32 numerics", lambda: precisions.tf32_checks(torch, device, runnable))
    add(nvml_facts.SECTION, "NVML fields", lambda: nvml_facts.check(nvml, nvml_why, args.quick))
    add(ceilings.SECTION, "matmul", lambda: ceilings.matmul_checks(torch, device, runnable or ["fp32"],
                                                                   facts["device_name"], args.quick))
    add(ceilings.SECTION, "device memory copy", lambda: ceilings.memory_copy(torch, device, args.quick))
    add(ceilings.SECTION, "host<->device copy", lambda: ceilings.host_copies(torch, device, nvml, args.quick))
    add(allreduce.SECTION, "all-reduce sweep",
        lambda: allreduce.check(torch, device, out_dir, args.allreduce_max_mib, args.quick))
    add(bench.SECTION, "short benchmark", lambda: bench.check(device, runnable, out_dir, args.quick))
    add(storage.SECTION, "disk", lambda: storage.disk(out_dir, args.quick))
    w = add(storage.SECTION, "W&B", lambda: storage.wandb(args.quick))
    facts.update(checked_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                 quick=args.quick, seconds=time.perf_counter() - started, runnable_precisions=runnable)
    paths = output.write(out_dir, checks, facts)
    if args.wandb:
        add(storage.SECTION, "W&B run", lambda: _wandb_run(out_dir, checks, facts, args.project,
                                                           bool(w[0].data.get("reachable"))))
    failed = sum(c.status == FAIL for c in checks)
    say(f"\n{output.tally(checks)} in {time.perf_counter() - started:.0f} s; written: {paths[0]}, {paths[1]}")
    return (1 if failed else 0), output.document(checks, facts)


def _wandb_run(out_dir, checks, facts, project, reachable):
    from train.nodecheck.checks import ok

    return ok(storage.SECTION, "W&B run", "logged: " + output.to_wandb(out_dir, checks, facts, project, reachable))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.allreduce_max_mib < 1:
        build_parser().error("--allreduce-max-mib must be at least 1")
    try:
        if args.gpu_suite:
            from train.nodecheck import gpu_suite

            args.out_dir = args.out_dir or "gpu-suite"
            return gpu_suite.run(args)
        args.out_dir = args.out_dir or "runs"
        return node_check(args)[0]
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
