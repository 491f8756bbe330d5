"""W&B's own reader on the offline runs the tests make: what a run logged, as W&B itself reads it back."""

import os

from train.contract import wandb_offline


def _inspect(run_dir, *flags):
    """W&B's own reader (train/contract/wandb_offline.py) on a run folder's one offline run (or on an
    offline-run folder itself)."""
    if os.path.basename(str(run_dir)).startswith("offline-run-"):
        target = str(run_dir)
    else:
        wandb_dirs = [d for d in os.listdir(os.path.join(run_dir, "wandb")) if d.startswith("offline-run-")]
        assert len(wandb_dirs) == 1
        target = os.path.join(run_dir, "wandb", wandb_dirs[0])
    run_files = [f for f in os.listdir(target) if f.endswith(".wandb")]
    assert len(run_files) == 1, run_files
    out = wandb_offline.inspect(target, *flags)
    assert out.returncode == 0, out.stderr
    return out.stdout
