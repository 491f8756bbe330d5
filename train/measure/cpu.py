"""The host CPU as /proc/cpuinfo (Linux) names it: its model and instruction-set flags, on which CPU bf16 speed
depends (oneDNN's AVX512-BF16 / AMX kernels). Read by the benchmark's heading and the node check."""

from __future__ import annotations


def model_and_flags() -> tuple[str, set[str]] | None:
    """(model name, flags) of the first CPU listed; None without /proc/cpuinfo."""
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and not model:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return model, flags
