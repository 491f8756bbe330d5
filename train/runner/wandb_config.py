"""What the W&B run's config says about the run beyond its flags: its identity, the code that ran it, the
precision settings, the model, the system and the data. The report reads these (see tests/metric_contract.py)."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess

import torch

from train.contract import node_ceilings as recorded
from train.launch import distributed
from train.measure.peaks import run_peak
from train.runner.loop import Plan
from train.runner.options import RunConfig
from train.runner.setup import Data, device_name


def wandb_config(cfg: RunConfig, *, name: str, run_dir: str, identity: dict, settings: dict, model: dict,
                 device: torch.device, ranks: distributed.Ranks, data: Data, plan: Plan) -> dict:
    """`settings`: the precision policy's (with the memory format); `model`: setup.build_model's facts."""
    system = system_info(device, ranks)
    return {
        **cfg.as_dict(),
        "name": name,
        "run_dir": run_dir,
        "experiment": identity,
        "effective_lr": identity["effective_lr"],
        "provenance": provenance(),
        "precision_settings": settings,
        "model": model,
        "system": system | run_peak(system["device_name"] if device.type == "cuda" else None, cfg.precision,
                                     cfg.peak_tflops),
        "data": {"train_images": len(data.train_split),
                 "test_images": len(data.test_split) if data.test_split else 0,
                 "synthetic": cfg.dataset == "synthetic", "steps_per_epoch": len(data.train_loader),
                 "global_batch_size": cfg.batch_size * ranks.world_size},
        "total_steps": plan.total_steps,
        "nodecheck": node_ceilings(cfg, system["device_name"]),
    }


def system_info(device: torch.device, ranks: distributed.Ranks) -> dict:
    info = {
        "device": device.type,
        "device_name": device_name(device),
        "world_size": ranks.world_size,
        "nodes": ranks.nodes,
        "gpus_per_node": ranks.local_world_size,
        "backend": ranks.backend,
        "launcher": ranks.launcher,
        **distributed.versions(),
        "hostname": platform.node(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpu_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(compute_capability=f"{props.major}.{props.minor}", device_memory_bytes=props.total_memory)
    return info


def node_ceilings(cfg: RunConfig, device_name: str) -> dict:
    """This node's measured ceilings, from its node check, for the run's precision and gradient dtype."""
    sixteen_bit = cfg.precision in ("fp16", "bf16") or cfg.grad_compress != "none"  # all-reduced in 16 bits
    return recorded.for_run(recorded.find(cfg.nodecheck, cfg.out_dir), platform.node(), device_name,
                            cfg.precision, "bfloat16" if sixteen_bit else "float32")


def provenance() -> dict:
    """Which code produced the run: the suite's git commit and whether it had local changes, and when."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    commit = dirty = None
    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        if commit:
            status = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=10)
            dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass  # not a git checkout, or no git: unknown, said as such
    return {"git_commit": commit, "git_dirty": dirty,
            "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def add_segment(progress, provenance: dict) -> str | None:
    """Keep this segment's provenance (provenance(): commit, local changes, start) in the training state, one
    entry per segment saved with every checkpoint, and give the W&B config the whole list; return the one line
    that says this segment runs on other code than the earlier ones did (None: the same clean commit)."""
    earlier = list(progress.provenance)
    progress.provenance = [*earlier, {"segment": progress.segments + 1, **provenance}]
    provenance["segments"] = progress.provenance
    code = _code(provenance)
    if not earlier or (all(_code(p) == code for p in earlier) and not provenance.get("git_dirty")):
        return None
    ran = "; ".join(f"segment {p['segment']} ran {_code(p)}" for p in earlier)
    return f"resumed with commit {code}; {ran} (the run goes on; its provenance lists each segment's code)"


def _code(p: dict) -> str:
    """A commit as the line and the report name it: 12 hex digits, "(dirty)" with local changes."""
    commit = (p.get("git_commit") or "unknown")[:12]
    return commit + (" (dirty)" if p.get("git_dirty") else "")
