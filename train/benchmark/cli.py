"""Side-by-side runs of several precisions (and depths, loaders, --compile modes) on one machine, printed as
ratios with their spread.

    python -m train.benchmark                      # quick start: ResNet-18, every precision, synthetic data
    python -m train.benchmark --precisions fp32 bf16 --compile none default --bare --rounds 5
    python -m train.benchmark --depths 18 34 50 --loaders device torch --steps 300

Each point is one real run of the runner (W&B run, checkpoint) on synthetic data, in a process of its own: its
memory peak (allocator peak on GPUs, peak RSS on CPUs) is its own, not one shared by every point. The points'
processes set up together (about one per core at a time), then train in turns (train/benchmark/turns.py): each round
gives every point --steps steps, one point at a time while the others wait, in an order rotated from round to
round, so a machine that gets busier or quieter for a while moves every point alike rather than one
precision. A ratio is the median of its per-round ratios, shown with the range over rounds; a range wider
than --max-spread is flagged as too wide to conclude. --bare adds a minimal training loop of the same model,
batch, precision and data (train/benchmark/bare.py) as one more point and prints the runner's speed as a share of it.
Points the device cannot run are listed with the runner's one-line reason.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import select
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

from train.benchmark.breakdown import profile_table
from train.benchmark.turns import ENV as TURNS_ENV
from train.contract import rounds
from train.contract.errors import EXIT_USAGE, UsageError
from train.contract.files import RESULT_FILE
from train.contract.rounds import DISTURBED, MAX_SPREAD, spread
from train.measure.cpu import model_and_flags as cpu_model_and_flags
from train.numerics import registry
from train.runner.options import (
    COMPILE_MODES,
    DEPTHS,
    PRECISIONS,
    PROFILE_STEPS,
    HelpFormatter,
    OneLineParser,
    non_negative_int,
    positive_int,
)

RUNNER = [os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "run.py")]  # as users start it
BARE = ["-m", "train.benchmark.bare"]
TURN_KEYS = ("train/images_per_s", "wall_s", "step_times")  # a round's own figures; the rest of a row is the point's run
BARE_GOAL = {"cpu": 0.97, "cuda": 0.99}  # the runner's speed as a share of the bare loop's, at least
# Every runner point profiles PROFILE_STEPS steps by default (--profile): its profiled round is untimed, so it costs
# wall time only (about 4 s of the CPU quick start's 30).


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m train.benchmark", description=__doc__.split("\n\n")[0],
                      formatter_class=HelpFormatter)
    p.add_argument("--models", nargs="+", choices=tuple(registry.MODELS), default=["resnet"],
                   help="architectures (docs/models.md); --depths apply to resnet")
    p.add_argument("--depths", type=int, nargs="+", choices=DEPTHS, default=[18])
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    p.add_argument("--loaders", nargs="+", choices=("device", "torch"), default=["device"])
    p.add_argument("--compile", nargs="+", choices=COMPILE_MODES, default=["none"],
                   help="--compile modes to run side by side (e.g. none default); the gain is printed per point")
    p.add_argument("--bare", action="store_true",
                   help="also run a minimal training loop of each point (train/benchmark/bare.py), interleaved, and print "
                   "the runner's speed as a share of it")
    p.add_argument("--rounds", type=positive_int, help="times every point runs, interleaved (default: 3)")
    p.add_argument("--max-spread", type=float, default=MAX_SPREAD,
                   help="a ratio whose range over rounds is wider than this share of it is flagged as too wide")
    p.add_argument("--steps", type=positive_int, help="steps per point (default: 4 on CPU, 300 on GPU)")
    p.add_argument("--warmup-steps", type=int, help="steps left out of each median (default: 1 on CPU, 50 on GPU)")
    p.add_argument("--batch-size", type=positive_int, help="per-process batch (default: 32 on CPU, 256 on GPU)")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    p.add_argument("--live", type=positive_int, default=6,
                   help="processes alive at a time, each holding its model and data set: more points than this "
                   "run in groups, one after another (lower it when memory is short)")
    p.add_argument("--out-dir", default="runs/benchmark", help="runs are written here")
    p.add_argument("--nvml-ab", action="store_true",
                   help="run every point twice, NVML sampler off and at --nvml-hz, and print the sampler's cost")
    p.add_argument("--nvml-hz", type=float, default=10.0, help="sampler rate for --nvml-ab")
    p.add_argument("--profile", type=non_negative_int, nargs="?", const=PROFILE_STEPS, metavar="K",
                   help=f"first give every point one untimed round in which the runner profiles K steps after its "
                   f"warm-up, then print the step time by operation class side by side (docs/profile.md); 0: no "
                   f"profiled round (default: {PROFILE_STEPS}, or what a round has room for)")
    p.add_argument("--profile-ab", action="store_true",
                   help="run every point twice, with and without the profiled round, and print the profiler's cost "
                   "outside its window: the two runs' images/s, paired within each timed round")
    p.add_argument("--wandb-mode", choices=("online", "offline", "disabled"),
                   help="as the runner's (default: online with W&B credentials, else offline)")
    return p


# --- statistics over rounds --------------------------------------------------------------------------------

def fmt_ratio(s: dict) -> str:
    if not s:
        return "-"
    if s["n"] == 1:
        return f"{s['median']:.2f}x"
    return f"{s['median']:.2f}x [{s['min']:.2f}-{s['max']:.2f}]{' !' if s['wide'] else ''}"


def mark_disturbed(rows: list[dict], warmup: int) -> int:
    """Flag each point's rounds another process disturbed (train/contract/rounds.py): their ratios are left out
    rather than widening every range. Returns how many rounds were flagged."""
    by_point: dict[int, list[dict]] = {}
    for r in rows:
        if r.get("step_times") and "error" not in r:
            by_point.setdefault(r["index"], []).append(r)
    flagged = 0
    for same in by_point.values():
        for r, is_slow in zip(same, rounds.disturbed([r["step_times"] for r in same], warmup)):
            r["disturbed"] = is_slow
            flagged += is_slow
    return flagged


def paired(rows: list[dict], key, base_key, value: str, max_spread: float) -> dict:
    """Per-point ratio to its base point, paired within each round (disturbed rounds left out): {point: spread
    of ratios}."""
    by_round = {(r["round"], key(r)): r for r in rows if "error" not in r and not r.get("disturbed")}
    out = {}
    for (rnd, point), r in by_round.items():
        b = by_round.get((rnd, base_key(r)))
        if b is None or not r.get(value) or not b.get(value):
            continue
        out.setdefault(point, []).append(r[value] / b[value])
    return {point: spread(v, max_spread) for point, v in out.items()}


# --- points ------------------------------------------------------------------------------------------------

class PointProcess:
    """One point's process, the runner or the bare loop, trained in the turns this benchmark gives it
    (train/benchmark/turns.py). Its output goes to a log file next to its run: several processes set up at once."""

    def __init__(self, point: dict, script: str, argv: list[str], log_path: str, turns: str, result_path: str):
        self.point, self.result_path, self.log_path = point, result_path, log_path
        from_benchmark, to_child = os.pipe()
        from_child, to_benchmark = os.pipe()
        env = {**os.environ, TURNS_ENV: f"{from_benchmark},{to_benchmark},{turns}"}  # turns: steps,warm-up,id
        with open(log_path, "w") as log:
            self.proc = subprocess.Popen([sys.executable, *script, *argv], stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env, pass_fds=(from_benchmark, to_benchmark))
        os.close(from_benchmark)
        os.close(to_benchmark)
        self._go = os.fdopen(to_child, "w")
        self._reports = os.fdopen(from_child, "r")
        self.setup: dict | None = None
        self.error: str | None = None

    def fileno(self) -> int:  # for select(): a report waits to be read
        return self._reports.fileno()

    def report(self) -> dict | None:
        """The process's next report; None (and `error` set) when it ended instead."""
        line = self._reports.readline()
        if line:
            return json.loads(line)
        self.error = self._reason(self.proc.wait())
        return None

    def turn(self, rnd: int | None = None) -> dict | None:
        """One turn's steps: (step times, wall time), or None when the process failed. `rnd`: the timed round it
        is (the run keeps those rounds' step times); None for the warm-up and the profiled round."""
        self._say("go" if rnd is None else f"go {rnd}")
        return self.report()

    def release(self) -> None:
        """No more turns: the process ends its run (summary, checkpoint, W&B)."""
        self._say("end")
        try:
            self._go.close()
        except BrokenPipeError:
            pass

    def _say(self, word: str) -> None:
        try:
            self._go.write(word + "\n")
            self._go.flush()
        except BrokenPipeError:
            pass  # it has ended: report() and result() say why

    def result(self) -> dict:
        """Its result file once it has ended, or {"error": its one-line reason}."""
        code = self.proc.wait()
        self._reports.close()
        if self.error is None and code != 0:
            self.error = self._reason(code)
        if self.error is not None:
            return {"error": self.error}
        with open(self.result_path) as f:
            return json.load(f)

    def _reason(self, code: int) -> str:
        with open(self.log_path) as f:
            lines = [line.strip() for line in f if line.strip()]
        errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
        return errors[0] if errors else (lines[-1] if lines else f"exit status {code}") + f" (log: {self.log_path})"


