"""The command line as a user meets it: --help, the original study's flags, and one-line errors (exit 2)."""

import os

import pytest

from conftest import ROOT, run_cli
from train.config import build_parser, parse_args

OPTIONS = ["--depth", "--precision", "--epochs", "--max-steps", "--batch-size", "--lr", "--optimizer", "--num-workers",
           "--dataset", "--data-dir", "--download", "--loader", "--device", "--out-dir", "--project", "--entity",
           "--group", "--name", "--tags", "--wandb-mode", "--log-every", "--ckpt-every", "--ckpt-artifact", "--seed",
           "--resume", "--nvml-hz", "--wandb-stats-interval", "--wandb-init-timeout", "--gpus", "--nodes",
           "--rdzv-endpoint", "--rdzv-id", "--dist-timeout", "--grad-compress", "--lr-scaling", "--target-acc",
           "--stop-at-acc", "--use_34", "--use_50", "--use_amp", "--use_half", "--use_cuda", "--use_ddp", "--num_workers",
           "--epoch", "--batch_size"]


def test_help_explains_every_option_and_the_readme_lists_them():
    text = build_parser().format_help()
    readme = open(os.path.join(ROOT, "README.md")).read()
    for option in OPTIONS:
        assert option in text, option
        assert f"`{option}" in readme, f"README's flag table lacks {option}"
    for precision in ("fp32", "tf32", "amp_fp16", "amp_bf16", "fp16", "bf16"):
        assert precision in text


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
    (["--device", "cuda", "--dataset", "synthetic"], ["cuda"]),
    (["--resume", "auto", "--dataset", "synthetic"], ["--resume auto", "--name"]),
])
def test_bad_flags_get_one_line_and_exit_2(args, words):
    _one_line_error(run_cli(*args), *words)


def test_missing_dataset_gets_one_line_naming_the_path(tmp_path):
    result = run_cli("--data-dir", str(tmp_path / "none"), "--out-dir", str(tmp_path / "runs"))
    _one_line_error(result, str(tmp_path / "none"), "--download")
    assert not os.path.exists(tmp_path / "runs" / "r18-fp32")


def test_corrupt_dataset_gets_one_line_naming_the_file(cifar_dir, tmp_path):
    bad = os.path.join(cifar_dir, "cifar-10-batches-py", "data_batch_2")
    open(bad, "wb").write(b"\x80\x02garbage")
    _one_line_error(run_cli("--data-dir", cifar_dir, "--out-dir", str(tmp_path / "runs")), bad)


def test_unwritable_out_dir_gets_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder should be")
    _one_line_error(run_cli("--dataset", "synthetic", "--out-dir", str(blocker / "runs")), str(blocker / "runs"))


def test_precision_the_cpu_cannot_run_fails_before_training(tmp_path):
    result = run_cli("--precision", "tf32", "--dataset", "synthetic", "--out-dir", str(tmp_path))
    _one_line_error(result, "tf32", "cpu")
    assert os.listdir(tmp_path) == []  # nothing written


def test_a_run_prints_plain_progress_lines_when_output_is_not_a_terminal(cifar_dir, tmp_path):
    result = run_cli("--data-dir", cifar_dir, "--out-dir", str(tmp_path), "--epochs", "1", "--batch-size", "8",
                     "--log-every", "5", "--depth", "18")
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stdout
    assert "epoch 1/1 step 5/10 loss" in result.stdout and "epoch 1/1 step 10/10 loss" in result.stdout
    assert "epoch 1/1 done" in result.stdout and "test/acc" in result.stdout
