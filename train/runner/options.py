"""One dataclass for a run, and the command line that fills it (including the original study's flags)."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from dataclasses import dataclass, field

from train.contract.cli import OneLineParser
from train.contract.errors import UsageError
from train.contract.experiment import DEFAULT_TARGETS, EXPERIMENT_DEFAULTS, PRECISIONS

DEPTHS = (18, 34, 50)
# torch.compile of the model (forward and backward): none (eager), Inductor's default, max-autotune (longer
# compile, tuned kernels), reduce-overhead (CUDA graphs on GPUs; the same as default on CPU).
COMPILE_MODES = ("none", "default", "max-autotune", "reduce-overhead")


@dataclass
class RunConfig:
    depth: int = 18
    precision: str = "fp32"
    epochs: int = 600
    max_steps: int | None = None
    batch_size: int = 128
    lr: float = 0.005
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_schedule: str = "cosine"
    warmup_steps: int = 10
    num_workers: int = 2
    dataset: str = "cifar10"
    data_dir: str = "data"
    download: bool = False
    loader: str = "device"
    device: str = "auto"
    out_dir: str = "runs"
    project: str = "precision-depth-gpus"
    entity: str | None = None
    group: str | None = None
    name: str | None = None
    tags: list[str] = field(default_factory=list)
    wandb_mode: str | None = None
    log_every: int = 50
    ckpt_every: int = 0
    ckpt_artifact: bool = False
    resume: str | None = None
    nvml_hz: float = 10.0
    wandb_stats_interval: float | None = None
    wandb_init_timeout: float = 30.0
    seed: int = 0
    use_ddp: bool = False
    gpus: int | None = None
    nodes: int = 1
    rdzv_endpoint: str | None = None
    rdzv_id: str | None = None
    dist_timeout: float = 600.0
    grad_compress: str = "none"
    lr_scaling: str = "none"
    target_acc: list[float] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    stop_at_acc: float | None = None
    compile: str = "none"

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


# Every setting that changes a run's result, in one place: a resumed run must match its checkpoint on each of
# these, and the report compares runs as one experiment only when they match (the seed aside). The rest of
# RunConfig (out-dir, names, logging, NVML rate, W&B mode, --max-steps, which may extend a run) may change.
EXPERIMENT_FLAGS = ("depth", "precision", "dataset", "batch_size", "optimizer", "lr", "lr_scaling", "momentum",
                    "weight_decay", "lr_schedule", "epochs", "seed", "loader", "num_workers", "grad_compress",
                    "compile")


def experiment(cfg: RunConfig, *, world_size: int, train_images: int, device: str) -> dict:
    """The run's experiment identity: EXPERIMENT_FLAGS plus what the flags alone do not fix."""
    out = {key: getattr(cfg, key) for key in EXPERIMENT_FLAGS}
    if cfg.loader != "torch":
        out["num_workers"] = None  # only the DataLoader path has workers (and their augmentation seeds)
    out.update(world_size=world_size, train_images=train_images, device=device,
               effective_lr=effective_lr(cfg, world_size))
    if cfg.stop_at_acc is not None:  # a run cut short at a target is not the full run: its own experiment
        out["stop_at_acc"] = cfg.stop_at_acc
    return out


def saved_experiment(saved: dict) -> dict:
    """A checkpoint's experiment identity as a run would record it today (settings added since at their default)."""
    return {**EXPERIMENT_DEFAULTS, **saved}


def effective_lr(cfg: RunConfig, world_size: int) -> float:
    """--lr, times the world size under --lr-scaling linear (the global batch grows with the GPU count)."""
    return cfg.lr * world_size if cfg.lr_scaling == "linear" else cfg.lr


