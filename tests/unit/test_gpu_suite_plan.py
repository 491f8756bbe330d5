"""What `--gpu-suite` asks of a GPU with fp8 (an H200), shown on CPU by recording its commands instead of running
them: the ResNet study runs every precision but fp8 (a ResNet refuses fp8, which would fail the step), each with a
profiled window, and the ViTs run fp8 beside bf16 and amp_bf16, compiled, in one benchmark."""

from train.nodecheck import gpu_suite

H200 = ["fp32", "tf32", "amp_fp16", "amp_bf16", "fp16", "bf16", "fp8_tensorwise", "fp8_rowwise"]


def _recorded(monkeypatch):
    commands = []
    monkeypatch.setattr(gpu_suite, "_logged", lambda cmd, log, timeout, env=None: commands.append(cmd) or 0)
    return commands


def _flag(cmd, name):
    return cmd[cmd.index(name) + 1]


def test_the_study_profiles_every_precision_but_fp8_on_the_resnet(monkeypatch, tmp_path):
    commands = _recorded(monkeypatch)
    ok, detail = gpu_suite.study(str(tmp_path), "cuda", H200, "nodecheck.json")
    runs = [c for c in commands if c[1].endswith("run.py")]
    assert ok and [_flag(c, "--precision") for c in runs] == H200[:6]
    assert all(_flag(c, "--profile") == "3" for c in runs)
    assert detail.startswith("6/6 runs")


def test_the_vits_run_fp8_beside_bf16_compiled_where_the_gpu_has_it_and_skip_elsewhere(monkeypatch, tmp_path):
    commands = _recorded(monkeypatch)
    assert gpu_suite.vit_fp8(str(tmp_path), "cuda", H200)[0]
    bench, report = commands
    assert report[1:3] == ["-m", "report"] and report[3] == bench[bench.index("--out-dir") + 1]
    assert "--profile" not in bench  # the benchmark's default: profiled, for the report's fp8 paragraph
    assert bench[1:3] == ["-m", "train.benchmark"] and bench[bench.index("--models") + 1:][:2] == ["vit-s", "vit-b"]
    precisions = bench[bench.index("--precisions") + 1:bench.index("--compile")]
    assert precisions == ["bf16", "amp_bf16", "fp8_tensorwise", "fp8_rowwise"] and _flag(bench, "--compile") == "default"
    ok, detail = gpu_suite.vit_fp8(str(tmp_path), "cuda", H200[:6])  # an A100: no fp8
    assert ok and detail.startswith("skipped: fp8 needs") and len(commands) == 2


def test_the_vit_benchmark_gets_what_is_left_of_the_suites_budget_or_is_skipped_with_its_command(monkeypatch,
                                                                                                   tmp_path):
    timeouts = []
    monkeypatch.setattr(gpu_suite, "_logged", lambda cmd, log, timeout, env=None: timeouts.append(timeout) or 0)
    assert gpu_suite.vit_fp8(str(tmp_path), "cuda", H200, left_s=100.0)[0] and timeouts[0] == 100.0
    assert len(timeouts) == 2 and 10 <= timeouts[1] <= 100  # then the report, in what is left
    ok, detail = gpu_suite.vit_fp8(str(tmp_path), "cuda", H200, left_s=20.0)
    assert ok and len(timeouts) == 2  # not started
    assert detail.startswith("skipped: 20 s of the suite's 540 s left; run it on its own: python -m train.benchmark")