def start(specs: list[tuple]) -> list[PointProcess]:
    """Start the processes together; returns them once each is set up and warmed up (or has failed). Set-up is
    mostly single-threaded imports and file reads, so the processes set up together; they warm up in turns."""
    started = [PointProcess(*spec) for spec in specs]
    setting_up = list(started)
    while setting_up:
        for p in select.select(setting_up, [], [])[0]:
            p.setup = p.report()
            setting_up.remove(p)
            label = describe(p.point)
            print(f"  set up: {label} in {p.setup['setup_s']:.1f}s" if p.setup else
                  f"  not run: {label}: {p.error}", flush=True)
    for p in started:  # one at a time: a warm-up is a forward and backward on every core
        if p.error is None and p.turn() is None:
            print(f"  not run: {describe(p.point)}: {p.error}", flush=True)
    return started


def turn_figures(report: dict, batch: int, warmup: int) -> dict:
    """A round of one point: images/s (train/contract/rounds.py), its step times and wall time."""
    return {"train/images_per_s": rounds.round_rate(report["step_times"], warmup, batch), "wall_s": report["wall_s"],
            "step_times": report["step_times"]}


def describe(p: dict) -> str:
    return (f"{p['kind']} {p['model']} {p['precision']} ({p['loader']} loader, compile {p['compile']}"
            f"{', NVML %g Hz' % p['nvml_hz'] if p.get('nvml_ab') else ''}"
            f"{(', profiled' if p['profiled'] else ', unprofiled') if p.get('profile_ab') else ''})")


