"""The command line as a user meets it: --help, the original study's flags, and one-line errors (exit 2)."""

import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, run_cli, run_in_process

from train.runner.options import EXPERIMENT_FLAGS, RunConfig, build_parser, differences, experiment, markdown, parse_args

# The flags users, sweeps and the original study's scripts pass: each must keep working and be explained.
OPTIONS = ["--depth", "--precision", "--epochs", "--max-steps", "--batch-size", "--lr", "--optimizer", "--num-workers",
           "--dataset", "--data-dir", "--download", "--loader", "--device", "--out-dir", "--project", "--entity",
           "--group", "--name", "--tags", "--wandb-mode", "--log-every", "--ckpt-every", "--ckpt-artifact", "--seed",
           "--resume", "--nvml-hz", "--wandb-stats-interval", "--wandb-init-timeout", "--gpus", "--nodes",
           "--rdzv-endpoint", "--rdzv-id", "--dist-timeout", "--grad-compress", "--lr-scaling", "--target-acc",
           "--stop-at-acc", "--use_34", "--use_50", "--use_amp", "--use_half", "--use_cuda", "--use_ddp", "--num_workers",
           "--epoch", "--batch_size", "--compile", "--max-restarts"]


def test_help_and_the_options_page_explain_every_option():
    text = build_parser().format_help()
    page = markdown()
    for option in OPTIONS:
        assert option in text, option
        assert f"`{option}" in page, f"docs/options.md lacks {option}"
    for precision in ("fp32", "tf32", "amp_fp16", "amp_bf16", "fp16", "bf16"):
        assert precision in text


