"""Which precisions run here (the runner's own refusal, probe step included) and whether fp32 is really TF32-off
and tf32 really on: a convolution's and a matmul's error against float64, under each policy's backend flags."""

from __future__ import annotations

from train.contract.errors import UsageError, first_line
from train.nodecheck.checks import Check, bad, ok, skip

SECTION = "precisions"
# Relative error (max |x - ref| / max |ref|) of a 512-deep fp32 product: IEEE fp32 lands near 1e-6, TF32 (10-bit
# mantissa inputs, 2^-11 rounding) near 1e-3. Between them, a factor of 10 from each, is the line.
TF32_LINE = 1e-4


def judge(policy: str, error: float) -> tuple[bool, str]:
    """(as the policy promises, why) for a relative error against float64 under `policy` (fp32 or tf32)."""
    tf32_like = error >= TF32_LINE
    if policy == "fp32":
        return (not tf32_like, f"error {error:.1e} vs float64: " +
                ("TF32-like, so fp32 is NOT strict fp32 here" if tf32_like else "IEEE fp32, TF32 off"))
    return (tf32_like, f"error {error:.1e} vs float64: " +
            ("TF32 in effect" if tf32_like else "no TF32 rounding, so tf32 runs as plain fp32 here"))


def relative_error(torch, device) -> dict:
    """The matmul's and the conv's error against float64 (computed on the CPU) under the flags now set."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(512, 512, generator=gen), torch.randn(512, 512, generator=gen)
    x, w = torch.randn(8, 64, 16, 16, generator=gen), torch.randn(64, 64, 3, 3, generator=gen)
    conv = torch.nn.functional.conv2d
    pairs = {"matmul": ((a.to(device) @ b.to(device)).cpu().double(), a.double() @ b.double()),
             "conv": (conv(x.to(device), w.to(device), padding=1).cpu().double(),
                      conv(x.double(), w.double(), padding=1))}
    return {k: float((got - ref).abs().max() / ref.abs().max()) for k, (got, ref) in pairs.items()}


def runnable(torch, device) -> tuple[list[str], list[Check]]:
    from train.numerics.precision import POLICIES

    names, out = [], []
    for name, policy in POLICIES.items():
        try:
            policy.check_device(device)
        except UsageError as e:
            out.append(skip(SECTION, name, f"refused: {first_line(e)}", runs=False, refusal=first_line(e)))
            continue
        names.append(name)
        out.append(ok(SECTION, name, "runs (a training step in this precision passed)", runs=True))
    return names, out


def tf32_checks(torch, device, runs: list[str]) -> list[Check]:
    from train.numerics.precision import POLICIES

    out = []
    try:
        for name in ("fp32", "tf32"):
            if name not in runs:
                out.append(skip(SECTION, f"{name} numerics", f"{name} does not run here"))
                continue
            flags = POLICIES[name].set_backend_flags()
            errors = relative_error(torch, device)
            verdicts = {op: judge(name, err) for op, err in errors.items()}
            passed = all(v[0] for v in verdicts.values())
            reason = "; ".join(f"{op} {why}" for op, (_, why) in verdicts.items())
            out.append((ok if passed else bad)(SECTION, f"{name} numerics", reason, errors=errors, flags=flags))
    finally:
        POLICIES["fp32"].set_backend_flags()  # leave the process strict, as the later checks expect
    return out
