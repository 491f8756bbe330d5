"""fp8 on CPU: its numerics through torchao's float8 (torch._scaled_mm on CPU), which layers it converts, and
its refusals. No speed is claimed from a CPU: fp8 runs are refused there by the runner."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT

from train.contract.errors import UsageError
from train.numerics import fp8, precision, registry, vit

pytest.importorskip("torchao.float8", reason="torchao is not installed (requirements.txt has it; fp8 needs it)")

EXPECTED = {"embed"} | {f"blocks.{i}.{name}" for i in range(2) for name in ("qkv", "proj", "fc1", "fc2")}


def _colour_coded(n=16, seed=0):
    # each class its own colour plus noise: learnable in a few steps
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    colours = torch.rand(10, 3, 1, 1, generator=g)
    return colours[labels] + 0.1 * torch.randn(n, 3, 32, 32, generator=g), labels


def _skip_unless_cpu_takes_rowwise_scales():
    # torch 2.11's CPU _scaled_mm (the GPU machine's torch) takes one scale per tensor only and fails rowwise
    # with an internal assert; 2.14.1's takes rowwise scales. A limit of torch on CPU, where the runner refuses
    # fp8 anyway; rowwise on a GPU is test_gpu.py's. Probed, not version-checked: the probe is the fact.
    a = torch.ones(16, 16).to(torch.float8_e4m3fn)
    try:
        torch._scaled_mm(a, a.t(), scale_a=torch.ones(16, 1), scale_b=torch.ones(1, 16), out_dtype=torch.bfloat16)
    except RuntimeError as e:
        pytest.skip(f"torch {torch.__version__}'s CPU _scaled_mm takes no rowwise scales: {str(e).splitlines()[0]}")


@pytest.mark.parametrize("name", ["fp8_tensorwise", "fp8_rowwise"])
def test_fp8_converts_the_expected_linears_and_lowers_the_loss(name, monkeypatch):
    if name == "fp8_rowwise":
        _skip_unless_cpu_takes_rowwise_scales()
    fp8_operands = []
    scaled_mm = torch._scaled_mm
    monkeypatch.setattr(torch, "_scaled_mm", lambda a, *rest, **kw: fp8_operands.append(a.dtype) or scaled_mm(
        a, *rest, **kw))
    policy = precision.get(name)
    torch.manual_seed(0)
    model = policy.prepare(vit.vit_smoke(None))
    converted = {n for n, m in model.named_modules() if type(m).__name__ == "Float8Linear"}
    assert converted == EXPECTED  # every Linear but the 10-way head (10 is not a multiple of 16)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # fp32 master weights
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x, y = _colour_coded()
    losses = []
    for _ in range(3):  # a few steps on one batch (3-5 s each on a loaded 2-core CPU: _scaled_mm is slow there)
        with policy.autocast("cpu"):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # The matmuls ran in float8 (forward, input and weight gradients of each converted layer), not emulated.
    assert len(fp8_operands) == 3 * 3 * len(EXPECTED) and set(fp8_operands) <= {torch.float8_e4m3fn,
                                                                                 torch.float8_e5m2}
    assert losses[-1] < losses[0] - 0.1


def test_fp8_on_a_resnet_is_refused_with_the_share_it_could_convert():
    with pytest.raises(UsageError, match=r"resnet18: .* hold 0% of its forward FLOPs .*0\.00092%"):
        fp8.check_model(registry.build("resnet", 18), "resnet18", "fp8_tensorwise")
    share, linear = fp8.flop_shares(vit.vit_s(None))
    assert 0.97 < share == pytest.approx(linear - 2 * 384 * 10 / vit.forward_flops(vit.ViTSize(384, 6, 12)))
    fp8.check_model(vit.vit_s(None), "vit-s", "fp8_tensorwise")  # no refusal


@pytest.mark.parametrize("device, capability, refused", [("cpu", None, True), ("cuda", (8, 0), True),
                                                          ("cuda", (8, 9), False), ("cuda", (9, 0), False)])
def test_fp8_needs_compute_capability_8_9(device, capability, refused):
    check = lambda: precision.get("fp8_rowwise").check_rules(device, capability, device)  # noqa: E731
    if refused:
        with pytest.raises(UsageError, match="compute capability 8.9"):
            check()
    else:
        check()


def test_converting_prints_nothing_on_the_console():
    """torchao 0.18 under torch 2.14 logs a deprecation of its own at import: not the user's to read every run."""
    code = "from train.numerics import fp8, vit; fp8.convert(vit.vit_smoke(None), 'tensorwise')"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout == "" and done.stderr == "", done.stderr
