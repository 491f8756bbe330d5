"""A sweep file may come from someone else: what it could make the tool read, build or run is bounded, and each
refusal is one line and exit 2, before any point is listed or started."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time

import pytest

from train.sweep.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEAD = "name: t\nmethod: grid\nparameters:\n  depth:\n    values: [18, 34]\n  lr:\n"


def _alias_bomb() -> str:
    """10 levels of 10 nested anchors: 10^10 items once expanded, a few hundred bytes as written."""
    lines = ["name: bomb", "method: grid", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    return "\n".join([*lines, "parameters:", "  lr:", "    value: *a9", ""])


def _under_1gib():
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


@pytest.mark.parametrize("text, says", [
    (_alias_bomb(), "line 4: YAML aliases (*name) are not accepted"),
    (HEAD + "    values: " + "[" * 5000 + "1" + "]" * 5000 + "\n", "nested more than 10 deep"),
    (HEAD + "    values: [" + ",".join(["1"] * 100_000) + "]\n", "more than 20,000 YAML nodes"),
], ids=["alias-bomb", "deep", "wide"])
def test_a_file_that_would_expand_is_refused_in_one_line_within_a_second_in_bounded_memory(tmp_path, text, says):
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "train.sweep", str(path), "list"], capture_output=True, text=True,
                         cwd=ROOT, preexec_fn=_under_1gib, timeout=10)
    took = time.monotonic() - started
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr.count("\n") == 1 and says in out.stderr, out.stderr
    assert took < 3, f"{took:.1f}s (Python's start included)"


@pytest.mark.parametrize("lr, says", [
    ("    values: [{a: 1}, 0.1]", "parameter 'lr' has a value that is a dict; values are numbers, strings or booleans"),
    ("    value: [0.1, 0.2]", "parameter 'lr' has a value that is a list"),
    ("    values: [[0.1], 0.2]", "parameter 'lr' has a value that is a list"),
    ("    values: [2020-01-01]", "parameter 'lr' has a value that is a date"),
    ("    values: [" + ",".join(map(str, range(1001))) + "]", "parameter 'lr' has 1,001 values; at most 1,000"),
    ("    value: " + "x" * 1001, "parameter 'lr' has a value of 1,001 characters; at most 1,000"),
    ("    value: " + "1" * 5000, "has a value YAML cannot convert: Exceeds the limit (4300 digits)"),
    ("    value: 0.1\n" + "#" * (256 << 10), "is over 256 KiB"),
], ids=["dict", "value-list", "nested-list", "date", "many", "long", "digits", "big"])
def test_values_are_few_short_scalars(tmp_path, capsys, lr, says):
    path = tmp_path / "sweep.yaml"
    path.write_text(HEAD + lr + "\n")
    assert main([str(path), "list"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.count("\n") == 1 and says in out.err, out.err


def _grid(tmp_path, *counts: int) -> str:
    path = tmp_path / "sweep.yaml"
    params = "".join(f"  {name}:\n    values: [{', '.join(map(str, range(n)))}]\n"
                     for name, n in zip(("seed", "depth", "lr", "epochs"), counts))
    path.write_text("name: big\nmethod: grid\nparameters:\n" + params)
    return str(path)


def test_a_grid_of_over_10000_points_is_refused_unless_max_points_allows_it(tmp_path, capsys):
    big = _grid(tmp_path, 1000, 1000, 1000, 1000)  # 10^12 points: counted, never made
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "train.sweep", big, "list"], capture_output=True, text=True,
                         cwd=ROOT, preexec_fn=_under_1gib, timeout=10)
    assert time.monotonic() - started < 3
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr == "error: sweep big has 1,000,000,000,000 points (1000 x 1000 x 1000 x 1000); at most " \
                         "10,000 run unless --max-points allows more\n"
    assert main([_grid(tmp_path, 101, 100), "list"]) == 2  # 10,100
    assert "has 10,100 points" in capsys.readouterr().err
    assert main([_grid(tmp_path, 101, 100), "list", "--max-points", "10100"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 10_100
    assert main([_grid(tmp_path, 100, 100), "list"]) == 0  # 10,000: allowed by default
    assert len(capsys.readouterr().out.splitlines()) == 10_000


def test_seeds_from_the_command_line_count_towards_the_grid(tmp_path, capsys):
    grid = os.path.join(ROOT, "sweeps", "grid.yaml")  # 72 points a seed
    assert main([grid, "list", "--seeds", *map(str, range(139))]) == 2
    assert "has 10,008 points (6 x 3 x 4 x 139)" in capsys.readouterr().err
    assert main([grid, "list", "--seeds", *map(str, range(138))]) == 0