def differences(saved: dict, now: dict) -> list[str]:
    """'key: was A, now B' for every identity key that differs (keys missing on one side count)."""
    return [f"{key} {saved.get(key)!r} -> {now.get(key)!r}" for key in sorted(set(saved) | set(now))
            if saved.get(key) != now.get(key)]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default once: not appended where the help text already names it, nor when it is unset."""

    def _get_help_string(self, action):
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default == [] \
            or action.default == argparse.SUPPRESS
        if "default:" in text or unset or not action.option_strings:
            return text
        return super()._get_help_string(action)


class _Once(argparse.Action):
    """Store a value; a second flag that sets the same option to another value is an error.

    The original study's shorthands (--use_34, --use_amp, ...) overlap --depth and --precision;
    `--use_amp --use_half` or `--depth 18 --use_50` must not silently pick one.
    """

    def __init__(self, option_strings, dest, const=None, nargs=None, **kwargs):
        super().__init__(option_strings, dest, const=const, nargs=0 if const is not None else nargs, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        value = self.const if self.const is not None else values
        seen = namespace.__dict__.setdefault("_set_by", {})
        if self.dest in seen and getattr(namespace, self.dest) != value:
            parser.error(f"{option_string} conflicts with {seen[self.dest]}")
        seen[self.dest] = option_string
        setattr(namespace, self.dest, value)


def _bounded(convert, what: str, inclusive: bool):
    """An argparse type: a finite number above 0 (or at least 0), with a message that names what was given."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not math.isfinite(value) or not (value >= 0 if inclusive else value > 0):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value

    return parse


positive_int = _bounded(int, "a positive integer", inclusive=False)
_non_negative_int = _bounded(int, "an integer >= 0", inclusive=True)
_positive_float = _bounded(float, "a positive number", inclusive=False)
_non_negative_float = _bounded(float, "a number >= 0", inclusive=True)