def cpu_features() -> str:
    """The CPU and the instruction-set extensions its bf16 speed depends on (Linux: /proc/cpuinfo)."""
    found = cpu_model_and_flags()
    if found is None:
        return "CPU features unknown (no /proc/cpuinfo)"
    model, flags = found
    has = lambda *names: "yes" if all(n in flags for n in names) else "no"  # noqa: E731
    return (f"{model or 'CPU'} ({os.cpu_count()} logical cores): AVX-512 {has('avx512f')}, AVX512-BF16 "
            f"{has('avx512_bf16')}, AVX512-FP16 {has('avx512_fp16')}, AMX-BF16 {has('amx_bf16', 'amx_tile')}. "
            "bf16 speed-ups on CPU come from oneDNN's AVX512-BF16 / AMX kernels: without them bf16 is emulated "
            "and can be slower than fp32, so CPU ratios hold for CPUs with the same features only")


def refusal(device_choice: str, prec: str, compile_mode: str, arch: str = "resnet", depth: int | None = 18) -> str | None:
    """The runner's one-line refusal of a point by rule, checked here (by the same code) instead of in a process
    that would only start to refuse; the probe step, which can refuse too, runs in the point's process.

    Without touching CUDA, as the runner's launcher: a context here would sit in every point's nvml/memory_used
    and, under EXCLUSIVE_PROCESS compute mode, keep the points off the GPU. So the compute-capability rule (it
    needs a context) is left to the point's process, which refuses in one line as it would here."""
    import torch

    from train.numerics import compiling, precision

    cuda = device_choice != "cpu" and torch.cuda.is_available()  # NVML or the driver's count: no context
    device = torch.device("cuda" if cuda else "cpu")
    try:
        if precision.get(prec).fp8_recipe:
            _check_fp8_model(arch, depth, prec)
        precision.get(prec).check_rules(device.type, None, device.type)
        compiling.check(compile_mode, device)
    except UsageError as e:
        return str(e)
    return None


