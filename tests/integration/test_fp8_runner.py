"""fp8 through the whole runner on CPU, where torch._scaled_mm runs float8 for real (slowly): the runner refuses
fp8 on a CPU, so the test lifts that one rule in-process, as if this were an fp8 GPU. What fails here fails on the
GPU too, before any GPU minute is spent on it: the conversion's place between the model and its optimizer, the
fp32 master weights it checkpoints, the recipe in its config and the profile's classes. No speed is claimed."""

import json
import os

import pytest
import torch
from conftest import write_cifar
from wandb_reader import _inspect

from train.numerics import precision, vit
from train.runner.options import parse_args
from train.runner.session import train

pytest.importorskip("torchao.float8", reason="torchao is not installed (requirements.txt has it; fp8 needs it)")


@pytest.fixture
def fp8_on_this_cpu(monkeypatch):
    rules = precision.Precision.check_rules

    def as_on_an_fp8_gpu(self, device_type, capability, where):
        if self.fp8_recipe:
            device_type, capability = "cuda", (9, 0)
        return rules(self, device_type, capability, where)
    monkeypatch.setattr(precision.Precision, "check_rules", as_on_an_fp8_gpu)


# compiled, as torchao recommends and the GPU suite runs it (Inductor's C++ backend here); eager, as it may be run
@pytest.mark.parametrize("compile_mode", ["none", "default"])
def test_an_fp8_run_trains_checkpoints_fp32_masters_records_its_recipe_and_profiles_its_matmuls_as_matmuls(
        tmp_path, fp8_on_this_cpu, monkeypatch, compile_mode):
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    data = write_cifar(str(tmp_path / "data"), per_batch=32, n_test=32)
    summary = train(parse_args([
        "--model", "vit-smoke", "--precision", "fp8_tensorwise", "--data-dir", data, "--epochs", "1",
        "--max-steps", "6", "--batch-size", "16", "--lr", "0.003", "--lr-warmup-epochs", "0.1", "--device", "cpu",
        "--wandb-mode", "offline", "--out-dir", str(tmp_path), "--name", "fp8", "--num-workers", "0",
        "--log-every", "1", "--warmup-steps", "1", "--profile", "2", "--compile", compile_mode]))
    assert summary["train/steps"] == 6 and summary["train/diverged_at_step"] is None
    assert (summary["time/compile_s"] is None) == (compile_mode == "none")
    assert summary["train/loss"]["last"] < summary["train/loss"]["max"] - 0.2  # ten colour-coded classes

    # _scaled_mm is the step's matmul time (it was once counted element-wise, through torchao's matmul_with_...)
    assert summary["prof/conv_matmul_share"] > max(summary["prof/elementwise_share"], summary["prof/other_share"])

    [run] = (os.path.join(tmp_path, "fp8", "wandb", d) for d in os.listdir(tmp_path / "fp8" / "wandb")
             if d.startswith("offline-run-"))
    config = json.loads(_inspect(run, "--summary"))["config"]
    assert config["precision_settings"]["fp8_recipe"] == "tensorwise"
    assert config["experiment"]["precision"] == "fp8_tensorwise" and config["experiment"]["compile"] == compile_mode

    # fp32 master weights, under the unconverted model's keys: the checkpoint loads into a plain ViT too
    state = torch.load(tmp_path / "fp8" / "checkpoint.pt", weights_only=True)["state"]["model"]
    assert state.keys() == vit.vit_smoke(None).state_dict().keys()
    assert {v.dtype for v in state.values()} == {torch.float32}
    vit.vit_smoke(None).load_state_dict(state)
