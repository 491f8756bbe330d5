"""The report, from W&B offline runs made with the real `wandb` library and shaped as the runner's metric
contract (docs/metric-contract.md) says: rows as experiments, flags for runs too short to measure, empty cells for figures not
measured, provenance, lost updates, plots, unreadable runs, and report.html in a real headless Chromium.
One end-to-end test reads two runs trained by the real runner."""

import csv
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT

H100 = "NVIDIA H100 80GB HBM3"
XEON = "Intel(R) Xeon(R) Platinum 8480+"
COMMIT, OTHER_COMMIT = "abc123def4567890abc123def4567890abc12345", "fedcba9876543210fedcba9876543210fedcba98"
# precision/lost_update_frac per log window: the report's column is 100 × the run's mean
FP32_TTA = {"80": (100.0, 10, 5e3), "90": (300.0, 30, 15e3), "93": (600.0, 60, 30e3), "94": (900.0, 90, 45e3)}
BF16_TTA = {"80": (60.0, 12, 2e3), "90": (180.0, 36, 6e3), "93": (500.0, 84, 16e3)}
LOST = {"fp32": [0.0001, 0.0003], "bf16": [0.2, 0.4], "amp_bf16": [0.001, 0.003], "fp16": [0.1, 0.1]}


def _experiment(precision, depth=18, batch_size=128, world_size=1, seed=0, device="cuda"):
    return {"depth": depth, "precision": precision, "dataset": "cifar10", "train_images": 50000,
            "batch_size": batch_size, "world_size": world_size, "device": device, "optimizer": "sgd", "lr": 0.005,
            "effective_lr": 0.005, "lr_scaling": "none", "momentum": 0.9, "weight_decay": 0.0005,
            "lr_schedule": "cosine", "epochs": 600, "seed": seed, "loader": "device", "num_workers": None,
            "grad_compress": "none"}


def _spec(folder, name, precision, ips, *, depth=18, batch_size=128, world_size=1, seed=0, device="cuda",
          timed_steps=400, started="2026-11-24T09:00:00+00:00", commit=COMMIT, dirty=False, exit_code=0,
          summary=None, legacy=False, tta=None, parts=None):
    """One run as the runner writes it: config, logged windows and summary."""
    cpu = device == "cpu"
    total_steps = 50000 * 600 // (batch_size * world_size)
    system = {"device": device, "device_name": XEON if cpu else H100, "world_size": world_size,
              "torch": "2.15.0", "cuda": None if cpu else "12.8", "peak_flops_per_s": None if cpu else 989.4e12}
    config = {"precision": precision, "depth": depth, "batch_size": batch_size, "seed": seed, "warmup_steps": 10,
              "total_steps": total_steps, "system": system, "model": {"train_flops_per_image": 1.67e9},
              "nvml": {"available": not cpu, "pcie_peak_bytes_per_s": None if cpu else 63e9}}
    if tta is not None:
        config["target_acc"] = [0.8, 0.9, 0.93, 0.94]
    if not legacy:
        config["experiment"] = _experiment(precision, depth, batch_size, world_size, seed, device)
        config["provenance"] = {"git_commit": commit, "git_dirty": dirty, "started_at": started}
    history = []
    for i, lost in enumerate(LOST[precision]):
        window = {"train/step": 50 * (i + 1), "train/loss": 2.0 - i / 10, "train/images_per_s": ips}
        if not legacy:
            window["precision/lost_update_frac"] = lost
        if not cpu:
            window["nvml/pcie_tx_bytes_per_s"] = 2e9 + 1e8 * i
            window["comm/busbw_bytes_per_s"] = 1e11 if world_size > 1 else 0  # the runner logs 0 for one rank
        if cpu:
            window["mem/rss_peak_bytes"] = 3e9
        history.append(window)
    extra = {}
    if tta is not None:  # {pct: (time_s, epoch, energy_j)}: each evaluation logged where the run stood
        extra["train/end"] = "finished"
        for i, (pct, (time_s, epoch, energy)) in enumerate(sorted(tta.items())):
            history.append({"train/step": 1000 * (i + 1), "epoch": epoch, "test/acc": int(pct) / 100,
                            "cum/train_s": time_s})
            extra[f"time_to_acc/{pct}"] = {"time_s": time_s, "epoch": epoch, "step": 1000 * (i + 1),
                                           "images": epoch * 50000, "test_acc": int(pct) / 100,
                                           **({"energy_j": energy} if energy is not None else {})}
    if parts is not None:  # weights bytes: the rest follow as the runner measures them
        extra.update({"mem/params_bytes": parts, "mem/grads_bytes": parts, "mem/optimizer_bytes": parts})
        if not cpu:
            extra.update({"mem/data_bytes": 250e6, "mem/measurement_bytes": parts, "mem/activations_bytes": 3e9})
    full = {**extra, "train/images_per_s": ips, "train/images_per_s_per_gpu": ips / world_size, "time/train_s": 1e7 / ips,
            "train/steps": timed_steps + 10, "ckpt/size_bytes": 45e6 if precision != "bf16" else 22.5e6,
            "test/best_acc": 0.93, "test/last_acc": 0.92}
    if not legacy:
        full["train/timed_steps"] = timed_steps
    if cpu:
        full["mem/rss_peak_bytes"] = 3e9
    elif not legacy:
        full.update({"mem/peak_allocated_bytes": 4 * 2**30 if precision == "fp32" else 2 * 2**30,
                     "nvml/pcie_tx_bytes_per_s_mean": 2e9, "nvml/pcie_rx_bytes_per_s_mean": 1e9})
    return {"dir": os.path.join(folder, name), "name": name, "config": config, "history": history,
            "summary": {**full, **(summary or {})}, "exit_code": exit_code}


