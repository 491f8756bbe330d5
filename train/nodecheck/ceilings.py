"""What this node can do at best: dense matmul FLOP/s per precision (beside the datasheet peak), device memory
copy bandwidth, host<->device copy bandwidth each way (checked against NVML's PCIe byte counters). The all-reduce
sweep is train/nodecheck/allreduce.py."""

from __future__ import annotations

import time

from train.contract.node_ceilings import MATMUL_OF
from train.nodecheck.checks import Check, bad, ok, skip

SECTION = "ceilings"
COUNTER_TOLERANCE = 0.15  # NVML's PCIe bytes within 15% of the bytes copied: the counters mean what they say


def timed(torch, device, work, min_s: float, min_reps: int = 3) -> float:
    """Seconds per call of `work`, after one warm-up call, over at least `min_reps` calls and `min_s` seconds."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    work()
    sync()
    reps, started = 0, time.perf_counter()
    while reps < min_reps or time.perf_counter() - started < min_s:
        work()
        reps += 1
        if reps >= min_reps:
            sync()
    sync()
    return (time.perf_counter() - started) / reps


def matmul_flops(torch, device, kind: str, n: int, min_s: float) -> float:
    from train.numerics.precision import POLICIES

    dtype = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[kind]
    POLICIES["tf32" if kind == "tf32" else "fp32"].set_backend_flags()
    try:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        return 2 * n ** 3 / timed(torch, device, lambda: a @ b, min_s)
    finally:
        POLICIES["fp32"].set_backend_flags()


def matmul_checks(torch, device, runnable: list[str], device_name: str, quick: bool) -> list[Check]:
    from train.measure.peaks import peak_flops

    n = (4096 if quick else 8192) if device.type == "cuda" else (512 if quick else 1024)
    kinds = list(dict.fromkeys(MATMUL_OF[p] for p in runnable))
    out = []
    for kind in kinds:
        measured = matmul_flops(torch, device, kind, n, 0.2 if quick else 1.0)
        sheet = peak_flops(device_name, kind) if device.type == "cuda" else None
        share = f", {measured / sheet:.0%} of the datasheet's {sheet / 1e12:.0f}" if sheet else \
            ", no datasheet peak for this device"
        out.append(ok(SECTION, f"matmul {kind}", f"{measured / 1e12:.3g} TFLOP/s ({n}x{n}){share}",
                      kind=kind, flops_per_s=measured, datasheet_flops_per_s=sheet, n=n))
    return out


def memory_copy(torch, device, quick: bool) -> Check:
    size = (256 if quick else 1024) * 2**20 if device.type == "cuda" else (32 if quick else 128) * 2**20
    src = torch.empty(size, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    seconds = timed(torch, device, lambda: dst.copy_(src), 0.2 if quick else 0.5)
    rate = 2 * size / seconds  # each byte read once and written once, as CUDA's bandwidthTest counts
    return ok(SECTION, "device memory copy", f"{rate / 1e9:.1f} GB/s (read + write, {size >> 20} MiB copies)",
              bytes_per_s=rate, size=size)


def counters_agree(copied: float, seen: float | None, tolerance: float = COUNTER_TOLERANCE) -> tuple[bool, str]:
    """Did NVML's byte counter see the bytes copied, within `tolerance`?"""
    if seen is None:
        return False, "NVML counted nothing"
    share = seen / copied
    return abs(share - 1) <= tolerance, f"NVML counted {share:.0%} of the bytes copied (want within {tolerance:.0%})"


def host_copies(torch, device, nvml, quick: bool) -> list[Check]:
    """Pinned host<->device copies each way, timed, with the PCIe byte counters sampled meanwhile."""
    if device.type != "cuda":
        return [skip(SECTION, "host<->device copy", "no GPU in use")]
    from train.telemetry.probe import copy_rows

    rows, counters = copy_rows(torch, nvml, device.index or 0, (0.25 if quick else 1.0), repeats=4)
    out = []
    for label, copied, seen, elapsed in rows:
        rate = copied / elapsed
        if counters is None:
            out.append(skip(SECTION, f"copy {label}", f"{rate / 1e9:.1f} GB/s; NVML counters not checked (no NVML "
                            "PCIe figures)", bytes_per_s=rate))
            continue
        agree, why = counters_agree(copied, seen)
        out.append((ok if agree else bad)(SECTION, f"copy {label}", f"{rate / 1e9:.1f} GB/s; {why} ({counters})",
                                          bytes_per_s=rate, copied=copied, nvml_seen=seen))
    return out
