"""Turns: how `python -m train.benchmark` runs its points' processes one at a time, each for many rounds.

Every point of a benchmark (a precision, a --compile mode, the bare loop, ...) is one process: it sets up once
(imports, data, model, W&B start, compile) and trains for all rounds, so it pays its set-up once and its memory
peak is its own. It works only in its turn: it warms up in one, and before its first step, and after every
`steps` steps (one round),
it reports to the benchmark and blocks on a pipe until its next turn ("go"). Only one process trains at a time;
the others sleep in `read`, using no CPU or GPU. After its last round a process waits once more, for "end", so
that every point ends its run (summary, checkpoint, W&B) together, when nothing is being timed. The pipe's end
of file instead means the benchmark has gone: the run stops there.

The benchmark passes the pipe's ends, the turn's length, the warm-up steps each round leaves out and its own id in
TRAIN_TURNS ("<read fd>,<write fd>,<steps>,<warm-up steps>,<id>"); without it a run is an ordinary one. The
reports are JSON lines: {"setup_s"} once set up, {"warm_up_s"}, then per turn {"step_times", "wall_s"}: each step's
time (as the run times it) and the turn's wall time from the benchmark's go to the end of its last log window. A
timed round's go names the round ("go 0", "go 1", ...); the warm-up's and the profiled round's are a bare "go". The
run keeps its timed rounds' step times in its summary (bench/*, train/contract/rounds.py), for the report to
measure it as the benchmark did.
"""

from __future__ import annotations

import json
import os
import time

from train.contract import lineage, rounds
from train.contract.errors import UsageError
from train.runner.hooks import Hooks

ENV = "TRAIN_TURNS"


class Turns(Hooks):
    """The point's side of the turns; the runner registers it as its hooks (train/runner/hooks.py), and the bare
    loop calls it as the runner's loop does."""

    job_type = lineage.BENCHMARK  # the runner's W&B run is a benchmark point, not a training run of the study

    def __init__(self, read_fd: int, write_fd: int, steps: int, warmup: int = 0, bench_id: str = ""):
        self.steps, self.warmup, self.bench_id = steps, warmup, bench_id
        self._read = os.fdopen(read_fd, "r")
        self._write = os.fdopen(write_fd, "w")
        self._step_times: list[float] = []
        self._went = 0.0
        self._round: int | None = None  # the timed round this turn is, as the benchmark's go named it
        self._rounds: dict[int, list[float]] = {}  # timed round -> its step times

    @classmethod
    def from_env(cls) -> "Turns | None":
        value = os.environ.pop(ENV, None)  # popped: no child process (a DataLoader worker) takes the pipe
        if not value:
            return None
        try:
            read_fd, write_fd, steps, warmup, bench_id = value.split(",")
            return cls(int(read_fd), int(write_fd), int(steps), int(warmup), bench_id)
        except (ValueError, OSError):  # not the benchmark's: left over in a shell, or from an older benchmark
            raise UsageError(f"{ENV}={value!r} is not the benchmark's '<read fd>,<write fd>,<steps>,<warm-up steps>,"
                             f"<id>' with open pipes; unset it to run on your own") from None

    def on_window(self, step_times: list[float]) -> None:
        """A log window's step times, in order: reported at the turn's end."""
        self._step_times.extend(step_times)

    def after_window(self, step: int, sampler=None) -> float:
        """At the turn's last step: report it and wait for the next. Returns the seconds waited."""
        if not self.ends_turn(step):
            return 0.0
        waited = self.next()
        if sampler:
            sampler.discard()  # the other points' turns are not this run's training, which NVML saw meanwhile
        return waited

    def ends_turn(self, step: int) -> bool:
        return step % self.steps == 0

    def ready(self, setup_s: float, warm_up=None) -> None:
        """Set up: say so; in its turn, call `warm_up` (one untimed forward and backward, so that the first
        round starts with kernels chosen and memory allocated, like the later ones); then wait for the first
        round. Warming up one process at a time keeps their threads from fighting over the cores."""
        self._wait({"setup_s": setup_s})
        seconds = warm_up() if warm_up else 0.0
        self._wait({"warm_up_s": seconds})

    def next(self) -> float:
        """This turn is over: report it, wait for the next (or for the end). Returns the seconds waited, which
        are not training time."""
        ended = time.perf_counter()
        if self._round is not None:
            self._rounds[self._round] = self._step_times
        self._wait({"step_times": self._step_times, "wall_s": ended - self._went})
        self._step_times = []
        return self._went - ended

    def _wait(self, report: dict) -> None:
        try:
            self._write.write(json.dumps(report) + "\n")
            self._write.flush()
            go = self._read.readline()
        except BrokenPipeError:
            go = ""
        if not go:  # end of file: the benchmark has gone (interrupted or killed)
            raise SystemExit("error: the benchmark that gave this run its turns has gone; the run ends here")
        word = go.split()
        self._round = int(word[1]) if word[0] == "go" and len(word) > 1 else None
        self._went = time.perf_counter()

    def summary(self) -> dict:
        """The timed rounds' step times, in round order, for the run's summary."""
        return {rounds.BENCH_ID: self.bench_id, rounds.ROUND_WARMUP: self.warmup,
                rounds.ROUND_STEPS: [self._rounds[r] for r in sorted(self._rounds)]}
