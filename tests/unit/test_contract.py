"""The torch-free contract both sides share (train/contract/): light to import, the one copy of each fact, and its
pieces (one-line errors, the atomic write, the one-line parser, the target keys) on their own."""

import ast
import errno
import glob
import json
import os
import signal
import socket
import subprocess
import sys

import pytest
from conftest import ROOT

from train.contract import files, wandb_offline
from train.contract.cli import OneLineParser
from train.contract.errors import first_line
from train.contract.experiment import DEFAULT_TARGETS, EXPERIMENT_DEFAULTS, PRECISIONS, with_defaults
from train.contract.metrics import STEP_PREFIXES, target_key, target_pct

HEAVY = ("torch", "numpy", "wandb", "matplotlib")
CONTRACT = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "train", "contract", "*.py"))
                  if not p.endswith("__init__.py"))
# The report without its plots (matplotlib is theirs alone): what a report on rows needs.
REPORT = ["collect", "columns", "compare", "figures", "formatting", "prose", "provenance", "rows", "write"]


def _loaded_after(imports: list[str]) -> set[str]:
    """Modules in sys.modules after importing `imports` in a fresh interpreter."""
    code = "import sys\n" + "".join(f"import {m}\n" for m in imports) + "print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": ROOT})
    return set(out.stdout.split())


def test_importing_the_contract_loads_no_torch_numpy_wandb_or_matplotlib():
    loaded = _loaded_after([f"train.contract.{m}" for m in CONTRACT])
    assert {f"train.contract.{m}" for m in CONTRACT} <= loaded
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}


def test_the_report_loads_of_train_only_the_contract():
    loaded = _loaded_after([f"report.{m}" for m in REPORT])
    assert not {m for m in loaded if m.split(".")[0] in ("torch", "numpy")}
    assert {m for m in loaded if m.startswith("train.")} <= {"train.contract", *(f"train.contract.{m}" for m in CONTRACT)}


