"""Run a W&B grid sweep without a W&B server: on this machine, or as Slurm job arrays of offline runs.

    python -m train.sweep sweeps/smoke.yaml list     # the grid points, in W&B's grid order, one JSON per line
    python -m train.sweep sweeps/smoke.yaml local    # run them here, one after another
    python -m train.sweep sweeps/grid.yaml slurm     # one job array per GPU count; prints the job ids

W&B sweeps have no offline mode: agents need the server. Compute nodes without internet run the same grid
this way, each point a W&B offline run, synced afterwards from a login node with `wandb sync`. Every point
has a fixed name and W&B run id (from the sweep's name and the point's values), so rerunning skips points
that finished and continues points that were stopped (`--resume auto`).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import shlex
import signal
import subprocess
import sys

import yaml

from train.contract.errors import EXIT_DIVERGED, EXIT_USAGE, UsageError, first_line
from train.contract.files import UnreadableResult, read_result
from train.contract.names import check_run_name
from train.launch.signals import EXIT_INTERRUPTED
from train.runner.options import OneLineParser, positive_int
from train.runner.options import build_parser as runner_parser

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARRAY_SCRIPT = os.path.join(ROOT, "sweeps", "slurm", "offline_array.sbatch")


# Bounds on a sweep file, which may come from someone else: each is far above a real grid (the study's is 72
# points of 12 parameters), and together they keep reading it to well under a second and a few MB.
MAX_FILE_BYTES = 256 << 10
MAX_DEPTH = 10  # YAML nesting: the deepest real value is top > parameters > name > values > item (5)
MAX_NODES = 20_000  # 12 parameters of 1,000 values each fit
MAX_VALUES = 1_000  # per parameter
MAX_SCALAR_CHARS = 1_000  # a value becomes one argument of the runner's command line
MAX_POINTS = 10_000  # the grid's default bound (--max-points)
SCALARS = (str, int, float, bool, type(None))


class _Refused(yaml.YAMLError):
    """The file is valid YAML but outside the bounds above."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases and counts nodes as it composes them, before anything is built: an alias
    bomb (anchors of anchors) expands only when constructed, so a check of the loaded value would come too late."""

    def __init__(self, stream):
        super().__init__(stream)
        self._nodes = self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            line = self.peek_event().start_mark.line + 1
            raise _Refused(f"line {line}: YAML aliases (*name) are not accepted; write the values out")
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _Refused(f"more than {MAX_NODES:,} YAML nodes")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(f"line {self.peek_event().start_mark.line + 1}: nested more than {MAX_DEPTH} deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _read(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            text = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise UsageError(f"cannot read sweep file {path}: {e.strerror}") from None
    if len(text) > MAX_FILE_BYTES:
        raise UsageError(f"sweep file {path} is over {MAX_FILE_BYTES >> 10} KiB; a sweep file is a few lines")
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader, bounded
    except _Refused as e:
        raise UsageError(f"sweep file {path}: {e}") from None
    except yaml.YAMLError as e:
        raise UsageError(f"sweep file {path} is not valid YAML: {first_line(e)}") from None
    except ValueError as e:  # an integer of more digits than Python converts, a 13th month
        raise UsageError(f"sweep file {path} has a value YAML cannot convert: {first_line(e).split(';')[0]}") from None


def _check_values(path: str, name: str, spec: dict) -> None:
    """Values are scalars, and few: a point's name, run id and command line are built from them."""
    values = spec["values"] if "values" in spec else [spec["value"]]
    if "values" in spec and (not isinstance(values, list) or not values):
        raise UsageError(f"sweep file {path}: parameter {name!r} has an empty or non-list 'values'")
    if len(values) > MAX_VALUES:
        raise UsageError(f"sweep file {path}: parameter {name!r} has {len(values):,} values; at most {MAX_VALUES:,}")
    for v in values:
        if not isinstance(v, SCALARS):
            raise UsageError(f"sweep file {path}: parameter {name!r} has a value that is a "
                             f"{type(v).__name__}; values are numbers, strings or booleans")
        if isinstance(v, str) and len(v) > MAX_SCALAR_CHARS:
            raise UsageError(f"sweep file {path}: parameter {name!r} has a value of {len(v):,} characters; "
                             f"at most {MAX_SCALAR_CHARS:,}")


