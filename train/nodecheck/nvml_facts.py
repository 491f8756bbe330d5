"""What this driver's NVML gives, per GPU: the fields the runner's sampler reads (PCIe byte counters, NVLink data
counters per link and summed, the energy counter, power) with their value types, and what one sample costs."""

from __future__ import annotations

import time

from train.measure.nvml import NvmlSampler, static_facts
from train.measure.nvml_fields import COUNTER_FIELDS, NVLINK_LINK_COUNT, SUCCESS, GpuReader, decode
from train.nodecheck.checks import Check, bad, ok, skip

SECTION = "nvml"
TYPE_NAMES = {0: "double", 1: "uint32", 2: "ulong", 3: "uint64", 4: "int64", 5: "int32", 6: "uint16"}
COST_TICKS = 50


def field_listing(nvml, handle) -> dict:
    """{field: value type or "unsupported (NVML error N)"} for the sampler's fields, and the per-link NVLink
    counters: {"nvlink_tx": {"links": [..per link..], "summed": x}, ...}."""
    reader = GpuReader(nvml, handle, say=lambda _: None)
    names = list(reader.fields)
    values = nvml.nvmlDeviceGetFieldValues(handle, [reader.fields[n] for n in names])
    fields = {}
    for name, v in zip(names, values):
        fields[name] = TYPE_NAMES.get(v.valueType, f"type {v.valueType}") if v.nvmlReturn == SUCCESS \
            else f"unsupported (NVML error {v.nvmlReturn})"
    links = 0
    count = nvml.nvmlDeviceGetFieldValues(handle, [NVLINK_LINK_COUNT])[0]
    if count.nvmlReturn == SUCCESS:
        links = int(decode(count)[0])
    nvlink = {}
    for name in ("nvlink_tx", "nvlink_rx"):
        fid = COUNTER_FIELDS[name][0]
        per_link = nvml.nvmlDeviceGetFieldValues(handle, [(fid, link) for link in range(links)]) if links else []
        nvlink[name] = {"links": [decode(v)[0] if v.nvmlReturn == SUCCESS else None for v in per_link],
                        "summed": decode(values[names.index(name)])[0]
                        if fields.get(name, "").split(" ")[0] in TYPE_NAMES.values() else None}
    return {"fields": fields, "nvlink_links": links, "nvlink": nvlink}


def sampler_cost(nvml, handle, hz: float = 10.0, ticks: int = COST_TICKS) -> dict:
    """Seconds per sample and the share of one core the sampler takes at `hz`."""
    sampler = NvmlSampler(nvml, handle, hz=hz, say=lambda _: None)
    started = time.perf_counter()
    for _ in range(ticks):
        sampler.tick()
    per_tick = (time.perf_counter() - started) / ticks
    return {"tick_s": per_tick, "hz": hz, "core_share": per_tick * hz, "supported": sampler.supported}


def check(nvml, why: str | None, quick: bool = False) -> list[Check]:
    if nvml is None:
        return [skip(SECTION, "NVML", f"not available: {why}")]
    count = nvml.nvmlDeviceGetCount()
    if count == 0:
        return [skip(SECTION, "NVML", "NVML sees no GPU")]
    out = []
    for i in range(count):
        handle = nvml.nvmlDeviceGetHandleByIndex(i)
        listing = field_listing(nvml, handle)
        facts = static_facts(nvml, handle)
        fields = listing["fields"]
        links = listing["nvlink_links"]
        # a GPU without NVLink has no NVLink counters to give: not a failure of this node
        missing = [n for n, t in fields.items() if t.startswith("unsupported") and (links or "nvlink" not in n)]
        text = ", ".join(f"{n} {t}" for n, t in fields.items())
        out.append((bad if missing else ok)(SECTION, f"GPU {i} fields", text, **listing, facts=facts))
        if links:
            tx = listing["nvlink"]["nvlink_tx"]
            out.append(ok(SECTION, f"GPU {i} NVLink", f"{links} links, {facts.get('nvlink_active_links', 0)} active "
                          f"(NVLink {facts.get('nvlink_version', '?')}); TX KiB per link {tx['links'][:4]}"
                          f"{'...' if links > 4 else ''}, summed {tx['summed']}"))
        else:
            out.append(skip(SECTION, f"GPU {i} NVLink", "no NVLink on this GPU"))
        cost = sampler_cost(nvml, handle, ticks=10 if quick else COST_TICKS)
        out.append(ok(SECTION, f"GPU {i} sampler cost", f"{cost['tick_s'] * 1e3:.2f} ms per sample, "
                      f"{cost['core_share']:.2%} of one core at {cost['hz']:g} Hz", **cost))
    return out