@functools.lru_cache
def _check_fp8_model(arch: str, depth: int | None, prec: str) -> None:
    """The runner's refusal of fp8 for a model it cannot speed up (a ResNet), once per model."""
    from train.numerics import fp8

    fp8.check_model(registry.build(arch, depth), registry.arch(arch, depth), prec)


def device_label(rows: list[dict], gpu: bool) -> str:
    """Where the points ran, by their own processes' word (the parent never asks CUDA: see refusal)."""
    if not gpu:
        return "CPU"
    names = sorted({r["device_name"] for r in rows if r.get("device_name")})
    return f"GPU {', '.join(names)}" if names else "GPU (name unknown: no point ran)"


# --- output ------------------------------------------------------------------------------------------------

def _columns(lines: list[tuple]) -> list[str]:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return out


def point_of(r: dict) -> tuple:
    return r["model"], r["precision"], r["loader"], r["compile"], r["nvml_hz"], r.get("profiled", False)


def table(rows: list[dict], max_spread: float = MAX_SPREAD) -> str:
    """One line per point: medians over rounds, and ratios to fp32 (same model, loader, compile) with range."""
    runs = sorted((r for r in rows if r.get("kind", "runner") == "runner"), key=lambda r: r.get("index", 0))
    speed = paired(runs, point_of, lambda r: (r["model"], "fp32", *point_of(r)[2:]), "train/images_per_s",
                   max_spread)
    size = paired(runs, point_of, lambda r: (r["model"], "fp32", *point_of(r)[2:]), "ckpt/size_bytes", max_spread)
    cpu = all(r.get("device") == "cpu" for r in runs if "error" not in r)
    head = ("model", "precision", "loader", "compile", "images/s", "vs fp32", "step ms", "setup s",
            "peak RSS MiB" if cpu else "peak alloc MiB", "ckpt MiB", "vs fp32")
    lines, notes, seen = [head], [], set()
    for r in runs:
        point = point_of(r)
        if point in seen:
            continue
        seen.add(point)
        label = (r["model"], r["precision"], r["loader"], r["compile"])
        if "error" in r:
            lines.append((*label, *["-"] * (len(head) - 4)))
            notes.append(f"  {r['precision']} ({r['model']}, {r['loader']}, compile {r['compile']}): "
                         f"{r['error']}")
            continue
        same = [x for x in runs if point_of(x) == point and "error" not in x]
        same = [x for x in same if not x.get("disturbed")] or same
        med = lambda key: statistics.median(v for x in same if (v := x.get(key)) is not None) \
            if any(x.get(key) is not None for x in same) else None  # noqa: E731
        ips, setup = med("train/images_per_s"), med("time/setup_s")
        peak = med("mem/peak_allocated_bytes" if r["device"] == "cuda" else "mem/rss_peak_bytes")
        lines.append((*label, f"{ips:,.0f}" if ips else "-", fmt_ratio(speed.get(point, {})),
                      f"{1e3 * r['batch_size'] / ips:.1f}" if ips else "-", f"{setup:.1f}" if setup else "-",
                      f"{peak / 2**20:,.0f}" if peak else "-", f"{med('ckpt/size_bytes') / 2**20:.1f}",
                      f"{size[point]['median']:.2f}x" if point in size else "-"))  # sizes do not vary
    return "\n".join(_columns(lines) + (["not run:"] + notes if notes else []))


