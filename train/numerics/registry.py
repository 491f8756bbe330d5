"""The models a run can train (--model), each with the optimization it trains with by default.

Torch-free, so the command line, the benchmark's parent and the sweep read it without importing torch: a model's
builder is named as "module:function" and imported when a run builds it. The builder takes the ResNet depth
(--depth; only models with uses_depth read it) and returns an nn.Module for 3x32x32 inputs and 10 classes. Adding
an architecture: its file, and one line in MODELS (docs/models.md).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from train.contract.errors import UsageError


@dataclass(frozen=True)
class Recipe:
    """The optimization settings a model trains with where the command line does not set them."""
    optimizer: str
    lr: float
    weight_decay: float
    lr_warmup_epochs: float  # linear warm-up from 0 before the cosine (or constant) schedule


# The original study's: SGD with momentum, --lr 0.005, no warm-up (RunConfig's own defaults).
RESNET_RECIPE = Recipe("sgd", 0.005, 5e-4, 0.0)
# DeiT's recipe scaled to batch 128 (lr 5e-4 * 128/512 = 1.25e-4 is too slow on CIFAR from scratch; 1e-3 at
# batch 128 as in the common CIFAR ViT baselines), weight decay 0.05, 5 warm-up epochs, then cosine.
VIT_RECIPE = Recipe("adamw", 1e-3, 0.05, 5.0)


@dataclass(frozen=True)
class Model:
    builder: str  # "module:function", called with the ResNet depth
    recipe: Recipe
    uses_depth: bool = False  # --depth picks the layout (the ResNets)
    note: str = ""


MODELS = {
    "resnet": Model("train.numerics.models:resnet", RESNET_RECIPE, uses_depth=True,
                    note="CIFAR ResNet-18/34/50, picked by --depth"),
    "vit-s": Model("train.numerics.vit:vit_s", VIT_RECIPE, note="ViT-S/4: 384 wide, 6 heads, 12 layers"),
    "vit-b": Model("train.numerics.vit:vit_b", VIT_RECIPE, note="ViT-B/4: 768 wide, 12 heads, 12 layers"),
    "vit-smoke": Model("train.numerics.vit:vit_smoke", VIT_RECIPE,
                       note="32 wide, 2 heads, 2 layers: a test and smoke size, not a study model"),
}


def get(name: str) -> Model:
    try:
        return MODELS[name]
    except KeyError:
        raise UsageError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}") from None


def arch(name: str, depth: int) -> str:
    """The architecture's name in configs and run names: resnet18 for --model resnet --depth 18, else the model."""
    return f"resnet{depth}" if get(name).uses_depth else name


def short(name: str, depth: int) -> str:
    """The model in run names, W&B groups and narrow columns: r18 (the original study's spelling), else the model."""
    return f"r{depth}" if get(name).uses_depth else name


def build(name: str, depth: int):
    module, function = get(name).builder.split(":")
    return getattr(importlib.import_module(module), function)(depth)