def load(path: str) -> dict:
    config = _read(path)
    if not isinstance(config, dict) or not isinstance(config.get("parameters"), dict) or not config["parameters"]:
        raise UsageError(f"sweep file {path} has no 'parameters' mapping")
    if config.get("method") != "grid":
        raise UsageError(f"sweep file {path}: method is {config.get('method')!r}; only grid sweeps run offline "
                         "(random and bayes need W&B's controller: use `wandb sweep` and agents)")
    for name, spec in config["parameters"].items():
        if not isinstance(spec, dict) or not ("values" in spec or "value" in spec):
            raise UsageError(f"sweep file {path}: parameter {name!r} needs 'values' or 'value' in a grid "
                             "(nested parameters are not supported)")
        _check_values(path, name, spec)
    config.setdefault("name", os.path.splitext(os.path.basename(path))[0])
    _check_flags(path, config["parameters"])
    return config


def _check_flags(path: str, parameters: dict) -> None:
    """A parameter the runner has no flag for would fail every point: say so before anything runs."""
    known = {s.lstrip("-").replace("-", "_") for a in runner_parser()._actions for s in a.option_strings}
    unknown = [name for name in parameters if name.replace("-", "_") not in known]
    if unknown:
        raise UsageError(f"sweep file {path}: train/run.py has no option for {', '.join(unknown)}")


def size(config: dict) -> int:
    """The number of grid points, as a product: known before any point is made."""
    return math.prod(len(spec["values"]) if "values" in spec else 1 for spec in config["parameters"].values())


def check_size(config: dict, max_points: int) -> None:
    points = size(config)
    if points > max_points:
        counts = " x ".join(str(len(s["values"])) for s in config["parameters"].values() if "values" in s)
        raise UsageError(f"sweep {config['name']} has {points:,} points ({counts}); at most {max_points:,} run "
                         "unless --max-points allows more")


def grid(config: dict) -> list[dict]:
    """Every point, in W&B's grid order: parameter names sorted, the last one varying fastest, each parameter's
    values in the order written (as the `sweeps` library's grid search, which a test compares against)."""
    names = sorted(config["parameters"])
    values = [config["parameters"][n]["values"] if "values" in config["parameters"][n]
              else [config["parameters"][n]["value"]] for n in names]
    return [dict(zip(names, combo)) for combo in itertools.product(*values)]


def point_name(sweep: str, point: dict) -> tuple[str, str]:
    """(folder/run name, W&B run id): fixed for a point of a sweep, so reruns find it again."""
    digest = hashlib.sha1(json.dumps([sweep, point], sort_keys=True).encode()).hexdigest()
    readable = "-".join(f"{k}{v}" for k, v in point.items() if k in ("model", "depth", "precision", "gpus", "seed"))
    return f"{readable}-{digest[:6]}" if readable else digest[:12], digest[:8]


def check_names(path: str, config: dict, out_dir_given: bool) -> None:
    """Every point's folder, and the sweep's when it makes the default out-dir, is one folder name: the values
    come from a YAML that someone else may have written. Refused before any point runs."""
    if not out_dir_given:
        check_run_name(str(config["name"]), made=f"the name of sweep file {path}, which makes its --out-dir")
    for point in grid(config):
        check_run_name(point_name(config["name"], point)[0], made=f"the folder name of a point of {path}")


def flags(point: dict) -> list[str]:
    """The point as W&B's ${args} writes it: --name=value; booleans as bare flags (True) or nothing (False)."""
    out = []
    for name, value in point.items():
        if isinstance(value, bool):
            out += [f"--{name}"] if value else []
        else:
            out.append(f"--{name}={value}")
    return out


