"""NVML readings accumulated per log window and over the whole run: rates from counter deltas (timed by the
fields' own timestamps), means and maxima of gauges, energy from the energy counter beside the integral of
sampled power over the same seconds, energy above idle power, totals kept across resumes by state_dict."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from train.measure.nvml_fields import POWER_FIELD, SUCCESS, decode, wrap_delta


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


@dataclass
class _Joules:
    """Joules over seconds in the window and over the run; discard takes the window's part out of the run's."""
    joules: float = 0.0
    seconds: float = 0.0
    total: float = 0.0
    total_seconds: float = 0.0

    def add(self, joules: float, seconds: float) -> None:
        self.joules += joules
        self.seconds += seconds
        self.total += joules
        self.total_seconds += seconds

    def discard(self) -> None:
        self.total -= self.joules
        self.total_seconds -= self.seconds
        self.new_window()

    def new_window(self) -> None:
        self.joules = self.seconds = 0.0


def _same_seconds(a: float, b: float, rel: float = 1e-6) -> bool:
    """Two spans accumulated from the same readings (equal but for rounding, or for the few µs between two
    fields' timestamps in one call: rel), neither empty."""
    return a > 0 and b > 0 and abs(a - b) <= rel * max(a, b)


class NvmlTotals:
    """The window's and the run's figures; every method takes the lock (the sampler thread adds, the loop reads)."""

    def __init__(self, counter_names, multipliers: dict, gauges: set):
        self.counters = {name: _Counter(multipliers[name]) for name in counter_names}
        self.gauges = gauges  # the gauge names this GPU gives (the window reports only those)
        self.lock = threading.Lock()
        # Trapezoid integral of power over the samples' own timestamps. Each sample adds the span back to the one
        # before, across window edges as a counter's delta does, so with power read in the same batched call as
        # the energy counter a window's integral spans exactly the counter delta's seconds.
        self.power = _Joules()
        self._last_power: tuple[int, float] | None = None  # (timestamp µs, W)
        # idle power x the training seconds of the energy source, accumulated as they are (each segment's own
        # idle power; seconds of a segment without a measurement are missing here, and above-idle with them)
        self.idle_w: float | None = None
        self.idle = _Joules()
        self._earlier_idle_w: float | None = None  # the last one measured before this segment (reported only)
        self._reset_window()
        # Whole-run means as (sum, count), totals in the counters: kept across resumes by state_dict.
        self._run = {"power": [0.0, 0], "sm_clock_mhz": [0.0, 0], "util_pct": [0.0, 0], "memory_used": 0.0}

    def _reset_window(self) -> None:
        self._window = {"power": [], "sm_clock_mhz": [], "util_pct": [], "temperature_c": [],
                        "memory_used": 0.0, "throttle_reasons": 0, "pcie_tx_fallback": [], "pcie_rx_fallback": []}
        for counter in self.counters.values():
            counter.delta = counter.seconds = 0.0
        self.power.new_window()
        self.idle.new_window()

    @property
    def energy_source(self) -> str:
        """Where training energy comes from: the energy counter, else the integral of sampled power."""
        return "counter" if "energy" in self.counters else "power_integral"

    def set_idle(self, watts: float | None) -> None:
        """This segment's idle power: from now on each training second of the energy source counts it."""
        with self.lock:
            self.idle_w = watts

    def _idle_reported(self) -> float | None:
        """This segment's idle power; where it measured none, the last segment's that did."""
        return self.idle_w if self.idle_w is not None else self._earlier_idle_w

    def _add_idle(self, seconds: float) -> None:
        if self.idle_w is not None:
            self.idle.add(self.idle_w * seconds, seconds)

    def _add_power(self, stamp_us: int, watts: float) -> None:
        self._window["power"].append(watts)
        last = self._last_power
        if last is not None and stamp_us > last[0]:
            seconds = (stamp_us - last[0]) / 1e6
            self.power.add(seconds * (watts + last[1]) / 2, seconds)
            if self.energy_source == "power_integral":
                self._add_idle(seconds)
        self._last_power = (stamp_us, watts)

    def add_fields(self, values: dict) -> None:
        with self.lock:
            for name, field in values.items():
                if field.nvmlReturn != SUCCESS or (name not in self.counters and name != "power"):
                    continue  # a transient error on one field: skip this reading only
                value, width = decode(field)
                if name == "power":
                    self._add_power(field.timestamp, value * POWER_FIELD[3])
                    continue
                counter = self.counters[name]
                if counter.last is not None and field.timestamp > counter.last_ts:
                    delta = wrap_delta(value, counter.last, width) * counter.multiplier
                    seconds = (field.timestamp - counter.last_ts) / 1e6
                    counter.delta += delta
                    counter.seconds += seconds
                    counter.total += delta
                    counter.total_seconds += seconds
                    if name == "energy":
                        self._add_idle(seconds)
                counter.last, counter.last_ts, counter.width = value, field.timestamp, width

    def add_gauges(self, gauges: dict, pcie: list[float] | None, stamp_us: int = 0) -> None:
        """stamp_us: when the gauges were read, in µs since 1970 as NVML's field timestamps."""
        with self.lock:
            w = self._window
            if "power" in gauges:  # nvmlDeviceGetPowerUsage, where the instant-power field is missing
                self._add_power(stamp_us, gauges["power"])
            for name in ("sm_clock_mhz", "util_pct", "temperature_c"):
                if name in gauges:
                    w[name].append(gauges[name])
            if "memory_used" in gauges:
                w["memory_used"] = max(w["memory_used"], gauges["memory_used"])
            if "throttle_reasons" in gauges:
                w["throttle_reasons"] |= int(gauges["throttle_reasons"])
            if pcie:
                w["pcie_tx_fallback"].append(pcie[0])
                w["pcie_rx_fallback"].append(pcie[1])

    def window_delta(self, name: str) -> float | None:
        """What a counter accumulated in the window so far (None: this GPU has no such counter)."""
        with self.lock:
            counter = self.counters.get(name)
            return counter.delta if counter is not None else None

    def window(self) -> dict:
        """The nvml/* metrics since the last call (the runner calls this once per log window)."""
        with self.lock:
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
            out.update(self._window_energy())
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

    def _window_energy(self) -> dict:
        """The counter's energy beside the power integral over the same seconds; the integral where no counter."""
        out, counter = {}, self.counters.get("energy")
        if counter is not None and counter.seconds > 0:
            out["nvml/energy_j"] = counter.delta
        if self.power.seconds > 0:
            out["nvml/power_integral_j"] = self.power.joules
            if counter is None:
                out["nvml/energy_j"] = self.power.joules
            elif counter.seconds > 0 and self.power.joules > 0:
                out["nvml/energy_counter_vs_power"] = counter.delta / self.power.joules
        return out

    def discard(self) -> None:
        """Forget what accumulated since the last window (evaluation): the run's totals exclude it too."""
        with self.lock:
            for c in self.counters.values():
                c.total -= c.delta
                c.total_seconds -= c.seconds
            self.power.discard()
            self.idle.discard()
            self._reset_window()

    def _source_total(self) -> tuple[float, float] | None:
        """(joules, seconds) of training energy from the energy source, None before any."""
        counter = self.counters.get("energy")
        joules, seconds = (counter.total, counter.total_seconds) if counter is not None else \
            (self.power.total, self.power.total_seconds)
        return (joules, seconds) if seconds > 0 else None

    def energy_j(self) -> float | None:
        """Training energy so far (the same total as nvml/energy_total_j), None without counter or power."""
        with self.lock:
            total = self._source_total()
            return total[0] if total else None

    def above_idle(self) -> tuple[float, bool] | None:
        """(training energy above idle power, clamped: it came out below 0 and is given as 0); None without an
        idle measurement for every training second (a segment that measured none, or nothing measured)."""
        with self.lock:
            total = self._source_total()
            if total is None or not _same_seconds(self.idle.total_seconds, total[1]):
                return None
            above = total[0] - self.idle.total
            return max(above, 0.0), above < 0

    def summary(self, images: int) -> dict:
        """Means and totals over training (windows only; discarded spans excluded)."""
        out = {}
        for name in ("pcie_tx", "pcie_rx", "nvlink_tx", "nvlink_rx"):
            c = self.counters.get(name)
            if c is not None and c.total_seconds > 0:
                out[f"nvml/{name}_bytes"] = c.total
                out[f"nvml/{name}_bytes_per_s_mean"] = c.total / c.total_seconds
        out.update(self._energy_summary(images))
        for name in ("power", "sm_clock_mhz", "util_pct"):
            total, count = self._run[name]
            if count:
                out["nvml/power_w_mean" if name == "power" else f"nvml/{name}_mean"] = total / count
        if self._run["memory_used"]:
            out["nvml/memory_used_bytes_max"] = self._run["memory_used"]
        return out

    def _energy_summary(self, images: int) -> dict:
        out, total, counter = {}, self._source_total(), self.counters.get("energy")
        if total is not None:
            out["nvml/energy_total_j"] = total[0]
            out["nvml/energy_source"] = self.energy_source
            if images:
                out["nvml/energy_per_image_j"] = total[0] / images
        if self.power.total_seconds > 0:
            out["nvml/power_integral_total_j"] = self.power.total
            # over the same seconds only (a checkpoint from before the integral has counter seconds without it)
            if counter is not None and _same_seconds(self.power.total_seconds, counter.total_seconds, 0.01) \
                    and self.power.total > 0:
                out["nvml/energy_counter_vs_power"] = counter.total / self.power.total
        if self._idle_reported() is not None:
            out["nvml/idle_power_w"] = self._idle_reported()
        above = self.above_idle()
        if above is not None:
            out["nvml/energy_above_idle_j"], out["nvml/energy_above_idle_clamped"] = above
            if images:
                out["nvml/energy_above_idle_per_image_j"] = above[0] / images
        return out

    def state_dict(self) -> dict:
        """The run's totals so far (what a resumed run adds to), not the live counter readings."""
        with self.lock:
            return {"counters": {n: [c.total, c.total_seconds] for n, c in self.counters.items()},
                    "run": {k: (list(v) if isinstance(v, list) else v) for k, v in self._run.items()},
                    "power_integral": [self.power.total, self.power.total_seconds],
                    "idle": [self.idle.total, self.idle.total_seconds], "idle_power_w": self._idle_reported()}

    def load_state_dict(self, state: dict) -> None:
        with self.lock:
            for name, (total, seconds) in state["counters"].items():
                if name in self.counters:  # a metric this GPU does not support starts nowhere
                    self.counters[name].total += total
                    self.counters[name].total_seconds += seconds
            for key, value in state["run"].items():
                if key == "memory_used":
                    self._run[key] = max(self._run[key], value)
                else:
                    self._run[key] = [self._run[key][0] + value[0], self._run[key][1] + value[1]]
            # checkpoints from before the power integral: their seconds have no idle measurement
            for part, key in ((self.power, "power_integral"), (self.idle, "idle")):
                joules, seconds = state.get(key, (0.0, 0.0))
                part.total += joules
                part.total_seconds += seconds
            self._earlier_idle_w = state.get("idle_power_w")
