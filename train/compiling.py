"""--compile: torch.compile of the model (forward and backward), compiled before training so that the compile
time is measured on its own (time/compile_s) and never counted in a step time.

The compiled module only runs the steps: the optimizer, the checkpoint and resume keep the uncompiled module
(run.py's `bare_model`), so checkpoints hold the same keys with and without --compile (no `_orig_mod.`).
"""

from __future__ import annotations

import logging
import os
import shutil
import time

import torch
import torch.nn.functional as F

from train.errors import UsageError


def check(mode: str, device: torch.device) -> None:
    """Refuse, before anything is written, a --compile this machine cannot do: on CPU Inductor writes C++ and
    needs a compiler ($CXX, else g++/c++/clang++ on PATH)."""
    if mode == "none" or device.type != "cpu":
        return
    candidates = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++", "clang++"]
    if not any(shutil.which(c) for c in candidates):
        raise UsageError(f"--compile {mode} on CPU needs a C++ compiler for Inductor's C++ backend and found none "
                         f"({'$CXX=' + candidates[0] if os.environ.get('CXX') else 'g++, c++, clang++'} not on "
                         "PATH); install one (apt-get install g++) or use --compile none")


class _StepMarked(torch.nn.Module):
    """reduce-overhead (CUDA graphs): each call starts a new step of the graph tree, so the replay may reuse the
    previous step's output buffers. The loop uses a step's output (loss, accuracy) before the next call."""

    def __init__(self, compiled: torch.nn.Module):
        super().__init__()
        self.compiled = compiled

    def forward(self, *args, **kwargs):
        torch.compiler.cudagraph_mark_step_begin()
        return self.compiled(*args, **kwargs)


def compile_model(model: torch.nn.Module, mode: str) -> torch.nn.Module:
    """The model to run the steps with: `model` itself for --compile none."""
    if mode == "none":
        return model
    # Inductor's CPU path looks for a CUDA toolkit and warns when there is none: not news on a CPU run.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    compiled = torch.compile(model, mode=None if mode == "default" else mode)
    on_cuda = next(model.parameters()).device.type == "cuda"
    return _StepMarked(compiled) if mode == "reduce-overhead" and on_cuda else compiled


def warm_up(model: torch.nn.Module, bare_model: torch.nn.Module, policy, device: torch.device, batch_size: int,
            memory_format) -> float:
    """Compile now, on one forward and backward of a zero batch of the training shape; returns the seconds it took.

    Leaves no trace: the gradients are dropped and BatchNorm's running statistics (which a training-mode forward
    updates) are put back, so a compiled run trains exactly the steps an eager one does.
    """
    buffers = [b.detach().clone() for b in bare_model.buffers()]
    started = time.perf_counter()
    x = torch.zeros(batch_size, 3, 32, 32, device=device, dtype=policy.input_dtype).contiguous(
        memory_format=memory_format)
    y = torch.zeros(batch_size, dtype=torch.long, device=device)
    model.train()
    with policy.autocast(device.type):
        loss = F.cross_entropy(model(x).float(), y)
    loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    with torch.no_grad():
        for b, saved in zip(bare_model.buffers(), buffers):
            b.copy_(saved)
    for p in bare_model.parameters():
        p.grad = None
    return seconds
