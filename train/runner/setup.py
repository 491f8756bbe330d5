"""The run's parts, each built by one function: the runner (session.py) and the benchmark's bare loop
(train/benchmark/bare.py) build with these, so the bare loop trains with the runner's device choice, data and
loader settings, model, optimizer, LR schedule and loss scaler."""

from __future__ import annotations

import math
import platform
from dataclasses import dataclass

import torch

from train.benchmark.turns import Turns
from train.contract.errors import UsageError
from train.launch.distributed import Ranks
from train.measure.aggregates import RunAggregates
from train.measure.memory import MemoryMonitor
from train.measure.profiler import NoProfile, StepProfiler
from train.measure.timing import Throughput
from train.numerics import data, precision, registry
from train.numerics.models import count_params, flops_per_image, linear_products
from train.numerics.precision import Precision
from train.runner.backlog import Backlog
from train.runner.hooks import Hooks
from train.runner.loop import Plan
from train.runner.options import RunConfig, effective_lr, run_label
from train.runner.state import EpochSums, Progress, RngState, TrainingState
from train.runner.tracking import NullTracker, Tracker


def pick_device(choice: str) -> torch.device:
    if choice == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if choice == "cuda":
        raise UsageError("--device cuda (--use_cuda): no CUDA device is visible to PyTorch "
                         f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); use --device cpu or auto")
    return torch.device("cpu")


def device_name(device: torch.device) -> str:
    """The GPU's name as NVML prints it (the FLOP-peak table's key), or the CPU's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def build_policy(cfg: RunConfig) -> tuple[Precision, dict]:
    """The precision policy, and the backend flags (TF32) it set."""
    policy = precision.get(cfg.precision)
    return policy, policy.set_backend_flags()


@dataclass
class Data:
    train_split: data.Split
    test_split: data.Split | None  # None: synthetic data (random labels), nothing to evaluate
    train_loader: object
    test_loader: object | None
    memory_format: torch.memory_format  # of the inputs and the model: channels-last on GPUs


def build_data(cfg: RunConfig, policy: Precision, device: torch.device, ranks: Ranks) -> Data:
    """The data set (CIFAR-10 or synthetic) and its loaders, this rank's shard; on GPUs cuDNN's autotuner on."""
    if cfg.dataset == "cifar10":
        train_split, test_split = data.load_cifar10(cfg.data_dir, cfg.download)
    else:
        train_split, test_split = data.synthetic(cfg.seed), None
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    loader_args = dict(batch_size=cfg.batch_size, device=device, dtype=policy.input_dtype,
                       memory_format=memory_format, seed=cfg.seed, rank=ranks.rank, world_size=ranks.world_size)
    if cfg.loader == "device":
        make_loader = data.DeviceLoader
    else:
        make_loader = data.TorchLoader
        loader_args["num_workers"] = cfg.num_workers
    train_loader = make_loader(train_split, train=True, **loader_args)
    test_loader = make_loader(test_split, train=False, **loader_args) if test_split is not None else None
    return Data(train_split, test_split, train_loader, test_loader, memory_format)


def check_model_precision(cfg: RunConfig, policy: Precision) -> None:
    """Refuse fp8 for a model it cannot speed up (a ResNet: its FLOPs are in convolutions), before the device
    is asked: the model's refusal holds on every device."""
    if policy.fp8_recipe:
        from train.numerics import fp8

        if cfg.batch_size % fp8.ALIGN:  # a ViT's rows are 65 x batch: fp8 matmuls take multiples of 16
            raise UsageError(f"--precision {policy.name} needs --batch-size a multiple of {fp8.ALIGN} "
                             f"(fp8 matrix multiplies take no other shapes), got {cfg.batch_size}")
        fp8.check_model(registry.build(cfg.arch, cfg.depth), registry.arch(cfg.arch, cfg.depth), policy.name)


def build_model(cfg: RunConfig, policy: Precision) -> tuple[torch.nn.Module, dict]:
    """The --model (seeded, in the policy's dtypes, still on the CPU) and what the W&B config says of it."""
    torch.manual_seed(cfg.seed)
    model = registry.build(cfg.arch, cfg.depth)
    forward_flops, train_flops = flops_per_image(model)  # counted (where counted) before the model is cast
    facts = {"arch": registry.arch(cfg.arch, cfg.depth), "params": count_params(model),
             "forward_flops_per_image": forward_flops, "train_flops_per_image": train_flops,
             "linear_products": linear_products(_on_meta(cfg))}
    return policy.prepare(model), facts


def _on_meta(cfg: RunConfig) -> torch.nn.Module:
    """The --model with shapes and no data: a forward pass through it measures shapes for free."""
    with torch.device("meta"):
        return registry.build(cfg.arch, cfg.depth)


