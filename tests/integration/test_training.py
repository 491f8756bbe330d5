"""Runs of the runner itself: which depth x precision trains on CPU, what it logs to W&B, checkpoints, resume."""

import json
import os
import shutil

import pytest
import torch
from conftest import run_cli
from metric_contract import (
    CONFIG_KEYS,
    CONFIG_NESTED,
    CPU_STEP_KEYS,
    CPU_SUMMARY_KEYS,
    EPOCH_KEYS,
    SCALED_STEP_KEYS,
    STEP_KEYS,
    SUMMARY_KEYS,
)
from wandb_reader import _inspect

from train.contract.errors import UsageError
from train.runner import checkpoint
from train.runner.options import parse_args
from train.runner.session import train
from train.runner.wandb_config import wandb_config

CPU_TRAINS = {"fp32", "amp_bf16", "bf16"}
CPU_REFUSES = {"tf32": "TF32", "amp_fp16": "float16", "fp16": "float16"}


def _run(tmp_path, *extra):
    return train(parse_args(["--dataset", "synthetic", "--max-steps", "2", "--batch-size", "4", "--log-every", "1",
                             "--warmup-steps", "0", "--device", "cpu", "--wandb-mode", "disabled",
                             "--out-dir", str(tmp_path), *extra]))


@pytest.mark.parametrize("depth", [18, 34, 50])
@pytest.mark.parametrize("precision", sorted(CPU_TRAINS | set(CPU_REFUSES)))
def test_every_depth_and_precision_trains_on_cpu_or_fails_fast(tmp_path, depth, precision):
    if precision in CPU_REFUSES:
        with pytest.raises(UsageError) as e:
            _run(tmp_path, "--depth", str(depth), "--precision", precision)
        assert f"precision {precision}" in str(e.value) and "cpu" in str(e.value)
        assert CPU_REFUSES[precision] in str(e.value)
        assert os.listdir(tmp_path) == []
        return
    summary = _run(tmp_path, "--depth", str(depth), "--precision", precision)
    assert summary["train/steps"] == 2 and summary["train/images_per_s"] > 0
    state = torch.load(os.path.join(summary["run_dir"], "checkpoint.pt"), weights_only=True)["state"]
    weights = {k: v for k, v in state["model"].items() if v.is_floating_point()}
    bn = {k: v for k, v in weights.items() if k.split(".")[-2].startswith("bn") or "downsample.1." in k}
    conv = {k: v for k, v in weights.items() if k not in bn}
    expected = torch.bfloat16 if precision == "bf16" else torch.float32
    assert {v.dtype for v in conv.values()} == {expected}
    assert {v.dtype for v in bn.values()} == {torch.float32}  # BatchNorm stays fp32 in every policy


def test_pure_bf16_checkpoint_is_about_half_of_fp32(tmp_path):
    fp32 = _run(tmp_path / "a", "--precision", "fp32")["ckpt/size_bytes"]
    bf16 = _run(tmp_path / "b", "--precision", "bf16")["ckpt/size_bytes"]
    assert 0.48 < bf16 / fp32 < 0.53