def test_docs_options_md_is_the_generated_page():
    """docs/options.md is generated from RunConfig's option spec; after changing an option, regenerate it with
    `python -m train.runner.options --markdown > docs/options.md`."""
    out = subprocess.run([sys.executable, "-m", "train.runner.options", "--markdown"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    with open(os.path.join(ROOT, "docs", "options.md")) as f:
        assert f.read() == out.stdout, "docs/options.md is stale: regenerate it (see this test's docstring)"


def test_the_experiment_identity_is_the_settings_a_resume_must_match():
    # Changing this set makes checkpoints written before the change refuse to resume (or resume a different run).
    assert EXPERIMENT_FLAGS == ("depth", "precision", "dataset", "batch_size", "optimizer", "lr", "lr_scaling",
                                "momentum", "weight_decay", "lr_schedule", "epochs", "seed", "loader", "num_workers",
                                "grad_compress", "compile")
    a, b = parse_args(["--name", "a", "--max-steps", "3", "--log-every", "1"]), parse_args(["--seed", "1"])
    same = dict(world_size=1, train_images=50000, device="cpu")
    assert differences(experiment(a, **same), experiment(parse_args([]), **same)) == []
    assert differences(experiment(b, **same), experiment(parse_args([]), **same)) == ["seed 1 -> 0"]


def test_every_option_answers_to_underscores_and_defaults_match_run_config():
    cfg = parse_args(["--max_steps=3", "--weight_decay", "0.1", "--lr_schedule=constant", "--out_dir", "x"])
    assert (cfg.max_steps, cfg.weight_decay, cfg.lr_schedule, cfg.out_dir) == (3, 0.1, "constant", "x")
    assert parse_args([]) == RunConfig()


def test_original_study_flags_keep_working():
    cfg = parse_args(["--use_34", "--use_amp", "--use_cuda", "--use_ddp", "--num_workers=2", "--optimizer", "sgd",
                      "--lr", "0.005", "--epoch", "600", "--batch_size", "128"])
    assert (cfg.depth, cfg.precision, cfg.device, cfg.use_ddp) == (34, "amp_fp16", "cuda", True)
    assert (cfg.num_workers, cfg.optimizer, cfg.lr, cfg.epochs, cfg.batch_size) == (2, "sgd", 0.005, 600, 128)
    assert parse_args(["--use_50", "--use_half"]).depth == 50
    assert parse_args(["--use_half"]).precision == "fp16"


def _one_line_error(result, *words):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.mark.parametrize("args, words", [
    (["--precision", "fp8"], ["--precision", "fp8"]),
    (["--depth", "101"], ["--depth", "101"]),
    (["--batch-size", "0"], ["--batch-size", "positive"]),
    (["--batch_size", "-4"], ["--batch_size", "positive"]),
    (["--lr", "-1"], ["--lr"]),
    (["--use_amp", "--use_half"], ["--use_half", "--use_amp"]),
    (["--depth", "18", "--use_50"], ["--use_50", "--depth"]),
    (["--use_cuda", "--device", "cpu"], ["--device", "--use_cuda"]),
    (["--max_steps=0"], ["--max-steps", "positive"]),
    pytest.param(["--device", "cuda", "--dataset", "synthetic"], ["cuda"],
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="asserts that no GPU is visible")),
    (["--resume", "auto", "--dataset", "synthetic"], ["--resume auto", "--name"]),
    (["--max-restarts", "-1"], ["--max-restarts", "integer >= 0", "-1"]),
    (["--max-restarts", "two"], ["--max-restarts", "integer >= 0", "two"]),
])
def test_bad_flags_get_one_line_and_exit_2(args, words):
    _one_line_error(run_in_process(*args), *words)


def test_a_bad_flag_on_the_command_line_is_one_line_and_exit_2():
    """The real command: train/run.py answers a bad flag before importing torch, in the same one line."""
    _one_line_error(run_cli("--lr", "fast"), "--lr", "fast")


@pytest.mark.parametrize("args, words", [
    ([], ["--max-restarts 1", "--gpus", "--resume auto"]),  # a single process: nothing would restart it
    (["--gpus", "1", "--nodes", "2", "--rdzv-endpoint", "127.0.0.1:1"], ["--max-restarts", "--name"]),
], ids=["single process", "several nodes without --name"])
def test_max_restarts_where_a_restart_could_not_work_gets_one_line_and_writes_nothing(tmp_path, args, words):
    result = run_cli("--max-restarts", "1", *args, "--dataset", "synthetic", "--device", "cpu", "--out-dir",
                     str(tmp_path / "runs"))
    _one_line_error(result, *words)
    assert not os.path.exists(tmp_path / "runs")


def test_missing_dataset_gets_one_line_naming_the_path(tmp_path):
    result = run_in_process("--data-dir", str(tmp_path / "none"), "--out-dir", str(tmp_path / "runs"), "--device", "cpu")
    _one_line_error(result, str(tmp_path / "none"), "--download")
    assert not os.path.exists(tmp_path / "runs" / "r18-fp32")


def test_corrupt_dataset_gets_one_line_naming_the_file(cifar_dir, tmp_path):
    bad = os.path.join(cifar_dir, "cifar-10-batches-py", "data_batch_2")
    open(bad, "wb").write(b"\x80\x02garbage")
    _one_line_error(run_in_process("--data-dir", cifar_dir, "--out-dir", str(tmp_path / "runs"), "--device", "cpu"), bad)


def test_unwritable_out_dir_gets_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder should be")
    _one_line_error(run_in_process("--dataset", "synthetic", "--out-dir", str(blocker / "runs"), "--device", "cpu"),
                    str(blocker / "runs"))


def test_precision_the_cpu_cannot_run_fails_before_training(tmp_path):
    result = run_in_process("--precision", "tf32", "--dataset", "synthetic", "--out-dir", str(tmp_path), "--device", "cpu")
    _one_line_error(result, "tf32", "cpu")
    assert os.listdir(tmp_path) == []  # nothing written


def test_a_run_prints_plain_progress_lines_when_output_is_not_a_terminal(cifar_dir, tmp_path):
    result = run_in_process("--data-dir", cifar_dir, "--out-dir", str(tmp_path), "--epochs", "1", "--batch-size", "8",
                            "--log-every", "5", "--depth", "18", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stdout
    assert "epoch 1/1 step 5/10 loss" in result.stdout and "epoch 1/1 step 10/10 loss" in result.stdout
    assert "epoch 1/1 done" in result.stdout and "test/acc" in result.stdout


@pytest.mark.parametrize("command", [["train/run.py"], ["-m", "train.benchmark"], ["-m", "train.benchmark.bare"]])
def test_help_answers_without_importing_torch_and_prints_each_default_once(command):
    out = subprocess.run([sys.executable, "-X", "importtime", *command, "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert "torch" not in imported and "wandb" not in imported
    options = out.stdout.split("\n  -")  # one block per option
    for block in options:
        assert block.count("default:") <= 1, block
    assert "(default: $SLURM_JOB_ID) (default: None)" not in out.stdout


def test_a_max_steps_run_shows_steps_not_epochs_and_a_line_after_the_first_step(tmp_path):
    result = run_in_process("--dataset", "synthetic", "--max-steps", "3", "--batch-size", "4", "--log-every", "2",
                            "--out-dir", str(tmp_path), "--device", "cpu")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "epoch 1/600" not in result.stdout
    assert lines.index("step 1/3") < lines.index(next(x for x in lines if x.startswith("step 2/3 loss")))
    assert any(x.startswith("step 3/3 loss") for x in lines) and any(x.startswith("step 3/3 done") for x in lines)
    assert any(x.startswith("set-up ") and "time/setup_s" in x for x in lines)


class _Stream:
    def __init__(self, tty: bool):
        self.tty, self.text = tty, ""

    def isatty(self):
        return self.tty

    def write(self, s):
        self.text += s

    def flush(self):
        pass


def test_the_bar_advances_every_step_with_rate_and_eta_and_shows_loss_from_log_windows(monkeypatch):
    from train.runner import console as console_module

    clock = iter(range(100))
    monkeypatch.setattr(console_module.time, "perf_counter", lambda: float(next(clock)))
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    stream = _Stream(tty=True)
    c = console_module.Console(total_steps=4, epochs=600, stream=stream, steps_only=True)
    for step in (1, 2, 3):
        c.step(0, step)
    frames = stream.text.split("\r")[1:]
    assert len(frames) == 3 and "step 3/4" in frames[-1] and "step/s" in frames[-1] and "eta" in frames[-1]
    assert "epoch" not in stream.text and "loss" not in stream.text
    c.progress(0, 4, 2.5, 123.0)
    assert "step 4/4 loss 2.5000 123 img/s" in stream.text.split("\r")[-1]


def test_without_a_terminal_a_line_comes_after_the_first_step_then_every_interval_and_at_windows(monkeypatch):
    from train.runner import console as console_module

    now = [0.0]
    monkeypatch.setattr(console_module.time, "perf_counter", lambda: now[0])
    stream = _Stream(tty=False)
    c = console_module.Console(total_steps=100, epochs=1, stream=stream, interval_s=30)
    for step in range(1, 11):
        now[0] = step * 10.0  # 10 s a step
        c.step(0, step)
    lines = stream.text.splitlines()
    assert [line.split()[3] for line in lines] == ["1/100", "4/100", "7/100", "10/100"]  # first, then every 30 s
    assert "\r" not in stream.text and lines[-1].startswith("epoch 1/1 step 10/100")
    c.progress(0, 10, 2.0, 5.0)
    assert stream.text.splitlines()[-1].startswith("epoch 1/1 step 10/100 loss 2.0000")


def test_resume_auto_plans_a_start_a_continuation_or_nothing_and_leaves_the_config_as_parsed(tmp_path, monkeypatch):
    from train.contract.errors import UsageError
    from train.runner import checkpoint
    from train.runner.resume import ResumePlan, plan_resume

    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    cfg = parse_args(["--resume", "auto", "--name", "r", "--out-dir", str(tmp_path)])
    run_dir = str(tmp_path / "r")
    assert plan_resume(cfg) == ResumePlan(run_dir=run_dir, name="r")  # nothing there: start it
    os.makedirs(run_dir)
    open(os.path.join(run_dir, checkpoint.FILENAME), "wb").close()
    assert plan_resume(cfg) == ResumePlan(run_dir=run_dir, name="r",
                                          checkpoint=os.path.join(run_dir, checkpoint.FILENAME))
    with open(os.path.join(run_dir, "result.json"), "w") as f:
        f.write('{"train/steps": 20, "end": "finished"}')  # proof of an end: it parses and names it
    assert plan_resume(cfg).ended == "finished at step 20" and plan_resume(cfg).checkpoint is None
    assert (cfg.resume, cfg.name) == ("auto", "r")

    monkeypatch.setenv("WANDB_RUN_ID", "abc")  # a sweep agent's run: named after its id
    assert plan_resume(parse_args(["--resume", "auto", "--out-dir", str(tmp_path)])).name == "r18-fp32-abc"
    monkeypatch.delenv("WANDB_RUN_ID")
    with pytest.raises(UsageError, match="needs --name"):
        plan_resume(parse_args(["--resume", "auto"]))
    with pytest.raises(UsageError, match="no checkpoint at"):
        plan_resume(parse_args(["--resume", str(tmp_path)]))
    assert plan_resume(parse_args(["--name", "n"])) == ResumePlan(name="n")


def test_a_restarted_worker_continues_the_run_the_first_start_began(tmp_path, monkeypatch):
    """The elastic agent's restart (TORCHELASTIC_RESTART_COUNT > 0) of a command without --resume continues
    OUT_DIR/NAME from its checkpoint; under restarts a run whose folder a restart could not find is refused."""
    from train.contract.errors import UsageError
    from train.runner import checkpoint
    from train.runner.resume import plan_resume

    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    first, restarted = {"restart": 0, "max_restarts": 1}, {"restart": 1, "max_restarts": 1}
    cfg = parse_args(["--name", "r", "--out-dir", str(tmp_path)])
    os.makedirs(tmp_path / "r")
    open(tmp_path / "r" / checkpoint.FILENAME, "wb").close()
    assert plan_resume(cfg, restarted).checkpoint == str(tmp_path / "r" / checkpoint.FILENAME)
    assert cfg.resume is None  # as parsed: the plan is the restart's
    assert plan_resume(cfg, first).checkpoint is None  # a first start without --resume: a new run, as ever
    with pytest.raises(UsageError, match="--max-restarts.*--name"):
        plan_resume(parse_args(["--out-dir", str(tmp_path)]), first)  # torchrun --max-restarts, no --name
    monkeypatch.setenv("WANDB_RUN_ID", "abc")  # what launch() fixes on one node: the name is made from it
    assert plan_resume(parse_args(["--out-dir", str(tmp_path)]), restarted).run_dir == str(tmp_path / "r18-fp32-abc")