def test_report_sources_import_nothing_of_train_but_the_contract():
    for path in glob.glob(os.path.join(ROOT, "report", "*.py")):
        for node in ast.walk(ast.parse(open(path).read())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                assert not name.startswith("train") or name == "train.contract" or \
                    name.startswith("train.contract."), (path, name)


def test_one_copy_of_each_fact_serves_both_sides():
    from report import columns, plots  # noqa: F401 - plots: its colours are keyed by the contract's precisions
    from train.benchmark import cli as benchmark
    from train.launch import elastic, signals
    from train.measure.peaks import PRECISION_CLASS
    from train.runner import checkpoint, options, tracking

    assert options.PRECISIONS is PRECISIONS and list(plots.COLOURS) == list(PRECISIONS)
    assert set(PRECISION_CLASS) == set(PRECISIONS)
    assert options.EXPERIMENT_DEFAULTS is EXPERIMENT_DEFAULTS and options.DEFAULT_TARGETS is DEFAULT_TARGETS
    assert columns.DEFAULT_TARGETS == ("80", "90", "93", "94")
    assert checkpoint.RESULT_FILE == benchmark.RESULT_FILE == files.RESULT_FILE == "result.json"
    assert tracking.STEP_PREFIXES is STEP_PREFIXES
    assert options.OneLineParser is OneLineParser
    assert elastic.STOP_SIGNALS is signals.STOP_SIGNALS == (signal.SIGTERM, signal.SIGUSR1)


def test_stop_request_installs_on_the_stop_signals():
    from train.launch.signals import STOP_SIGNALS, StopRequest

    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    try:
        stop = StopRequest().install()
        assert all(signal.getsignal(sig) is stop for sig in STOP_SIGNALS)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def test_target_keys_are_percentages_without_a_dot():
    assert (target_key(0.93), target_key(0.935), target_key(0.8)) == ("time_to_acc/93", "time_to_acc/93_5",
                                                                         "time_to_acc/80")
    assert target_pct(0.94) == "94"


def test_experiment_defaults_fill_only_settings_a_run_did_not_record():
    assert with_defaults({"depth": 18}) == {"compile": "none", "arch": "resnet", "lr_warmup_epochs": 0.0, "depth": 18}
    assert with_defaults({"compile": "default", "arch": "vit-s"})["arch"] == "vit-s"


@pytest.mark.parametrize("error, empty, line", [
    (RuntimeError("first\nsecond"), None, "first"),
    (RuntimeError("\n  indented first\nsecond"), None, "indented first"),
    (RuntimeError(""), None, "RuntimeError"),
    (ValueError(), "no message", "no message"),
    ("text\nmore", None, "text"),
    ("", "no message", "no message"),
    ("", None, ""),
])
def test_first_line_of_an_error(error, empty, line):
    assert first_line(error, empty) == line


def test_one_line_parser_errors_in_one_line_with_exit_2(capsys):
    p = OneLineParser(prog="python -m x")
    p.add_argument("--n", type=int)
    with pytest.raises(SystemExit) as e:
        p.parse_args(["--n", "many"])
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: argument --n: invalid int value: 'many' (see python -m x --help)"]


def _leftovers(tmp_path):
    return sorted(p for p in os.listdir(tmp_path) if ".tmp-" in p)


def test_atomic_write_replaces_the_file_whole(tmp_path):
    path = str(tmp_path / "result.json")
    files.atomic_write(path, lambda f: json.dump({"a": 1}, f))
    files.atomic_write(path, lambda f: json.dump({"a": 2}, f))
    assert json.load(open(path)) == {"a": 2} and _leftovers(tmp_path) == []
    files.atomic_write(str(tmp_path / "b.bin"), lambda f: f.write(b"\x00\x01"), binary=True)
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"


def test_atomic_write_that_fails_leaves_the_previous_file_and_no_temp_file(tmp_path):
    path = str(tmp_path / "result.json")
    files.atomic_write(path, lambda f: f.write("old"))

    def broken(f):
        f.write("half")
        raise ValueError("not serialisable")

    with pytest.raises(ValueError):
        files.atomic_write(path, broken)
    assert open(path).read() == "old" and _leftovers(tmp_path) == []


def test_a_full_disk_is_disk_full_with_what_was_written(tmp_path):
    path = str(tmp_path / "checkpoint.pt")
    files.atomic_write(path, lambda f: f.write(b"old"), binary=True)

    def fills(f):
        f.write(b"x" * 1000)
        f.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(files.DiskFull) as e:
        files.atomic_write(path, fills, binary=True)
    assert isinstance(e.value, OSError) and e.value.errno == errno.ENOSPC
    assert (e.value.written, e.value.directory) == (1000, str(tmp_path)) and e.value.free > 0
    assert open(path, "rb").read() == b"old" and _leftovers(tmp_path) == []


def test_a_dead_writers_temp_file_is_removed_at_the_next_write(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".result.json.tmp-{socket.gethostname()}-{dead.pid}"
    stale.write_text("half")
    files.atomic_write(str(tmp_path / "result.json"), lambda f: f.write("{}"))
    assert not stale.exists()


def test_result_json_is_written_through_the_atomic_write(tmp_path, monkeypatch):
    from train.runner import session

    written = []
    monkeypatch.setattr(session, "atomic_write",
                        lambda path, write: written.append(path) or files.atomic_write(path, write))
    session.write_result(str(tmp_path / "result.json"), {"end": "finished", "when": object})
    assert written == [str(tmp_path / "result.json")]
    assert json.load(open(tmp_path / "result.json")) == {"end": "finished", "when": str(object)}


def test_the_error_record_is_whole_json_for_the_elastic_agent(tmp_path, monkeypatch):
    from train.launch import elastic

    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(tmp_path / "error.json"))
    elastic.record_error("error: something")
    assert json.load(open(tmp_path / "error.json"))["message"] == "error: something"
    assert _leftovers(tmp_path) == []


def test_the_wandb_reader_needs_a_run_file(tmp_path):
    assert wandb_offline.run_file(str(tmp_path)) is None
    with pytest.raises(FileNotFoundError):
        wandb_offline.inspect(str(tmp_path))
    assert wandb_offline.history('{"type": "run"}\n\n{"type": "history", "history": {"item": {"train/step": 1}}}\n') \
        == [{"train/step": 1}]