def compile_table(rows: list[dict], max_spread: float) -> str:
    runs = [r for r in rows if r.get("kind", "runner") == "runner"]
    gain = paired(runs, point_of, lambda r: (*point_of(r)[:3], "none", *point_of(r)[4:]), "train/images_per_s",
                  max_spread)
    lines = [("model", "precision", "loader", "compile", "images/s vs none", "compile s")]
    for point, s in gain.items():
        if point[3] == "none":
            continue
        compile_s = [r["time/compile_s"] for r in runs if point_of(r) == point and r.get("time/compile_s")]
        lines.append((str(point[0]), point[1], point[2], point[3], fmt_ratio(s),
                      f"{statistics.median(compile_s):.1f}" if compile_s else "-"))
    return "\n".join(_columns(lines)) if len(lines) > 1 else "  (no compiled point ran)"


def bare_verdict(step: dict, goal: float) -> str:
    """Runner/bare step ratios (a spread) against the goal: met, missed, or inconclusive."""
    if not step:
        return "not measured"
    if step["wide"]:
        return "inconclusive (range too wide)"  # a wide range below the goal is noise as likely as cost
    if step["min"] >= goal:
        return "met"
    return "missed" if step["max"] < goal else "inconclusive (range spans the goal)"


def bare_table(rows: list[dict], max_spread: float, device: str) -> str:
    """Runner vs bare loop per point: median step (the images/s statistic) and loop wall time, per round."""
    goal = BARE_GOAL[device]
    key = lambda r: point_of(r)[:4]  # noqa: E731
    pairs: dict[tuple, dict[str, list[float]]] = {}
    by_round = {(r["round"], r.get("kind", "runner"), key(r)): r for r in rows
                if "error" not in r and not r.get("disturbed")}
    for (rnd, kind, point), r in by_round.items():
        b = by_round.get((rnd, "bare", point))
        if kind != "runner" or b is None or not r.get("train/images_per_s") or not b.get("train/images_per_s"):
            continue
        d = pairs.setdefault(point, {"step": [], "wall": []})
        d["step"].append(r["train/images_per_s"] / b["train/images_per_s"])
        d["wall"].append(b["wall_s"] / r["wall_s"])
    lines = [("model", "precision", "loader", "compile", "runner/bare (step)", "runner/bare (round wall)",
              f"goal >= {goal:.2f}")]
    for point, d in pairs.items():
        step, wall = spread(d["step"], max_spread), spread(d["wall"], max_spread)
        lines.append((*(str(x) for x in point), fmt_ratio(step), fmt_ratio(wall), bare_verdict(step, goal)))
    return "\n".join(_columns(lines)) if len(lines) > 1 else "  (no pair of runner and bare loop ran)"


# --- main --------------------------------------------------------------------------------------------------

@dataclass
class Plan:
    """What one benchmark invocation runs: the points, their shared settings, and those refused up front."""

    args: argparse.Namespace
    device: str
    steps: int
    warmup: int
    batch: int
    rounds: int
    profile: int  # steps each runner point profiles in an untimed round before the timed ones; 0: none
    bench_id: str  # this invocation: its points' rounds are paired only with each other's
    sampler_rates: list[float]
    points: list[dict]
    refused: list[dict]


