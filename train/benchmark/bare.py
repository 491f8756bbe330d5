"""A minimal training loop, the yardstick of the runner's overhead (`python -m train.benchmark --bare`).

The same model, precision policy, optimizer, LR schedule, data and loader as the runner, built by the same
functions, and nothing else: no W&B, no telemetry, no loss or accuracy sums, no lost-update probe, no log
windows, no console, no checkpoint. Its step times are taken as the runner's are (host clock on CPU, CUDA
events on GPUs, read once at the end, or once per turn under the benchmark) and summarised by the same
statistic (median after warm-up), so the ratio runner / bare is the runner's cost per step; the benchmark also
compares each round's wall time, which for the runner includes its log window.

    python -m train.benchmark.bare --precision bf16 --steps 20 --out bare.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from train.benchmark.turns import Turns
from train.contract.errors import EXIT_USAGE, UsageError
from train.numerics import registry
from train.runner.options import COMPILE_MODES, DEPTHS, PRECISIONS, OneLineParser, RunConfig, positive_int, recipe

_PROCESS_STARTED = time.perf_counter()
RUNNER = RunConfig()  # the runner's defaults, for what the bare loop's flags leave alone


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m train.benchmark.bare", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=tuple(registry.MODELS), default=RUNNER.arch)
    p.add_argument("--depth", type=int, choices=DEPTHS, default=RUNNER.depth, help="--model resnet only")
    p.add_argument("--precision", choices=PRECISIONS, default=RUNNER.precision)
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--steps", type=positive_int, default=8)
    p.add_argument("--warmup-steps", type=int, default=2)
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default=RUNNER.device)
    p.add_argument("--loader", choices=("device", "torch"), default=RUNNER.loader)
    p.add_argument("--num-workers", type=int, default=RUNNER.num_workers)
    p.add_argument("--compile", choices=COMPILE_MODES, default=RUNNER.compile)
    p.add_argument("--seed", type=int, default=RUNNER.seed)
    p.add_argument("--lr", type=float, help="default: the model's recipe")
    p.add_argument("--out", help="write the result here as JSON (else print it)")
    return p


def run_config(args: argparse.Namespace) -> RunConfig:
    """The runner's configuration of a benchmark point (synthetic data, --max-steps): what the bare loop's
    flags set, the model's recipe (optimizer, lr, weight decay, warm-up) and the runner's defaults (momentum,
    schedule, epochs) for the rest."""
    settings = {**recipe(args.model), **({"lr": args.lr} if args.lr is not None else {})}
    depth = args.depth if registry.get(args.model).uses_depth else None
    return RunConfig(depth=depth, arch=args.model, **settings, precision=args.precision, batch_size=args.batch_size,
                     max_steps=args.steps,
                     warmup_steps=args.warmup_steps, device=args.device, loader=args.loader,
                     num_workers=args.num_workers, compile=args.compile, seed=args.seed,
                     dataset="synthetic")


def run(args: argparse.Namespace) -> dict:
    import torch
    import torch.nn.functional as F

    from train.launch.distributed import Ranks
    from train.measure.timing import StepTimer, Throughput
    from train.numerics import compiling
    from train.runner import setup

    cfg = run_config(args)
    device = setup.pick_device(cfg.device)
    policy, _ = setup.build_policy(cfg)
    data = setup.build_data(cfg, policy, device, Ranks())
    model, _ = setup.build_model(cfg, policy)
    bare_model = model.to(device, memory_format=data.memory_format)
    opt = setup.build_optimization(cfg, bare_model, policy, device, setup.build_plan(cfg, len(data.train_loader)))
    optimizer, scaler, scheduler = opt.optimizer, opt.scaler, opt.scheduler
    model = compiling.compile_model(bare_model, cfg.compile)
    compile_s = compiling.warm_up(model, bare_model, policy, device, cfg.batch_size, data.memory_format) \
        if cfg.compile != "none" else None

    timer, throughput = StepTimer(device), Throughput(cfg.batch_size, cfg.warmup_steps)
    turns = Turns.from_env()  # run by `train.benchmark`: train in the turns it gives, as the runner does
    if turns:  # an eager point warms up as compiling did, as the runner's does
        turns.ready(time.perf_counter() - _PROCESS_STARTED - (compile_s or 0.0), None if compile_s is not None else
                    lambda: compiling.warm_up(model, bare_model, policy, device, cfg.batch_size, data.memory_format))
    model.train()
    step = 0
    started = time.perf_counter()
    while step < args.steps:
        timer.start()
        for x, y in data.train_loader:
            timer.data_ready()
            with policy.autocast(device.type):
                loss = F.cross_entropy(model(x).float(), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            timer.end()
            step += 1
            if turns and turns.ends_turn(step):
                times = [s for s, _ in timer.collect()]  # the turn's one sync, as the runner's log window
                throughput.add(times)
                turns.on_window(times)
                started += turns.after_window(step)  # waiting for the next turn is not training time
            if step >= args.steps:
                break
            timer.start()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - started
    throughput.add([s for s, _ in timer.collect()])
    return {**throughput.summary(), "time/train_s": wall, "time/compile_s": compile_s, "train/steps": step,
            "final_loss": float(loss.detach().float()), "device": device.type, "device_name": setup.device_name(device)}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = run(args)
    except UsageError as e:  # the runner's one-line refusals (--device cuda without one), as the runner says them
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    text = json.dumps(result)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
