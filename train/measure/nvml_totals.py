"""NVML readings accumulated per log window and over the whole run: rates from counter deltas (timed by the
fields' own timestamps), means and maxima of gauges, totals kept across resumes by state_dict."""

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


class NvmlTotals:
    """The window's and the run's figures; every method takes the lock (the sampler thread adds, the loop reads)."""

    def __init__(self, counter_names, multipliers: dict, gauges: set):
        self.counters = {name: _Counter(multipliers[name]) for name in counter_names}
        self.gauges = gauges  # the gauge names this GPU gives (the window reports only those)
        self.lock = threading.Lock()
        self._reset_window()
        # Whole-run means as (sum, count), totals in the counters: kept across resumes by state_dict.
        self._run = {"power": [0.0, 0], "sm_clock_mhz": [0.0, 0], "util_pct": [0.0, 0], "memory_used": 0.0}

    def _reset_window(self) -> None:
        self._window = {"power": [], "sm_clock_mhz": [], "util_pct": [], "temperature_c": [],
                        "memory_used": 0.0, "throttle_reasons": 0, "pcie_tx_fallback": [], "pcie_rx_fallback": []}
        for counter in self.counters.values():
            counter.delta = counter.seconds = 0.0

    def add_fields(self, values: dict) -> None:
        with self.lock:
            for name, field in values.items():
                if field.nvmlReturn != SUCCESS or (name not in self.counters and name != "power"):
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

    def add_gauges(self, gauges: dict, pcie: list[float] | None) -> None:
        with self.lock:
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
        with self.lock:
            for c in self.counters.values():
                c.total -= c.delta
                c.total_seconds -= c.seconds
            self._reset_window()

    def energy_j(self) -> float | None:
        """Training energy so far (the same total as nvml/energy_total_j), None without an energy counter."""
        with self.lock:
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
        return out

    def state_dict(self) -> dict:
        """The run's totals so far (what a resumed run adds to), not the live counter readings."""
        with self.lock:
            return {"counters": {n: [c.total, c.total_seconds] for n, c in self.counters.items()},
                    "run": {k: (list(v) if isinstance(v, list) else v) for k, v in self._run.items()}}

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
