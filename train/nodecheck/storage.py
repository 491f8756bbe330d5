"""The out-dir's free space and write speed (a checkpoint's worth, fsynced, as the runner writes checkpoints), and
whether W&B's server answers, bounded as the runner bounds it (train/runner/tracking.py)."""

from __future__ import annotations

import os
import shutil
import time

from train.nodecheck.checks import Check, bad, ok, skip

SECTION = "storage and W&B"
# ResNet-18's fp32 checkpoint (weights, SGD momentum, progress) is ~90 MB; ResNet-50's ~190 MB.
CHECKPOINT_BYTES = 96 * 2**20
LOW_FREE_BYTES = 10 * 2**30  # below this a sweep's checkpoints (20 runs x 90-190 MB) and W&B files may not fit


def write_speed(folder: str, size: int) -> float:
    """Bytes/s of writing `size` bytes to a file in `folder` and fsyncing it; the file is removed."""
    path = os.path.join(folder, f".nodecheck-write-{os.getpid()}")
    block = os.urandom(1 << 20)
    try:
        started = time.perf_counter()
        with open(path, "wb") as f:
            for _ in range(size // len(block)):
                f.write(block)
            f.flush()
            os.fsync(f.fileno())
        return size / (time.perf_counter() - started)
    finally:
        if os.path.exists(path):
            os.remove(path)


def disk(folder: str, quick: bool) -> list[Check]:
    free = shutil.disk_usage(folder).free
    mark = ok if free >= LOW_FREE_BYTES else bad
    out = [mark(SECTION, "free space", f"{free / 2**30:.1f} GiB free in {folder}"
                + ("" if free >= LOW_FREE_BYTES else f" (under {LOW_FREE_BYTES >> 30} GiB: a sweep may not fit)"),
                free_bytes=free)]
    size = CHECKPOINT_BYTES // (6 if quick else 1)
    rate = write_speed(folder, size)
    out.append(ok(SECTION, "write speed", f"{rate / 2**20:,.0f} MiB/s ({size >> 20} MiB written and fsynced: a "
                  f"checkpoint takes ~{CHECKPOINT_BYTES / rate:.1f} s)", bytes_per_s=rate, bytes=size))
    return out


def wandb(quick: bool) -> Check:
    from train.runner import tracking

    url = tracking.base_url()
    timeout = 3.0 if quick else tracking.PROBE_MAX_S
    problem = tracking.unreachable(url, timeout)
    creds = tracking.has_credentials()
    facts = {"url": url, "reachable": problem is None, "credentials": creds}
    if problem:
        return skip(SECTION, "W&B", f"{url} unreachable ({problem}): runs log offline; sync them from a login node",
                    **facts)
    return ok(SECTION, "W&B", f"{url} answers; credentials {'found' if creds else 'not found (runs log offline)'}",
              **facts)
