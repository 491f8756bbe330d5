"""The timed DDP communication hook: gradient all-reduce time, bytes and bus bandwidth per log window."""

from __future__ import annotations

import torch

from train.measure.profile_classes import covered
from train.measure.timing import Clock


class CommMeter:
    """A DDP communication hook that runs one of PyTorch's hooks and times it: bytes, and the time some
    all-reduce of the step was in flight (the union of the buckets' intervals, since buckets queue behind
    each other on the communication stream). Read once per log window, like the step timer."""

    def __init__(self, device: torch.device, world_size: int, compress: str):
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

        self.clock = Clock(device)
        self.world_size = world_size
        self.compress = compress
        self.inner = {"none": default_hooks.allreduce_hook, "fp16": default_hooks.fp16_compress_hook,
                      "bf16": default_hooks.bf16_compress_hook}[compress]
        self._step: list[list] = []
        self._steps: list[list[list]] = []

    def hook(self, state, bucket):
        buffer = bucket.buffer()
        nbytes = buffer.numel() * (2 if self.compress != "none" else buffer.element_size())
        record = [self.clock.mark(), None, nbytes]
        self._step.append(record)

        def done(fut):
            record[1] = self.clock.mark()  # on CUDA, the current stream here waits for the collective
            return fut.value()

        return self.inner(state, bucket).then(done)

    def end_step(self) -> None:
        if self._step:
            self._steps.append(self._step)
            self._step = []

    def window(self) -> dict:
        steps, self._steps = self._steps, []
        steps = [s for s in steps if all(r[1] is not None for r in s)]
        if not steps:
            return {}
        total_bytes, total_time = 0, 0.0
        for records in steps:
            self.clock.wait(records[-1][1])
            ref = records[0][0]
            total_time += covered([(self.clock.seconds(ref, s), self.clock.seconds(ref, e)) for s, e, _ in records])
            total_bytes += sum(r[2] for r in records)
            self.clock.recycle([mark for s, e, _ in records for mark in (s, e)])
        algbw = total_bytes / total_time if total_time > 0 else 0.0
        return {"comm/allreduce_bytes": total_bytes, "comm/allreduce_time_s": total_time,
                "comm/algbw_bytes_per_s": algbw,
                "comm/busbw_bytes_per_s": bus_bandwidth(algbw, self.world_size)}


def bus_bandwidth(algbw: float, world_size: int) -> float:
    """nccl-tests' busbw for all-reduce: algbw x 2(n-1)/n, the bytes each rank's link carries per second, so a
    figure comparable across world sizes and with the link's own bandwidth (the node check's sweep uses it too)."""
    return algbw * 2 * (world_size - 1) / world_size
