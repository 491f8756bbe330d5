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
    stamps = sorted(str(s) for s in (p.get("started_at") for r in runs for p in _segments(r)) if s)
    if not stamps:
        return UNKNOWN
    first, last = (s[:16].replace("T", " ") for s in (stamps[0], stamps[-1]))  # to the minute
    return first if first == last else f"{first} – {last}"


def _segments(run) -> list[dict]:
    """The code each segment of a run was trained with: the config's list (one entry per segment), or for runs
    recorded before it was kept, the config's one commit."""
    prov = run.config.get("provenance") or {}
    listed = prov.get("segments")
    return [p for p in listed if isinstance(p, dict)] if isinstance(listed, list) and listed else [prov]


def _commits(run) -> list:
    """A run's commits, each once, in the order its segments ran them."""
    return list(dict.fromkeys(p.get("git_commit") or None for p in _segments(run)))


def _dirty(runs) -> str:
    flags = [[p.get("git_dirty") for p in _segments(r)] for r in runs]
    dirty = sum(any(f is True for f in run) for run in flags)
    if dirty:
        return f"yes: {dirty} of {len(runs)} run(s) had uncommitted changes"
    if any(f is False for run in flags for f in run):
        unknown = sum(all(f is None for f in run) for run in flags)
        return "no" + (f" ({unknown} run(s) unknown)" if unknown else "")
    return UNKNOWN


def _mixed(runs) -> str:
    """The runs whose segments were trained with more than one commit: a resume on changed code."""
    mixed = [f"{r.name} ({' → '.join((c or UNKNOWN)[:12] for c in cs)})" for r in runs if len(cs := _commits(r)) > 1]
    return "; ".join(mixed) if mixed else "none"


def provenance(runs) -> list[tuple[str, str]]:
    """(fact, text) lines for the head of results.md and report.html, over every run read; a run resumed on
    other code counts under each commit it was trained with."""
    system = [r.config.get("system") if isinstance(r.config.get("system"), dict) else {} for r in runs]
    commits = [c for r in runs for c in _commits(r)]
    return [
        ("Runs started", _dates(runs)),
        ("Devices", _counted(s.get("device_name") for s in system)),
        ("PyTorch", _counted(s.get("torch") for s in system)),
        ("CUDA", _counted(s.get("cuda") for s in system)),
        ("Suite commit", _counted(c[:12] if isinstance(c, str) else c for c in commits)),
        ("Local changes", _dirty(runs)),
        ("Resumed on other code", _mixed(runs)),
    ]