def plan(args: argparse.Namespace, gpu: bool) -> Plan:
    steps = args.steps or (300 if gpu else 4)
    warmup = args.warmup_steps if args.warmup_steps is not None else (50 if gpu else 1)
    if warmup >= steps:
        raise UsageError(f"--warmup-steps {warmup} leaves none of the {steps} steps of a round to time: use "
                         "fewer warm-up steps or more --steps")
    profile = args.profile if args.profile is not None else min(PROFILE_STEPS, steps - warmup)
    if warmup + profile > steps:
        raise UsageError(f"--profile {profile} after {warmup} warm-up step(s) does not fit in a round of {steps} "
                         "steps: use more --steps or a smaller K")
    if args.profile_ab and not profile:
        raise UsageError("--profile-ab compares runs with and without the profiled round: give --profile K, not 0")
    if args.nvml_ab and not gpu:
        raise UsageError("--nvml-ab measures the NVML sampler's cost on a GPU; no CUDA GPU is in use")
    batch = args.batch_size or (256 if gpu else 32)
    rates = [0.0, args.nvml_hz] if args.nvml_ab else [args.nvml_hz]
    points, refused = [], []
    models = [(m, d) for m in args.models for d in (args.depths if registry.get(m).uses_depth else [None])]
    for (arch, depth), loader, prec, mode in itertools.product(models, args.loaders, args.precisions, args.compile):
        reason = refusal(args.device, prec, mode, arch, depth)
        profiled = [True, False] if args.profile_ab else [bool(profile)]
        kinds = [("runner", hz, p) for hz in rates for p in profiled] + \
            ([("bare", rates[-1], False)] if args.bare else [])  # the bare loop never profiles
        for kind, hz, prof in kinds:
            point = {"arch": arch, "depth": depth, "model": registry.arch(arch, depth), "precision": prec,
                     "loader": loader, "compile": mode, "batch_size": batch,
                     "nvml_hz": hz, "nvml_ab": args.nvml_ab, "profiled": prof, "profile_ab": args.profile_ab,
                     "kind": kind, "index": len(points) + len(refused)}  # the table's order
            if not reason:
                points.append(point)
            elif kind == "runner" and prof == profiled[0]:
                refused.append({**point, "round": 0, "error": reason})
    bench_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    return Plan(args, "cuda" if gpu else "cpu", steps, warmup, batch, args.rounds or 3, profile, bench_id, rates,
                points, refused)


def spec(pl: Plan, p: dict) -> tuple:
    """(point, command, argv, log file, its turns (steps,warm-up,benchmark id), result file) of one point's
    process."""
    args = pl.args
    size = ["--depth", str(p["depth"])] if p["depth"] is not None else []
    common = ["--model", p["arch"], *size, "--precision", p["precision"], "--loader", p["loader"],
              "--warmup-steps", str(pl.warmup), "--batch-size", str(pl.batch), "--device", args.device,
              "--compile", p["compile"]]
    short = registry.short(p["arch"], p["depth"])  # the runner's own run-name spelling
    turns = f"{pl.steps},{pl.warmup},{pl.bench_id}"
    tag = f"{short}-{p['precision']}-{p['loader']}-{p['compile']}-{uuid.uuid4().hex[:8]}"
    if p["kind"] == "bare":
        out = os.path.join(args.out_dir, f"bare-{tag}.json")
        argv_bare = [*common, "--steps", str(pl.rounds * pl.steps), "--out", out]
        return p, BARE, argv_bare, out.removesuffix(".json") + ".log", turns, out
    name = tag
    profile_round = ["--profile", str(pl.profile)] if p["profiled"] else []  # one more round, first, untimed
    steps = (pl.rounds + (1 if p["profiled"] else 0)) * pl.steps
    argv_run = [*common, *profile_round, "--max-steps", str(steps), "--dataset", "synthetic", "--out-dir",
                args.out_dir, "--name", name, "--log-every", str(pl.steps), "--group", "benchmark", "--tags",
                "benchmark", "--nvml-hz", str(p["nvml_hz"])]
    if args.wandb_mode:
        argv_run += ["--wandb-mode", args.wandb_mode]
    return (p, RUNNER, argv_run, os.path.join(args.out_dir, f"{name}.log"), turns,
            os.path.join(args.out_dir, name, RESULT_FILE))


