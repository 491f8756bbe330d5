"""The node check's three outputs: the screen (one line per check), nodecheck.json (every figure, and the
ceilings runs record: train/contract/node_ceilings.py) and nodecheck.md (the same for people), and, with --wandb, one
W&B run of job_type "node-check"."""

from __future__ import annotations

import json
import os
import shutil

from train.contract import lineage
from train.contract.files import atomic_write
from train.nodecheck.checks import FAIL, MARKS, PASS, SKIP, Check

JSON_FILE, MD_FILE = "nodecheck.json", "nodecheck.md"
SCHEMA = 1


WIDTH = 26  # check names are padded to this, so the findings line up


def screen(checks: list[Check], after: str | None = None) -> str:
    """The checks' lines, each section under its name (`after`: the section already shown above them)."""
    lines, section = [], after
    for c in checks:
        if c.section != section:
            section = c.section
            lines.append(f"{section}:")
        lines.append("  " + c.line(WIDTH))
    return "\n".join(lines)


def tally(checks: list[Check]) -> str:
    n = {s: sum(c.status == s for c in checks) for s in (PASS, FAIL, SKIP)}
    return f"{n[PASS]} {MARKS[PASS]}, {n[FAIL]} {MARKS[FAIL]}, {n[SKIP]} {MARKS[SKIP]} (not applicable here)"


def ceilings(checks: list[Check]) -> dict:
    """The measured bests a run is set against, from the checks' figures."""
    out: dict = {"matmul_flops_per_s": {}, "datasheet_flops_per_s": {}}
    for c in checks:
        d = c.data
        if c.section == "ceilings" and "kind" in d:
            out["matmul_flops_per_s"][d["kind"]] = d["flops_per_s"]
            out["datasheet_flops_per_s"][d["kind"]] = d["datasheet_flops_per_s"]
        elif c.name == "device memory copy":
            out["memory_copy_bytes_per_s"] = d.get("bytes_per_s")
        elif c.name.startswith("copy ") and "bytes_per_s" in d:
            out[c.name[5:].replace("->", "_to_") + "_bytes_per_s"] = d["bytes_per_s"]
        elif c.name == "all-reduce sweep" and "best_busbw_bytes_per_s" in d:
            out["allreduce"] = {"backend": d["backend"], "world_size": d["world_size"],
                                "busbw_bytes_per_s": d["best_busbw_bytes_per_s"]}
    return out


def document(checks: list[Check], facts: dict) -> dict:
    return {"schema": SCHEMA, **facts, "ceilings": ceilings(checks),
            "checks": [{"section": c.section, "name": c.name, "status": c.status, "reason": c.reason,
                        "seconds": round(c.seconds, 3), "data": c.data} for c in checks]}


def markdown(checks: list[Check], facts: dict) -> str:
    lines = [f"# Node check: {facts['host']} ({facts['device_name']})", "",
             f"{facts['checked_at']}, {facts['seconds']:.0f} s{' (--quick)' if facts['quick'] else ''}: "
             f"{tally(checks)}."]
    section = None
    for c in checks:
        if c.section != section:
            section = c.section
            lines += ["", f"## {section}", "", "| | check | finding |", "|---|---|---|"]
        lines.append(f"| {MARKS[c.status]} | {c.name} | {c.reason.replace('|', '/')} |")
    for c in checks:
        if "tables" in c.data:
            lines += ["", "## benchmark tables", "", "```", c.data["tables"], "```"]
    return "\n".join(lines) + "\n"


def write(out_dir: str, checks: list[Check], facts: dict) -> tuple[str, str]:
    paths = os.path.join(out_dir, JSON_FILE), os.path.join(out_dir, MD_FILE)
    text = json.dumps(document(checks, facts), indent=1, default=str), markdown(checks, facts)
    for path, content in zip(paths, text):
        atomic_write(path, lambda f, content=content: f.write(content.encode()), binary=True)
    return paths


def to_wandb(out_dir: str, checks: list[Check], facts: dict, project: str, reachable: bool) -> str:
    """One W&B run of job_type "node-check" (offline where the server does not answer): the ceilings in its
    summary, the checks as a table, both files saved with it. wandb is imported only here."""
    import wandb

    run = wandb.init(project=project, job_type=lineage.NODE_CHECK, name=f"nodecheck-{facts['host']}",
                     mode="online" if reachable else "offline", dir=out_dir,
                     config={**facts, lineage.JOB_TYPE_KEY: lineage.NODE_CHECK},
                     settings=wandb.Settings(silent=True))
    try:
        run.summary.update({"ceilings": ceilings(checks), "failed": sum(c.status == FAIL for c in checks)})
        run.log({"checks": wandb.Table(columns=["section", "check", "status", "finding"],
                                       data=[[c.section, c.name, c.status, c.reason] for c in checks])})
        for name in (JSON_FILE, MD_FILE):  # copies in the run's files folder: uploaded with it, synced offline
            shutil.copy(os.path.join(out_dir, name), os.path.join(run.dir, name))
        return f"{run.id} ({'online: ' + run.url if reachable else 'offline: wandb sync ' + os.path.dirname(run.dir)})"
    finally:
        run.finish()