def build_plan(cfg: RunConfig, steps_per_epoch: int) -> Plan:
    schedule_steps = cfg.epochs * steps_per_epoch
    total_steps = min(schedule_steps, cfg.max_steps) if cfg.max_steps else schedule_steps
    return Plan(epochs=cfg.epochs, schedule_steps=schedule_steps, total_steps=total_steps, log_every=cfg.log_every)


@dataclass
class Optimization:
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    scheduler: torch.optim.lr_scheduler.LRScheduler


def build_optimization(cfg: RunConfig, model: torch.nn.Module, policy: Precision, device: torch.device,
                       plan: Plan, world_size: int = 1) -> Optimization:
    """Optimizer (on the model's device), loss scaler and LR schedule over the full run's steps."""
    lr = effective_lr(cfg, world_size)
    optimizer = precision.make_optimizer(model, cfg.optimizer, lr, cfg.momentum, cfg.weight_decay)
    warmup = round(cfg.lr_warmup_epochs * plan.schedule_steps / plan.epochs)
    if warmup:
        multiplier = warmed_up(warmup, plan.schedule_steps, cfg.lr_schedule == "cosine")
    else:  # as before warm-up existed: the checkpoints of earlier runs hold these functions' state
        multiplier = cosine(plan.schedule_steps) if cfg.lr_schedule == "cosine" else constant
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
    return Optimization(optimizer, policy.grad_scaler(device.type), scheduler)


# The LR multipliers are plain functions: LambdaLR saves a callable object's attributes in its state_dict, and
# the checkpoint's scheduler entry must stay as it is.
def cosine(schedule_steps: int):
    def multiplier(step: int) -> float:
        return 0.5 * (1 + math.cos(math.pi * min(step, schedule_steps) / schedule_steps))
    return multiplier


def constant(step: int) -> float:
    return 1.0


def warmed_up(warmup_steps: int, schedule_steps: int, anneal: bool):
    """Linear from 1/warmup_steps to 1 over the first warmup_steps, then cosine to 0 (or constant) over the rest."""
    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if not anneal:
            return 1.0
        rest = max(schedule_steps - warmup_steps, 1)
        return 0.5 * (1 + math.cos(math.pi * min(step - warmup_steps, rest) / rest))
    return multiplier


def build_state(cfg: RunConfig, model: torch.nn.Module, opt: Optimization, train_loader, sampler,
                device: torch.device, ranks: Ranks) -> TrainingState:
    """A new run's training state (a resume then loads the checkpoint's into it); `model`: the bare module."""
    return TrainingState(model=model, optimizer=opt.optimizer, scaler=opt.scaler, scheduler=opt.scheduler,
                         loader=train_loader, rng=RngState(), progress=Progress(),
                         epoch=EpochSums(device, ranks.is_main),
                         throughput=Throughput(cfg.batch_size * ranks.world_size, cfg.warmup_steps),
                         memory=MemoryMonitor(device), aggregates=RunAggregates(), nvml=sampler,
                         wandb_backlog=Backlog())


def build_tracker(cfg: RunConfig, ranks: Ranks, *, mode: str, why: str, run_dir: str, run_id: str, name: str,
                  config: dict, say, job_type: str):
    """The W&B run, on rank 0 only (the others log nothing)."""
    if not ranks.is_main:
        return NullTracker()
    return Tracker(mode=mode, why=why, run_dir=run_dir, run_id=run_id, name=name, project=cfg.project,
                   entity=cfg.entity, group=cfg.group or f"{run_label(cfg)}-{cfg.precision}", tags=cfg.tags,
                   config=config, say=say, stats_interval=cfg.wandb_stats_interval,
                   world_size=ranks.world_size, init_timeout=cfg.wandb_init_timeout,
                   job_type=job_type)


def build_hooks(ranks: Ranks) -> Hooks:
    """The benchmark's turns when `python -m train.benchmark` started this process (TRAIN_TURNS), else none.
    Read first thing: the variable is popped before any child process could inherit it."""
    turns = None if ranks.enabled else Turns.from_env()
    return turns or Hooks()


def build_profiler(cfg: RunConfig, config: dict, run_dir: str, device: torch.device, ranks: Ranks) -> NoProfile:
    """--profile K: K steps profiled after this segment's warm-up, with what their rates are measured against
    (the counted FLOPs per image, the datasheet peak from the W&B config)."""
    if not cfg.profile:
        return NoProfile()
    return StepProfiler(cfg.profile, cfg.warmup_steps, run_dir, device, rank=ranks.rank,
                        images_per_step=cfg.batch_size, train_flops_per_image=config["model"]["train_flops_per_image"],
                        peak_flops_per_s=config["system"]["peak_flops_per_s"])
