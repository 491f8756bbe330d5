"""The report's generated text: the study's original table and the Observations, measured ratios against fp32
in sentences (no canned prose)."""

from __future__ import annotations

from report.columns import COLUMNS, NOISY_MARK, ROUNDS_MARK, SHORT_MARK, pct_order
from report.compare import distinguishing
from report.figures import number
from report.formatting import fmt, label, model_title, placement
from report.rows import Row, study
from train.contract.metrics import PROFILE_CLASS_NAMES, PROFILE_CLASSES


def original_table(rows: list[Row], model: str, where: tuple[str, int]) -> list[list[str]]:
    """The study's table as it was: Precision | Training Time | Model Size | Bandwidth."""
    out = [["Precision", "Training Time (s)", "Model Size (MiB)", "Bandwidth (GB/s)"]]
    at = study(rows, model, where)
    keys = distinguishing(at)
    for row in at:
        bandwidth = row.values.get("nvlink_bytes_per_s") if row.gpus > 1 else None
        bandwidth = bandwidth or row.values.get("pcie_bytes_per_s") or row.values.get("busbw_bytes_per_s")
        out.append([label(row, keys) + (f" {SHORT_MARK}" if row.short else ""),
                    fmt("train_time_s", row.values.get("train_time_s")),
                    fmt("ckpt_mib", row.values.get("ckpt_mib")), fmt("pcie_bytes_per_s", bandwidth)])
    return out


def observations(rows: list[Row], model: str, where: tuple[str, int]) -> str:
    """Measured ratios against fp32 for one model and placement, as sentences: no canned prose."""
    at, name = study(rows, model, where), model_title(model)
    keys = distinguishing(at)
    place = placement(*where)
    bases = [r for r in at if r.precision == "fp32"]
    if not bases:
        return (f"No finished fp32 run at {name} on {place}: ratios need it as the baseline. "
                f"Precisions present: {', '.join(dict.fromkeys(r.precision for r in at)) or 'none'}.")
    sentences, short = [], [label(r, keys) for r in at if r.short]
    noisy = [label(r, keys) for r in at if "speedup_vs_fp32" in r.noisy]
    unmatched = [label(r, keys) for r in at if r.precision != "fp32" and r.base is None]
    for row in at:
        if row.precision == "fp32" or row.base is None or row.short or row.base.short or \
                {"speedup_vs_fp32"} & (row.noisy | row.flagged):
            continue
        base, parts = row.base, []
        for column, what in (("images_per_s", "throughput"), ("ckpt_mib", "checkpoint size"),
                             ("peak_mem_gib", "peak memory"), ("pcie_bytes_per_s", "PCIe traffic"),
                             ("energy_per_image_j", "energy per image"),
                             ("energy_above_idle_per_image_j", "energy per image above idle")):
            a, b = row.values.get(column), base.values.get(column)
            if column == "images_per_s" and "speedup_vs_fp32" in row.over_rounds:
                parts.append(_paired_throughput(row, base))
            elif a is not None and b:
                parts.append(f"{what} {a / b:.2f}× fp32's ({fmt(column, a)} vs {fmt(column, b)}"
                             f"{' ' + COLUMNS[column][1] if COLUMNS[column][1] else ''})")
            if column == "images_per_s":  # how fast it learns, right beside how fast it processes images
                parts += _tta_parts(row, base)
        a, b = row.values.get("best_test_acc"), base.values.get("best_test_acc")
        if a is not None and b is not None:
            parts.append(f"best test accuracy {a - b:+.1f} points ({a:.1f}% vs {b:.1f}%)")
        a = row.values.get("lost_update_pct")
        if a is not None:
            b = base.values.get("lost_update_pct")
            parts.append(f"{fmt('lost_update_pct', a)}% of weight updates rounded away "
                         f"(fp32: {fmt('lost_update_pct', b) + '%' if b is not None else 'not measured'})")
        if parts:
            sentences.append(f"{label(row, keys)}: " + "; ".join(parts) + ".")
    left_out = (f" Left out, too short to measure ({SHORT_MARK}): {', '.join(short)}." if short else "")
    if noisy:
        left_out += f" Left out, its range over rounds too wide to conclude ({NOISY_MARK}): {', '.join(noisy)}."
    if unmatched:
        left_out += f" No fp32 row with the same settings for: {', '.join(unmatched)}."
    if not sentences:
        return f"Nothing to compare with fp32 at {name} on {place} yet." + left_out
    rounds = (f" (benchmark points, {ROUNDS_MARK}: over their interleaved rounds)" if any(r.over_rounds for r in at)
              else "")
    return (f"At {name} on {place}, medians over the runs of each row{rounds} against the fp32 row with the same "
            f"settings — " + " ".join(sentences) + left_out)


