"""A node check's unit: one named finding, passed (✓), failed (✗) or not applicable here (–), with its reason,
and the runner that keeps a failing check from ending the tool."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from train.contract.errors import first_line

PASS, FAIL, SKIP = "pass", "fail", "skip"
MARKS = {PASS: "✓", FAIL: "✗", SKIP: "–"}


@dataclass
class Check:
    section: str
    name: str
    status: str
    reason: str
    data: dict = field(default_factory=dict)  # the figures behind the line, for nodecheck.json
    seconds: float = 0.0

    def line(self, width: int = 28) -> str:
        return f"{MARKS[self.status]} {self.name.ljust(width)} {self.reason}"


def ok(section: str, name: str, reason: str, **data) -> Check:
    return Check(section, name, PASS, reason, data)


def bad(section: str, name: str, reason: str, **data) -> Check:
    return Check(section, name, FAIL, reason, data)


def skip(section: str, name: str, reason: str, **data) -> Check:
    return Check(section, name, SKIP, reason, data)


def guarded(section: str, name: str, run) -> list[Check]:
    """`run()`'s checks (a Check or a list of them), or one ✗ with the error's first line: a check that breaks
    is a finding about the node, not a reason to stop checking it."""
    started = time.perf_counter()
    try:
        found = run()
    except Exception as e:  # noqa: BLE001 - every failure becomes the check's reason
        found = bad(section, name, f"{type(e).__name__}: {first_line(e)}")
    found = found if isinstance(found, list) else [found]
    elapsed = (time.perf_counter() - started) / max(1, len(found))
    for c in found:
        c.seconds = c.seconds or elapsed
    return found