def test_offline_run_reads_back_with_wandbs_own_reader(cifar_dir, tmp_path):
    result = run_cli("--data-dir", cifar_dir, "--out-dir", str(tmp_path), "--epochs", "2", "--batch-size", "8",
                     "--log-every", "4", "--precision", "fp32", "--name", "contract", "--wandb-mode", "offline",
                     "--ckpt-artifact", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "contract"
    summary = json.loads(_inspect(run_dir, "--summary"))
    assert summary["state"] == "finished" and summary["exit_code"] == 0
    for key in SUMMARY_KEYS + CPU_SUMMARY_KEYS:
        assert key in summary["summary"], key
    assert "mem/peak_allocated_bytes" not in summary["summary"]  # no allocator on CPU: not measured, not shown
    assert summary["summary"]["model/params"] == 11_173_962
    assert summary["summary"]["ckpt/size_bytes"] == os.path.getsize(run_dir / "checkpoint.pt")
    assert set(summary["summary"]["test/acc"]) == {"max", "last"}
    assert set(summary["summary"]["train/loss"]) == {"mean", "min", "max", "last"}
    assert isinstance(summary["summary"]["train/images_per_s"], float)  # the run's median, not a window's
    config = summary["config"]
    for key in CONFIG_KEYS:
        assert key in config, key
    for key, inner in CONFIG_NESTED.items():
        for sub in inner:
            assert sub in config[key], f"{key}.{sub}"
    assert config["precision_settings"]["tf32_cudnn"] is False and config["precision_settings"]["tf32_matmul"] is False
    assert config["nvml"] == {"available": False, "reason": "the run is on cpu"}

    records = [json.loads(line) for line in _inspect(run_dir).splitlines() if line.strip()]
    history = [r["history"]["item"] for r in records if r.get("type") == "history"]
    steps = [h for h in history if "train/loss" in h]
    epochs = [h for h in history if "test/acc" in h]
    assert [h["train/step"] for h in steps] == [4, 8, 10, 12, 16, 20]  # every 4th step and each epoch's end
    for key in STEP_KEYS + CPU_STEP_KEYS:
        assert all(key in h for h in steps), key
    assert len(epochs) == 2 and all(all(k in h for k in EPOCH_KEYS) for h in epochs)
    assert any(r.get("type") == "artifact" for r in records)


def test_skipped_steps_are_counted_when_gradients_overflow():
    from train.numerics.precision import make_optimizer
    from train.runner.window import SkippedSteps

    model = torch.nn.Linear(4, 2)
    opt = make_optimizer(model, "sgd", lr=0.1, momentum=0.9, weight_decay=0.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    counter = SkippedSteps(scaler, torch.device("cpu"), start=0)
    for poison in (1.0, float("inf"), 1.0, float("nan")):
        before = model.weight.detach().clone()
        loss = model(torch.ones(3, 4)).sum() * poison
        scaler.scale(loss).backward()
        scaler.step(opt)
        counter.before_update()
        scaler.update()
        counter.after_update()
        opt.zero_grad()
        assert torch.equal(model.weight, before) == (poison != 1.0)  # skipped steps leave weights alone
    assert int(counter.count) == 2 and scaler.get_scale() == 256.0


def test_loss_scaled_runs_log_scale_and_skipped_steps(tmp_path, monkeypatch):
    # amp_fp16 and fp16 run on GPUs only; a CPU-runnable policy with the scaler on takes the same code path.
    from dataclasses import replace

    from train.numerics import precision

    monkeypatch.setitem(precision.POLICIES, "fp32", replace(precision.POLICIES["fp32"], loss_scaling=True))
    summary = train(parse_args(["--dataset", "synthetic", "--max-steps", "4", "--batch-size", "4", "--log-every", "2",
                                "--wandb-mode", "offline", "--out-dir", str(tmp_path), "--name", "scaled",
                                "--device", "cpu"]))
    assert summary["amp/skipped_steps"] == 0
    records = [json.loads(line) for line in _inspect(tmp_path / "scaled").splitlines() if line.strip()]
    windows = [r["history"]["item"] for r in records if r.get("type") == "history"
               and "train/loss" in r["history"]["item"]]
    assert len(windows) == 2 and all(k in w for w in windows for k in SCALED_STEP_KEYS)
    assert windows[0]["amp/loss_scale"] == 65536.0


def test_checkpoint_write_is_atomic(tmp_path):
    path = str(tmp_path / "checkpoint.pt")
    checkpoint.save(path, {"model": {"w": torch.ones(3)}})
    before = open(path, "rb").read()
    with pytest.raises(Exception):
        checkpoint.save(path, {"model": {"w": torch.ones(3)}, "bad": lambda: 0})  # cannot be pickled
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["checkpoint.pt"]


def test_resume_refuses_a_corrupt_checkpoint_in_one_line(tmp_path):
    first = _run(tmp_path, "--precision", "fp32")
    corrupt = tmp_path / "corrupt.pt"
    shutil.copy(os.path.join(first["run_dir"], "checkpoint.pt"), corrupt)
    corrupt.write_bytes(corrupt.read_bytes()[:1000])
    result = run_cli("--dataset", "synthetic", "--resume", str(corrupt), "--out-dir", str(tmp_path), "--device", "cpu")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and str(corrupt) in result.stderr


def test_existing_run_folder_is_never_overwritten(tmp_path):
    _run(tmp_path, "--name", "keep")
    before = os.path.getmtime(tmp_path / "keep" / "checkpoint.pt")
    with pytest.raises(UsageError, match="--resume"):
        _run(tmp_path, "--name", "keep")
    assert os.path.getmtime(tmp_path / "keep" / "checkpoint.pt") == before


@pytest.mark.parametrize("precision, loader", [("fp32", "device"), ("bf16", "device"), ("fp32", "torch")])
def test_training_learns_the_tiny_dataset(tmp_path, precision, loader):
    from conftest import write_cifar

    data_dir = write_cifar(str(tmp_path / "data"), per_batch=16, n_test=64)  # 80 images: 15 steps
    summary = train(parse_args(["--data-dir", data_dir, "--out-dir", str(tmp_path), "--epochs", "3", "--batch-size",
                                "16", "--lr", "0.02", "--wandb-mode", "disabled", "--precision", precision, "--device", "cpu",
                                "--loader", loader, "--num-workers", "0"]))
    assert summary["test/best_acc"] > 0.35  # ten colour-coded classes: chance is 0.1


def test_the_run_config_records_the_users_peak_and_its_source(tmp_path, monkeypatch):
    # MFU's denominator: a card the datasheet table gets wrong (or lacks) is measured against the user's figure,
    # and the config says so, as the report divides by whatever peak_flops_per_s holds. The config is caught on
    # its way to W&B (an offline W&B run read back costs ~10 s more).
    from train.runner import session

    configs = []
    monkeypatch.setattr(session, "wandb_config", lambda *a, **k: configs.append(wandb_config(*a, **k)) or configs[-1])
    _run(tmp_path, "--peak-tflops", "123.5")
    assert configs[0]["system"]["peak_flops_per_s"] == 123.5e12 and configs[0]["system"]["peak_source"] == "user"