def _paired_throughput(row: Row, base: Row) -> str:
    """A benchmark point's speed-up: paired within its rounds, with their range (train/contract/rounds.py)."""
    lo, hi = row.spread["speedup_vs_fp32"]
    n = len(row.round_rates().keys() & base.round_rates().keys())
    return (f"throughput {row.values['speedup_vs_fp32']:.2f}× fp32's ({lo:.2f}–{hi:.2f} over {n} interleaved "
            f"round(s); {fmt('images_per_s', row.values['images_per_s'])} vs "
            f"{fmt('images_per_s', base.values['images_per_s'])} images/s)")


def _tta_parts(row: Row, base: Row) -> list[str]:
    """Time to accuracy against fp32: the highest target both reached (time, epochs, energy), and targets fp32
    reached that this row did not. Only measured crossings; a target not reached is said so, never estimated."""
    parts = []
    both = [pct for pct in row.tta if row.values.get(f"tta_s_{pct}") and base.values.get(f"tta_s_{pct}")]
    if both:
        pct = max(both, key=pct_order)
        a, b = row.values[f"tta_s_{pct}"], base.values[f"tta_s_{pct}"]
        speed = b / a
        text = (f"time to {pct.replace('_', '.')}% {speed:.2f}× fp32's speed" if speed >= 1
                else f"time to {pct.replace('_', '.')}% {1 / speed:.2f}× fp32's time")
        text += f" ({fmt('tta_s', a)} vs {fmt('tta_s', b)} s"
        ea, eb = row.values.get(f"tta_epochs_{pct}"), base.values.get(f"tta_epochs_{pct}")
        if ea and eb:
            more = 100 * (ea / eb - 1)
            text += (f"; {ea:g} vs {eb:g} epochs, {abs(more):.0f}% {'more' if more > 0 else 'fewer'}" if round(more)
                     else f"; the same {ea:g} epochs")
        ja, jb = row.values.get(f"tta_energy_kj_{pct}"), base.values.get(f"tta_energy_kj_{pct}")
        if ja is not None and jb:
            text += f"; energy {ja / jb:.2f}× fp32's"
        parts.append(text + ")")
    for pct, (reached, asked) in row.tta.items():
        if base.values.get(f"tta_s_{pct}") and asked and reached < asked:
            parts.append(f"{pct.replace('_', '.')}% reached by {reached} of {asked} run(s), which fp32 reached")
    return parts


