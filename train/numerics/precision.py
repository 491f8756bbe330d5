"""Numeric precision policies: parameter dtype, autocast dtype, loss scaling, TF32 flags, and whether a device runs them."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from train.contract.errors import UsageError, first_line


@dataclass(frozen=True)
class Precision:
    name: str
    param_dtype: torch.dtype  # weights and activations outside autocast (BatchNorm always stays fp32)
    autocast_dtype: torch.dtype | None
    loss_scaling: bool  # dynamic loss scaling (GradScaler): fp16 needs it, bf16 has fp32's range
    tf32: bool
    needs_ampere: bool  # TF32 and bf16 tensor cores arrive with compute capability 8.0

    @property
    def input_dtype(self) -> torch.dtype:
        return self.param_dtype

    def set_backend_flags(self) -> dict:
        """Set TF32 for matmul and cuDNN conv explicitly: cuDNN's TF32 is on by default, so a plain
        "fp32" convnet would silently run TF32. Returns the effective values for the run config.

        Both APIs, legacy first: with only the new `fp32_precision` set, torch 2.14 raises "mix of the legacy and
        new APIs" on reading `allow_tf32` or `get_float32_matmul_precision()`, which Inductor's autotuner reads.
        Setting the legacy flags first, then the new ones to the same value, leaves every getter agreeing."""
        torch.backends.cuda.matmul.allow_tf32 = self.tf32
        torch.backends.cudnn.allow_tf32 = self.tf32
        if _has_new_tf32_api():  # torch >= 2.9; guarded by feature, as older or partial builds lack it
            mode = "tf32" if self.tf32 else "ieee"
            torch.backends.cudnn.conv.fp32_precision = mode
            torch.backends.cudnn.rnn.fp32_precision = mode
            torch.backends.cuda.matmul.fp32_precision = mode
        return {"tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32}

    def prepare(self, model: nn.Module) -> nn.Module:
        """Cast weights to the parameter dtype, keeping BatchNorm in fp32: cuDNN's BN kernels want fp32
        weights and half-precision running variances overflow (docs/precision.md, "Precisions")."""
        model.to(self.param_dtype)
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.float()
        return model

    def autocast(self, device_type: str):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type, dtype=self.autocast_dtype)

    def grad_scaler(self, device_type: str) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(device_type, enabled=self.loss_scaling)

    def settings(self, backend_flags: dict) -> dict:
        return {
            "name": self.name,
            "param_dtype": str(self.param_dtype).removeprefix("torch."),
            "autocast_dtype": str(self.autocast_dtype).removeprefix("torch.") if self.autocast_dtype else None,
            "batchnorm_dtype": "float32",
            "loss_scaler": self.loss_scaling,
            **backend_flags,
        }

    def check_device(self, device: torch.device, probe: bool = True) -> None:
        """Refuse, before any training, a precision the device cannot run: by rule first, then (with `probe`)
        by running one tiny training step in this precision (a missing kernel shows up there)."""
        where = _describe(device)
        self.check_rules(device.type, torch.cuda.get_device_capability(device) if device.type == "cuda" else None,
                         where)
        if not probe:
            return
        try:
            _probe_step(self, device)
        except Exception as e:  # noqa: BLE001 - any failure here means "this device cannot run it"
            raise UsageError(f"precision {self.name} cannot run on {where}: {first_line(e)}") from None

    def check_rules(self, device_type: str, capability: tuple[int, int] | None, where: str) -> None:
        """The refusals by rule alone. `capability` None on CUDA: not known without a CUDA context (the
        benchmark's parent asks before its points start, and must not create one), so that rule is left to
        check_device in the process that trains."""
        if device_type == "cpu" and self.tf32:
            raise UsageError(f"precision {self.name} cannot run on {where}: TF32 is a tensor-core mode of NVIDIA GPUs "
                             "from Ampere (compute capability 8.0) on; use fp32 on CPU")
        if device_type == "cpu" and torch.float16 in (self.param_dtype, self.autocast_dtype):
            # Measured 2026-11-25 (torch 2.15, Xeon with AVX512-FP16): a 64-channel 3x3 conv's forward+backward
            # took 885 ms in fp16 against 10.7 ms in fp32; a ResNet-18 amp_fp16 step took ~190x an fp32 one.
            raise UsageError(f"precision {self.name} cannot run usefully on {where}: PyTorch's CPU convolution "
                             "backward has no fast float16 kernel (a ResNet step takes over 100x its fp32 time); "
                             "use bf16 or amp_bf16 on CPU, or run fp16 on a GPU")
        if device_type == "cuda" and self.needs_ampere and capability is not None and capability[0] < 8:
            raise UsageError(f"precision {self.name} cannot run on {where} (compute capability "
                             f"{capability[0]}.{capability[1]}): it needs an Ampere or newer GPU (8.0+)")


def _has_new_tf32_api() -> bool:
    cudnn = torch.backends.cudnn
    return all(hasattr(getattr(cudnn, op, None), "fp32_precision") for op in ("conv", "rnn")) and hasattr(
        torch.backends.cuda.matmul, "fp32_precision")


def _describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


def _probe_step(policy: Precision, device: torch.device) -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    net = policy.prepare(net.to(device))
    opt = make_optimizer(net, "sgd", lr=0.01, momentum=0.9, weight_decay=0.0)
    scaler = policy.grad_scaler(device.type)
    x = torch.randn(2, 3, 8, 8, device=device, dtype=policy.input_dtype)
    y = torch.zeros(2, dtype=torch.long, device=device)
    with policy.autocast(device.type):
        loss = F.cross_entropy(net(x).float(), y)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_optimizer(model: nn.Module, name: str, lr: float, momentum: float,
                   weight_decay: float) -> torch.optim.Optimizer:
    """Fused kernels on CUDA: one launch per step, and GradScaler then hands them its scale and inf flag as
    tensors (no host sync per step) and accepts fp16 gradients, which pure-fp16 training needs.

    Not on CPU: there a step costs no launches and no sync, and the fused CPU kernels have dropped updates
    (torch 2.13: one fused SGD step on a bf16 tensor changed 0.8% of its elements, 100% on 2.15; a pure bf16
    ResNet-18 changed none of its conv/linear weights). The plain implementation is the reference one.
    """
    params = list(model.parameters())
    fused = params[0].device.type == "cuda"
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, fused=fused)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused)
    raise UsageError(f"unknown optimizer {name!r}")


POLICIES = {
    p.name: p
    for p in (
        Precision("fp32", torch.float32, None, loss_scaling=False, tf32=False, needs_ampere=False),
        Precision("tf32", torch.float32, None, loss_scaling=False, tf32=True, needs_ampere=True),
        Precision("amp_fp16", torch.float32, torch.float16, loss_scaling=True, tf32=False, needs_ampere=False),
        Precision("amp_bf16", torch.float32, torch.bfloat16, loss_scaling=False, tf32=False, needs_ampere=True),
        Precision("fp16", torch.float16, None, loss_scaling=True, tf32=False, needs_ampere=False),
        Precision("bf16", torch.bfloat16, None, loss_scaling=False, tf32=False, needs_ampere=True),
    )
}


def get(name: str) -> Precision:
    try:
        return POLICIES[name]
    except KeyError:
        raise UsageError(f"unknown precision {name!r}; choose one of {', '.join(POLICIES)}") from None