def _accuracy(text: str) -> float:
    """An argparse type: a test accuracy as a fraction, 0 < x <= 1 (93% is 0.93)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an accuracy between 0 and 1, got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected an accuracy between 0 and 1 (93% is 0.93), got {text}")
    return value


def build_parser(prog: str = "python train/run.py") -> argparse.ArgumentParser:
    d = RunConfig()
    p = OneLineParser(
        prog=prog,
        description="Train a CIFAR-10 ResNet at one numeric precision and log time, memory, model size and "
        "accuracy to Weights & Biases. The original study's flags (--use_34, --use_amp, --epoch, ...) "
        "are accepted as aliases.",
        formatter_class=HelpFormatter,
    )
    m = p.add_argument_group("model and precision")
    m.add_argument("--depth", type=int, choices=DEPTHS, action=_Once, default=d.depth, help="ResNet depth (CIFAR layout)")
    m.add_argument("--use_34", dest="depth", const=34, action=_Once, help="alias of --depth 34 (original study)")
    m.add_argument("--use_50", dest="depth", const=50, action=_Once, help="alias of --depth 50 (original study)")
    m.add_argument(
        "--precision", choices=PRECISIONS, action=_Once, default=d.precision,
        help="fp32: strict IEEE fp32, TF32 off for matmul and cuDNN conv; tf32: TF32 on for both (Ampere+ GPU); "
        "amp_fp16: autocast fp16 + dynamic loss scaling; amp_bf16: autocast bf16, no scaler; "
        "fp16: pure half weights/activations, BatchNorm in fp32, dynamic loss scaling; "
        "bf16: pure bf16, BatchNorm in fp32",
    )
    m.add_argument("--compile", choices=COMPILE_MODES, default=d.compile,
                   help="torch.compile the model (Inductor; on CPU its C++ backend needs a C++ compiler): "
                   "default, max-autotune (slower compile, tuned kernels) or reduce-overhead (CUDA graphs on "
                   "GPUs, as default on CPU); compile time is left out of images/s and logged as time/compile_s")
    m.add_argument("--use_amp", dest="precision", const="amp_fp16", action=_Once, help="alias of --precision amp_fp16")
    m.add_argument("--use_half", dest="precision", const="fp16", action=_Once, help="alias of --precision fp16")

    t = p.add_argument_group("training")
    t.add_argument("--epochs", "--epoch", type=positive_int, default=d.epochs, help="epochs to train")
    t.add_argument("--max-steps", type=positive_int, default=d.max_steps,
                   help="stop after this many optimizer steps (smoke runs, benchmarks); evaluation still runs at the end")
    t.add_argument("--batch-size", "--batch_size", type=positive_int, default=d.batch_size,
                   help="batch size per process")
    t.add_argument("--lr", type=_positive_float, default=d.lr, help="peak learning rate")
    t.add_argument("--optimizer", choices=("sgd", "adamw"), default=d.optimizer,
                   help="sgd uses --momentum; both use --weight-decay; fused kernels where the device has them")
    t.add_argument("--momentum", type=_non_negative_float, default=d.momentum, help="SGD momentum")
    t.add_argument("--weight-decay", type=_non_negative_float, default=d.weight_decay, help="weight decay")
    t.add_argument("--lr-schedule", choices=("cosine", "constant"), default=d.lr_schedule,
                   help="cosine: anneal per step from --lr to 0 over the run; constant: --lr throughout")
    t.add_argument("--warmup-steps", type=_non_negative_int, default=d.warmup_steps,
                   help="first steps left out of the run's images/s median (cuDNN autotuning, allocator warm-up)")
    t.add_argument("--lr-scaling", choices=("none", "linear"), default=d.lr_scaling,
                   help="linear: multiply --lr by the number of processes (the global batch grows with them); "
                   "the effective value is recorded in the config")
    t.add_argument("--target-acc", type=_accuracy, nargs="+", default=d.target_acc, metavar="ACC",
                   help="test accuracies (fractions) whose training time, epoch, images and, on GPUs, energy the "
                   "run records when it first reaches each (summary time_to_acc/<percent>); defaults are for "
                   "real CIFAR-10")
    t.add_argument("--stop-at-acc", type=_accuracy, default=d.stop_at_acc, metavar="ACC",
                   help="end the run at the end of the first epoch whose test accuracy reaches ACC (recorded "
                   "as its end: target_reached); a time-to-accuracy sweep needs no full --epochs")
    t.add_argument("--seed", type=int, default=d.seed,
                   help="seed for weights, shuffling and augmentation (repeat a point over seeds to get its spread)")

    data = p.add_argument_group("data")
    data.add_argument("--dataset", choices=("cifar10", "synthetic"), default=d.dataset,
                      help="synthetic: random images and labels of CIFAR-10's shape, for throughput only (no evaluation)")
    data.add_argument("--data-dir", default=d.data_dir, help="folder holding cifar-10-batches-py/")
    data.add_argument("--download", action="store_true", help="download CIFAR-10 into --data-dir (torchvision's downloader)")
    data.add_argument("--loader", choices=("device", "torch"), default=d.loader,
                      help="device: dataset resident on the training device, whole-batch augmentation there; "
                      "torch: torchvision transforms in a DataLoader with --num-workers processes")
    data.add_argument("--num-workers", "--num_workers", type=_non_negative_int, default=d.num_workers,
                      help="DataLoader worker processes (--loader torch)")

    dev = p.add_argument_group("device")
    dev.add_argument("--device", choices=("auto", "cuda", "cpu"), action=_Once, default=d.device,
                     help="auto: CUDA when available, else CPU")
    dev.add_argument("--use_cuda", dest="device", const="cuda", action=_Once, help="alias of --device cuda")
    dev.add_argument("--use_ddp", action="store_true",
                     help="original study's flag: DDP on every GPU of this node (same as --gpus <GPU count>), "
                     "or, when started by torchrun/srun, mark the worker as DDP (it is anyway)")

    ddp = p.add_argument_group("several GPUs and nodes (DDP)")
    ddp.add_argument("--gpus", type=positive_int, default=d.gpus,
                     help="processes on this node, one per GPU, started by PyTorch's elastic launcher (torchrun's "
                     "machinery); on a machine without GPUs, N CPU processes over gloo. Not needed under "
                     "torchrun or srun, whose environment says the ranks")
    ddp.add_argument("--nodes", type=positive_int, default=d.nodes,
                     help="nodes in the job; run the same command on each, with the same --rdzv-endpoint")
    ddp.add_argument("--rdzv-endpoint", default=d.rdzv_endpoint, metavar="HOST:PORT",
                     help="rendezvous of a several-node job (a port on the first node)")
    ddp.add_argument("--rdzv-id", default=d.rdzv_id,
                     help="rendezvous id shared by the nodes of one job (default: $SLURM_JOB_ID)")
    ddp.add_argument("--dist-timeout", type=_positive_float, default=d.dist_timeout, metavar="S",
                     help="seconds before a dead or hung rank ends the job (rendezvous and collectives)")
    ddp.add_argument("--grad-compress", choices=("none", "fp16", "bf16"), default=d.grad_compress,
                     help="gradient all-reduce in 16 bits (PyTorch's compression hooks); pure fp16/bf16 "
                     "models already reduce 16-bit gradients")

    out = p.add_argument_group("output and tracking")
    out.add_argument("--out-dir", default=d.out_dir, help="runs are written to OUT_DIR/NAME/ (checkpoint, W&B files)")
    out.add_argument("--project", default=d.project, help="W&B project")
    out.add_argument("--entity", default=d.entity, help="W&B entity (user or team)")
    out.add_argument("--group", default=d.group, help="W&B group (default: r{depth}-{precision})")
    out.add_argument("--name", default=d.name, help="run name and folder name (default: r{depth}-{precision}-{run id})")
    out.add_argument("--tags", nargs="*", default=d.tags, help="W&B tags")
    out.add_argument("--wandb-mode", choices=("online", "offline", "disabled"), default=d.wandb_mode,
                     help="default: $WANDB_MODE if set, else online when W&B credentials are configured, else offline")
    out.add_argument("--log-every", type=positive_int, default=d.log_every,
                     help="log window aggregates every N steps (and at each epoch's end)")
    out.add_argument("--ckpt-every", type=_non_negative_int, default=d.ckpt_every,
                     help="also checkpoint every N epochs (0: only at the end)")
    out.add_argument("--ckpt-artifact", action="store_true",
                     help="log the final checkpoint as a W&B model artifact (no staging copy)")
    out.add_argument("--nvml-hz", type=_non_negative_float, default=d.nvml_hz,
                     help="GPU telemetry samples per second from NVML, this process's GPU only (0: off)")
    out.add_argument("--wandb-stats-interval", type=_positive_float, default=d.wandb_stats_interval, metavar="S",
                     help="seconds between W&B's own system-metric samples (default: W&B's, 15 s)")
    out.add_argument("--wandb-init-timeout", type=_positive_float, default=d.wandb_init_timeout, metavar="S",
                     help="online W&B: seconds to wait for the server before logging offline instead (default 30)")
    out.add_argument("--resume", default=d.resume, metavar="PATH|auto",
                     help="continue from a checkpoint file or a run folder holding checkpoint.pt; 'auto' (with "
                     "--name): continue OUT_DIR/NAME if it has a checkpoint, start it if not, skip it if finished")
    return p


def parse_args(argv: list[str] | None = None) -> RunConfig:
    parser = build_parser()
    ns = parser.parse_args(_hyphenate(parser, sys.argv[1:] if argv is None else argv))
    values = {k: v for k, v in vars(ns).items() if not k.startswith("_")}
    if values["stop_at_acc"] is not None and values["dataset"] == "synthetic":
        parser.error("--stop-at-acc needs test accuracy: --dataset synthetic has no evaluation")
    # The stop target is a target too: its time is recorded with the others.
    targets = set(values["target_acc"]) | ({values["stop_at_acc"]} if values["stop_at_acc"] is not None else set())
    values["target_acc"] = sorted(targets)
    return RunConfig(**values)


def _hyphenate(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """Every option also answers to underscores (--max_steps=3): W&B sweeps write parameter names as flags,
    and the original study spelled its flags that way."""
    known = {s for action in parser._actions for s in action.option_strings}
    out = []
    for arg in argv:
        name, eq, value = arg.partition("=")
        if arg.startswith("--") and name not in known and name.replace("_", "-") in known:
            arg = name.replace("_", "-") + eq + value
        out.append(arg)
    return out


def check_out_dir(path: str) -> None:
    """Fail before training, not after hours of it, when results could not be written."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out-dir {path} cannot be created: {e.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"--out-dir {path} is not writable")