def fp8_observations(rows: list[Row], where: tuple[str, int]) -> str:
    """fp8 against bf16, per model width, at one placement: images/s, MFU against both peaks, accuracy. Empty
    where no row is an fp8 run or a ViT; said plainly where the ViTs have no fp8 run."""
    at = [r for r in rows if (r.device, r.gpus) == where]
    fp8 = [r for r in at if r.precision.startswith("fp8")]
    if not fp8:
        if any(r.model.startswith("vit") for r in at):
            return (" No fp8 run here: fp8 runs on GPUs of compute capability 8.9+ only, and applies to the ViTs "
                    "only (a ResNet has 0% of its FLOPs in Linear layers fp8 converts).")
        return ""
    sentences = []
    for row in sorted(fp8, key=lambda r: (r.model, r.precision)):
        bf16 = _same_but_precision(row, at, "bf16")
        if bf16 is None:
            sentences.append(f"{model_title(row.model)} {row.precision}: no bf16 row with the same settings.")
            continue
        parts = []
        a, b = row.values.get("images_per_s"), bf16.values.get("images_per_s")
        if a and b:
            verdict = "helps" if a / b >= FP8_HELPS else "does not help" if a / b <= 1 / FP8_HELPS else "about even"
            parts.append(f"{verdict}: {a / b:.2f}× bf16's images/s ({fmt('images_per_s', a)} vs "
                         f"{fmt('images_per_s', b)})")
        parts += [text for text in (_fp8_shapes(row), _fp8_time(row, bf16)) if text]
        mfu, vs_bf16, base = (row.values.get("mfu"), row.values.get("mfu_vs_bf16_peak"), bf16.values.get("mfu"))
        if mfu is not None:
            parts.append(f"MFU {mfu:.1f}% of the fp8 peak" + (f", {vs_bf16:.1f}% of bf16's" if vs_bf16 else "")
                         + (f" (bf16: {base:.1f}%)" if base is not None else ""))
        a, b = row.values.get("best_test_acc"), bf16.values.get("best_test_acc")
        if a is not None and b is not None:
            parts.append(f"best test accuracy {a - b:+.1f} points ({a:.1f}% vs {b:.1f}%)")
        short = f" ({SHORT_MARK} too short to measure)" if row.short or bf16.short else ""
        sentences.append(f"{model_title(row.model)} {row.precision}{short}: " + ("; ".join(parts) or "nothing "
                                                                                   "measured") + ".")
    return f" fp8 against bf16 on {placement(*where)}, per model — " + " ".join(sentences)


def _fp8_shapes(row: Row) -> str:
    """'its largest Linear products at batch 128, M,K,N: 8320,384,1536 (x12), ...': what fp8's gain hangs on."""
    batch = number(row.facts, "batch_size")
    if not row.products or not batch or not batch.is_integer():
        return ""
    batch = int(batch)
    shapes = ", ".join(f"{rows * batch},{k},{n} (×{layers})" for rows, k, n, layers in row.products[:FP8_SHAPES])
    return (f"its largest Linear products at batch {batch}, M,K,N: {shapes} (fp8 gains with the shapes: small K "
            "and N leave its casts and scaling a large share; docs/precision.md, fp8)")


def _fp8_time(row: Row, bf16: Row) -> str:
    """Where both were profiled: fp8's matmul time against bf16's, and the element-wise and cast time it adds."""
    mm, mm_bf16 = row.values.get("prof_conv_matmul_ms"), bf16.values.get("prof_conv_matmul_ms")
    if not mm or not mm_bf16:
        return ""
    added = sum((row.values.get(f"prof_{c}_ms") or 0) - (bf16.values.get(f"prof_{c}_ms") or 0)
                for c in ("elementwise", "copy"))
    return (f"profiled, its matmuls took {mm:.1f} vs {mm_bf16:.1f} ms a step ({mm_bf16 / mm:.2f}× bf16's speed) "
            f"and element-wise work and casts {added:+.1f} ms (fp8's scales and casts)")


def _same_but_precision(row: Row, rows: list[Row], precision: str) -> Row | None:
    """The row of `precision` whose settings are the row's in everything else."""
    key = {k: v for k, v in row.key if k != "precision"}
    return next((r for r in rows if r.precision == precision and {k: v for k, v in r.key if k != "precision"} == key),
                None)


FP8_HELPS = 1.05  # fp8 at least this much faster than bf16 "helps"; this much slower "does not help"
FP8_SHAPES = 3  # the largest Linear products named
UNCHANGED = 1.1  # a class at most this much faster than fp32's counts as unchanged: it bounds the speed-up
MENTIONED = 0.01  # classes under this share of both steps are left out of the sentences
PROFILE_AGREES = 1.25  # a profiled step further than this factor from the timed step is said to be so


