"""--compile: torch.compile of the model (forward and backward), compiled before training so that the compile
time is measured on its own (time/compile_s) and never counted in a step time.

The compiled module only runs the steps: the optimizer, the checkpoint and resume keep the uncompiled module
(run.py's `bare_model`), so checkpoints hold the same keys with and without --compile (no `_orig_mod.`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time

import torch
import torch.nn.functional as F

from train.contract.errors import RunFailed, UsageError, first_line


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


@contextlib.contextmanager
def failures_in_one_line(mode: str, resumed: bool):
    """Dynamo or Inductor failing (no working C++ compiler, a kernel the compiler cannot build) ends the run in
    one line naming the mode and the innermost cause, not a traceback through Dynamo's frames. Nothing has been
    trained or saved by then, and the run folder's claim is released on the way out, so the same command (or
    --compile none) runs in that folder again; a resumed run keeps its mode (it is part of the experiment)."""
    try:
        yield
    except Exception as e:
        if not _compiler_failure(e):
            raise
        cause, toolchain = _innermost(e)
        eager = "start a new run with --compile none" if resumed else "run it with --compile none"
        what = f"fix the C++ compiler ($CXX, else g++) and run the same command again, or {eager}" if toolchain \
            else eager
        raise RunFailed(f"--compile {mode} failed before any training step ({cause}); nothing was saved: "
                        f"{what}") from None


def _compiler_failure(e: Exception) -> bool:
    # Imported here, not at the top: torch._dynamo takes over a second to import, and only --compile needs it.
    from torch._dynamo.exc import TorchDynamoException
    from torch._inductor.exc import CppCompileError, InvalidCxxCompiler

    return isinstance(e, (TorchDynamoException, CppCompileError, InvalidCxxCompiler))


def _innermost(e: BaseException) -> tuple[str, bool]:
    """(the cause under Dynamo's and Inductor's wrappers in one line, whether it is the C++ toolchain's)."""
    from torch._dynamo.exc import TorchDynamoException
    from torch._inductor.exc import CppCompileError, InvalidCxxCompiler

    while isinstance(e, TorchDynamoException) and (getattr(e, "inner_exception", None) or e.__cause__):
        e = getattr(e, "inner_exception", None) or e.__cause__
    if isinstance(e, CppCompileError):  # its message is the whole command line, then the compiler's output
        lines = [line.strip() for line in str(e.output).splitlines() if line.strip()]
        said = next((line for line in lines if "error" in line.lower()), lines[0] if lines else "no output")
        return f"the C++ compiler failed on Inductor's code: {said}"[:400], True
    return f"{type(e).__name__}: {first_line(e, empty='no message')}"[:400], isinstance(e, InvalidCxxCompiler)


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
