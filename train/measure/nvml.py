"""GPU telemetry from NVML for the training process's own GPU, aggregated per log window.

One background thread per training process samples its GPU at --nvml-hz (train/measure/nvml_fields.py: one
batched nvmlDeviceGetFieldValues call per tick for the PCIe and NVLink byte counters, energy and power, plus a
few gauges: memory, SM clock, utilisation, temperature, clock-event reasons) into window and run totals
(train/measure/nvml_totals.py). At each log window the runner takes rates from the counter deltas.
docs/telemetry.md gives the calls, units and traps handled here."""

from __future__ import annotations

import threading
import time

from train.measure.idle_power import measure_idle_power
from train.measure.nvml_fields import (
    COUNTER_FIELDS,
    GPU_IS_LOST,
    NOT_SUPPORTED,
    NVLINK_LINK_COUNT,
    NVLINK_VERSIONS,
    PCIE_THROUGHPUT_PERIOD_S,
    SUCCESS,
    GpuReader,
    decode,
    error_code,
    pcie_bandwidth,
)
from train.measure.nvml_totals import NvmlTotals


class NvmlSampler:
    """Samples one GPU on a thread of its own; never raises into training, and a lost GPU stops only the sampler."""

    def __init__(self, nvml, handle, hz: float = 10.0, say=print, clock=time.monotonic, wall_us=None):
        # wall_us: when a gauge was read, in µs since 1970 as NVML stamps its fields (the power integral
        # over nvmlDeviceGetPowerUsage readings, where the instant-power field is missing)
        self.hz, self.say, self.clock = hz, say, clock
        self.wall_us = wall_us or (lambda: time.time_ns() // 1000)
        self.reader = GpuReader(nvml, handle, say)
        first = self.reader.probe()
        self.totals = NvmlTotals([n for n in COUNTER_FIELDS if n in self.reader.fields],
                                 {n: mult for n, (_, _, mult) in COUNTER_FIELDS.items()}, set(self.reader.gauges))
        self.totals.add_fields(first)
        if "power" in self.reader.gauges:  # the power integral's first sample, as the fields' first readings
            self.totals.add_gauges({"power": self.reader.gauges["power"]()}, None, self.wall_us())
        self.counters = self.totals.counters
        self.pcie_fallback = self.reader.pcie_fallback
        self._next_pcie_read = 0.0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.stopped_reason: str | None = None
        self._failures = 0

    @property
    def supported(self) -> list[str]:
        return self.reader.supported

    @property
    def energy_source(self) -> str | None:
        """counter, power_integral (this GPU has no energy counter), or None: neither counter nor power."""
        if "energy" in self.reader.fields:
            return "counter"
        return "power_integral" if "power" in self.supported else None

    def tick(self) -> None:
        """One sample. Called by the thread; tests call it directly."""
        if self.stopped_reason:
            return
        try:
            values = self.reader.read_fields()
            gauges, stamp = self.reader.read_gauges(), self.wall_us()
            pcie = None
            if self.pcie_fallback and self.clock() >= self._next_pcie_read:
                self._next_pcie_read = self.clock() + PCIE_THROUGHPUT_PERIOD_S
                pcie = self.reader.read_pcie_throughput()
        except Exception as e:  # noqa: BLE001 - the sampler never raises into training
            if error_code(e) == GPU_IS_LOST:
                self.stop_sampling(f"GPU is lost ({e})")
            else:
                self._failures += 1
                if self._failures >= 10:
                    self.stop_sampling(f"10 failed reads in a row, last: {e}")
            return
        self._failures = 0
        self.totals.add_fields(values)
        self.totals.add_gauges(gauges, pcie, stamp)

    def stop_sampling(self, why: str) -> None:
        self.stopped_reason = why
        self._stop.set()
        self.say(f"NVML: sampling stopped, training goes on: {why}")

    def start(self) -> "NvmlSampler":
        def loop():
            period = 1.0 / self.hz
            while True:
                self.tick()
                if self._stop.wait(period):
                    break

        self._thread = threading.Thread(target=loop, name="nvml-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # The loop's and the training state's view: the totals' figures.
    def window(self) -> dict:
        """The nvml/* metrics since the last call (the runner calls this once per log window)."""
        return self.totals.window()

    def discard(self) -> None:
        """Forget what accumulated since the last window (evaluation): the run's totals exclude it too."""
        self.totals.discard()

    def energy_j(self) -> float | None:
        return self.totals.energy_j()

    def set_idle(self, watts: float | None) -> None:
        self.totals.set_idle(watts)

    def summary(self, images: int) -> dict:
        out = self.totals.summary(images)
        if out.get("nvml/energy_above_idle_clamped"):
            self.say(f"NVML: training energy ({out['nvml/energy_total_j']:.0f} J) is below idle power "
                     f"({out['nvml/idle_power_w']:.0f} W) x the training seconds: energy above idle given as 0 "
                     "(nvml/energy_above_idle_clamped)")
        if self.stopped_reason:
            out["nvml/stopped"] = self.stopped_reason
        return out

    def state_dict(self) -> dict:
        return self.totals.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.totals.load_state_dict(state)


def static_facts(nvml, handle) -> dict:
    """What does not change during a run: for the config, so the report can relate rates to link peaks."""
    facts = {}

    def put(key, read):
        try:
            value = read()
            facts[key] = value.decode() if isinstance(value, bytes) else value
        except Exception:  # noqa: BLE001 - a fact this GPU or driver cannot tell is left out
            pass

    put("gpu_name", lambda: nvml.nvmlDeviceGetName(handle))
    put("uuid", lambda: nvml.nvmlDeviceGetUUID(handle))
    put("driver_version", lambda: nvml.nvmlSystemGetDriverVersion())
    put("pcie_max_generation", lambda: nvml.nvmlDeviceGetMaxPcieLinkGeneration(handle))
    put("pcie_max_width", lambda: nvml.nvmlDeviceGetMaxPcieLinkWidth(handle))
    if "pcie_max_generation" in facts and "pcie_max_width" in facts:
        facts["pcie_peak_bytes_per_s"] = pcie_bandwidth(facts["pcie_max_generation"], facts["pcie_max_width"])
    facts.update(_nvlink_facts(nvml, handle))
    return facts


def _nvlink_facts(nvml, handle) -> dict:
    """Active links and their peak. Each link is asked on its own: one link's failing call (a link in reset, a
    driver that cannot tell) leaves that link out and says how many were, instead of dropping every NVLink fact."""
    try:
        count_field = nvml.nvmlDeviceGetFieldValues(handle, [NVLINK_LINK_COUNT])[0]
        links = int(decode(count_field)[0]) if count_field.nvmlReturn == SUCCESS else 0
    except Exception:  # noqa: BLE001 - no NVLink on this GPU
        return {"nvlink_active_links": 0}
    active, unreadable = [], 0
    for link in range(links):
        try:
            if nvml.nvmlDeviceGetNvLinkState(handle, link) == 1:
                active.append(link)
        except Exception as e:  # noqa: BLE001 - this link only
            unreadable += error_code(e) != NOT_SUPPORTED  # NOT_SUPPORTED: no such link (a PCIe card)
    facts = {"nvlink_active_links": len(active)}
    if unreadable:
        facts["nvlink_unreadable_links"] = unreadable
    for link in active:  # the version of the first link that tells it
        try:
            version, per_link = NVLINK_VERSIONS.get(nvml.nvmlDeviceGetNvLinkVersion(handle, link), (None, None))
        except Exception:  # noqa: BLE001
            continue
        facts["nvlink_version"] = version
        facts["nvlink_peak_bytes_per_s"] = per_link * len(active) if per_link else None
        break
    return facts


def load_nvml():
    """(pynvml initialised, None) or (None, why not)."""
    try:
        import pynvml
    except ImportError as e:
        return None, f"nvidia-ml-py is not installed ({e})"
    try:
        pynvml.nvmlInit()
    except Exception as e:  # noqa: BLE001 - NVMLError_LibraryNotFound, DriverNotLoaded, NoPermission, ...
        return None, f"NVML cannot start: {e}"
    return pynvml, None


def handle_for_cuda_device(nvml, index: int):
    """NVML's handle for a CUDA device, by UUID: NVML and CUDA number GPUs differently."""
    import torch

    uuid = str(torch.cuda.get_device_properties(index).uuid)
    candidates = [uuid] if uuid.startswith(("GPU-", "MIG-")) else [f"GPU-{uuid}", f"MIG-{uuid}"]
    last = None
    for candidate in candidates:
        try:
            return nvml.nvmlDeviceGetHandleByUUID(candidate)
        except Exception as e:  # noqa: BLE001
            last = e
    raise RuntimeError(f"no NVML device with UUID {uuid} ({last})")


def idle_facts(nvml, handle, seconds: float, say) -> dict:
    """The config's idle-power facts for this process's GPU, measured now (before training); said in one line."""
    if seconds <= 0:
        return {"idle_power": "not measured (--idle-power-s 0)"}
    try:
        facts = measure_idle_power(nvml, handle, seconds)
    except Exception as e:  # noqa: BLE001 - no power reading on this GPU: energy above idle is left out
        say(f"NVML: idle power not measured ({e}); no energy above idle")
        return {"idle_power": f"not measured ({e})"}
    say(f"NVML: idle power {facts['idle_power_w']:.1f} W ({facts['idle_power_min_w']:.1f}-"
        f"{facts['idle_power_max_w']:.1f} W over {seconds:g} s before training; nvml/idle_power_w)")
    return facts


def open_for_run(device, hz: float, say, nvml=None, idle_s: float = 0.0):
    """(sampler started or None, config facts). The config always says whether NVML was used, and if not, why.
    idle_s: seconds of idle power to measure first, on this process's GPU (0: none)."""
    if device.type != "cuda":
        return None, {"available": False, "reason": f"the run is on {device.type}"}
    if hz <= 0:
        return None, {"available": False, "reason": "--nvml-hz 0"}
    if nvml is None:
        nvml, why = load_nvml()
        if nvml is None:
            say(f"NVML: unavailable ({why}); training without GPU telemetry")
            return None, {"available": False, "reason": why}
    try:
        handle = handle_for_cuda_device(nvml, device.index or 0)
        sampler = NvmlSampler(nvml, handle, hz=hz, say=say)
        facts = static_facts(nvml, handle)
    except Exception as e:  # noqa: BLE001
        say(f"NVML: unavailable ({e}); training without GPU telemetry")
        return None, {"available": False, "reason": str(e)}
    idle = idle_facts(nvml, handle, idle_s, say)  # before the sampler's thread starts: nothing runs yet
    sampler.set_idle(idle.get("idle_power_w"))
    return sampler.start(), {"available": True, "hz": hz, "metrics": sampler.supported,
                             "energy_source": sampler.energy_source, **idle, **facts}
