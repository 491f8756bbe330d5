"""Where the numbers come from: dates, devices, software and the suite's code, from the runs' configs.

A reader of a results table needs these to judge it (and to reproduce it); a fact no run recorded is said to
be "unknown" rather than left out, so its absence is visible.
"""

from __future__ import annotations

from collections import Counter

UNKNOWN = "unknown"


def _counted(values) -> str:
    counts = Counter(v for v in values if v not in (None, ""))
    if not counts:
        return UNKNOWN
    return ", ".join(f"{v} ({n} run{'s' if n != 1 else ''})" for v, n in counts.most_common())


def _dates(runs) -> str:
    stamps = sorted(str(s) for s in ((r.config.get("provenance") or {}).get("started_at") for r in runs) if s)
    if not stamps:
        return UNKNOWN
    first, last = (s[:16].replace("T", " ") for s in (stamps[0], stamps[-1]))  # to the minute
    return first if first == last else f"{first} – {last}"


def _dirty(runs) -> str:
    flags = [(r.config.get("provenance") or {}).get("git_dirty") for r in runs]
    dirty = sum(f is True for f in flags)
    if dirty:
        return f"yes: {dirty} of {len(runs)} run(s) had uncommitted changes"
    if any(f is False for f in flags):
        unknown = sum(f is None for f in flags)
        return "no" + (f" ({unknown} run(s) unknown)" if unknown else "")
    return UNKNOWN


def provenance(runs) -> list[tuple[str, str]]:
    """(fact, text) lines for the head of results.md and report.html, over every run read."""
    system = [r.config.get("system") if isinstance(r.config.get("system"), dict) else {} for r in runs]
    commits = [((r.config.get("provenance") or {}).get("git_commit") or None) for r in runs]
    return [
        ("Runs started", _dates(runs)),
        ("Devices", _counted(s.get("device_name") for s in system)),
        ("PyTorch", _counted(s.get("torch") for s in system)),
        ("CUDA", _counted(s.get("cuda") for s in system)),
        ("Suite commit", _counted(c[:12] if isinstance(c, str) else c for c in commits)),
        ("Local changes", _dirty(runs)),
    ]
