"""Dense peak FLOP/s per GPU and precision class, for MFU. One place for these numbers: a run records the peak
that applies to it in its config (system.peak_flops_per_s), and the report reads it from there.

Sources (docs/precision.md, "FLOPs per image and MFU"): NVIDIA datasheets without sparsity; Composer's and torchtitan's
tables. The H200 has the H100 SXM's compute.
"""

from __future__ import annotations

from train.contract.experiment import PRECISIONS

# GPU name fragment -> (fp32, tf32, 16-bit) dense FLOP/s; the first fragment found in the name wins.
PEAKS = [
    ("H200", (66.9e12, 494.7e12, 989.4e12)),
    ("H100 PCIe", (51.2e12, 378e12, 756e12)),
    ("H100", (66.9e12, 494.7e12, 989.4e12)),
    ("A100", (19.5e12, 156e12, 312e12)),
]
PRECISION_CLASS = {p: {"fp32": 0, "tf32": 1}.get(p, 2) for p in PRECISIONS}  # the others compute in 16 bits


def peak_flops(device_name: str, precision: str) -> float | None:
    """The peak that bounds this precision on this GPU; None for CPUs and GPUs not in the table."""
    for fragment, peaks in PEAKS:
        if fragment in device_name:
            return peaks[PRECISION_CLASS[precision]]
    return None