def run_group(pl: Plan, group: list[dict], rows: list[dict]) -> None:
    """Set up a group's points together, give each its turn in every round, then end their runs together."""
    procs = start([spec(pl, p) for p in group])
    if pl.profile:
        profile_round(procs)
    for rnd in range(pl.rounds):
        live = [p for p in procs if p.error is None]
        shift = rnd % len(live) if live else 0
        order = live[shift:] + live[:shift]  # rotated: no point always runs first, or after the same one
        if rnd % 2:
            order.reverse()
        for p in order:
            report = p.turn(rnd)
            if report is None:
                print(f"== round {rnd + 1}/{pl.rounds}: {describe(p.point)}: failed: {p.error}", flush=True)
                continue
            figures = turn_figures(report, pl.batch, pl.warmup)
            rows.append({**p.point, "round": rnd, **figures})
            print(f"== round {rnd + 1}/{pl.rounds}: {describe(p.point)}: {figures['train/images_per_s']:,.1f} "
                  f"images/s, {len(report['step_times'])} steps in {report['wall_s']:.2f}s", flush=True)
    for p in procs:
        p.release()  # every point of the group ends its run at once: nothing is timed any more
    for p in procs:
        result = {k: v for k, v in p.result().items() if k not in TURN_KEYS}
        own = [r for r in rows if r["index"] == p.point["index"]]
        if not own:  # it failed before its first round
            rows.append({**p.point, "round": 0})
            own = rows[-1:]
        for row in own:
            row.update(result)  # the run's own figures (set-up, memory peak, checkpoint) on each of its rounds


def profile_round(procs: list[PointProcess]) -> None:
    """The runner's profiled steps, in a round of their own before the timed ones (the bare loop sits it out:
    it does not profile, and a round more would shift its rounds from the runner's)."""
    for p in procs:
        if p.error is None and p.point["profiled"]:
            if p.turn() is None:
                print(f"== profile round: {describe(p.point)}: failed: {p.error}", flush=True)
            else:
                print(f"== profile round: {describe(p.point)}: profiled", flush=True)


def print_tables(pl: Plan, rows: list[dict], where: str, torch_version: str) -> None:
    args, last = pl.args, pl.sampler_rates[-1]
    disturbed = mark_disturbed(rows, pl.warmup)
    # the points as a plain benchmark runs them: at the sampler's rate, profiled unless --profile 0
    main = [r for r in rows if r["nvml_hz"] == last and (r["kind"] == "bare" or r["profiled"] == bool(pl.profile))]
    print(f"\nSynthetic data, batch {pl.batch}, {pl.rounds} round(s) of {pl.steps} steps per point ({pl.warmup} "
          f"warm-up step(s) of each round left out of its median), {len(pl.points)} point(s) each in a process of "
          f"its own (set-up times are of all of a group's points setting up at once), on {where}, torch "
          f"{torch_version}, {time.strftime('%Y-%m-%d')}:\n")
    shown = [table(main, args.max_spread)]
    print(shown[-1])
    if len(args.compile) > 1:
        print("\ntorch.compile gain (images/s compiled vs eager, same round; compile time is not in images/s):")
        shown.append(compile_table(main, args.max_spread))
        print(shown[-1])
    if args.bare:
        print("\nThe runner (W&B, telemetry, checkpoint) vs a minimal loop of the same model, batch, precision and "
              "data, paired within each round. step: median step time, as images/s is measured; round wall: the "
              "round's whole loop, its log window (the one sync, W&B log, lost-update check) included:")
        shown.append(bare_table(main, args.max_spread, pl.device))
        print(shown[-1])
    if args.nvml_ab:
        print_sampler_cost([r for r in rows if r["profiled"] == bool(pl.profile)], args.nvml_hz, args.max_spread)
    if args.profile_ab:
        print("\nThe profiler's cost outside its window (images/s of the profiled run's timed rounds over its "
              "unprofiled twin's, same round; 1.00x: none):")
        shown.append(profiler_cost_table([r for r in rows if r["nvml_hz"] == last], args.max_spread))
        print(shown[-1])
    if pl.profile:
        print(f"\nStep time by operation class, ms per profiled step (share of it), {pl.profile} profiled step(s) "
              "per point in the untimed first round; x: the class's speed-up over fp32 (docs/profile.md):")
        print(profile_table(main))
    wide = any(" !" in text for text in shown)
    print(f"\nRatios: median over {pl.rounds} round(s) [min-max over rounds]. "
          + ("'!' marks a range wider than {:.0%} of the ratio: too wide to conclude (a busy machine?); rerun with "
             "more --rounds, more --steps or on a quieter machine.".format(args.max_spread) if wide else
             ("Every range is within {:.0%}.".format(args.max_spread) if pl.rounds > 1 else
              "One round gives no range: use --rounds 3 or more to judge a ratio.")))
    if disturbed:
        print(f"{disturbed} of {sum('step_times' in r for r in rows)} point-rounds were left out of the ratios as "
              f"disturbed: a step took over {DISTURBED:g}x its point's median (another process had the device or "
              "the cores); the medians and ranges above are over the other rounds.")
    if pl.device == "cpu":
        print(cpu_features())


