"""`python -m train.nodecheck --gpu-suite`: the project's GPU proof in one call (about 5 minutes on a GPU node):
the node check, the GPU test tier (`pytest -m gpu tests`, output and junit xml kept), a short study table (a
runner run of ResNet-18 per runnable precision but fp8, each with a profiled window, then `python -m report` on
them: where each precision's step time goes) and, where the GPU has fp8, ViT-S and ViT-B in bf16, amp_bf16 and fp8,
compiled, side by side in one benchmark, all under one folder:

    OUT/nodecheck/   nodecheck.json, .md, nodecheck-benchmark.log  OUT/gpu-tests.txt, OUT/gpu-tests.xml
    OUT/study/       the runs                                      OUT/report/   results.md, results.csv, ...
    OUT/vit/         the ViT benchmark's runs; OUT/vit.txt its tables   OUT/vit-report/  their report
    OUT/suite.md     each step: status, seconds, where its output is

On a CPU node the same code runs with --device cpu (the GPU tests then skip): the rehearsal."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time

from train.contract.errors import first_line
from train.runner.options import PROFILE_STEPS  # each study run's profiled window (docs/profile.md)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# per device: (batch, --max-steps, --warmup-steps) of each study run: 50 timed steps on a GPU, so the report does
# not flag the runs as too short; a few on a CPU, where a step of 32 images takes ~0.5 s.
STUDY = {"cuda": (512, 60, 10), "cpu": (32, 6, 2)}
# The ViT benchmark (GPUs with fp8 only): batch, steps per round, warm-up steps, rounds; every point compiles
# (torchao's fp8 wants torch.compile), its processes set up together, so its time is mostly one compile.
VIT = (256, 50, 10, 2)
TEST_TIMEOUT_S, RUN_TIMEOUT_S, VIT_TIMEOUT_S = 240, 180, 180
# The whole suite fits one call of the GPU machine (at most 10 minutes, ~8 planned): the ViT benchmark, last and
# the one step that may be left for later, gets what is left of this, and is skipped with its command when that is
# too little to compile and time anything.
SUITE_BUDGET_S, VIT_MIN_S = 540, 60


def _step(steps: list[dict], name: str, work) -> bool:
    started = time.perf_counter()
    try:
        ok, detail = work()
    except Exception as e:  # noqa: BLE001 - a failing step is reported, the suite goes on
        ok, detail = False, f"{type(e).__name__}: {first_line(e)}"
    steps.append({"step": name, "ok": ok, "seconds": time.perf_counter() - started, "detail": detail})
    print(f"{'✓' if ok else '✗'} {name}: {detail} ({steps[-1]['seconds']:.0f} s)", flush=True)
    return ok


def _logged(cmd: list[str], log: str, timeout: float, env: dict | None = None) -> int:
    with open(log, "w") as f:
        try:
            return subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  timeout=timeout, env={**os.environ, **(env or {})}).returncode
        except subprocess.TimeoutExpired:
            f.write(f"\nkilled after {timeout:.0f} s\n")
            return 124


def gpu_tests(out: str) -> tuple[bool, str]:
    log, xml = os.path.join(out, "gpu-tests.txt"), os.path.join(out, "gpu-tests.xml")
    # -v: a line per test as it ends, so a tier killed at its timeout still says which tests passed
    code = _logged([sys.executable, "-m", "pytest", "-v", "-rs", "-p", "no:cacheprovider", "-m", "gpu", "tests",
                    f"--junitxml={xml}"], log, TEST_TIMEOUT_S, {"WANDB_MODE": "disabled"})
    with open(log) as f:
        lines = [line.strip() for line in f if line.strip()]
    summary = lines[-1].strip("= ") if lines else "no output"
    return code == 0, f"{summary} (exit {code}; {log}, {xml})"


def study(out: str, device: str, precisions: list[str], nodecheck: str) -> tuple[bool, str]:
    batch, steps, warmup = STUDY[device]
    runs = os.path.join(out, "study")
    os.makedirs(runs, exist_ok=True)
    failed = []
    precisions = [p for p in precisions if not _fp8(p)]  # a ResNet refuses fp8: the ViT step runs it
    for p in precisions:
        code = _logged([sys.executable, os.path.join(ROOT, "train", "run.py"), "--precision", p, "--dataset",
                        "synthetic", "--batch-size", str(batch), "--max-steps", str(steps), "--warmup-steps",
                        str(warmup), "--log-every", str(steps), "--device", device, "--out-dir", runs, "--name",
                        f"r18-{p}", "--wandb-mode", "offline", "--nodecheck", nodecheck, "--profile",
                        str(PROFILE_STEPS)], os.path.join(runs, f"r18-{p}.log"), RUN_TIMEOUT_S)
        if code:
            failed.append(f"{p} (exit {code}, {os.path.join(runs, f'r18-{p}.log')})")
    report_out = os.path.join(out, "report")
    code = _logged([sys.executable, "-m", "report", runs, "--out", report_out], os.path.join(out, "report.log"),
                   RUN_TIMEOUT_S)
    if code:
        failed.append(f"report (exit {code}, {os.path.join(out, 'report.log')})")
    ran = len(precisions) - sum(not f.startswith("report") for f in failed)
    return not failed, (f"{ran}/{len(precisions)} runs ({', '.join(precisions)}), table in "
                        f"{os.path.join(report_out, 'results.md')}" + (f"; failed: {'; '.join(failed)}" if failed else ""))


def _fp8(precision: str) -> bool:
    from train.numerics.precision import POLICIES

    return bool(POLICIES[precision].fp8_recipe)


def vit_fp8(out: str, device: str, precisions: list[str], left_s: float = VIT_TIMEOUT_S) -> tuple[bool, str]:
    """ViT-S and ViT-B in bf16, amp_bf16 and each fp8 recipe the GPU runs, compiled, in one benchmark, in at most
    `left_s` seconds (skipped, with its command, when that is too little)."""
    fp8 = [p for p in precisions if _fp8(p)]
    if device != "cuda" or not fp8:
        return True, "skipped: fp8 needs an NVIDIA GPU of compute capability 8.9+ (none here)"
    batch, steps, warmup, rounds = VIT
    table, runs = os.path.join(out, "vit.txt"), os.path.join(out, "vit")
    cmd = [sys.executable, "-m", "train.benchmark", "--models", "vit-s", "vit-b", "--precisions", "bf16",
           "amp_bf16", *fp8, "--compile", "default", "--batch-size", str(batch), "--steps", str(steps),
           "--warmup-steps", str(warmup), "--rounds", str(rounds), "--device", device, "--out-dir", runs,
           "--wandb-mode", "offline"]  # profiled (the default): the report then says where fp8's time went
    if left_s < VIT_MIN_S:
        return True, (f"skipped: {left_s:.0f} s of the suite's {SUITE_BUDGET_S} s left; run it on its own: "
                      f"python {' '.join(cmd[1:])}")
    started = time.perf_counter()
    code = _logged(cmd, table, min(VIT_TIMEOUT_S, left_s))
    if code:
        return False, f"exit {code}; {table}"
    # fp8 against bf16 per width, with its matrix shapes and profiled matmul time: the report's Observations
    report_out = os.path.join(out, "vit-report")
    code = _logged([sys.executable, "-m", "report", runs, "--out", report_out], os.path.join(out, "vit-report.log"),
                   max(10.0, left_s - (time.perf_counter() - started)))
    return code == 0, f"exit {code}; images/s side by side in {table}, fp8 against bf16 in {report_out}/results.md"


def run(args) -> int:
    from train.nodecheck.cli import node_check, prepare_out_dir

    started = time.perf_counter()
    out = prepare_out_dir(args.out_dir)
    steps: list[dict] = []
    found: dict = {}

    def check():
        nc_args = copy.copy(args)
        nc_args.out_dir = os.path.join(out, "nodecheck")
        code, doc = node_check(nc_args)
        found.update(doc)
        failed = [c["name"] for c in doc["checks"] if c["status"] == "fail"]
        return not failed, f"{len(doc['checks'])} checks" + (f", failed: {', '.join(failed)}" if failed else "")

    _step(steps, "node check", check)
    print(flush=True)
    _step(steps, "GPU test tier", lambda: gpu_tests(out))
    device = found.get("device") or ("cuda" if args.device == "cuda" else "cpu")
    precisions = found.get("runnable_precisions") or ["fp32"]
    _step(steps, "study table", lambda: study(out, device, precisions,
                                              os.path.join(out, "nodecheck", "nodecheck.json")))
    _step(steps, "ViT fp8", lambda: vit_fp8(out, device, precisions,
                                             SUITE_BUDGET_S - (time.perf_counter() - started)))
    total = time.perf_counter() - started
    lines = [f"# GPU suite on {found.get('host', '?')} ({found.get('device_name', '?')})", "",
             f"{time.strftime('%Y-%m-%d %H:%M:%S')}, {total:.0f} s in all.", "", "| | step | s | result |",
             "|---|---|---|---|"]
    lines += [f"| {'✓' if s['ok'] else '✗'} | {s['step']} | {s['seconds']:.0f} | {s['detail']} |" for s in steps]
    with open(os.path.join(out, "suite.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"\nGPU suite: {sum(s['ok'] for s in steps)}/{len(steps)} steps passed in {total:.0f} s; "
          f"{os.path.join(out, 'suite.md')}")
    return 0 if all(s["ok"] for s in steps) else 1
