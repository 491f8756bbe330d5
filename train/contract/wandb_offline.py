"""Reading a W&B offline run folder (wandb/offline-run-*) with W&B's own reader, as the runner (its earlier
segments' history), the report and the tests all do.

The reader is wandb-core's `leet inspect`, called directly: `wandb leet inspect` runs the same binary with the
same output, but its Python start costs ~0.5 s a call against ~0.01 s, which matters for hundreds of runs.
The report reads finished runs without it (wandb_log.py), and asks it for the rest.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess


def run_file(segment: str) -> str | None:
    """The offline folder's .wandb file (W&B writes one per folder), or None."""
    files = glob.glob(os.path.join(segment, "*.wandb"))
    return files[0] if files else None


def inspect(segment: str, *flags: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`leet inspect --json` on the folder's .wandb file: JSON lines of its records, or with --summary one JSON
    object (run id, state, config, summary). The caller judges returncode and stderr."""
    from wandb.util import get_core_path  # wandb only when a run is read: the contract itself stays light

    found = run_file(segment)
    if found is None:
        raise FileNotFoundError(f"{segment} holds no .wandb file")
    return subprocess.run([get_core_path(), "leet", "inspect", "--no-observability", *flags, "--json",
                           "--run-file", found, os.path.dirname(segment)],
                          capture_output=True, text=True, timeout=timeout)


def records(stdout: str):
    """The records of `inspect`'s output (without --summary), in the order written."""
    for line in stdout.splitlines():
        if line.strip():
            yield json.loads(line)


def history(stdout: str) -> list[dict]:
    """The logged rows among `inspect`'s records."""
    return [r["history"]["item"] for r in records(stdout) if r.get("type") == "history"]
