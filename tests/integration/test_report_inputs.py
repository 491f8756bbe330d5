"""What the report reads from a runs folder: each W&B offline run once, however symlinks lead to it."""

import multiprocessing
import os
import subprocess
import sys

import pytest
from conftest import ROOT

from report.collect import from_folder
from report.read_speed import _make


@pytest.fixture(scope="module")
def linked(tmp_path_factory):
    """runs/run0000 (a real W&B offline run), runs/linked and runs/again -> elsewhere/run0001 (another run),
    runs/loop -> . (a loop), runs/broken -> a path that does not exist."""
    root = tmp_path_factory.mktemp("linked")
    with multiprocessing.get_context("spawn").Pool(2) as pool:  # W&B's global state stays out of this process
        pool.map(_make, [(0, str(root / "runs")), (1, str(root / "elsewhere"))])
    runs = root / "runs"
    (runs / "linked").symlink_to(root / "elsewhere" / "run0001")
    (runs / "again").symlink_to(root / "elsewhere" / "run0001")
    (runs / "loop").symlink_to(".")
    (runs / "broken").symlink_to(root / "gone")
    return runs


def test_a_symlink_loop_and_two_links_to_one_run_read_each_run_once(linked):
    runs, unreadable = from_folder(str(linked))
    assert unreadable == []
    assert sorted(len(r.segments) for r in runs) == [1, 1]  # not 41 segments of one run, one per loop level
    assert len({r.id for r in runs}) == 2
    assert all(len(r.history(["train/loss"])) == 40 for r in runs)  # 40 windows each, not 40 x 41


def test_the_report_on_a_folder_with_a_loop_says_nothing_alarming(linked, tmp_path):
    out = subprocess.run([sys.executable, "-m", "report", str(linked), "--out", str(tmp_path / "out")], cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True, timeout=300)
    assert (out.returncode, out.stderr) == (0, "")
    assert out.stdout.startswith("2 run(s) read in "), out.stdout