def profile_observations(rows: list[Row], model: str, where: tuple[str, int]) -> str:
    """Each speed-up over fp32 decomposed by operation class, from profiled runs only (docs/profile.md): how much
    faster each class got, its share of the step before and after, and the bound the unchanged classes set."""
    at = [r for r in study(rows, model, where) if r.values.get("prof_step_ms")]
    keys = distinguishing(at)
    # A profiled window far longer or shorter than the run's timed steps was disturbed (a busy machine): its
    # classes describe that moment, not the run, and decompose nothing.
    off = {id(r): ratio for r in at if (ratio := _profiled_vs_timed(r)) and not 1 / PROFILE_AGREES <= ratio <= PROFILE_AGREES}
    sentences = []
    for row in at:
        base = row.base
        if row.precision == "fp32" or base is None or not base.values.get("prof_step_ms") or \
                id(row) in off or id(base) in off:
            continue
        step, base_step = row.values["prof_step_ms"], base.values["prof_step_ms"]
        ips = row.values.get("speedup_vs_fp32")
        parts, unchanged, names = [], 0.0, []
        for cls in PROFILE_CLASSES:
            a, b = row.values.get(f"prof_{cls}_ms"), base.values.get(f"prof_{cls}_ms")
            if not a or not b or max(a / step, b / base_step) < MENTIONED:
                continue  # not measured in one of them, or too small to speak of
            speed = b / a
            if speed <= UNCHANGED:  # what is left even if every class that got faster took no time at all
                unchanged += a
                names.append(PROFILE_CLASS_NAMES[cls])
            change = f"{speed:.1f}× faster" if speed > UNCHANGED else \
                ("unchanged" if speed >= 1 / UNCHANGED else f"{1 / speed:.1f}× slower")
            rate = _optimizer_rate(row, base) if cls == "optimizer" else ""
            parts.append(f"{PROFILE_CLASS_NAMES[cls]} {change} ({b / base_step:.0%} → {a / step:.0%} of the step"
                         f"{rate})")
        bound = (f" — what did not get faster ({', '.join(names)}) takes {unchanged / base_step:.0%} of fp32's "
                 f"step time, which bounds the speed-up at {base_step / unchanged:.1f}×" if unchanged else "")
        sound = not ({"speedup_vs_fp32"} & (row.flagged | row.noisy))
        images = f", images/s {ips:.2f}×" if ips and sound else ""
        sentences.append(f"{label(row, keys)} is {base_step / step:.2f}× fp32 over the profiled step at "
                         f"{model_title(model)}{images}: " + ", ".join(parts) + bound + ".")
    disturbed = [f"{label(r, keys)} ({off[id(r)]:.2f}× its timed step)" for r in at if id(r) in off]
    care = (f"Left out, their profiled step not their timed step's length (the machine was busier or quieter "
            f"during the profiled window, or the profiler cost that much; profile again): {', '.join(disturbed)}."
            if disturbed else "")
    if not sentences and not care:
        return ""
    return "Where the time went (profiled runs, --profile): " + " ".join(sentences + [care] if care else sentences)


def _optimizer_rate(row: Row, base: Row) -> str:
    """'; 5.2 vs 16.9 GB/s of the bytes it must move (10% of the node's memory copy)', where both were measured."""
    a, b = row.values.get("prof_optimizer_gbps"), base.values.get("prof_optimizer_gbps")
    if not a or not b:
        return ""
    pct = row.values.get("prof_optimizer_copy_pct")
    return (f"; {a:.1f} vs {b:.1f} GB/s of the tensors it must read and write"
            + (f", {pct:.0f}% of the node's memory copy" if pct else ""))


def _profiled_vs_timed(row: Row) -> float | None:
    """The profiled step's length over the timed (unprofiled) step's, from images/s per process and the batch."""
    ips, batch = row.values.get("images_per_s_per_gpu"), number(row.facts, "batch_size")
    if not ips or not batch:
        return None
    return row.values["prof_step_ms"] / (1e3 * batch / ips)
