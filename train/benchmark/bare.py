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
import math
import sys
import time

from train.benchmark.turns import Turns
from train.runner.options import COMPILE_MODES, DEPTHS, PRECISIONS, OneLineParser, positive_int

_PROCESS_STARTED = time.perf_counter()


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m train.benchmark.bare", description=__doc__.split("\n\n")[0])
    p.add_argument("--depth", type=int, choices=DEPTHS, default=18)
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--steps", type=positive_int, default=8)
    p.add_argument("--warmup-steps", type=int, default=2)
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    p.add_argument("--loader", choices=("device", "torch"), default="device")
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--compile", choices=COMPILE_MODES, default="none")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=0.005)
    p.add_argument("--out", help="write the result here as JSON (else print it)")
    return p


def run(args: argparse.Namespace) -> dict:
    import torch
    import torch.nn.functional as F

    from train.measure.timing import StepTimer, Throughput
    from train.numerics import compiling, data, precision
    from train.numerics.models import resnet

    cuda = args.device != "cpu" and torch.cuda.is_available()
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    policy = precision.get(args.precision)
    policy.set_backend_flags()
    if cuda:
        torch.backends.cudnn.benchmark = True
    memory_format = torch.channels_last if cuda else torch.contiguous_format
    loader_args = dict(batch_size=args.batch_size, device=device, dtype=policy.input_dtype,
                       memory_format=memory_format, seed=args.seed)
    if args.loader == "device":
        loader = data.DeviceLoader(data.synthetic(args.seed), train=True, **loader_args)
    else:
        loader = data.TorchLoader(data.synthetic(args.seed), train=True, num_workers=args.num_workers, **loader_args)
    torch.manual_seed(args.seed)
    bare_model = policy.prepare(resnet(args.depth).to(device, memory_format=memory_format))
    optimizer = precision.make_optimizer(bare_model, "sgd", args.lr, 0.9, 5e-4)
    scaler = policy.grad_scaler(device.type)
    steps_per_run = 600 * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps_per_run) / steps_per_run)))
    model = compiling.compile_model(bare_model, args.compile)
    compile_s = compiling.warm_up(model, bare_model, policy, device, args.batch_size, memory_format) \
        if args.compile != "none" else None

    timer, throughput = StepTimer(device), Throughput(args.batch_size, args.warmup_steps)
    turns = Turns.from_env()  # run by `train.benchmark`: train in the turns it gives, as the runner does
    if turns:  # an eager point warms up as compiling did, as the runner's does
        turns.ready(time.perf_counter() - _PROCESS_STARTED - (compile_s or 0.0), None if compile_s is not None else
                    lambda: compiling.warm_up(model, bare_model, policy, device, args.batch_size, memory_format))
    model.train()
    step = 0
    started = time.perf_counter()
    while step < args.steps:
        timer.start()
        for x, y in loader:
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
                turns.add(times)
                started += turns.next()  # waiting for the next turn is not training time
            if step >= args.steps:
                break
            timer.start()
    if cuda:
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - started
    throughput.add([s for s, _ in timer.collect()])
    return {**throughput.summary(), "time/train_s": wall, "time/compile_s": compile_s, "train/steps": step,
            "final_loss": float(loss.detach().float()), "device": device.type}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = run(args)
    text = json.dumps(result)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
