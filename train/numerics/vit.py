"""A compact Vision Transformer for 32x32 CIFAR-10 images: 4x4 patches (64 tokens) plus a class token.

Pre-norm blocks as in ViT/DeiT; every matrix product is an nn.Linear (the patch embedding too, on unfolded
patches), so fp8 training, which converts Linear layers, reaches all of them but the 10-way head; attention goes
through scaled_dot_product_attention, which picks flash attention on GPUs. Counts: docs/models.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

IMAGE, PATCH, CHANNELS = 32, 4, 3
PATCHES = (IMAGE // PATCH) ** 2  # 64
TOKENS = PATCHES + 1  # and the class token
PATCH_DIM = CHANNELS * PATCH * PATCH  # 48


@dataclass(frozen=True)
class ViTSize:
    width: int
    heads: int
    layers: int
    mlp_ratio: int = 4


class Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, mlp_ratio * width)
        self.fc2 = nn.Linear(mlp_ratio * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v)  # (b, heads, n, d/heads)
        x = x + self.proj(attended.transpose(1, 2).reshape(b, n, d))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    def __init__(self, size: ViTSize, num_classes: int = 10):
        super().__init__()
        self.size, self.num_classes = size, num_classes
        self.embed = nn.Linear(PATCH_DIM, size.width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, size.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, TOKENS, size.width))
        self.blocks = nn.Sequential(*(Block(size.width, size.heads, size.mlp_ratio) for _ in range(size.layers)))
        self.norm = nn.LayerNorm(size.width)
        self.head = nn.Linear(size.width, num_classes)
        self.apply(_init)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # (b, 3, 32, 32) -> (b, 64, 48): each 4x4 patch's pixels, channel-major, one token each
        # contiguous: torchao's rowwise float8 cannot reshape a strided input (its clone is unsupported)
        patches = F.unfold(images, PATCH, stride=PATCH).transpose(1, 2).contiguous()
        x = self.embed(patches)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])

    def flops_per_image(self) -> tuple[int, int]:
        """(forward, training) FLOPs of one image, exact (train.numerics.models reads this)."""
        return forward_flops(self.size, self.num_classes), train_flops(self.size, self.num_classes)


def _init(module: nn.Module) -> None:
    # DeiT's: truncated normal linear weights, zero biases (LayerNorm keeps PyTorch's ones and zeros)
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)


def params(size: ViTSize, num_classes: int = 10) -> int:
    """Exact parameter count: embedding, class token and positions; per block 2 LayerNorms, qkv, proj, MLP;
    final LayerNorm and head."""
    d, h = size.width, size.mlp_ratio * size.width
    block = 2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * h + h) + (h * d + d)
    return (PATCH_DIM * d + d) + d + TOKENS * d + size.layers * block + 2 * d + (d * num_classes + num_classes)


def forward_flops(size: ViTSize, num_classes: int = 10) -> int:
    """Exact forward FLOPs per image as FlopCounterMode counts them (2 per multiply-add; matrix products and
    attention's two batched products; LayerNorm, softmax, GELU and biases uncounted): the embedding on 64
    patches, per block qkv + proj + MLP on 65 tokens (2*n*d*(3d + d + 2h)) and attention's QK^T and AV
    (2 * 2*n*n*d), the head on the class token."""
    d, h, n = size.width, size.mlp_ratio * size.width, TOKENS
    block = 2 * n * d * (3 * d + d + 2 * h) + 4 * n * n * d
    return 2 * PATCHES * PATCH_DIM * d + size.layers * block + 2 * d * num_classes


def train_flops(size: ViTSize, num_classes: int = 10) -> int:
    """Exact forward + backward FLOPs per image: the backward of every product costs twice its forward (the
    gradients of both operands), except the embedding's, whose input (the images) needs no gradient."""
    return 3 * forward_flops(size, num_classes) - 2 * PATCHES * PATCH_DIM * size.width


# The registry's builders (train/numerics/registry.py); they take the ResNet depth and ignore it.
def vit_s(depth: int) -> ViT:
    return ViT(ViTSize(384, 6, 12))


def vit_b(depth: int) -> ViT:
    return ViT(ViTSize(768, 12, 12))


def vit_smoke(depth: int) -> ViT:
    return ViT(ViTSize(32, 2, 2))
