"""The node: host, CPU and its features, GPUs with driver, CUDA, MIG and compute mode, the library versions the
numbers depend on, and the Slurm job it runs in. Facts only: nothing here can fail the node."""

from __future__ import annotations

import importlib.metadata
import os
import platform

from train.measure.cpu import model_and_flags as cpu_model_and_flags
from train.nodecheck.checks import Check, ok, skip

SECTION = "environment"
PACKAGES = ("torch", "torchvision", "wandb", "nvidia-ml-py", "numpy")
SLURM_VARS = ("SLURM_JOB_ID", "SLURM_JOB_NAME", "SLURM_JOB_PARTITION", "SLURM_JOB_NODELIST", "SLURM_NNODES",
              "SLURM_GPUS_ON_NODE", "SLURM_CPUS_ON_NODE", "SLURM_JOB_ACCOUNT")
COMPUTE_MODES = {0: "default", 1: "exclusive thread", 2: "prohibited", 3: "exclusive process"}


def versions() -> dict:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu_info() -> dict:
    model, flags = cpu_model_and_flags() or ("", set())
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")
    return {"model": model or platform.processor() or platform.machine(), "logical_cores": os.cpu_count(),
            "features": [f for f in wanted if f in flags]}


def gpu_info(nvml) -> list[dict]:
    """Per GPU NVML can see: name, memory, MIG and compute mode."""
    gpus = []
    for i in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(i)
        gpu = {"index": i}
        for key, read in (("name", nvml.nvmlDeviceGetName), ("uuid", nvml.nvmlDeviceGetUUID),
                          ("memory_bytes", lambda h: nvml.nvmlDeviceGetMemoryInfo(h).total),
                          ("mig", lambda h: "on" if nvml.nvmlDeviceGetMigMode(h)[0] else "off"),
                          ("compute_mode", lambda h: COMPUTE_MODES.get(nvml.nvmlDeviceGetComputeMode(h), "?"))):
            try:
                value = read(handle)
                gpu[key] = value.decode() if isinstance(value, bytes) else value
            except Exception as e:  # noqa: BLE001 - a fact this GPU or driver cannot tell
                gpu[key] = f"unknown ({type(e).__name__})"
        gpus.append(gpu)
    return gpus


def check(torch, device, nvml, nvml_why: str | None) -> list[Check]:
    from train.runner.setup import device_name

    cpu = cpu_info()
    facts = {"host": platform.node(), "device": device.type, "device_name": device_name(device),
             "cpu": cpu, "torch_cuda": torch.version.cuda, "versions": versions(),
             "slurm": {k: os.environ[k] for k in SLURM_VARS if k in os.environ}}
    out = [ok(SECTION, "host", f"{facts['host']} ({platform.platform()})", **facts),
           ok(SECTION, "CPU", f"{cpu['model']}, {cpu['logical_cores']} logical cores, "
              f"{', '.join(cpu['features']) or 'no AVX-512/AMX'}")]
    if nvml is None:
        out.append(skip(SECTION, "GPUs", f"no NVML: {nvml_why}"))
    else:
        gpus = gpu_info(nvml)
        driver = nvml.nvmlSystemGetDriverVersion()
        driver = driver.decode() if isinstance(driver, bytes) else driver
        names = ", ".join(f"{g['index']}: {g.get('name')} (MIG {g.get('mig')}, {g.get('compute_mode')})"
                          for g in gpus) or "none"
        out.append(ok(SECTION, "GPUs", f"{names}; driver {driver}, CUDA (torch) {torch.version.cuda}",
                      gpus=gpus, driver=driver))
    v = facts["versions"]
    out.append(ok(SECTION, "versions", ", ".join(f"{k} {v[k] or 'missing'}" for k in PACKAGES)))
    slurm = facts["slurm"]
    out.append(ok(SECTION, "Slurm", f"job {slurm['SLURM_JOB_ID']} ({slurm.get('SLURM_JOB_PARTITION', '?')}, "
                  f"{slurm.get('SLURM_JOB_NODELIST', '?')})") if slurm else skip(SECTION, "Slurm", "not in a Slurm job"))
    out.append(ok(SECTION, "device", f"{device} ({facts['device_name']}): the checks below measure it"))
    return out
