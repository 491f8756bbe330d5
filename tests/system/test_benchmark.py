"""The benchmark as a user starts it: several points, each its own runner process, in interleaved rounds."""

import json
import os
import re
import subprocess
import sys

from conftest import ROOT


def _bench(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "train.benchmark", "--steps", "2", "--warmup-steps", "1",
                           "--batch-size", "4", "--device", "cpu", "--out-dir", str(tmp_path), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_quick_start_interleaves_rounds_prints_ratios_with_their_range_and_the_reason_for_points_not_run(tmp_path):
    out = _bench(tmp_path, "--precisions", "fp32", "tf32", "bf16", "--rounds", "2", "--bare", "--wandb-mode",
                 "offline")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    # Interleaved: round 1 gives every point (two runners, their bare loops) a turn before round 2 gives any, after
    # the runners' untimed profiled round (--profile is on by default: 1 step, all a 2-step round has room for).
    marks = [line.split(":")[0] for line in text.splitlines() if line.startswith("== ")][1:]
    assert marks == ["== profile round"] * 2 + ["== round 1/2"] * 4 + ["== round 2/2"] * 4
    assert text.count("  set up: ") == 4  # each point set up once, for all its rounds
    assert "Step time by operation class" in text and "1 profiled step(s) per point" in text
    table_text = text[text.index("model  precision"):]
    rows = {line.split()[1]: line.split() for line in table_text.splitlines()[2:5]}
    assert rows["fp32"][5:7] == ["1.00x", "[1.00-1.00]"] and rows["fp32"][-1] == "1.00x"  # median [min-max]
    assert rows["tf32"][4] == "-"
    assert "tf32 (resnet18, device, compile none): precision tf32 cannot run on cpu" in table_text
    bare = text[text.index("runner/bare (step)"):].splitlines()[2].split()
    assert bare[:4] == ["resnet18", "fp32", "device", "none"] and bare[4].endswith("x") and bare[5].startswith("[")
    assert "goal >= 0.97" in text
    assert "AVX512-BF16" in text and "AMX-BF16" in text  # CPU ratios name the features they depend on
    runs = [d for d in os.listdir(tmp_path) if d.startswith("r18-fp32") and os.path.isdir(tmp_path / d)]
    assert len(runs) == 1  # one run for the point's rounds, with its checkpoint and log
    result = json.load(open(tmp_path / runs[0] / "result.json"))
    assert result["train/steps"] == 6 and os.path.exists(tmp_path / runs[0] / "checkpoint.pt")  # 2 profiled, 2x2
    assert [len(r) for r in result["bench/round_step_s"]] == [2, 2]  # the timed rounds, for the report
    assert result["time/setup_s"] > 0 and result["time/compile_s"] is None
    assert "done: " in open(tmp_path / f"{runs[0]}.log").read()

    # The README's next step: the newcomer's first report has the ratios, the Observations and the breakdown.
    report = subprocess.run([sys.executable, "-m", "report", str(tmp_path), "--out", str(tmp_path / "report")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    md = open(tmp_path / "report" / "results.md").read()
    observed = md[md.index("### Observations"):md.index("## All points")]
    # The speed-up paired within the rounds, with its range; or, when the rounds' range is too wide (2 rounds of 1
    # timed step of 4 images beside another test file on 2 cores), said so: either way not "too short to measure".
    assert re.search(r"bf16: throughput \d\.\d\d× fp32's \(\d\.\d\d–\d\.\d\d over 2 interleaved round\(s\)", observed) \
        or "Left out, its range over rounds too wide to conclude (!): bf16." in observed, observed
    assert re.search(r"\| bf16 \| ResNet-18 \| CPU \| 1 \|.* \d\.\d\d \(\d\.\d\d–\d\.\d\d\) § ", md), md
    where = observed[observed.index("Where the time went (profiled runs, --profile): "):]
    # decomposed, or (a one-step window of 4 images, two test files at once on 2 cores) said to be disturbed
    assert where.split(": ", 1)[1].startswith(("bf16 is", "Left out, their profiled step not their timed")), where
    assert "too short to measure" not in observed and "§ measured in a benchmark's interleaved rounds" in md
    assert os.path.exists(tmp_path / "report" / "step_breakdown.png")
