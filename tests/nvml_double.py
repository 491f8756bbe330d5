"""A test double of the pynvml calls the sampler makes: NVML needs a GPU, CI has none.

It keeps pynvml's shapes (field values with fieldId, scopeId, timestamp in microseconds, valueType,
nvmlReturn and a value union; errors carrying `.value`) and records every call, so tests can check the
arguments (scopeId) as well as the arithmetic.
"""

from __future__ import annotations

from types import SimpleNamespace

ALL_LINKS = 0xFFFFFFFF
MEMBERS = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}


class NVMLError(Exception):
    def __init__(self, value: int):
        super().__init__(f"NVML error {value}")
        self.value = value


class FakeGpu:
    def __init__(self, links: int = 18):
        self.time_us = 1_000_000
        # field id -> (value, valueType); NVLink data fields hold one value per link
        self.fields = {197: (0, 3), 198: (0, 3), 83: (0, 3), 186: (300_000, 1)}
        self.nvlink = {138: [0] * links, 139: [0] * links}
        self.unsupported: set[int] = set()
        self.failing_links: set[int] = set()  # nvmlDeviceGetNvLinkState raises NVMLError(999, UNKNOWN) for these
        self.lost = False
        self.links = links
        self.memory_used = 10 * 2**30
        self.sm_clock = 1980
        self.util = 97
        self.temperature = 55
        self.reasons = 0
        self.pcie_throughput_kib = (1000, 2000)
        self.power_usage_mw = 250_000  # nvmlDeviceGetPowerUsage, where field 186 (instant power) is unsupported
        self.ticking = False  # when True every field read is 0.1 s later, with 1 MB sent and 30 J used

    def _tick(self) -> None:
        if self.ticking:
            self.advance(0.1)
            self.fields[197] = (self.fields[197][0] + 1_000_000, 3)
            self.fields[83] = (self.fields[83][0] + 30_000, 3)

    def advance(self, seconds: float) -> None:
        self.time_us += int(seconds * 1e6)


class FakeNvml:
    NVML_CLOCK_SM = 1
    NVML_TEMPERATURE_GPU = 0
    nvmlMemory_v2 = 0x02000028
    NVMLError = NVMLError

    def __init__(self, gpus: list[FakeGpu] | None = None):
        self.gpus = gpus if gpus is not None else [FakeGpu()]
        self.calls: list[tuple] = []

    def _gpu(self, handle) -> FakeGpu:
        gpu = self.gpus[handle]
        if gpu.lost:
            raise NVMLError(15)
        return gpu

    def nvmlInit(self):
        self.calls.append(("nvmlInit",))

    def nvmlDeviceGetCount(self):
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetHandleByUUID(self, uuid):
        self.calls.append(("nvmlDeviceGetHandleByUUID", uuid))
        for i in range(len(self.gpus)):
            if uuid == f"GPU-0000000{i}-fake":
                return i
        raise NVMLError(2)

    def nvmlDeviceGetFieldValues(self, handle, ids):
        self.calls.append(("nvmlDeviceGetFieldValues", list(ids)))
        gpu = self._gpu(handle)
        gpu._tick()
        out = []
        for entry in ids:
            fid, scope = entry if isinstance(entry, tuple) else (entry, 0)
            value, vtype, ret = 0, 3, 0
            if fid in gpu.unsupported:
                ret = 3
            elif fid in gpu.nvlink:
                per_link = gpu.nvlink[fid]
                value = sum(per_link) if scope == ALL_LINKS else per_link[scope]
            elif fid == 91:
                value, vtype = gpu.links, 1
            elif fid in gpu.fields:
                value, vtype = gpu.fields[fid]
            else:
                ret = 3
            union = SimpleNamespace(**{m: 0 for m in MEMBERS.values()})
            setattr(union, MEMBERS[vtype], value)
            out.append(SimpleNamespace(fieldId=fid, scopeId=scope, timestamp=gpu.time_us, latencyUsec=5,
                                       valueType=vtype, nvmlReturn=ret, value=union))
        return out

    def nvmlDeviceGetMemoryInfo(self, handle, version=None):
        return SimpleNamespace(used=self._gpu(handle).memory_used, total=141 * 2**30, version=version)

    def nvmlDeviceGetClockInfo(self, handle, kind):
        return self._gpu(handle).sm_clock

    def nvmlDeviceGetUtilizationRates(self, handle):
        return SimpleNamespace(gpu=self._gpu(handle).util, memory=40)

    def nvmlDeviceGetTemperatureV(self, handle, sensor):
        return self._gpu(handle).temperature

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle):
        return self._gpu(handle).reasons

    def nvmlDeviceGetPowerUsage(self, handle):
        return self._gpu(handle).power_usage_mw

    def nvmlDeviceGetPcieThroughput(self, handle, counter):
        self.calls.append(("nvmlDeviceGetPcieThroughput", counter))
        return self._gpu(handle).pcie_throughput_kib[counter]

    def nvmlDeviceGetName(self, handle):
        return "NVIDIA H200"

    def nvmlDeviceGetUUID(self, handle):
        return f"GPU-0000000{handle}-fake"

    def nvmlSystemGetDriverVersion(self):
        return "580.00"

    def nvmlDeviceGetMaxPcieLinkGeneration(self, handle):
        return 5

    def nvmlDeviceGetMaxPcieLinkWidth(self, handle):
        return 16

    def nvmlDeviceGetNvLinkState(self, handle, link):
        if link in self._gpu(handle).failing_links:
            raise NVMLError(999)
        return 1

    def nvmlDeviceGetNvLinkVersion(self, handle, link):
        return 6