def command(config: dict, point: dict, out_dir: str) -> tuple[list[str], str, str]:
    name, run_id = point_name(config["name"], point)
    argv = [sys.executable, os.path.join(ROOT, "train", "run.py"), *flags(point), "--out-dir", out_dir,
            "--name", name, "--resume", "auto", "--group", str(config["name"]), "--wandb-mode", "offline"]
    return argv, name, run_id


def finished(out_dir: str, name: str) -> bool:
    """The point ended: its result.json proves it as a resume would (it parses and names how the run ended).
    An unreadable one is not finished: its run, rerun with --resume auto, says so and continues."""
    try:
        return read_result(os.path.join(out_dir, name)) is not None
    except UnreadableResult:
        return False


def cmd_list(config: dict, out_dir: str) -> int:
    for point in grid(config):
        name, run_id = point_name(config["name"], point)
        print(json.dumps({**point, "_name": name, "_run_id": run_id,
                          "_finished": finished(out_dir, name)}))
    return 0


def cmd_local(config: dict, out_dir: str) -> int:
    points = grid(config)
    failed = skipped = diverged = refused = 0
    for i, point in enumerate(points, 1):
        argv, name, run_id = command(config, point, out_dir)
        if finished(out_dir, name):
            print(f"[{i}/{len(points)}] {name}: finished before, skipped", flush=True)
            skipped += 1
            continue
        print(f"[{i}/{len(points)}] {name}: {shlex.join(argv[1:])}", flush=True)
        code = _run_point(argv, run_id)
        if code == EXIT_INTERRUPTED:  # Ctrl-C: the point checkpointed (it got the same SIGINT); stop the sweep
            print(f"[{i}/{len(points)}] {name}: interrupted (Ctrl-C), checkpointed; run the same command to continue "
                  "the sweep from it", flush=True)
            return EXIT_INTERRUPTED
        if code == EXIT_DIVERGED:  # a result, recorded in its result.json: done, not to be retried
            print(f"[{i}/{len(points)}] {name}: diverged (a result; not retried)", flush=True)
            diverged += 1
        elif code == EXIT_USAGE:  # refused before it wrote anything (fp8 on a ResNet or on this device, a bad value)
            print(f"[{i}/{len(points)}] {name}: refused (exit 2: its line above says why; a rerun here refuses it "
                  "again)", flush=True)
            refused += 1
        elif code != 0:
            print(f"[{i}/{len(points)}] {name}: exited with status {code}", flush=True)
            failed += 1
    ran = len(points) - skipped
    print(f"{ran} point(s) run, {skipped} skipped as finished, {diverged} diverged, {failed} failed, {refused} "
          f"refused; runs in {out_dir}; upload with: wandb sync {out_dir}/*/wandb/offline-run-*")
    return 1 if failed or refused else 0


def _run_point(argv: list[str], run_id: str) -> int:
    """One point's run, to its end. Ctrl-C reaches the run too (one process group) and it checkpoints; the sweep
    waits for that instead of raising KeyboardInterrupt, on which subprocess kills the run 0.25 s later."""
    previous = signal.signal(signal.SIGINT, lambda signum, frame: None)  # not SIG_IGN: the run would inherit it
    try:
        return subprocess.call(argv, env={**os.environ, "WANDB_RUN_ID": run_id, "WANDB_MODE": "offline"})
    finally:
        signal.signal(signal.SIGINT, previous)


