"""CIFAR-10 ResNet-18/34/50: torchvision's ResNet and blocks with the CIFAR stem (the ViTs: vit.py; both in
registry.py), and the models' FLOPs per image.

The widely used CIFAR layout (kuangliu/pytorch-cifar): a 3x3 stride-1 stem and no max-pool, so 32x32
inputs reach the last stage at 4x4; BasicBlock / Bottleneck with the stride on the 3x3 conv (torchvision's
v1.5 Bottleneck already does this); 10 classes. 11,173,962 / 21,282,122 / 23,520,842 parameters.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from train.contract.errors import UsageError, first_line

LAYOUTS = {
    18: ("BasicBlock", [2, 2, 2, 2]),
    34: ("BasicBlock", [3, 4, 6, 3]),
    50: ("Bottleneck", [3, 4, 6, 3]),
}


def _torchvision_resnet():
    try:
        from torchvision.models import resnet as tv
    except (ImportError, RuntimeError, OSError) as e:
        # Typically a torchvision built for another torch (a CPU-only torch under PyPI's CUDA torchvision).
        raise UsageError(f"torchvision does not load with torch {torch.__version__} ({first_line(e)}); "
                         "install both from requirements.txt into a fresh virtual environment") from None
    return tv


def resnet(depth: int, num_classes: int = 10) -> nn.Module:
    tv = _torchvision_resnet()
    block, layers = LAYOUTS[depth]
    net = tv.ResNet(getattr(tv, block), layers, num_classes=num_classes)
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision inits convs
    net.maxpool = nn.Identity()
    net.depth = depth  # a plain attribute (not in the state_dict): flops_per_image's key
    return net


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# forward_flops_per_image of resnet(depth), as FlopCounterMode counts them (tests/unit/test_models.py checks it):
# counting costs ~1 s of every run's set-up on a 2-core CPU.
FORWARD_FLOPS = {18: 1_110_845_440, 34: 2_318_804_992, 50: 2_595_659_776}


def flops_per_image(model: nn.Module) -> tuple[int, int]:
    """(forward, training) FLOPs of one 32x32 image: exact where the model states them (the ViTs), else the
    ResNet table's or counted forward FLOPs and 3x that for training (docs/precision.md, "FLOPs per image")."""
    if hasattr(model, "flops_per_image"):
        return model.flops_per_image()
    forward = FORWARD_FLOPS.get(getattr(model, "depth", None)) or forward_flops_per_image(model)
    return forward, 3 * forward


def forward_flops_per_image(model: nn.Module) -> int:
    """FLOPs of one 32x32 forward pass, counted by PyTorch (conv, linear and attention; 1 MAC = 2 FLOPs).

    Training costs about 3x this (the backward pass is about twice the forward): the MFU convention of
    docs/precision.md ("FLOPs per image and MFU"). Counted on CPU in fp32 before the model is cast or moved.
    """
    return int(counted_forward(model).get_total_flops())


def linear_products(model: nn.Module) -> list[list[int]] | None:
    """The matrix products of the model's nn.Linear layers for one 32x32 image, as [rows, in_features,
    out_features, layers], most FLOPs first: rows are the tokens a layer sees (a ViT's 65, its embedding's 64
    patches, a ResNet head's 1), so a batch of B makes each product (B*rows) x K times K x N. fp8's gains hang on
    these shapes (docs/precision.md, "fp8"); the report states them beside fp8's speed. Shapes only: give it a
    model built on the meta device (`with torch.device("meta")`), whose forward pass costs nothing. None for a
    model whose forward pass needs real values (a user's model reading one with .item()): a fact not known."""
    seen: dict[tuple[int, int, int], int] = {}

    def record(layer, inputs, output):
        shape = (inputs[0].numel() // layer.in_features, layer.in_features, layer.out_features)
        seen[shape] = seen.get(shape, 0) + 1
    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, nn.Linear)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, 32, 32, device=next(model.parameters()).device))
    except Exception:  # noqa: BLE001 - any failure on meta tensors: the shapes are unknown, the run goes on
        return None
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return [[*shape, n] for shape, n in sorted(seen.items(), key=lambda x: -x[0][0] * x[0][1] * x[0][2] * x[1])]


def counted_forward(model: nn.Module) -> FlopCounterMode:
    """PyTorch's FLOP counter after one 32x32 forward pass in eval mode (per module: get_flop_counts())."""
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()
    # The math attention counts as its two batched products; the CPU's fused kernel is not counted at all.
    with counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        model(torch.zeros(1, 3, 32, 32))
    model.train(was_training)
    return counter
