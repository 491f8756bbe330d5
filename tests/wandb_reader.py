"""W&B's own reader on the offline runs the tests make: what a run logged, as W&B itself reads it back."""

import os
import subprocess


def _inspect(run_dir, *flags):
    """W&B's own reader on a run folder's one offline run (or on an offline-run folder itself).

    The reader is wandb-core's `leet inspect`, called directly: `wandb leet inspect` runs the same binary with the
    same output, but its Python start costs ~0.5 s a call (against ~0.01 s), and the suite reads runs ~50 times."""
    from wandb.util import get_core_path

    if os.path.basename(str(run_dir)).startswith("offline-run-"):
        target = str(run_dir)
    else:
        wandb_dirs = [d for d in os.listdir(os.path.join(run_dir, "wandb")) if d.startswith("offline-run-")]
        assert len(wandb_dirs) == 1
        target = os.path.join(run_dir, "wandb", wandb_dirs[0])
    run_files = [f for f in os.listdir(target) if f.endswith(".wandb")]
    assert len(run_files) == 1, run_files
    out = subprocess.run([get_core_path(), "leet", "inspect", "--no-observability", *flags, "--json", "--run-file",
                          os.path.join(target, run_files[0]), os.path.dirname(target)],
                         capture_output=True, text=True, check=True, timeout=120)
    return out.stdout
