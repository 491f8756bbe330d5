"""A run's figures, read out of its W&B config and summary as the metric contract names them (summary keys, and
facts the run put in its config: FLOPs per image, the GPU's peak, link peaks). A missing figure is None (an
empty cell), never zero."""

from __future__ import annotations

import math
import statistics

from report.columns import pct_order
from train.contract import lineage, rounds
from train.contract.metrics import ENERGY_SOURCES, PROFILE_CLASSES, TIME_TO_ACC_PREFIX, target_pct


def number(d: dict, *path, agg: str | None = None):
    """The number at `path` in a config or summary (of a define_metric summary, its `agg`, default the last);
    None where it is missing or not a finite number."""
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    if isinstance(d, dict):  # define_metric summaries: {"mean", "min", "max", "last"}
        d = d.get(agg or "last")
    if isinstance(d, bool) or not isinstance(d, (int, float)) or not math.isfinite(d):
        return None
    return float(d)


def _sum(*values):
    return None if any(v is None for v in values) else sum(values)


def system(config: dict) -> dict:
    s = config.get("system")
    return s if isinstance(s, dict) else {}


def world_size(config: dict) -> int:
    ws = number(config, "experiment", "world_size") or number(config, "system", "world_size") or 1
    return int(ws)


def device(config: dict) -> str:
    return str(system(config).get("device") or (config.get("experiment") or {}).get("device") or "?")



def run_metrics(config: dict, summary: dict, rates: dict | None = None) -> dict:
    """The per-run figures of a row, before aggregation and ratios; `rates`: the run's bench_rates, where the
    caller has them already."""
    s = lambda *k, agg=None: number(summary, *k, agg=agg)  # noqa: E731
    c = lambda *k: number(config, *k)  # noqa: E731
    rates = bench_rates(config, summary) if rates is None else rates
    ips = statistics.median(rates.values()) if rates else s("train/images_per_s")
    ips_gpu = ips / world_size(config) if rates else s("train/images_per_s_per_gpu") or ips
    pcie = _sum(s("nvml/pcie_tx_bytes_per_s_mean"), s("nvml/pcie_rx_bytes_per_s_mean"))
    nvlink = _sum(s("nvml/nvlink_tx_bytes_per_s_mean"), s("nvml/nvlink_rx_bytes_per_s_mean"))
    pcie_peak, nvlink_peak = c("nvml", "pcie_peak_bytes_per_s"), c("nvml", "nvlink_peak_bytes_per_s")
    flops, peak = c("model", "train_flops_per_image"), c("system", "peak_flops_per_s")
    bf16_peak = c("system", "peak_bf16_flops_per_s")
    measured_peak, allreduce_peak = c("nodecheck", "matmul_flops_per_s"), c("nodecheck", "allreduce_busbw_bytes_per_s")
    busbw = s("comm/busbw_bytes_per_s", agg="mean") if world_size(config) > 1 else None
    ckpt = s("ckpt/size_bytes")
    # Allocator peak only: older CPU runs wrote the process's RSS under this key, which is not the precision's
    # memory footprint (it includes the interpreter, libraries and the dataset).
    mem = s("mem/peak_allocated_bytes") if device(config) != "cpu" else None
    lost = s("precision/lost_update_frac", agg="mean")
    out = {
        "train_time_s": s("time/train_s"),
        "epoch_time_s": s("epoch/time_s", agg="mean"),
        "images_per_s": ips,
        "images_per_s_per_gpu": ips_gpu,
        "ckpt_mib": ckpt / 2**20 if ckpt is not None else None,
        "peak_mem_gib": mem / 2**30 if mem is not None else None,
        "lost_update_pct": 100 * lost if lost is not None else None,
        # TX+RX against both directions' peak
        "pcie_bytes_per_s": pcie,
        "pcie_share": 100 * pcie / (2 * pcie_peak) if pcie is not None and pcie_peak else None,
        "nvlink_bytes_per_s": nvlink,
        "nvlink_share": 100 * nvlink / (2 * nvlink_peak) if nvlink is not None and nvlink_peak else None,
        # one process all-reduces nothing: the runner logs 0, which is "not measured", not a bandwidth
        "busbw_bytes_per_s": busbw,
        "busbw_share": 100 * busbw / allreduce_peak if busbw is not None and allreduce_peak else None,
        "best_test_acc": 100 * s("test/best_acc") if s("test/best_acc") is not None else None,
        "last_test_acc": 100 * s("test/last_acc") if s("test/last_acc") is not None else None,
        "energy_per_image_j": s("nvml/energy_per_image_j"),
        "energy_above_idle_per_image_j": s("nvml/energy_above_idle_per_image_j"),
        "mfu": 100 * flops * ips_gpu / peak if flops and ips_gpu and peak else None,
        # fp8 runs: against the bf16 peak too (their system.peak_flops_per_s is the fp8 one)
        "mfu_vs_bf16_peak": 100 * flops * ips_gpu / bf16_peak if flops and ips_gpu and bf16_peak else None,
        # against what this node's node check measured (a dense matmul of the run's precision): what it could do
        "mfu_measured": 100 * flops * ips_gpu / measured_peak if flops and ips_gpu and measured_peak else None,
        **{k: v / 2**20 if v is not None else None for k, v in (
            ("params_mib", s("mem/params_bytes")), ("grads_mib", s("mem/grads_bytes")),
            ("optimizer_mib", s("mem/optimizer_bytes")), ("activations_mib", s("mem/activations_bytes")),
            ("other_mib", _sum(s("mem/data_bytes"), s("mem/measurement_bytes"))))},
        **tta_metrics(config, summary),
        **profile_metrics(config, summary),
    }
    if completed_epochs(config, summary) == 0:  # its one epoch record is a part of an epoch, timed as a whole
        out = {k: (None if k == "epoch_time_s" or k.startswith("tta_epochs_") else v) for k, v in out.items()}
    return out


