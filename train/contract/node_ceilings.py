"""A node check's ceilings as a run records them (config `nodecheck`, docs/metric-contract.md): the runner finds
nodecheck.json (--nodecheck, $TRAIN_NODECHECK, or OUT_DIR/nodecheck.json), takes it only when it was made on
this host for this device, and keeps the ceilings that apply to the run's precision. Torch-free."""

from __future__ import annotations

import json
import os

from train.contract.errors import first_line

ENV = "TRAIN_NODECHECK"
FILE = "nodecheck.json"  # train/nodecheck/output.py writes it
# a precision's convolutions and matmuls run in this matmul kind (train/nodecheck/ceilings.py measures each)
MATMUL_OF = {"fp32": "fp32", "tf32": "tf32", "amp_fp16": "fp16", "fp16": "fp16", "amp_bf16": "bf16", "bf16": "bf16"}


def find(flag: str | None, out_dir: str) -> str | None:
    """The node check to use: the flag's, the environment's, or the out-dir's if one is there."""
    if flag or os.environ.get(ENV):
        return flag or os.environ[ENV]
    path = os.path.join(out_dir, FILE)
    return path if os.path.isfile(path) else None


def for_run(path: str | None, host: str, device_name: str, precision: str, allreduce_dtype: str) -> dict:
    """The config's `nodecheck`: {"used": False, "reason"} or the matching check's ceilings for this run."""
    if path is None:
        return {"used": False, "reason": "no node check (run python -m train.nodecheck)"}
    try:
        with open(path) as f:
            check = json.load(f)
        ceilings = check["ceilings"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return {"used": False, "path": path, "reason": f"unreadable: {first_line(e)}"}
    made_on = (check.get("host"), check.get("device_name"))
    if made_on != (host, device_name):
        return {"used": False, "path": path, "reason": f"made on {made_on[0]} ({made_on[1]}), not this node's "
                f"{host} ({device_name})"}
    kind = MATMUL_OF.get(precision)
    allreduce = ceilings.get("allreduce") or {}
    return {"used": True, "path": os.path.abspath(path), "checked_at": check.get("checked_at"),
            "quick": check.get("quick"), "matmul_kind": kind,
            "matmul_flops_per_s": (ceilings.get("matmul_flops_per_s") or {}).get(kind),
            "allreduce_dtype": allreduce_dtype,
            "allreduce_busbw_bytes_per_s": (allreduce.get("busbw_bytes_per_s") or {}).get(allreduce_dtype),
            "allreduce_world_size": allreduce.get("world_size"),
            "memory_copy_bytes_per_s": ceilings.get("memory_copy_bytes_per_s")}