def print_sampler_cost(rows: list[dict], hz: float, max_spread: float) -> None:
    print(f"\nNVML sampler cost at {hz:g} Hz (images/s sampler off / on, same round):")
    cost = paired([r for r in rows if r["kind"] == "runner"], point_of,
                  lambda r: (*point_of(r)[:4], 0.0, *point_of(r)[5:]), "train/images_per_s", max_spread)
    for point, s in cost.items():
        if point[4]:
            print(f"  {point[0]} {point[1]} ({point[2]}): {1 / s['median'] - 1:+.2%} "
                  f"[{1 / s['max'] - 1:+.2%} to {1 / s['min'] - 1:+.2%}]")


def profiler_cost_table(rows: list[dict], max_spread: float) -> str:
    """Per point: the profiled run's images/s over its unprofiled twin's, paired within each timed round."""
    cost = paired([r for r in rows if r["kind"] == "runner"], point_of, lambda r: (*point_of(r)[:5], False),
                  "train/images_per_s", max_spread)
    lines = [("model", "precision", "loader", "compile", "profiled / unprofiled")]
    lines += [(*(str(x) for x in point[:4]), fmt_ratio(s)) for point, s in cost.items() if point[5]]
    return "\n".join(_columns(lines)) if len(lines) > 1 else "  (no pair of profiled and unprofiled runs ran)"


def main(argv: list[str] | None = None) -> int:
    try:
        return benchmark(build_parser().parse_args(argv), sys.argv[1:] if argv is None else argv)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE


def benchmark(args: argparse.Namespace, argv: list[str]) -> int:
    started = time.perf_counter()
    # GPUs counted through NVML, as by the runner's launcher: the driver's own count (cuInit) opens the CUDA
    # driver in this process, which trains nothing (see refusal). The points inherit it, as the workers do.
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    import torch  # after the flags: --help and flag errors answer at once

    gpu = args.device != "cpu" and torch.cuda.is_available()
    pl = plan(args, gpu)
    os.makedirs(args.out_dir, exist_ok=True)
    rows = list(pl.refused)
    groups = [pl.points[i:i + args.live] for i in range(0, len(pl.points), args.live)]
    for g, group in enumerate(groups):
        where = f" (group {g + 1}/{len(groups)}: at most --live {args.live} processes at a time)" \
            if len(groups) > 1 else ""
        print(f"== setting up {len(group)} point(s) at once{where}; their logs are in {args.out_dir}/", flush=True)
        run_group(pl, group, rows)
    where = device_label(rows, gpu)
    print_tables(pl, rows, where, torch.__version__)
    raw = os.path.join(args.out_dir, f"benchmark-{pl.bench_id}.json")
    with open(raw, "w") as f:
        json.dump({"argv": argv, "bench_id": pl.bench_id, "device": where, "torch": torch.__version__, "steps": pl.steps,
                   "warmup_steps": pl.warmup, "batch_size": pl.batch, "rounds": pl.rounds, "rows": rows}, f)
    print(f"Every round's step times: {raw}. Benchmark wall time {time.perf_counter() - started:.0f}s.")
    return 0 if any("error" not in r for r in rows) else 1