def bench_rates(config: dict, summary: dict) -> dict[tuple[str, int], float]:
    """A benchmark point's images/s per undisturbed round, {(invocation, round): images/s}; {} for other runs."""
    batch = number(config, "batch_size")
    return rounds.rates(summary, batch * world_size(config)) if batch else {}


def energy_source(summary: dict) -> str | None:
    """counter or power_integral, as the run's summary labels its energy; None: not said (no energy, or a run
    from before the label, whose energy is the counter's)."""
    source = summary.get("nvml/energy_source")
    return source if source in ENERGY_SOURCES else None


def tta_metrics(config: dict, summary: dict) -> dict:
    """Per target the run asked for: tta_asked_<pct> = 1, and where reached its time, epochs and energy."""
    out = {}
    for pct in run_targets(config, summary):
        out[f"tta_asked_{pct}"] = 1.0
        hit = summary.get(TIME_TO_ACC_PREFIX + pct)
        if isinstance(hit, dict) and number(hit, "time_s") is not None:
            energy = number(hit, "energy_j")
            out.update({f"tta_s_{pct}": number(hit, "time_s"), f"tta_epochs_{pct}": number(hit, "epoch"),
                        f"tta_energy_kj_{pct}": energy / 1e3 if energy is not None else None})
    return out


def completed_epochs(config: dict, summary: dict) -> int | None:
    """Whole epochs the run trained (its steps over the loader's steps per epoch); None: unknown. A run that
    ends at --max-steps inside its first epoch still logs an epoch record at its end: not an epoch's time."""
    steps, per_epoch = number(summary, "train/steps"), number(config, "data", "steps_per_epoch")
    return int(steps // per_epoch) if steps is not None and per_epoch else None


def timed_steps(config: dict, summary: dict) -> int | None:
    """Steps in the run's images/s median; older runs: steps done less the warm-up. None: unknown."""
    timed = number(summary, "train/timed_steps")
    if timed is None:
        steps, warmup = number(summary, "train/steps"), number(config, "warmup_steps")
        timed = max(0.0, steps - warmup) if steps is not None and warmup is not None else None
    return None if timed is None else int(timed)


def run_targets(config: dict, summary: dict) -> list[str]:
    """The targets a run asked for, as summary-key percentages: its summary's keys (a reached target) and its
    config's target_acc (fractions; an unreached one has no summary key)."""
    out = {k[len(TIME_TO_ACC_PREFIX):] for k in summary if k.startswith(TIME_TO_ACC_PREFIX)}
    asked = config.get("target_acc")
    if isinstance(asked, list) and summary.get("train/end") is not None:  # runs that record time to accuracy
        out |= {target_pct(float(t)) for t in asked if isinstance(t, (int, float))}
    return sorted(out, key=pct_order)


def arch(config: dict) -> str | None:
    """The run's model (config model.arch: resnet18, vit-s), or resnet{depth} for runs that did not record it."""
    model = config.get("model")
    if isinstance(model, dict) and model.get("arch"):
        return model["arch"]
    return f"resnet{config['depth']}" if config.get("depth") is not None else None


def exclusion(run) -> str | None:
    """Why a run is listed but not averaged in, or None."""
    diverged = number(run.summary, "train/diverged_at_step")
    if diverged is not None:  # the runner stopped it on a non-finite loss: its state is "failed", but why matters
        return f"diverged at step {int(diverged)}"
    if run.state != "finished":
        return run.state
    loss = run.summary.get("train/loss")
    last = loss.get("last") if isinstance(loss, dict) else loss
    if isinstance(last, (int, float)) and not math.isfinite(last):
        return "diverged (loss not finite)"
    if isinstance(last, str) and last.lower() in ("nan", "inf", "-inf", "infinity"):
        return "diverged (loss not finite)"
    made_by = lineage.NOT_TRAINING.get(run.config.get(lineage.JOB_TYPE_KEY))
    if made_by:
        return f"the suite's own {run.config[lineage.JOB_TYPE_KEY]} run ({made_by}), not a training run"
    if run.config.get("precision") is None or arch(run.config) is None:
        return "not a run of this suite (no precision/model in its config)"
    return None


def profile_metrics(config: dict, summary: dict) -> dict:
    """The profiled window's step time by class (--profile) and the convolutions' achieved rate against the
    datasheet peak and, where a run carries it, the node check's measured ceiling. {} for unprofiled runs."""
    step = number(summary, "prof/step_ms")
    if step is None:
        return {}
    out = {"prof_step_ms": step, **{f"prof_{c}_ms": number(summary, f"prof/{c}_ms") for c in PROFILE_CLASSES}}
    achieved = number(summary, "prof/conv_matmul_flops_per_s")
    peak = number(config, "system", "peak_flops_per_s")
    ceiling = number(config, "nodecheck", "matmul_flops_per_s")  # the node check's, for the run's precision
    out["prof_conv_gflops"] = achieved / 1e9 if achieved else None
    out["prof_conv_peak_pct"] = 100 * achieved / peak if achieved and peak else None
    out["prof_conv_nodecheck_pct"] = 100 * achieved / ceiling if achieved and ceiling else None
    moved, copy = number(summary, "prof/optimizer_bytes_per_s"), number(config, "nodecheck", "memory_copy_bytes_per_s")
    out["prof_optimizer_gbps"] = moved / 1e9 if moved else None
    out["prof_optimizer_copy_pct"] = 100 * moved / copy if moved and copy else None
    return out
