"""The all-reduce ceiling: a sweep of message sizes (1 MiB - 1 GiB by default) in fp32 and bf16 over every GPU of
the node (NCCL), or over two CPU processes (gloo), each size's algbw and busbw as nccl-tests defines them. A DDP
run's comm/busbw_bytes_per_s is comparable with the busbw here (docs/nodecheck.md)."""

from __future__ import annotations

import json
import os
import socket
import time

from train.measure.comm import bus_bandwidth
from train.nodecheck.checks import Check, bad, ok, skip

SECTION = "all-reduce"
DTYPES = ("float32", "bfloat16")


def sizes(max_mib: int, min_mib: int = 1) -> list[int]:
    """Bytes: min_mib, 4x each step, up to and including max_mib."""
    out, mib = [], min_mib
    while mib <= max_mib:
        out.append(mib * 2**20)
        mib *= 4
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, backend: str, byte_sizes: list[int], result_path: str) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    device = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    rows = []
    for dtype_name in DTYPES:
        dtype = getattr(torch, dtype_name)
        for size in byte_sizes:
            try:
                x = torch.ones(size // torch.tensor([], dtype=dtype).element_size(), dtype=dtype, device=device)
                dist.all_reduce(x)  # warm-up: connections, buffers
                sync()
                reps = 20 if device.type == "cuda" else max(1, min(5, (64 << 20) // size))
                dist.barrier()
                started = time.perf_counter()
                for _ in range(reps):
                    dist.all_reduce(x)
                sync()
                seconds = (time.perf_counter() - started) / reps
                del x
                algbw = size / seconds
                rows.append({"dtype": dtype_name, "bytes": size, "time_s": seconds, "algbw_bytes_per_s": algbw,
                             "busbw_bytes_per_s": bus_bandwidth(algbw, world)})
            except Exception as e:  # noqa: BLE001 - a dtype or size this backend refuses: said, the sweep goes on
                rows.append({"dtype": dtype_name, "bytes": size, "error": str(e).splitlines()[0][:200]})
                break
    if rank == 0:
        with open(result_path, "w") as f:
            json.dump(rows, f)
    dist.destroy_process_group()


def sweep(world: int, backend: str, byte_sizes: list[int], work_dir: str, timeout_s: float = 240) -> list[dict]:
    """Run the sweep in `world` processes; rank 0's rows."""
    import torch.multiprocessing as mp

    result_path = os.path.join(work_dir, f".allreduce-{os.getpid()}.json")
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, world, port, backend, byte_sizes, result_path), daemon=True)
             for r in range(world)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + timeout_s
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    hung = [p for p in procs if p.is_alive()]
    for p in hung:
        p.kill()
    try:
        if hung:
            raise RuntimeError(f"the sweep did not finish within {timeout_s:.0f} s")
        if any(p.exitcode for p in procs):
            raise RuntimeError(f"a sweep process failed (exit status {[p.exitcode for p in procs]})")
        with open(result_path) as f:
            return json.load(f)
    finally:
        if os.path.exists(result_path):
            os.remove(result_path)


def best(rows: list[dict]) -> dict:
    """{dtype: the highest busbw over sizes}: the ceiling a run's busbw is set against."""
    out: dict[str, float] = {}
    for r in rows:
        if "busbw_bytes_per_s" in r:
            out[r["dtype"]] = max(out.get(r["dtype"], 0.0), r["busbw_bytes_per_s"])
    return out


def check(torch, device, work_dir: str, max_mib: int, quick: bool) -> list[Check]:
    if quick:
        return [skip(SECTION, "all-reduce sweep", "skipped with --quick (it starts one process per rank)")]
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    if device.type == "cuda" and gpus < 2:
        return [skip(SECTION, "all-reduce sweep", f"{gpus} GPU on this node: nothing to all-reduce with")]
    world, backend = (gpus, "nccl") if device.type == "cuda" else (2, "gloo")
    rows = sweep(world, backend, sizes(max_mib), work_dir)
    ceiling = best(rows)
    errors = [f"{r['dtype']} at {r['bytes'] >> 20} MiB: {r['error']}" for r in rows if "error" in r]
    text = ", ".join(f"{d} {v / 1e9:.2f} GB/s" for d, v in ceiling.items()) or "none measured"
    mark = bad if errors or not ceiling else ok
    return [mark(SECTION, "all-reduce sweep", f"{backend}, {world} ranks, {sizes(max_mib)[0] >> 20} MiB - "
                 f"{max_mib} MiB: best busbw {text}" + (f"; failed: {'; '.join(errors)}" if errors else ""),
                 backend=backend, world_size=world, rows=rows, best_busbw_bytes_per_s=ceiling)]
