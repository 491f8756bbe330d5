"""A ViT through the runner on CPU: each precision the CPU runs learns the tiny colour-coded set."""

import pytest
from conftest import write_cifar

from train.runner.options import parse_args
from train.runner.session import train


@pytest.mark.parametrize("precision", ["fp32", "amp_bf16", "bf16"])
def test_vit_learns_the_tiny_dataset(tmp_path, precision):
    data_dir = write_cifar(str(tmp_path / "data"), per_batch=32, n_test=64)
    summary = train(parse_args(["--model", "vit-smoke", "--data-dir", data_dir, "--out-dir", str(tmp_path),
                                "--epochs", "1", "--batch-size", "16", "--lr", "0.003", "--lr-warmup-epochs", "0.2",
                                "--wandb-mode", "disabled", "--precision", precision, "--device", "cpu",
                                "--num-workers", "0", "--log-every", "1", "--name", "v"]))
    assert summary["train/loss"]["last"] < summary["train/loss"]["max"] - 0.3
    assert summary["test/best_acc"] > 0.35  # ten colour-coded classes: chance is 0.1
    assert summary["arch"] == "vit-smoke"
