"""A node's NVML probe: which metrics NVML gives for each GPU, a few seconds of live readings, and a
host-device copy checked against the PCIe byte counters.

    python -m train.telemetry [--seconds S] [--json]"""

from __future__ import annotations

import argparse
import json
import sys
import time

from train.contract.errors import EXIT_USAGE
from train.measure.nvml import NvmlSampler, handle_for_cuda_device, load_nvml, static_facts


def probe(seconds: float, as_json: bool, nvml=None, out=sys.stdout) -> int:
    """For each GPU of this node: which metrics NVML gives, and a few seconds of live readings."""
    if nvml is None:
        nvml, why = load_nvml()
        if nvml is None:
            print(f"no NVIDIA GPU telemetry on this machine: {why}", file=out)
            return 0
    count = nvml.nvmlDeviceGetCount()
    if count == 0:
        print("NVML found no GPU on this machine", file=out)
        return 0
    notes: dict[int, list[str]] = {i: [] for i in range(count)}
    samplers, facts = [], []
    for i in range(count):
        handle = nvml.nvmlDeviceGetHandleByIndex(i)
        samplers.append(NvmlSampler(nvml, handle, hz=10, say=notes[i].append))
        facts.append(static_facts(nvml, handle))
    for s in samplers:
        s.start()
    time.sleep(seconds)
    for s in samplers:
        s.stop()
        s.tick()  # a last reading, so every counter spans the whole probe
    for i, (s, f) in enumerate(zip(samplers, facts)):
        readings = s.window()
        if as_json:
            print(json.dumps({"index": i, **f, "supported": s.supported, "notes": notes[i], **readings}), file=out)
            continue
        print(f"GPU {i}: {f.get('gpu_name', '?')} {f.get('uuid', '')} driver {f.get('driver_version', '?')}", file=out)
        if "pcie_peak_bytes_per_s" in f:
            print(f"  PCIe gen {f['pcie_max_generation']} x{f['pcie_max_width']}: "
                  f"{f['pcie_peak_bytes_per_s'] / 1e9:.1f} GB/s per direction peak", file=out)
        links = f.get("nvlink_active_links", 0)
        if links:
            peak = f.get("nvlink_peak_bytes_per_s")
            peak_text = f", {peak / 1e9:.0f} GB/s per direction peak" if peak else ""
            print(f"  NVLink {f.get('nvlink_version', '?')}: {links} active links{peak_text}", file=out)
        print(f"  supported: {', '.join(s.supported)}", file=out)
        for note in notes[i]:
            print(f"  {note}", file=out)
        for key, value in readings.items():
            print(f"  {key} = {value:,.6g}" if isinstance(value, float) else f"  {key} = {value}", file=out)
    return 0


def copy_rows(torch, nvml, index: int, gib: float, repeats: int = 4) -> tuple[list[tuple], str | None]:
    """Copy a known number of bytes host->device and device->host while sampling the PCIe counters: rows of
    (direction, bytes copied, bytes NVML saw or None, seconds), and which NVML figures they come from ("byte
    counters", "throughput snapshots", or None where NVML gives no PCIe figures on this GPU)."""
    sampler = None
    if nvml is not None:
        sampler = NvmlSampler(nvml, handle_for_cuda_device(nvml, index), hz=10, say=lambda _: None)
        if "pcie_tx" not in sampler.counters and not sampler.pcie_fallback:
            sampler = None
    source = None if sampler is None else "byte counters" if "pcie_tx" in sampler.counters else "throughput snapshots"
    size = int(gib * 2**30)
    host = torch.empty(size, dtype=torch.uint8, pin_memory=True)
    dev = torch.empty(size, dtype=torch.uint8, device=f"cuda:{index}")
    if sampler:
        sampler.start()
        time.sleep(0.5)
    rows = []
    for label, key, copy in (("host->device", "rx", lambda: dev.copy_(host, non_blocking=True)),
                             ("device->host", "tx", lambda: host.copy_(dev, non_blocking=True))):
        copy()  # warm-up: the first copy maps the pinned pages
        torch.cuda.synchronize()
        if sampler:
            sampler.discard()
        started = time.perf_counter()
        for _ in range(repeats):
            copy()
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - started
        seen = None
        if sampler:
            time.sleep(0.5)  # the counters refresh every 20-100 ms: let them catch up
            seen = sampler.totals.window_delta(f"pcie_{key}")
            window = sampler.window()
            if seen is None:  # throughput snapshots only: mean rate over the copy time
                seen = window.get(f"nvml/pcie_{key}_bytes_per_s", 0.0) * elapsed
        rows.append((label, size * repeats, seen, elapsed))
    if sampler:
        sampler.stop()
    return rows, source


def copy_check(gib: float, repeats: int = 4, out=sys.stdout) -> int:
    """Compare the PCIe bytes NVML saw during known copies with the bytes copied: the check that the sampler's
    PCIe numbers mean what they say. (`python -m train.nodecheck` makes the same check among its others.)"""
    import torch

    if not torch.cuda.is_available():
        print("the PCIe copy check needs a CUDA GPU; none is visible", file=out)
        return EXIT_USAGE
    nvml, why = load_nvml()
    if nvml is None:
        print(f"the PCIe copy check needs NVML: {why}", file=out)
        return EXIT_USAGE
    index = torch.cuda.current_device()
    rows, source = copy_rows(torch, nvml, index, gib, repeats)
    if source is None:
        print("NVML gives no PCIe throughput on this GPU", file=out)
        return 1
    print(f"PCIe copy check on {torch.cuda.get_device_name(index)}, {gib:g} GiB x {repeats} each way "
          f"({source}):", file=out)
    for label, copied, seen, elapsed in rows:
        print(f"  {label}: copied {copied / 1e9:.2f} GB in {elapsed:.3f}s ({copied / elapsed / 1e9:.1f} GB/s); "
              f"NVML saw {seen / 1e9:.2f} GB = {seen / copied:.1%} of it", file=out)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.telemetry",
                                description="Check a node's GPU telemetry before launching a sweep: for each GPU, "
                                "which NVML metrics the runner can log, and a few seconds of live readings.")
    p.add_argument("--seconds", type=float, default=3.0, help="how long to sample")
    p.add_argument("--json", action="store_true", help="one JSON object per GPU, with the runner's metric names")
    p.add_argument("--copy-check", type=float, metavar="GIB",
                   help="instead: copy GIB GiB each way over PCIe on the current CUDA GPU and compare the bytes "
                   "NVML reports with the bytes copied")
    args = p.parse_args(argv)
    if args.seconds <= 0:
        p.error("--seconds must be positive")
    if args.copy_check is not None:
        if args.copy_check <= 0:
            p.error("--copy-check must be positive")
        return copy_check(args.copy_check)
    return probe(args.seconds, args.json)