def _make(spec):
    """A real W&B offline run (in a spawned process: W&B's global state stays out of the test process)."""
    os.environ["WANDB_DISABLE_GIT"] = "true"
    import wandb

    run = wandb.init(mode="offline", dir=spec["dir"], project="report-test", name=spec["name"], config=spec["config"],
                     settings=wandb.Settings(silent=True, x_disable_stats=True))
    run.define_metric("train/step")
    run.define_metric("*", step_metric="train/step", summary="mean,min,max,last")
    for window in spec["history"]:
        run.log(window)
    run.summary.update(spec["summary"])
    run.finish(exit_code=spec["exit_code"])


def _specs(root):
    gpu, cpu, legacy = (os.path.join(root, f) for f in ("gpu", "cpu", "legacy"))
    return [
        # repeats over seeds: one row, median (min–max)
        # time to accuracy: fp32 reaches 94% in two of its three seeds; bf16 is faster to 93% with 40% more
        # epochs, and never reaches 94%
        *(_spec(gpu, f"fp32-s{s}", "fp32", ips, seed=s, started=f"2026-11-2{s}T10:00:00+00:00",
                tta=FP32_TTA if s < 2 else {k: v for k, v in FP32_TTA.items() if k != "94"}, parts=44.7e6)
          for s, ips in ((0, 10000), (1, 11000), (2, 12000))),
        *(_spec(gpu, f"bf16-s{s}", "bf16", ips, seed=s, tta=BF16_TTA, parts=22.4e6)
          for s, ips in ((0, 20000), (1, 22000))),
        _spec(gpu, "bf16-b256", "bf16", 26000, batch_size=256, dirty=True, commit=OTHER_COMMIT,
              started="2026-11-25T18:42:00+00:00"),  # same precision, other batch size: its own row
        _spec(gpu, "amp_bf16-short", "amp_bf16", 30000, timed_steps=10),  # too short to measure
        _spec(gpu, "fp32-2gpu", "fp32", 19000, world_size=2),
        _spec(gpu, "bf16-2gpu", "bf16", 38000, world_size=2),
        _spec(gpu, "fp16-diverged", "fp16", 25000, exit_code=1, summary={"train/diverged_at_step": 123}),
        _spec(gpu, "fp32-r34-failed", "fp32", 5000, depth=34, exit_code=1),
        _spec(cpu, "cpu-fp32", "fp32", 100, device="cpu", timed_steps=100, parts=44.7e6),
        _spec(cpu, "cpu-bf16", "bf16", 150, device="cpu", timed_steps=100, parts=22.4e6),
        # before the `experiment` config: keyed by precision, depth, GPUs, batch, device, steps; RSS under the
        # allocator's key on CPU
        _spec(legacy, "legacy-cpu", "fp32", 90, device="cpu", legacy=True,
              summary={"mem/peak_allocated_bytes": 5e9}),
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("report_runs")
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(_make, _specs(str(root)))
    corrupt = root / "corrupt" / "wandb" / "offline-run-20261125_000000-garbage1"
    corrupt.mkdir(parents=True)
    (corrupt / "run-garbage1.wandb").write_bytes(os.urandom(4000))
    return root


def _report(source, out, *args, cwd=ROOT):
    env = {**os.environ, "PYTHONPATH": ROOT}  # `report` importable from any working directory
    return subprocess.run([sys.executable, "-m", "report", str(source), "--out", str(out), *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report_out")
    result = _report(runs, out)
    assert result.returncode == 0, result.stderr
    return out, result


def _csv(out):
    return list(csv.DictReader(open(out / "results.csv")))


def _row(rows, precision, depth=18, gpus=1, device="cuda", **settings):
    found = [r for r in rows if (r["precision"], r["depth"], r["gpus"], r["device"]) == (precision, str(depth),
                                                                                         str(gpus), device)
             and all(json.loads(r["settings"]).get(k) == v for k, v in settings.items())]
    assert len(found) == 1, (precision, depth, gpus, settings, found)
    return found[0]


def _section(text, title):
    return text.split(title, 1)[1].split("\n## ", 1)[0]


def _md_rows(table_text):
    lines = [line for line in table_text.splitlines() if line.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(head, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


def test_rows_are_experiments_repeats_pool_and_other_settings_split(report):
    rows = _csv(report[0])
    fp32 = _row(rows, "fp32", batch_size=128)
    assert fp32["runs"] == "3" and float(fp32["images_per_s"]) == 11000  # seeds pooled: median, min, max
    assert (float(fp32["images_per_s_min"]), float(fp32["images_per_s_max"])) == (10000, 12000)
    bf16, bf16_256 = _row(rows, "bf16", batch_size=128), _row(rows, "bf16", batch_size=256)  # two rows
    assert float(bf16["images_per_s"]) == 21000 and float(bf16_256["images_per_s"]) == 26000
    assert float(bf16["speedup_vs_fp32"]) == pytest.approx(21000 / 11000)
    assert bf16_256["speedup_vs_fp32"] == ""  # no fp32 run at batch 256: not compared with batch 128's
    assert float(_row(rows, "bf16", gpus=2)["scaling_efficiency"]) == pytest.approx(100 * 38000 / (2 * 21000))

    text = open(report[0] / "results.md").read()
    table = _md_rows(_section(text, "## All points"))
    assert "batch_size" in table[0]  # the setting that differs is a column
    assert re.search(r"Common settings: .*optimizer sgd", text) and "lr_schedule cosine" in text
    assert "seed" not in table[0]
    cpu_rows = [r for r in table if r["GPUs"] == "CPU"]
    assert len(cpu_rows) == 3 and not any("GPU(s)" in line for line in text.splitlines())  # with the older run


def test_group_by_keys_rows_by_just_those_settings(runs, tmp_path):
    result = _report(runs / "gpu", tmp_path / "o", "--group-by", "precision", "depth", "world_size")
    assert result.returncode == 0, result.stderr
    bf16 = _row(_csv(tmp_path / "o"), "bf16")
    assert bf16["runs"] == "3"  # batch 128 (two seeds) and batch 256 together, as asked
    assert json.loads(bf16["settings"])["batch_size"] == "(varies)"
    bad = _report(runs / "gpu", tmp_path / "p", "--group-by", "precison")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "precison" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_a_run_too_short_to_measure_is_flagged_and_left_out_of_observations(report):
    text = open(report[0] / "results.md").read()
    short = next(r for r in _md_rows(_section(text, "## All points")) if r["Precision"].startswith("amp_bf16"))
    assert short["Precision"] == "amp_bf16 †"
    assert short["Speed-up vs fp32 (x)"] == f"{30000 / 11000:.2f} †"  # never a bare ratio from it
    assert "† too short to measure: fewer than 50 timed steps" in text
    observations = _section(text, "### Observations")
    assert "bf16 (batch_size 128): throughput 1.91× fp32's" in observations
    sentences = observations.split("Left out, too short to measure")
    assert "amp_bf16" not in sentences[0] and "amp_bf16 (batch_size 128)" in sentences[1]
    assert _row(_csv(report[0]), "amp_bf16")["too_short"] == "true"


def test_figures_not_measured_are_empty_and_unmeasured_columns_left_out(report):
    rows = _csv(report[0])
    assert _row(rows, "fp32", batch_size=128)["busbw_bytes_per_s"] == ""  # logged as 0 by one rank
    assert float(_row(rows, "fp32", gpus=2)["busbw_bytes_per_s"]) == 1e11
    assert _row(rows, "fp32", device="cpu", dataset="cifar10")["peak_mem_gib"] == ""  # CPU: RSS is not it
    legacy = _row(rows, "fp32", device="cpu", dataset=None)
    assert legacy["peak_mem_gib"] == "" and legacy["images_per_s"] == "90.0"
    assert {"nvlink_bytes_per_s", "energy_per_image_j", "busbw_bytes_per_s"} <= set(rows[0])  # stable header
    text = open(report[0] / "results.md").read()
    head = _md_rows(_section(text, "## All points"))[0]
    assert "NVLink TX+RX (GB/s)" not in head and "Energy/image (J)" not in head  # no row measured them
    assert "All-reduce busbw (GB/s)" in head and "Peak memory (GiB)" in head
    assert "NVLink" not in open(report[0] / "report.html").read()


def test_provenance_heads_the_report(report, runs, tmp_path):
    text = open(report[0] / "results.md").read()
    head = text.split("## ")[0]
    assert "**Runs started:** 2026-11-20 10:00 – 2026-11-25 18:42" in head
    assert f"{H100} (" in head and f"{XEON} (" in head  # devices with run counts
    assert "**PyTorch:** 2.15.0" in head and "**CUDA:** 12.8" in head
    assert COMMIT[:12] in head and OTHER_COMMIT[:12] in head
    assert "**Local changes:** yes: 1 of" in head
    assert "Runs started" in open(report[0] / "report.html").read()
    old = _report(runs / "legacy", tmp_path / "o")  # runs from before provenance was recorded
    assert old.returncode == 0, old.stderr
    old_head = open(tmp_path / "o" / "results.md").read().split("## ")[0]
    assert "**Runs started:** unknown" in old_head and "**Suite commit:** unknown" in old_head


def test_diverged_and_failed_runs_are_listed_with_why(report):
    left_out = _md_rows(_section(open(report[0] / "results.md").read(), "## Runs not included"))
    why = {r["Run"]: r["State"] for r in left_out}
    assert why == {"fp16-diverged": "diverged at step 123", "fp32-r34-failed": "failed"}
    assert all(r["precision"] != "fp16" for r in _csv(report[0]))


def test_lost_updates_column_and_plot(report):
    rows = _csv(report[0])
    for precision in ("fp32", "bf16"):
        mean = sum(LOST[precision]) / len(LOST[precision])
        assert float(_row(rows, precision, batch_size=128)["lost_update_pct"]) == pytest.approx(100 * mean)
    head = _md_rows(_section(open(report[0] / "results.md").read(), "## All points"))[0]
    assert "Lost updates (%)" in head
    assert (report[0] / "lost_updates.png").exists()


@pytest.fixture
def captured_plots(monkeypatch, runs):
    """The plots' matplotlib figures, kept open to read their labels, error bars and ticks."""
    from report import plots
    from report.collect import from_folder
    from report.rows import build

    figures = {}
    monkeypatch.setattr(plots, "_save", lambda fig, out_dir, name: figures.setdefault(name, fig) and name)
    rows, _ = build(from_folder(str(runs / "gpu"))[0])
    yield plots, rows, figures
    plots.plt.close("all")


def test_plots_are_labelled_with_error_bars_integer_ticks_and_ideal_scaling(captured_plots, tmp_path):
    plots, rows, figures = captured_plots
    assert plots.throughput(rows, ("cuda", 1), str(tmp_path)) == "throughput.png"
    ax = figures["throughput.png"].axes[0]
    labels = {t.get_text() for t in ax.texts}
    assert {"11,000", "21,000", "26,000", "30,000 †"} <= labels  # values on the bars; the short one flagged
    whiskers = next(c for c in ax.containers if type(c).__name__ == "ErrorbarContainer")
    spans = [tuple(seg[:, 0]) for seg in whiskers.lines[2][0].get_segments()]
    assert (10000, 12000) in spans  # fp32: min–max over its three seeds
    assert "Training throughput, 1 GPU" == ax.get_title()

    assert plots.scaling(rows, "resnet18", str(tmp_path)) == "scaling.png"
    ax = figures["scaling.png"].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2"]
    assert "ideal (N × 1 GPU)" in [t.get_text() for t in ax.get_legend().get_texts()]
    ideal = [line for line in ax.lines if line.get_linestyle() == "--" and len(line.get_xdata()) == 2]
    assert any(list(line.get_ydata()) == [21000, 42000] for line in ideal)  # bf16: N × its 1-GPU images/s


def test_plots_without_data_are_left_out(report, runs, tmp_path):
    made = sorted(p.name for p in report[0].glob("*.png"))
    assert made == ["accuracy_time.png", "bandwidth.png", "lost_updates.png", "memory_size.png", "scaling.png",
                    "throughput.png"]
    result = _report(runs / "cpu", tmp_path / "o")  # CPU: no NVML traffic, one process, no scaling
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "o" / "bandwidth.png").exists() and not (tmp_path / "o" / "scaling.png").exists()
    text = open(tmp_path / "o" / "results.md").read()
    assert "## The study's table (ResNet-18, CPU)" in text and "At ResNet-18 on CPU" in text


def test_bandwidth_plot_draws_no_all_zero_series(captured_plots, runs, tmp_path):
    plots, rows, figures = captured_plots
    from report.collect import from_folder

    by_id = {r.id: r for r in from_folder(str(runs / "gpu"))[0]}
    one_gpu = {f"{r.precision}-{i}": (r.precision, by_id[r.runs[0][0]])
               for i, r in enumerate(rows) if r.gpus == 1}
    assert plots.bandwidth_over_steps(one_gpu, str(tmp_path)) == "bandwidth.png"
    names = [t.get_text() for t in figures["bandwidth.png"].axes[0].get_legend().get_texts()]
    assert names and all("pcie_tx" in n for n in names)  # busbw is all 0 on one rank: not drawn


def test_time_to_accuracy_columns_speed_up_and_energy_only_where_every_run_reached(report):
    rows = _csv(report[0])
    fp32, bf16 = _row(rows, "fp32", batch_size=128), _row(rows, "bf16", batch_size=128)
    assert float(fp32["tta_s_93"]) == 600 and float(bf16["tta_s_93"]) == 500
    assert float(bf16["tta_speedup_93"]) == pytest.approx(1.2) and float(bf16["tta_epochs_93"]) == 84
    assert float(fp32["tta_energy_kj_93"]) == 30 and float(bf16["tta_energy_kj_93"]) == 16
    assert bf16["tta_s_94"] == "" and bf16["tta_speedup_94"] == ""  # never reached: empty, not a guess
    assert fp32["tta_s_94"] == ""  # two of three seeds reached it: no median of the lucky ones
    assert _row(rows, "fp32", gpus=2)["tta_s_80"] == ""  # a run that recorded no time to accuracy
    text = open(report[0] / "results.md").read()
    head = _md_rows(_section(text, "## All points"))[0]
    assert {"Time to 93% (s)", "Speed-up to 93% vs fp32 (x)", "Epochs to 93%", "Energy to 93% (kJ)"} <= set(head)
    assert "Time to 94% (s)" not in head  # no row has it for every run
    observations = _section(text, "### Observations")
    assert ("bf16 (batch_size 128): throughput 1.91× fp32's (21,000 vs 11,000); time to 93% 1.20× fp32's speed "
            "(500.0 vs 600.0 s; 84 vs 60 epochs, 40% more; energy 0.53× fp32's)") in observations
    assert "94% reached by 0 of 2 run(s), which fp32 reached" not in observations  # fp32's own 94% is empty


def test_memory_parts_columns_and_stacked_bar_beside_the_checkpoint(report, captured_plots, tmp_path):
    rows = _csv(report[0])
    bf16 = _row(rows, "bf16", batch_size=128)
    assert float(bf16["params_mib"]) == pytest.approx(22.4e6 / 2**20)
    assert float(bf16["activations_mib"]) == pytest.approx(3e9 / 2**20)
    cpu = _row(rows, "bf16", device="cpu")
    assert cpu["params_mib"] and cpu["activations_mib"] == "" and cpu["other_mib"] == ""  # no allocator on CPU
    plots, plot_rows, figures = captured_plots
    assert plots.memory_and_size(plot_rows, "resnet18", ("cuda", 1), str(tmp_path)) == "memory_size.png"
    parts, peak, size = figures["memory_size.png"].axes  # rows that recorded no parts show their allocator peak
    assert peak.get_xlabel() == "peak memory, allocator (GiB)" and len(peak.patches) == 2
    assert [t.get_text() for t in parts.get_legend().get_texts()] == [
        "weights", "gradients", "optimizer state", "activations + workspace", "data set + measurement copy"]
    assert parts.get_xlabel() == "training memory by part (MiB)" and size.get_xlabel() == "checkpoint (MiB)"


def test_accuracy_plot_draws_each_rows_curve_with_the_targets_marked(captured_plots, runs, tmp_path):
    plots, rows, figures = captured_plots
    from report.collect import from_folder

    by_id = {r.id: r for r in from_folder(str(runs / "gpu"))[0]}
    one = {r.precision: (r.precision, by_id[r.runs[0][0]]) for r in rows
           if r.gpus == 1 and r.precision in ("fp32", "bf16") and r.facts.get("batch_size") == 128}
    assert plots.accuracy_vs_time(rows, str(tmp_path), one) == "accuracy_time.png"
    ax = figures["accuracy_time.png"].axes[0]
    curves = {line.get_label(): list(line.get_xdata()) for line in ax.lines if not line.get_label().startswith("_")}
    assert curves["bf16"] == [60, 180, 500] and curves["fp32"][:3] == [100, 300, 600]  # a seed without 94%
    targets = sorted(line.get_ydata()[0] for line in ax.lines if line.get_linestyle() == ":")
    assert targets == [80, 90, 93, 94]


@pytest.mark.system  # Chromium
def test_report_html_renders_and_fits_the_page_in_headless_chromium(report, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    page = report[0] / "report.html"
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--window-size=1280,2400"]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert 'data-images-ok="true"' in dom  # every plot decoded and has a size in the browser
    assert int(re.search(r'data-images="(\d+)"', dom).group(1)) == 6
    # the wide table scrolls in its own box: the page itself is no wider than the window
    width, window = (int(re.search(rf'data-{k}="(\d+)"', dom).group(1)) for k in ("page-width", "window-width"))
    assert 0 < width <= window
    # the study's table, all points, runs not included, runs that could not be read
    assert dom.count("<table") == 4 and "<td>bf16 (batch_size 256)</td>" in dom and "<td>CPU</td>" in dom
    shot = tmp_path / "report.png"
    subprocess.run([*flags, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 20_000


def test_an_unreadable_run_is_listed_and_the_others_reported(report, runs):
    out, result = report
    assert result.returncode == 0
    warnings = [line for line in result.stderr.splitlines() if "run-garbage1.wandb" in line]
    assert len(warnings) == 1 and "Traceback" not in result.stderr
    section = _section(open(out / "results.md").read(), "## Runs that could not be read")
    assert str(runs / "corrupt") in section and "bad header" in section
    assert len(_csv(out)) == 9  # every good run still reported


def test_a_run_from_before_compile_pools_with_todays_eager_runs(tmp_path):
    """Runs recorded before --compile existed have no `compile` in their experiment: they ran eager, so they are
    one experiment with today's `compile: none` runs. A compiled run, and a run stopped at a target (whose
    `stop_at_acc` is recorded only when set), stay rows of their own."""
    def spec(name, ips, seed, **experiment):
        made = _spec(str(tmp_path / "runs"), name, "fp32", ips, seed=seed, device="cpu", timed_steps=100)
        made["config"]["experiment"].update(experiment)
        return made

    specs = [spec("before-compile", 100, 0), spec("eager", 120, 1, compile="none"),
             spec("compiled", 200, 0, compile="default"), spec("stopped", 110, 0, compile="none", stop_at_acc=0.94)]
    assert "compile" not in specs[0]["config"]["experiment"]  # as the runner wrote it before --compile
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(_make, specs)
    result = _report(tmp_path / "runs", tmp_path / "o")
    assert result.returncode == 0, result.stderr
    rows = _csv(tmp_path / "o")
    eager = _row(rows, "fp32", device="cpu", compile="none", stop_at_acc=None)
    assert eager["runs"] == "2" and float(eager["images_per_s"]) == 110  # median of 100 and 120: one row
    assert _row(rows, "fp32", device="cpu", compile="default")["runs"] == "1"
    assert _row(rows, "fp32", device="cpu", stop_at_acc=0.94)["runs"] == "1"
    assert len(rows) == 3
    grouped = _report(tmp_path / "runs", tmp_path / "g", "--group-by", "precision", "compile")
    assert grouped.returncode == 0, grouped.stderr
    eager = _row(_csv(tmp_path / "g"), "fp32", device="cpu", compile="none")
    assert eager["runs"] == "3"  # the run from before --compile counted as eager, with the stopped one


def test_out_naming_a_file_is_one_line_and_exit_2(runs, tmp_path):
    target = tmp_path / "results.md"
    target.write_text("mine")
    result = _report(runs / "cpu", target)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "is a file" in result.stderr
    assert target.read_text() == "mine"


@pytest.mark.parametrize("source", ["runs/gird", "./nothing", "../nothing-here", "~/no-such-folder-xyz"])
def test_a_mistyped_local_folder_is_not_sent_to_wandb(tmp_path, source):
    (tmp_path / "runs").mkdir()
    result = _report(source, tmp_path / "o", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: folder {source} does not exist") and "W&B was not asked" in result.stderr


def _no_wandb(tmp_path):
    """No W&B credentials and no W&B server: W&B's API fails at once, without the network."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    return {**env, "HOME": str(tmp_path / "home"), "WANDB_BASE_URL": "http://127.0.0.1:9"}


@pytest.mark.parametrize("source, near, wandb", [
    ("runs/grid", "run", "W&B could not read it as ENTITY/PROJECT: No API key configured"),  # no runs/ here
    ("runs/gird", "runs/grid", "runs/ is a folder here, so W&B was not asked"),  # a typo
    ("grid", None, "it is not W&B's ENTITY/PROJECT[/SWEEP_ID] either"),
])
def test_a_source_that_is_no_folder_nor_a_wandb_project_says_both_in_one_line(tmp_path, source, near, wandb):
    checkout = tmp_path / "checkout"
    (checkout / "run").mkdir(parents=True)
    if source == "runs/gird":
        (checkout / "runs" / "grid").mkdir(parents=True)
    result = subprocess.run([sys.executable, "-m", "report", source, "--out", "o"], cwd=checkout,
                            env={**_no_wandb(tmp_path), "PYTHONPATH": ROOT}, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: folder {source} does not exist")
    assert (f"(nearest existing folder: {near})" in result.stderr) == (near is not None), result.stderr
    assert wandb in result.stderr
    assert sorted(os.listdir(checkout)) == sorted(["run"] + (["runs"] if source == "runs/gird" else []))


def test_entity_project_still_goes_to_wandb_when_no_such_folder(tmp_path, monkeypatch):
    from report.collect import looks_local

    monkeypatch.chdir(tmp_path)
    assert not looks_local("my-team/precision-depth-gpus") and not looks_local("my-team/project/abc123")
    (tmp_path / "my-team").mkdir()
    assert looks_local("my-team/precision-depth-gpus")  # now it is a local path with a typo


def test_publish_from_offline_runs_logs_an_offline_report_run_naming_runs_it_cannot_link(runs, tmp_path):
    result = _report(runs / "cpu", tmp_path, "--publish")
    assert result.returncode == 0, result.stderr
    # These runs logged no checkpoint (made without the runner): the report's run cannot use them, and says so.
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("warning: --publish: not linked (they logged no checkpoint): ")
    assert set(line.rsplit(": ", 1)[1].split(", ")) == {"cpu-fp32", "cpu-bf16"}
    assert "using the checkpoints of 0 of 2 run(s)" in result.stdout and "wandb sync" in result.stdout
    assert [d for d in os.listdir(tmp_path / "wandb") if d.startswith("offline-run-")]
    assert (tmp_path / "results.md").exists()


@pytest.mark.parametrize("source", ["empty", "file", "bad/path/too/deep"])
def test_a_source_without_runs_gets_one_line_and_exit_2(tmp_path, source):
    target = {"empty": tmp_path, "file": tmp_path / "x.txt", "bad/path/too/deep": "bad/path/too/deep"}[source]
    if source == "file":
        target.write_text("not runs")
    result = _report(target, tmp_path / "o")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_report_reads_runs_of_the_real_runner(tmp_path):
    """End to end: two short CPU runs of train/run.py, fp32 and bf16, then the report over them."""
    out = tmp_path / "runs"
    # Side by side, one thread each: most of a 3-step run is its start (imports, W&B) and end (checkpoint, W&B),
    # which use one core; two threads each on 2 cores would make both wait on each other's steps.
    env = {**os.environ, "WANDB_DISABLE_GIT": "true", "OMP_NUM_THREADS": "1"}
    training = [subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "train", "run.py"), "--dataset", "synthetic", "--max-steps", "3",
         "--batch-size", "4", "--precision", precision, "--wandb-mode", "offline", "--out-dir", str(out),
         "--name", f"e2e-{precision}", "--device", "cpu"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        for precision in ("fp32", "bf16")]
    for trained in training:
        _, err = trained.communicate(timeout=300)
        assert trained.returncode == 0, err
    result = _report(out, tmp_path / "o")
    assert result.returncode == 0, result.stderr
    rows = _csv(tmp_path / "o")
    assert sorted(r["precision"] for r in rows) == ["bf16", "fp32"]
    for row in rows:
        assert row["device"] == "cpu" and row["too_short"] == "true"  # 3 steps: too short to measure
        assert json.loads(row["settings"])["dataset"] == "synthetic"  # keyed by the run's experiment
        assert row["images_per_s"] and row["lost_update_pct"] and row["peak_mem_gib"] == ""
        assert row["epoch_time_s"] == ""  # 3 steps of a 50,000-image epoch: no epoch was timed
    text = open(tmp_path / "o" / "results.md").read()
    assert "## The study's table (ResNet-18, CPU)" in text and "**PyTorch:**" in text


def _md_cells(line):
    """A Markdown table row's cells as a renderer reads them: split at unescaped `|`, backslash escapes undone."""
    cells = re.split(r"(?<!\\)\|", line.strip()[1:-1])  # md() escapes every backslash, so \| is never \\|
    return [re.sub(r"\\(.)", r"\1", c.strip()) for c in cells]


def test_run_names_and_settings_are_text_in_results_md_not_html_or_table_breaks(tmp_path):
    """A run named like an HTML tag or holding a `|` is listed as that text, in its own cell."""
    names = ["<img src=x onerror=alert(1)>", "a|b", "*bold* _it_ [x](y) `c`"]
    specs = []
    for i, name in enumerate(names):  # failed: listed by name under "Runs not included"
        specs.append(_spec(str(tmp_path / "runs"), name, "fp32", 100, device="cpu", exit_code=1))
        specs[-1]["dir"] = str(tmp_path / "runs" / f"failed{i}")
    odd = "c|f<b>*10*"  # a setting that differs between rows: a column of the all-points table
    for dataset in ("cifar10", odd):
        specs.append(_spec(str(tmp_path / "runs"), f"ok-{len(specs)}", "fp32", 100, device="cpu", timed_steps=100))
        specs[-1]["config"]["experiment"]["dataset"] = dataset
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(_make, specs)
    result = _report(tmp_path / "runs", tmp_path / "o")
    assert result.returncode == 0, result.stderr
    text = open(tmp_path / "o" / "results.md").read()
    assert not re.search(r"(?<!\\)[<>]", text)  # no tag a Markdown renderer would pass through as HTML
    for title, column, expected in (("## Runs not included", "Run", names), ("## All points", "dataset",
                                                                             ["cifar10", odd])):
        lines = [line for line in _section(text, title).splitlines() if line.startswith("|")]
        head = _md_cells(lines[0])
        rows = [_md_cells(line) for line in lines[2:]]
        assert all(len(r) == len(head) for r in rows), lines  # no cell split by a name
        assert sorted(r[head.index(column)] for r in rows) == sorted(expected)


def test_a_run_that_completed_no_epoch_has_no_time_per_epoch(tmp_path):
    """The quick start's runs end at --max-steps 12 of a 391-step epoch: their one epoch record times 12 steps."""
    def spec(name, batch_size, steps, epoch_times, tta=None):
        made = _spec(str(tmp_path / "runs"), name, "fp32", 100, batch_size=batch_size, device="cpu",
                     timed_steps=steps - 10, tta=tta)
        made["config"]["data"] = {"steps_per_epoch": 391}
        made["history"] += [{"train/step": min(steps, 391 * (i + 1)), "epoch": i + 1, "epoch/time_s": t}
                            for i, t in enumerate(epoch_times)]
        return made

    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(_make, [spec("twelve-steps", 32, 12, [7.4], tta={"80": (5.0, 1, None)}),
                         spec("two-epochs", 128, 782, [30.0, 32.0], tta={"80": (50.0, 2, None)})])
    result = _report(tmp_path / "runs", tmp_path / "o")
    assert result.returncode == 0, result.stderr
    rows = _csv(tmp_path / "o")
    short, whole = _row(rows, "fp32", device="cpu", batch_size=32), _row(rows, "fp32", device="cpu", batch_size=128)
    assert short["epoch_time_s"] == "" and short["tta_epochs_80"] == "" and float(short["tta_s_80"]) == 5
    assert float(whole["epoch_time_s"]) == 31 and float(whole["tta_epochs_80"]) == 2
    table = _md_rows(_section(open(tmp_path / "o" / "results.md").read(), "## All points"))
    by_batch = {r["batch_size"]: r for r in table}
    assert by_batch["32"]["Time per epoch (s)"] == "" and by_batch["128"]["Time per epoch (s)"] == "31.0"


HISTORY_KEYS = ["train/loss", "precision/lost_update_frac", "cum/train_s", "nvml/pcie_tx_bytes_per_s",
                "comm/busbw_bytes_per_s", "mem/rss_peak_bytes"]


def _read(folder):
    """What the report takes from a folder: each run's identity, state, config, summary and history, and the
    folders it could not read (or the one line that nothing could be)."""
    from report.collect import SourceError, from_folder

    try:
        runs, unreadable = from_folder(str(folder))
    except SourceError as e:
        return str(e)
    return (sorted((r.id, r.name, r.state, json.dumps(r.config), json.dumps(r.summary), json.dumps(r.history(HISTORY_KEYS)))
                   for r in runs), sorted((u.path, u.reason) for u in unreadable))


def _by_wandbs_reader_only(monkeypatch):
    from train.contract import wandb_log

    def decline(path):
        raise wandb_log.NotHere("test: ask W&B's reader")

    monkeypatch.setattr(wandb_log, "summary", decline)
    monkeypatch.setattr(wandb_log, "history", decline)


def test_finished_runs_are_read_without_a_wandb_reader_process_each(runs, monkeypatch):
    """A wandb-core process costs ~15 ms of CPU to start: 10,000 runs could not be read in a minute on 2 cores if
    each started one. Only the runs W&B's reader must judge (failed, corrupt) start it."""
    from report.collect import from_folder
    from train.contract import wandb_offline

    asked, inspect = [], wandb_offline.inspect
    monkeypatch.setattr(wandb_offline, "inspect", lambda seg, *a, **k: asked.append(seg) or inspect(seg, *a, **k))
    read, unreadable = from_folder(str(runs))
    assert len(read) == 14 and [os.path.basename(u.path) for u in unreadable] == ["run-garbage1.wandb"]
    assert sorted(r.name for r in read if r.state != "finished") == ["fp16-diverged", "fp32-r34-failed"]
    assert sorted(seg.split(os.sep)[-3] for seg in asked) == ["corrupt", "fp16-diverged", "fp32-r34-failed"]
    assert [r.history(["train/loss"]) for r in read if r.state == "finished"]
    assert len(asked) == 3  # nor does a finished run's history


def test_runs_read_in_process_are_what_wandbs_reader_reads(runs, tmp_path, monkeypatch):
    """Read in this process or by W&B's reader, the report gets the same runs: ids, names, states, config and
    summary values and types, history; and a file cut off, changed or empty is never taken for a finished run
    (W&B's reader judges it, as before). A run whose config fills more than a 32 KiB block is read too."""
    big = _spec(str(tmp_path / "big"), "big-config", "fp32", 1000)
    big["config"]["notes"] = "x" * 100_000  # one record over three blocks
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        pool.map(_make, [big])
    whole = [p for p in os.listdir(runs / "gpu" / "fp32-s0" / "wandb") if p.startswith("offline-run-")][0]
    data = open(next((runs / "gpu" / "fp32-s0" / "wandb" / whole).glob("*.wandb")), "rb").read()
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0xFF
    for name, content in {"header-only": data[:7], "cut-inside-a-chunk": data[:len(data) // 2],
                          "cut-before-the-last-byte": data[:-1], "one-byte-changed": bytes(flipped), "empty": b""}.items():
        copy = tmp_path / "copies" / name / "wandb" / whole
        shutil.copytree(runs / "gpu" / "fp32-s0" / "wandb" / whole, copy)
        next(copy.glob("*.wandb")).write_bytes(content)
    folders = [runs, tmp_path / "big", *sorted((tmp_path / "copies").iterdir())]
    quick = [_read(folder) for folder in folders]
    assert ["x" * 100_000 in r[3] for r in quick[1][0]] == [True]
    _by_wandbs_reader_only(monkeypatch)
    assert quick == [_read(folder) for folder in folders]
