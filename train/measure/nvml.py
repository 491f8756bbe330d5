"""GPU telemetry from NVML for the training process's own GPU, aggregated per log window.

One background thread per training process samples its GPU at --nvml-hz with one batched
nvmlDeviceGetFieldValues call per tick (PCIe and NVLink byte counters, energy, power) plus a few gauges
(memory, SM clock, utilisation, temperature, clock-event reasons). At each log window the runner takes
rates from the counter deltas. docs/telemetry.md gives the calls, units and traps handled here."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

ALL_LINKS = 0xFFFFFFFF  # scopeId for "summed over all NVLinks"; a bare field id reads link 0 only

# name: (NVML field id, scopeId, multiplier to SI base units)
COUNTER_FIELDS = {
    "pcie_tx": (197, 0, 1.0),  # NVML_FI_DEV_PCIE_COUNT_TX_BYTES: bytes, may wrap
    "pcie_rx": (198, 0, 1.0),  # NVML_FI_DEV_PCIE_COUNT_RX_BYTES
    "nvlink_tx": (138, ALL_LINKS, 1024.0),  # NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX: KiB
    "nvlink_rx": (139, ALL_LINKS, 1024.0),  # NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX: KiB
    "energy": (83, 0, 1e-3),  # NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION: mJ since driver load -> J
}
POWER_FIELD = ("power", 186, 0, 1e-3)  # NVML_FI_DEV_POWER_INSTANT: mW -> W
NVLINK_LINK_COUNT = 91
SUCCESS, NOT_SUPPORTED, NO_PERMISSION, FUNCTION_NOT_FOUND, GPU_IS_LOST = 0, 3, 4, 13, 15
# nvmlValueType_t -> (union member, bit width for unsigned wrap, or None)
VALUE_TYPES = {0: ("dVal", None), 1: ("uiVal", 32), 2: ("ulVal", 64), 3: ("ullVal", 64), 4: ("sllVal", None),
               5: ("siVal", None), 6: ("usVal", 16)}
PCIE_GT_PER_S = {1: 2.5, 2: 5.0, 3: 8.0, 4: 16.0, 5: 32.0, 6: 64.0}
# nvmlDeviceGetNvLinkVersion enum -> (version, data GB/s per link per direction)
NVLINK_VERSIONS = {1: ("1.0", 20e9), 2: ("2.0", 25e9), 3: ("2.2", 25e9), 4: ("3.0", 25e9), 5: ("3.1", 25e9),
                   6: ("4.0", 25e9), 7: ("5.0", 50e9)}
PCIE_THROUGHPUT_PERIOD_S = 1.0  # the fallback call blocks ~20 ms per direction: read it at most this often


def decode(field) -> tuple[float, int | None]:
    """A field value by its declared type (never ullVal blindly), and its width if it is an unsigned counter."""
    member, width = VALUE_TYPES.get(field.valueType, ("ullVal", 64))
    return float(getattr(field.value, member)), width


def wrap_delta(new: float, old: float, width: int | None) -> float:
    """Counter increase, assuming at most one wrap between two reads of an unsigned counter."""
    delta = new - old
    if delta < 0 and width:
        delta += 2.0 ** width
    return delta


def pcie_bandwidth(generation: int, width: int) -> float | None:
    """Theoretical bytes/s per direction: lanes x GT/s x line-code efficiency / 8."""
    if generation not in PCIE_GT_PER_S:
        return None
    encoding = 8 / 10 if generation <= 2 else 128 / 130 if generation <= 5 else 242 / 256
    return width * PCIE_GT_PER_S[generation] * 1e9 * encoding / 8


def error_code(exc: BaseException) -> int | None:
    return getattr(exc, "value", None)


@dataclass
class _Counter:
    multiplier: float
    last: float | None = None
    last_ts: int | None = None
    width: int | None = None
    delta: float = 0.0  # SI units accumulated over the window
    seconds: float = 0.0  # time the accumulated deltas span (from the fields' own timestamps)
    total: float = 0.0
    total_seconds: float = 0.0


class NvmlSampler:
    """Samples one GPU; never raises into training, and a lost GPU stops only the sampler."""

    def __init__(self, nvml, handle, hz: float = 10.0, say=print, clock=time.monotonic):
        self.nvml, self.handle, self.hz, self.say, self.clock = nvml, handle, hz, say, clock
        self.counters = {name: _Counter(mult) for name, (_, _, mult) in COUNTER_FIELDS.items()}
        self.fields = {name: (fid, scope) for name, (fid, scope, _) in COUNTER_FIELDS.items()}
        self.fields[POWER_FIELD[0]] = POWER_FIELD[1:3]
        self.gauges = {"memory_used": self._memory_used, "sm_clock_mhz": self._sm_clock, "util_pct": self._util,
                       "temperature_c": self._temperature, "throttle_reasons": self._throttle}
        self.pcie_fallback = False
        self._next_pcie_read = 0.0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.stopped_reason: str | None = None
        self._failures = 0
        self._reset_window()
        # Whole-run means as (sum, count), totals in the counters: kept across resumes by state_dict.
        self._run = {"power": [0.0, 0], "sm_clock_mhz": [0.0, 0], "util_pct": [0.0, 0], "memory_used": 0.0}
        self._probe()

    # ---- setup -----------------------------------------------------------------------------------
    def _probe(self) -> None:
        """Read everything once; what this GPU or driver does not support is dropped, said once."""
        values = self._read_fields()
        for name, field in list(values.items()):
            if field.nvmlReturn != SUCCESS:
                self._drop_field(name, f"NVML error {field.nvmlReturn}")
        if "pcie_tx" not in self.fields and hasattr(self.nvml, "nvmlDeviceGetPcieThroughput"):
            try:
                self.nvml.nvmlDeviceGetPcieThroughput(self.handle, 0)
                self.pcie_fallback = True
                self.say("NVML: PCIe byte counters unsupported; using nvmlDeviceGetPcieThroughput every "
                         f"{PCIE_THROUGHPUT_PERIOD_S:.0f}s instead (20 ms snapshots)")
            except Exception as e:  # noqa: BLE001
                self.say(f"NVML: no PCIe throughput on this GPU ({e})")
        if "power" not in self.fields:
            self.gauges["power"] = self._power_usage
        for name, read in list(self.gauges.items()):
            try:
                read()
            except Exception as e:  # noqa: BLE001 - any failure: this metric is unsupported here
                self.say(f"NVML: {name} not available on this GPU ({e}); dropped")
                del self.gauges[name]
        self._consume(values)

    def _drop_field(self, name: str, why: str) -> None:
        self.say(f"NVML: {name} not supported on this GPU ({why}); dropped")
        self.fields.pop(name, None)
        self.counters.pop(name, None)

    @property
    def supported(self) -> list[str]:
        names = list(self.fields) + list(self.gauges)
        return names + (["pcie_tx", "pcie_rx"] if self.pcie_fallback else [])

    # ---- reads -----------------------------------------------------------------------------------
    def _read_fields(self) -> dict:
        if not self.fields:
            return {}
        names = list(self.fields)
        values = self.nvml.nvmlDeviceGetFieldValues(self.handle, [self.fields[n] for n in names])
        return dict(zip(names, values))

    def _memory_used(self) -> float:
        version = getattr(self.nvml, "nvmlMemory_v2", None)
        info = self.nvml.nvmlDeviceGetMemoryInfo(self.handle, version=version) if version else \
            self.nvml.nvmlDeviceGetMemoryInfo(self.handle)
        return float(info.used)

    def _sm_clock(self) -> float:
        return float(self.nvml.nvmlDeviceGetClockInfo(self.handle, getattr(self.nvml, "NVML_CLOCK_SM", 1)))

    def _util(self) -> float:
        return float(self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)

    def _temperature(self) -> float:
        sensor = getattr(self.nvml, "NVML_TEMPERATURE_GPU", 0)
        try:
            return float(self.nvml.nvmlDeviceGetTemperatureV(self.handle, sensor))
        except Exception as e:  # noqa: BLE001 - older drivers: only the deprecated call
            if error_code(e) != FUNCTION_NOT_FOUND and not isinstance(e, AttributeError):
                raise
            return float(self.nvml.nvmlDeviceGetTemperature(self.handle, sensor))

    def _throttle(self) -> float:
        return float(self.nvml.nvmlDeviceGetCurrentClocksEventReasons(self.handle))

    def _power_usage(self) -> float:
        return self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1000.0

    # ---- sampling --------------------------------------------------------------------------------
    def _reset_window(self) -> None:
        self._window = {"power": [], "sm_clock_mhz": [], "util_pct": [], "temperature_c": [],
                        "memory_used": 0.0, "throttle_reasons": 0, "pcie_tx_fallback": [], "pcie_rx_fallback": []}
        for counter in self.counters.values():
            counter.delta = counter.seconds = 0.0

    def _consume(self, values: dict) -> None:
        with self._lock:
            for name, field in values.items():
                if field.nvmlReturn != SUCCESS or name not in self.fields:
                    continue  # a transient error on one field: skip this reading only
                value, width = decode(field)
                if name == "power":
                    self._window["power"].append(value * POWER_FIELD[3])
                    continue
                counter = self.counters[name]
                if counter.last is not None and field.timestamp > counter.last_ts:
                    delta = wrap_delta(value, counter.last, width) * counter.multiplier
                    seconds = (field.timestamp - counter.last_ts) / 1e6
                    counter.delta += delta
                    counter.seconds += seconds
                    counter.total += delta
                    counter.total_seconds += seconds
                counter.last, counter.last_ts, counter.width = value, field.timestamp, width

    def tick(self) -> None:
        """One sample. Called by the thread; tests call it directly."""
        if self.stopped_reason:
            return
        try:
            values = self._read_fields()
            gauges = {name: read() for name, read in self.gauges.items()}
            pcie = None
            if self.pcie_fallback and self.clock() >= self._next_pcie_read:
                self._next_pcie_read = self.clock() + PCIE_THROUGHPUT_PERIOD_S
                pcie = [self.nvml.nvmlDeviceGetPcieThroughput(self.handle, d) * 1024.0 for d in (0, 1)]  # KiB/s
        except Exception as e:  # noqa: BLE001 - the sampler never raises into training
            if error_code(e) == GPU_IS_LOST:
                self.stop_sampling(f"GPU is lost ({e})")
            else:
                self._failures += 1
                if self._failures >= 10:
                    self.stop_sampling(f"10 failed reads in a row, last: {e}")
            return
        self._failures = 0
        self._consume(values)
        with self._lock:
            w = self._window
            for name in ("power", "sm_clock_mhz", "util_pct", "temperature_c"):
                if name in gauges:
                    w[name].append(gauges[name])
            if "memory_used" in gauges:
                w["memory_used"] = max(w["memory_used"], gauges["memory_used"])
            if "throttle_reasons" in gauges:
                w["throttle_reasons"] |= int(gauges["throttle_reasons"])
            if pcie:
                w["pcie_tx_fallback"].append(pcie[0])
                w["pcie_rx_fallback"].append(pcie[1])

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

    # ---- results ---------------------------------------------------------------------------------
    def window(self) -> dict:
        """The nvml/* metrics since the last call (the runner calls this once per log window)."""
        with self._lock:
            w, counters = self._window, self.counters
            out = {}
            for name, key in (("pcie_tx", "nvml/pcie_tx_bytes_per_s"), ("pcie_rx", "nvml/pcie_rx_bytes_per_s"),
                              ("nvlink_tx", "nvml/nvlink_tx_bytes_per_s"),
                              ("nvlink_rx", "nvml/nvlink_rx_bytes_per_s")):
                c = counters.get(name)
                if c is not None and c.seconds > 0:
                    out[key] = c.delta / c.seconds
                elif w.get(f"{name}_fallback"):
                    out[key] = sum(w[f"{name}_fallback"]) / len(w[f"{name}_fallback"])
            if "energy" in counters and counters["energy"].seconds > 0:
                out["nvml/energy_j"] = counters["energy"].delta
            for name in ("power", "sm_clock_mhz", "util_pct"):
                if w[name]:
                    out["nvml/power_w" if name == "power" else f"nvml/{name}"] = sum(w[name]) / len(w[name])
                    self._run[name][0] += sum(w[name])
                    self._run[name][1] += len(w[name])
            if w["temperature_c"]:
                out["nvml/temperature_c"] = max(w["temperature_c"])
            if "memory_used" in self.gauges and w["memory_used"]:
                out["nvml/memory_used_bytes"] = w["memory_used"]
                self._run["memory_used"] = max(self._run["memory_used"], w["memory_used"])
            if "throttle_reasons" in self.gauges:
                out["nvml/throttle_reasons"] = w["throttle_reasons"]
            self._reset_window()
            return out

    def discard(self) -> None:
        """Forget what accumulated since the last window (evaluation): the run's totals exclude it too."""
        with self._lock:
            for c in self.counters.values():
                c.total -= c.delta
                c.total_seconds -= c.seconds
            self._reset_window()

    def energy_j(self) -> float | None:
        """Training energy so far (the same total as nvml/energy_total_j), None without an energy counter."""
        with self._lock:
            energy = self.counters.get("energy")
            return energy.total if energy is not None and energy.total_seconds > 0 else None

    def summary(self, images: int) -> dict:
        """Means and totals over training (windows only; discarded spans excluded)."""
        out = {}
        for name in ("pcie_tx", "pcie_rx", "nvlink_tx", "nvlink_rx"):
            c = self.counters.get(name)
            if c is not None and c.total_seconds > 0:
                out[f"nvml/{name}_bytes"] = c.total
                out[f"nvml/{name}_bytes_per_s_mean"] = c.total / c.total_seconds
        energy = self.counters.get("energy")
        if energy is not None and energy.total_seconds > 0:
            out["nvml/energy_total_j"] = energy.total
            if images:
                out["nvml/energy_per_image_j"] = energy.total / images
        for name in ("power", "sm_clock_mhz", "util_pct"):
            total, count = self._run[name]
            if count:
                out["nvml/power_w_mean" if name == "power" else f"nvml/{name}_mean"] = total / count
        if self._run["memory_used"]:
            out["nvml/memory_used_bytes_max"] = self._run["memory_used"]
        if self.stopped_reason:
            out["nvml/stopped"] = self.stopped_reason
        return out

    def state_dict(self) -> dict:
        """The run's totals so far (what a resumed run adds to), not the live counter readings."""
        with self._lock:
            return {"counters": {n: [c.total, c.total_seconds] for n, c in self.counters.items()},
                    "run": {k: (list(v) if isinstance(v, list) else v) for k, v in self._run.items()}}

    def load_state_dict(self, state: dict) -> None:
        with self._lock:
            for name, (total, seconds) in state["counters"].items():
                if name in self.counters:  # a metric this GPU does not support starts nowhere
                    self.counters[name].total += total
                    self.counters[name].total_seconds += seconds
            for key, value in state["run"].items():
                if key == "memory_used":
                    self._run[key] = max(self._run[key], value)
                else:
                    self._run[key] = [self._run[key][0] + value[0], self._run[key][1] + value[1]]


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
    try:
        count_field = nvml.nvmlDeviceGetFieldValues(handle, [NVLINK_LINK_COUNT])[0]
        links = int(decode(count_field)[0]) if count_field.nvmlReturn == SUCCESS else 0
        active = [link for link in range(links) if nvml.nvmlDeviceGetNvLinkState(handle, link) == 1]
        facts["nvlink_active_links"] = len(active)
        if active:
            version, per_link = NVLINK_VERSIONS.get(nvml.nvmlDeviceGetNvLinkVersion(handle, active[0]), (None, None))
            facts["nvlink_version"] = version
            facts["nvlink_peak_bytes_per_s"] = per_link * len(active) if per_link else None
    except Exception:  # noqa: BLE001 - no NVLink on this GPU
        facts.setdefault("nvlink_active_links", 0)
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


def open_for_run(device, hz: float, say, nvml=None):
    """(sampler started or None, config facts). The config always says whether NVML was used, and if not, why."""
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
    return sampler.start(), {"available": True, "hz": hz, "metrics": sampler.supported, **facts}
