"""Dense peak FLOP/s per GPU and precision class, for MFU. One place for these numbers: a run records the peak
that applies to it in its config (system.peak_flops_per_s, with system.peak_source "datasheet" or "user" for
--peak-tflops), and the report reads it from there.

Sources (docs/precision.md, "FLOPs per image and MFU"): NVIDIA datasheets without sparsity; Composer's and torchtitan's
tables. The H200 has the H100 SXM's compute. The NVL cards (PCIe, NVLink-bridged) are clocked lower: NVIDIA's H100
NVL and H200 NVL datasheets give FP32 60 TFLOP/s, TF32 835 and BF16/FP16 1,671 with sparsity, i.e. 417.5 and 835.5
dense (not re-checked here against the datasheet's text: pass --peak-tflops where a card's own figure differs).
"""

from __future__ import annotations

from train.contract.experiment import PRECISIONS

_SXM = (66.9e12, 494.7e12, 989.4e12)
_PCIE = (51.2e12, 378e12, 756e12)
_NVL = (60e12, 417.5e12, 835.5e12)
_A100 = (19.5e12, 156e12, 312e12)

# Full GPU name, as NVML and torch.cuda.get_device_name() print it -> (fp32, tf32, 16-bit) dense FLOP/s. Whole
# names, not fragments: "NVIDIA H200 NVL" contains "H200", and a fragment match gave it the SXM part's peak.
PEAKS = {
    "NVIDIA H100 80GB HBM3": _SXM,
    "NVIDIA H200": _SXM,
    "NVIDIA H100 PCIe": _PCIE,
    "NVIDIA H100 NVL": _NVL,
    "NVIDIA H200 NVL": _NVL,
    "NVIDIA A100-SXM4-80GB": _A100,
    "NVIDIA A100-SXM4-40GB": _A100,
    "NVIDIA A100 80GB PCIe": _A100,
    "NVIDIA A100-PCIE-40GB": _A100,
}
PRECISION_CLASS = {p: {"fp32": 0, "tf32": 1}.get(p, 2) for p in PRECISIONS}  # the others compute in 16 bits


def peak_flops(device_name: str, precision: str) -> float | None:
    """The peak that bounds this precision on this GPU; None for CPUs, MIG slices and GPUs not in the table."""
    peaks = PEAKS.get(device_name.strip())
    return peaks[PRECISION_CLASS[precision]] if peaks else None


def run_peak(device_name: str | None, precision: str, user_tflops: float | None) -> dict:
    """The peak a run's MFU is measured against and where it came from: the user's --peak-tflops over the table."""
    if user_tflops is not None:
        return {"peak_flops_per_s": user_tflops * 1e12, "peak_source": "user"}
    peak = peak_flops(device_name, precision) if device_name else None
    return {"peak_flops_per_s": peak, "peak_source": "datasheet" if peak else None}
