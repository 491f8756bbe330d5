"""Each option of a run defined once: RunConfig's fields carry their flag, aliases, type, default, help, argparse
group and whether they are part of the experiment identity; the command line (including the original study's
flags), EXPERIMENT_FLAGS and docs/options.md are generated from them."""

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
from train.contract.names import NAME_RULE, check_run_name
from train.numerics import registry

DEPTHS = (18, 34, 50)
# torch.compile of the model (forward and backward): none (eager), Inductor's default, max-autotune (longer
# compile, tuned kernels), reduce-overhead (CUDA graphs on GPUs; the same as default on CPU).
COMPILE_MODES = ("none", "default", "max-autotune", "reduce-overhead")


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
non_negative_int = _bounded(int, "an integer >= 0", inclusive=True)
_positive_float = _bounded(float, "a positive number", inclusive=False)
_non_negative_float = _bounded(float, "a number >= 0", inclusive=True)
# A profiled window's steps when --profile is given without K (and the benchmark's and the GPU suite's default):
# a few steps explain a step's time by class.
PROFILE_STEPS = 3


def _accuracy(text: str) -> float:
    """An argparse type: a test accuracy as a fraction, 0 < x <= 1 (93% is 0.93)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an accuracy between 0 and 1, got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected an accuracy between 0 and 1 (93% is 0.93), got {text}")
    return value


def _existing_file(text: str) -> str:
    """An argparse type: a file that exists (checked before anything is written)."""
    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return text


def _run_name(text: str) -> str:
    """An argparse type: a run name, one folder inside --out-dir (checked before anything is written)."""
    try:
        return check_run_name(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


# The argparse groups, in the order --help and docs/options.md show them.
MODEL, TRAINING, DATA, DEVICE = "model and precision", "training", "data", "device"
DDP, OUTPUT = "several GPUs and nodes (DDP)", "output and tracking"
GROUPS = (MODEL, TRAINING, DATA, DEVICE, DDP, OUTPUT)


def option(default, help: str, group: str, *, identity: bool = False, aliases: tuple[str, ...] = (),
           shorthands: dict | None = None, flag: str | None = None, **argparse_kwargs):
    """A RunConfig field and everything the command line and docs/options.md say about it.

    identity: part of the experiment identity (EXPERIMENT_FLAGS). aliases: other spellings of the flag.
    shorthands: flags that set one value ({"--use_34": 34}); they and the flag may not disagree. flag: the
    flag's name when it is not --name-with-hyphens. argparse_kwargs: type, choices, nargs, metavar.
    A default of False makes a switch (store_true)."""
    spec = {"help": help, "group": group, "identity": identity, "aliases": aliases, "shorthands": shorthands or {},
            "flag": flag, "argparse": argparse_kwargs}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=spec)
    return field(default=default, metadata=spec)


@dataclass
class RunConfig:
    """One run's settings, each with its flag: the one place an option is defined (docs/options.md lists them).

    The experiment-identity fields come in EXPERIMENT_FLAGS' order; within an argparse group, --help lists the
    flags in field order."""

    depth: int | None = option(18, "ResNet depth (CIFAR layout); --model resnet only (a ViT records none)", MODEL,
                               identity=True, type=int, choices=DEPTHS, shorthands={"--use_34": 34, "--use_50": 50})
    # `arch`, not `model`: the W&B config's "model" holds the model's facts (arch, params, FLOPs).
    arch: str = option("resnet", "the architecture, from train/numerics/registry.py (docs/models.md): resnet "
                       "(--depth picks 18/34/50), vit-s, vit-b, vit-smoke (a test size); a ViT trains with its own "
                       "recipe (AdamW, warm-up, cosine) where --optimizer, --lr, --weight-decay and "
                       "--lr-warmup-epochs are not given", MODEL, identity=True, flag="--model",
                       choices=tuple(registry.MODELS))
    precision: str = option(
        "fp32", "fp32: strict IEEE fp32, TF32 off for matmul and cuDNN conv; tf32: TF32 on for both (Ampere+ GPU); "
        "amp_fp16: autocast fp16 + dynamic loss scaling; amp_bf16: autocast bf16, no scaler; "
        "fp16: pure half weights/activations, BatchNorm in fp32, dynamic loss scaling; "
        "bf16: pure bf16, BatchNorm in fp32; fp8_tensorwise, fp8_rowwise: torchao's float8 training of the "
        "Linear layers (tensorwise or rowwise scales), fp32 master weights, bf16 autocast elsewhere; GPUs of "
        "compute capability 8.9+ and models whose FLOPs are in Linear layers (a ViT) only", MODEL, identity=True,
        choices=PRECISIONS,
        shorthands={"--use_amp": "amp_fp16", "--use_half": "fp16"})
    dataset: str = option("cifar10", "synthetic: random images and labels of CIFAR-10's shape, for throughput only "
                          "(no evaluation)", DATA, identity=True, choices=("cifar10", "synthetic"))
    data_dir: str = option("data", "folder holding cifar-10-batches-py/", DATA)
    download: bool = option(False, "download CIFAR-10 into --data-dir (torchvision's downloader)", DATA)
    batch_size: int = option(128, "batch size per process", TRAINING, identity=True, aliases=("--batch_size",),
                             type=positive_int)
    optimizer: str = option("sgd", "sgd uses --momentum; both use --weight-decay; fused kernels where the device "
                            "has them (default: the model's recipe, sgd for the ResNets, adamw for the ViTs)",
                            TRAINING, identity=True, choices=("sgd", "adamw"))
    lr: float = option(0.005, "peak learning rate (default: the model's recipe, 0.005 for the ResNets, 0.001 for "
                       "the ViTs)", TRAINING, identity=True, type=_positive_float)
    lr_scaling: str = option("none", "linear: multiply --lr by the number of processes (the global batch grows "
                             "with them); the effective value is recorded in the config", TRAINING, identity=True,
                             choices=("none", "linear"))
    momentum: float = option(0.9, "SGD momentum", TRAINING, identity=True, type=_non_negative_float)
    weight_decay: float = option(5e-4, "weight decay (default: the model's recipe, 0.0005 for the ResNets, 0.05 "
                                 "for the ViTs)", TRAINING, identity=True, type=_non_negative_float)
    lr_schedule: str = option("cosine", "cosine: anneal per step from --lr to 0 over the run; constant: --lr "
                              "throughout", TRAINING, identity=True, choices=("cosine", "constant"))
    lr_warmup_epochs: float = option(0.0, "linear warm-up of the learning rate from 0 over this many epochs, "
                                     "then --lr-schedule over the rest (default: the model's recipe, 0 for the "
                                     "ResNets, 5 for the ViTs)", TRAINING, identity=True, type=_non_negative_float,
                                     metavar="EPOCHS")
    epochs: int = option(600, "epochs to train", TRAINING, identity=True, aliases=("--epoch",), type=positive_int)
    max_steps: int | None = option(None, "stop after this many optimizer steps (smoke runs, benchmarks); "
                                   "evaluation still runs at the end", TRAINING, type=positive_int)
    warmup_steps: int = option(10, "first steps left out of the run's images/s median (cuDNN autotuning, "
                               "allocator warm-up)", TRAINING, type=non_negative_int)
    target_acc: list[float] = option(
        list(DEFAULT_TARGETS), "test accuracies (fractions) whose training time, epoch, images and, on GPUs, "
        "energy the run records when it first reaches each (summary time_to_acc/<percent>); defaults are for "
        "real CIFAR-10", TRAINING, type=_accuracy, nargs="+", metavar="ACC")
    stop_at_acc: float | None = option(
        None, "end the run at the end of the first epoch whose test accuracy reaches ACC (recorded as its end: "
        "target_reached); a time-to-accuracy sweep needs no full --epochs", TRAINING, type=_accuracy,
        metavar="ACC")
    seed: int = option(0, "seed for weights, shuffling and augmentation (repeat a point over seeds to get its "
                       "spread)", TRAINING, identity=True, type=int)
    loader: str = option("device", "device: dataset resident on the training device, whole-batch augmentation "
                         "there; torch: torchvision transforms in a DataLoader with --num-workers processes", DATA,
                         identity=True, choices=("device", "torch"))
    num_workers: int = option(2, "DataLoader worker processes (--loader torch)", DATA, identity=True,
                              aliases=("--num_workers",), type=non_negative_int)
    device: str = option("auto", "auto: CUDA when available, else CPU", DEVICE, choices=("auto", "cuda", "cpu"),
                         shorthands={"--use_cuda": "cuda"})
    use_ddp: bool = option(False, "original study's flag: DDP on every GPU of this node (same as --gpus <GPU "
                           "count>), or, when started by torchrun/srun, mark the worker as DDP (it is anyway)",
                           DEVICE, flag="--use_ddp")
    gpus: int | None = option(None, "processes on this node, one per GPU, started by PyTorch's elastic launcher "
                              "(torchrun's machinery); on a machine without GPUs, N CPU processes over gloo. Not "
                              "needed under torchrun or srun, whose environment says the ranks", DDP,
                              type=positive_int)
    nodes: int = option(1, "nodes in the job; run the same command on each, with the same --rdzv-endpoint", DDP,
                        type=positive_int)
    rdzv_endpoint: str | None = option(None, "rendezvous of a several-node job (a port on the first node)", DDP,
                                       metavar="HOST:PORT")
    rdzv_id: str | None = option(None, "rendezvous id shared by the nodes of one job (default: $SLURM_JOB_ID)", DDP)
    dist_timeout: float = option(600.0, "seconds before a dead or hung rank ends the job (rendezvous and "
                                 "collectives)", DDP, type=_positive_float, metavar="S")
    max_restarts: int = option(0, "restart the job's workers up to N times when one dies (killed, a failed "
                               "collective): each restart continues the run from its latest checkpoint (see "
                               "--ckpt-every) in the same W&B run, with or without --resume; a stop, a "
                               "divergence or a usage error is not retried. Needs a launch (--gpus, --nodes; "
                               "--gpus 1 for one process); several nodes need --name. Under torchrun: torchrun's "
                               "own --max-restarts", DDP, type=non_negative_int, metavar="N")
    grad_compress: str = option("none", "gradient all-reduce in 16 bits (PyTorch's compression hooks); pure "
                                "fp16/bf16 models already reduce 16-bit gradients", DDP, identity=True,
                                choices=("none", "fp16", "bf16"))
    compile: str = option("none", "torch.compile the model (Inductor; on CPU its C++ backend needs a C++ "
                          "compiler): default, max-autotune (slower compile, tuned kernels) or reduce-overhead "
                          "(CUDA graphs on GPUs, as default on CPU); compile time is left out of images/s and "
                          "logged as time/compile_s", MODEL, identity=True, choices=COMPILE_MODES)
    peak_tflops: float | None = option(None, "the GPU's dense peak TFLOP/s for this run's precision, for MFU, "
                                       "over the datasheet table (train/measure/peaks.py); the run's config "
                                       "records it with peak_source user", DEVICE, type=_positive_float,
                                       metavar="TFLOPS")
    out_dir: str = option("runs", "runs are written to OUT_DIR/NAME/ (checkpoint, W&B files)", OUTPUT)
    project: str = option("precision-depth-gpus", "W&B project", OUTPUT)
    entity: str | None = option(None, "W&B entity (user or team)", OUTPUT)
    group: str | None = option(None, "W&B group (default: r{depth}-{precision}, a ViT's {model}-{precision})", OUTPUT)
    name: str | None = option(None, "run name and folder name (default: r{depth}-{precision}-{run id}, a ViT's "
                              "{model}-{precision}-{run id}); "
                              + NAME_RULE, OUTPUT, type=_run_name)
    tags: list[str] = option([], "W&B tags", OUTPUT, nargs="*")
    wandb_mode: str | None = option(None, "default: $WANDB_MODE if set, else online when W&B credentials are "
                                    "configured, else offline", OUTPUT, choices=("online", "offline", "disabled"))
    log_every: int = option(50, "log window aggregates every N steps (and at each epoch's end)", OUTPUT,
                            type=positive_int)
    profile: int = option(0, f"profile K steps (--profile alone: {PROFILE_STEPS}) after --warmup-steps with torch.profiler: "
                          "the step time by operation class, logged as prof/* (docs/profile.md), and the trace in "
                          "RUN_DIR/profile/ (Perfetto, chrome://tracing), also saved to W&B; the profiled steps are "
                          "left out of images/s (0: off)", OUTPUT, type=non_negative_int, nargs="?", const=PROFILE_STEPS,
                          metavar="K")
    ckpt_every: int = option(0, "also checkpoint every N epochs (0: only at the end)", OUTPUT,
                             type=non_negative_int)
    ckpt_artifact: bool = option(False, "also upload the final checkpoint as a W&B model artifact (no staging copy); "
                                 "each segment's checkpoint is logged as a reference regardless", OUTPUT)
    nvml_hz: float = option(10.0, "GPU telemetry samples per second from NVML, this process's GPU only (0: off)",
                            OUTPUT, type=_non_negative_float)
    idle_power_s: float = option(3.0, "seconds of idle power measured on this process's GPU before training, "
                                 "for the energy above idle (nvml/idle_power_w; adds as much to set-up; 0: skip; "
                                 "runs without NVML skip it)", OUTPUT, type=_non_negative_float, metavar="S")
    wandb_stats_interval: float | None = option(None, "seconds between W&B's own system-metric samples (default: "
                                                "W&B's, 15 s)", OUTPUT, type=_positive_float, metavar="S")
    wandb_init_timeout: float = option(30.0, "online W&B: seconds to wait for the server before logging offline "
                                       "instead (default 30)", OUTPUT, type=_positive_float, metavar="S")
    nodecheck: str | None = option(None, "a node check's nodecheck.json (python -m train.nodecheck) whose measured "
                                   "ceilings the run records, for MFU and busbw against what this node can do "
                                   "(default: $TRAIN_NODECHECK, else OUT_DIR/nodecheck.json if there); used only "
                                   "when made on this host and device", OUTPUT, type=_existing_file, metavar="PATH")
    resume: str | None = option(None, "continue from a checkpoint file or a run folder holding checkpoint.pt; "
                                "'auto' (with --name): continue OUT_DIR/NAME if it has a checkpoint, start it if "
                                "not, skip it if finished", OUTPUT, metavar="PATH|auto")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


# Every setting that changes a run's result: a resumed run must match its checkpoint on each of these, and the
# report compares runs as one experiment only when they match (the seed aside). The rest of RunConfig
# (out-dir, names, logging, NVML rate, W&B mode, --max-steps, which may extend a run) may change.
EXPERIMENT_FLAGS = tuple(f.name for f in dataclasses.fields(RunConfig) if f.metadata["identity"])


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


def run_label(cfg: RunConfig) -> str:
    """The model in run names and W&B groups: r18 (the original study's spelling) or the model's name."""
    return registry.short(cfg.arch, cfg.depth)


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


def option_flag(f: dataclasses.Field) -> str:
    """The option's flag: --name-with-hyphens unless the spec names another."""
    return f.metadata["flag"] or "--" + f.name.replace("_", "-")


def build_parser(prog: str = "python train/run.py") -> argparse.ArgumentParser:
    p = OneLineParser(
        prog=prog,
        description="Train a CIFAR-10 ResNet (or ViT, --model) at one numeric precision and log time, memory, "
        "model size and accuracy to Weights & Biases. The original study's flags (--use_34, --use_amp, --epoch, ...) "
        "are accepted as aliases.",
        formatter_class=HelpFormatter,
    )
    groups = {title: p.add_argument_group(title) for title in GROUPS}
    defaults = RunConfig()
    for f in dataclasses.fields(RunConfig):
        spec, group = f.metadata, groups[f.metadata["group"]]
        kwargs = dict(spec["argparse"])
        if f.default is False:
            kwargs["action"] = "store_true"
        elif spec["shorthands"]:
            kwargs["action"] = _Once
        group.add_argument(option_flag(f), *spec["aliases"], dest=f.name, default=getattr(defaults, f.name),
                           help=spec["help"], **kwargs)
        for shorthand, value in spec["shorthands"].items():
            group.add_argument(shorthand, dest=f.name, const=value, action=_Once,
                               help=f"alias of {option_flag(f)} {value} (original study)")
    return p


# The options a model's recipe (registry.Recipe) sets where the command line does not.
RECIPE_FIELDS = ("optimizer", "lr", "weight_decay", "lr_warmup_epochs")


def recipe(arch: str) -> dict:
    """The RECIPE_FIELDS values --model trains with where the command line leaves them."""
    return {key: getattr(registry.get(arch).recipe, key) for key in RECIPE_FIELDS}


def parse_args(argv: list[str] | None = None) -> RunConfig:
    parser = build_parser()
    parser.set_defaults(**dict.fromkeys(RECIPE_FIELDS))  # None: not given
    ns = parser.parse_args(_hyphenate(parser, sys.argv[1:] if argv is None else argv))
    values = {k: v for k, v in vars(ns).items() if not k.startswith("_")}
    model = registry.get(values["arch"])
    values.update({k: v for k, v in recipe(values["arch"]).items() if values[k] is None})
    if not model.uses_depth:
        if "depth" in getattr(ns, "_set_by", {}):
            parser.error(f"{ns._set_by['depth']} picks a ResNet; --model {values['arch']} has its own size")
        values["depth"] = None
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



def markdown() -> str:
    """docs/options.md: every option of RunConfig, by argparse group (`python -m train.runner.options --markdown`)."""
    lines = ["# Options of `python train/run.py`", "",
             "<!-- Generated from RunConfig in train/runner/options.py by "
             "`python -m train.runner.options --markdown > docs/options.md`; edit the spec there, not this file. -->",
             "", "Every option also answers to underscores (`--max_steps=3`): W&B sweeps write parameter names as "
             "flags, and the original study spelled its flags that way. *Identity*: part of the experiment "
             "identity — a resume must match its checkpoint on it, and the report compares runs as one experiment "
             "only when they match (the seed aside)."]
    defaults, parser = RunConfig(), build_parser()
    for title in GROUPS:
        lines += ["", f"## {title}", "", "| option | aliases | default | identity | help |", "|---|---|---|---|---|"]
        for f in dataclasses.fields(RunConfig):
            spec = f.metadata
            if spec["group"] != title:
                continue
            aliases = [f"`{a}`" for a in spec["aliases"]]
            aliases += [f"`{s}` (= `{option_flag(f)} {v}`)" for s, v in spec["shorthands"].items()]
            cells = [f"`{_invocation(parser, option_flag(f))}`", ", ".join(aliases),
                     _markdown_default(getattr(defaults, f.name)), "yes" if spec["identity"] else "", spec["help"]]
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def _invocation(parser: argparse.ArgumentParser, option: str) -> str:
    """`--optimizer {sgd,adamw}`, `--epochs EPOCHS`, `--download`: the flag and its value as --help shows them."""
    action = parser._option_string_actions[option]
    if action.nargs == 0:
        return option
    return f"{option} {parser._get_formatter()._format_args(action, action.dest.upper())}"


def _markdown_default(value) -> str:
    if value is None or value is False or value == []:
        return ""
    return f"`{' '.join(map(str, value)) if isinstance(value, list) else value}`"


def check_out_dir(path: str) -> None:
    """Fail before training, not after hours of it, when results could not be written."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out-dir {path} cannot be created: {e.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"--out-dir {path} is not writable")


if __name__ == "__main__":
    cli = OneLineParser(prog="python -m train.runner.options", description="Print docs/options.md.")
    cli.add_argument("--markdown", action="store_true", required=True, help="the options table in Markdown")
    cli.parse_args()
    sys.stdout.write(markdown())
