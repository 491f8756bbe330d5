"""fp8 training of a model's Linear layers with torchao's float8 (`convert_to_float8_training`), the library
PyTorch itself maintains for it (torchtitan's fp8 path). torchao is imported here only, when an fp8 run starts:
the ResNet study never needs it.

What it converts: nn.Linear layers whose in- and out-features are both multiples of 16 (the fp8 matrix
multiply's shape rule; torchao's own filter). Their matmuls run in float8 (e4m3 forward, e5m2 gradients) with
dynamic scales, tensorwise or rowwise; the weights stay fp32 (master weights) and everything else runs in the
policy's bf16 autocast.
"""

from __future__ import annotations

import logging

import torch.nn as nn

from train.contract.errors import UsageError, first_line
from train.numerics.models import counted_forward

RECIPES = ("tensorwise", "rowwise")
# Below this share of its FLOPs in convertible Linear layers a model gains nothing from fp8 but its casts: a run
# would measure bf16 with extra work, so it is refused (a CIFAR ResNet has 0%, a ViT-S/4 97%).
MIN_CONVERTIBLE_SHARE = 0.5
ALIGN = 16


def convertible(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) and module.in_features % ALIGN == 0 and module.out_features % ALIGN == 0


def flop_shares(model: nn.Module) -> tuple[float, float]:
    """(share of the forward FLOPs in convertible Linear layers, share in all Linear layers), counted by
    FlopCounterMode on one 32x32 image with the math attention (counted as attention, not Linear)."""
    counts = counted_forward(model).get_flop_counts()
    total = sum(counts["Global"].values())

    def flops_of(keep) -> int:
        return sum(sum(counts.get(f"{type(model).__name__}.{name}", {}).values())
                   for name, m in model.named_modules() if name and keep(m))

    return flops_of(convertible) / total, flops_of(lambda m: isinstance(m, nn.Linear)) / total


def check_model(model: nn.Module, arch: str, precision: str) -> None:
    """Refuse fp8 for a model whose FLOPs are not in Linear layers fp8 can convert, saying the share."""
    share, linear = flop_shares(model)
    if share < MIN_CONVERTIBLE_SHARE:
        raise UsageError(
            f"precision {precision} cannot help {arch}: fp8 training converts nn.Linear layers with both sizes "
            f"multiples of {ALIGN}, which hold {100 * share:.4g}% of its forward FLOPs (all its Linear layers: "
            f"{100 * linear:.2g}%; the rest is convolutions); use a transformer (--model vit-s) or bf16")


def convert(model: nn.Module, recipe: str) -> list[str]:
    """Swap the convertible Linear layers for torchao's Float8Linear, in place; return their names."""
    pytree = logging.getLogger("torch.utils._pytree")
    level = pytree.level
    # torchao 0.18 registers an Enum the way torch 2.14 deprecates: a warning at import, every run, not ours to fix
    pytree.setLevel(logging.ERROR)
    try:
        from torchao.float8 import Float8LinearConfig, convert_to_float8_training
    except ImportError as e:
        raise UsageError(f"fp8 needs torchao (pip install -r requirements.txt): {first_line(e)}") from None
    finally:
        pytree.setLevel(level)
    config = Float8LinearConfig.from_recipe_name(recipe)
    convert_to_float8_training(model, config=config, module_filter_fn=lambda m, name: convertible(m))
    return [name for name, m in model.named_modules() if type(m).__name__ == "Float8Linear"]
