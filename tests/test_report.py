"""The report from real runs (CPU, offline): numbers against the runs' own summaries, runs left out, empty
cells for what CPU runs cannot measure, and report.html rendered by a real headless Chromium."""

import csv
import json
import re
import shutil
import signal
import subprocess
import sys

import pytest

from conftest import ROOT, write_cifar
from test_training import _inspect
from train.config import parse_args
from train.run import StopRequest, train

PRECISIONS = ["fp32", "amp_bf16", "bf16"]  # what a CPU trains
DEPTHS = [18, 34]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    data = write_cifar(str(root / "data"), per_batch=16, n_test=32)
    out = root / "runs"
    summaries = {}
    for depth in DEPTHS:
        for precision in PRECISIONS:
            result = train(parse_args(["--data-dir", data, "--out-dir", str(out), "--epochs", "1", "--batch-size", "8",
                                       "--depth", str(depth), "--precision", precision, "--wandb-mode", "offline",
                                       "--log-every", "5", "--name", f"r{depth}-{precision}"]))
            summaries[(precision, depth)] = result
    stop = StopRequest()
    stop.signal = signal.SIGTERM  # a run stopped at its first step: W&B state failed, to be left out
    train(parse_args(["--data-dir", data, "--out-dir", str(out), "--epochs", "1", "--batch-size", "8",
                      "--wandb-mode", "offline", "--name", "stopped"]), stop=stop)
    return out, summaries


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("report_out")
    result = subprocess.run([sys.executable, "-m", "report", str(runs[0]), "--out", str(out_dir)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return out_dir, result


def test_results_csv_matches_each_runs_own_summary(runs, report):
    out, _ = runs
    rows = {(r["precision"], int(r["depth"])): r for r in csv.DictReader(open(report[0] / "results.csv"))}
    assert set(rows) == {(p, d) for p in PRECISIONS for d in DEPTHS}
    for (precision, depth), row in rows.items():
        summary = json.loads(_inspect(out / f"r{depth}-{precision}", "--summary"))["summary"]
        assert row["runs"] == "1" and row["gpus"] == "1"
        assert float(row["images_per_s"]) == pytest.approx(summary["train/images_per_s"])
        assert float(row["train_time_s"]) == pytest.approx(summary["time/train_s"])
        assert float(row["ckpt_mib"]) * 2**20 == pytest.approx(summary["ckpt/size_bytes"])
        assert float(row["best_test_acc"]) == pytest.approx(100 * summary["test/acc"]["max"])
        fp32 = json.loads(_inspect(out / f"r{depth}-fp32", "--summary"))["summary"]
        assert float(row["speedup_vs_fp32"]) == pytest.approx(summary["train/images_per_s"] / fp32["train/images_per_s"])
        for missing in ("pcie_bytes_per_s", "nvlink_bytes_per_s", "busbw_bytes_per_s", "energy_per_image_j", "mfu"):
            assert row[missing] == "", missing  # CPU runs: no NVML, no all-reduce, no GPU peak -> empty, not 0


def test_results_md_has_the_original_table_observations_and_the_runs_left_out(report):
    text = open(report[0] / "results.md").read()
    assert "| Precision | Training Time (s) | Model Size (MiB) | Bandwidth (GB/s) |" in text
    original = text.split("## The study's table")[1].split("###")[0]
    assert all(f"| {p} |" in original for p in PRECISIONS)
    observations = text.split("### Observations")[1].split("##")[0]
    rows = {(r["precision"], int(r["depth"])): r for r in csv.DictReader(open(report[0] / "results.csv"))}
    depth = int(re.search(r"ResNet-(\d+)", observations).group(1))
    ratio = float(rows[("bf16", depth)]["ckpt_mib"]) / float(rows[("fp32", depth)]["ckpt_mib"])
    assert f"checkpoint size {ratio:.2f}× fp32's" in observations  # measured, not canned
    left_out = text.split("## Runs not included")[1]
    assert "stopped" in left_out and "failed" in left_out


def test_report_html_renders_tables_and_plots_in_headless_chromium(report, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    page = report[0] / "report.html"
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert 'data-images-ok="true"' in dom  # every plot decoded and has a size in the browser
    # throughput, memory/size, accuracy-vs-time; no scaling (one GPU count) and no bandwidth (CPU runs)
    assert int(re.search(r'data-images="(\d+)"', dom).group(1)) == 3
    assert dom.count("<table") == 3 and "<td>bf16</td>" in dom
    shot = tmp_path / "report.png"
    subprocess.run([*flags, "--window-size=1400,2400", f"--screenshot={shot}", page.as_uri()], capture_output=True,
                   timeout=120)
    assert shot.exists() and shot.stat().st_size > 20_000


def test_publish_from_offline_runs_says_why_not_in_one_line(runs, tmp_path):
    result = subprocess.run([sys.executable, "-m", "report", str(runs[0]), "--out", str(tmp_path), "--publish"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [line for line in result.stderr.strip().splitlines()
                                                  if line.startswith("--publish: not published")]
    assert (tmp_path / "results.md").exists()


@pytest.mark.parametrize("source", ["empty", "file", "bad/path/too/deep"])
def test_a_source_without_runs_gets_one_line_and_exit_2(tmp_path, source):
    target = {"empty": tmp_path, "file": tmp_path / "x.txt", "bad/path/too/deep": "bad/path/too/deep"}[source]
    if source == "file":
        target.write_text("not runs")
    result = subprocess.run([sys.executable, "-m", "report", str(target), "--out", str(tmp_path / "o")], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