def cmd_slurm(config: dict, out_dir: str, args) -> int:
    groups: dict[int, list[tuple[list[str], str]]] = {}
    for point in grid(config):
        argv, name, run_id = command(config, point, out_dir)
        if not finished(out_dir, name):
            groups.setdefault(int(point.get("gpus", 1)), []).append((argv, run_id))
    if not groups:
        print(f"every point of {config['name']} has finished; nothing to submit")
        return 0
    state = os.path.join(out_dir, ".sweep")
    os.makedirs(os.path.join(state, "logs"), exist_ok=True)
    for gpus, tasks in sorted(groups.items()):
        # An array's tasks share one resource request: one array per GPU count.
        points_file = os.path.join(state, f"points-gpus{gpus}.txt")
        with open(points_file, "w") as f:
            for argv, run_id in tasks:
                f.write(f"WANDB_RUN_ID={run_id} {shlex.join(argv)}\n")
        array = f"0-{len(tasks) - 1}" + (f"%{args.max_parallel}" if args.max_parallel else "")
        sbatch = ["sbatch", "--parsable", f"--array={array}", f"--job-name={config['name']}-g{gpus}",
                  f"--output={state}/logs/%x-%A_%a.out", f"--chdir={ROOT}"]
        if args.gpu_request == "gres":
            sbatch.append(f"--gres=gpu:{gpus}")
        if args.cpus_per_task:
            sbatch.append(f"--cpus-per-task={args.cpus_per_task}")
        sbatch += [a for extra in args.sbatch for a in shlex.split(extra)]
        try:
            out = subprocess.run([*sbatch, ARRAY_SCRIPT, points_file], capture_output=True, text=True, check=True)
        except FileNotFoundError:
            raise UsageError("sbatch not found: run `slurm` on a Slurm login node (or use `local`)") from None
        except subprocess.CalledProcessError as e:
            raise UsageError(f"sbatch refused the {gpus}-GPU array: {e.stderr.strip().splitlines()[-1]}") from None
        job = out.stdout.strip().split(";")[0]
        print(f"submitted job array {job}: {len(tasks)} point(s) with {gpus} GPU(s) each")
    print(f"logs in {state}/logs; when done: wandb sync {out_dir}/*/wandb/offline-run-*")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m train.sweep", description=__doc__.split("\n\n")[0] + " " +
                      __doc__.split("\n\n")[2].replace("\n", " "))
    p.add_argument("sweep", help="a W&B sweep YAML with method: grid (sweeps/grid.yaml, sweeps/smoke.yaml)")
    p.add_argument("action", choices=("list", "local", "slurm"),
                   help="list: print the points as JSON lines in W&B's grid order; local: run them here one after "
                   "another; slurm: submit one job array per GPU count and print the job ids")
    p.add_argument("--out-dir", help="where the runs go (default: runs/<sweep name>)")
    p.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                   help="repeat every point once per seed (replaces the sweep's seed values); points with a seed "
                   "already run keep their folders and W&B ids")
    p.add_argument("--max-points", type=positive_int, default=MAX_POINTS, metavar="N",
                   help=f"refuse a grid of more than N points (default {MAX_POINTS:,}), counted before any is made")
    s = p.add_argument_group("slurm")
    s.add_argument("--gpu-request", choices=("gres", "none"), default="gres",
                   help="gres (default): each task asks for --gres=gpu:N; none: no GPU request (CPU clusters)")
    s.add_argument("--cpus-per-task", type=positive_int, help="passed to sbatch")
    s.add_argument("--max-parallel", type=positive_int, help="at most this many tasks of an array at once (%%N)")
    s.add_argument("--sbatch", action="append", default=[], metavar="ARGS",
                   help="more sbatch options, e.g. --sbatch '--partition=gpu --time=12:00:00' (repeatable)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load(args.sweep)
        if args.seeds:
            config["parameters"]["seed"] = {"values": list(dict.fromkeys(args.seeds))}
        check_size(config, args.max_points)
        check_names(args.sweep, config, out_dir_given=bool(args.out_dir))
        out_dir = os.path.abspath(args.out_dir or os.path.join("runs", str(config["name"])))
        if args.action == "list":
            return cmd_list(config, out_dir)
        if args.action == "local":
            return cmd_local(config, out_dir)
        return cmd_slurm(config, out_dir, args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
