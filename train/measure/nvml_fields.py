"""What one GPU's NVML gives: the field ids, units and value types read here, and the reader that probes
them once (dropping what this GPU or driver does not support, said once) and then reads them each tick.

docs/telemetry.md gives the calls, units and traps handled here."""

from __future__ import annotations

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


class GpuReader:
    """One GPU's NVML reads: a batched nvmlDeviceGetFieldValues for the counters and power, and a few gauges."""

    def __init__(self, nvml, handle, say=print):
        self.nvml, self.handle, self.say = nvml, handle, say
        self.fields = {name: (fid, scope) for name, (fid, scope, _) in COUNTER_FIELDS.items()}
        self.fields[POWER_FIELD[0]] = POWER_FIELD[1:3]
        self.gauges = {"memory_used": self._memory_used, "sm_clock_mhz": self._sm_clock, "util_pct": self._util,
                       "temperature_c": self._temperature, "throttle_reasons": self._throttle}
        self.pcie_fallback = False

    def probe(self) -> dict:
        """Read everything once; drop (and say) what is unsupported; the first field readings."""
        values = self.read_fields()
        for name, field in list(values.items()):
            if field.nvmlReturn != SUCCESS:
                self.say(f"NVML: {name} not supported on this GPU (NVML error {field.nvmlReturn}); dropped")
                self.fields.pop(name, None)
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
        return values

    @property
    def supported(self) -> list[str]:
        names = list(self.fields) + list(self.gauges)
        return names + (["pcie_tx", "pcie_rx"] if self.pcie_fallback else [])

    def read_fields(self) -> dict:
        if not self.fields:
            return {}
        names = list(self.fields)
        values = self.nvml.nvmlDeviceGetFieldValues(self.handle, [self.fields[n] for n in names])
        return dict(zip(names, values))

    def read_gauges(self) -> dict:
        return {name: read() for name, read in self.gauges.items()}

    def read_pcie_throughput(self) -> list[float]:
        """(tx, rx) bytes/s from the 20 ms snapshot call, where the byte counters are unsupported."""
        return [self.nvml.nvmlDeviceGetPcieThroughput(self.handle, d) * 1024.0 for d in (0, 1)]  # KiB/s

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


def read_power_w(nvml, handle) -> float:
    """One power reading in W, from the instrument the sampler uses: instant power (field 186), else
    nvmlDeviceGetPowerUsage (a 1 s average on Ampere and later)."""
    field = nvml.nvmlDeviceGetFieldValues(handle, [POWER_FIELD[1:3]])[0]
    if field.nvmlReturn == SUCCESS:
        return decode(field)[0] * POWER_FIELD[3]
    return nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
