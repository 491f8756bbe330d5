"""Numbers that hold for a whole study: runs stopped and resumed, repeated, diverged, compared and mixed."""

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, run_cli, sigterm_at_line, write_cifar
from wandb_reader import _inspect

from train.contract.errors import UsageError
from train.measure.lost_updates import LostUpdates
from train.runner.options import differences, experiment, parse_args
from train.runner.session import train

RUNNER = [sys.executable, os.path.join(ROOT, "train", "run.py")]


def _devices():
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _summary(run_dir):
    """The W&B summary of a run's last segment, read with W&B's own reader."""
    segments = sorted(d for d in os.listdir(os.path.join(run_dir, "wandb")) if d.startswith("offline-run-"))
    return json.loads(_inspect(os.path.join(run_dir, "wandb", segments[-1]), "--summary"))


@pytest.fixture(scope="module")
def unbroken_and_resumed(tmp_path_factory):
    """The same 2-epoch run twice: once unbroken, once stopped by SIGTERM part-way and resumed. Side by side, one
    thread each (the same for both: the thread count changes bf16's sums): much of a short run is its start and
    end on one core, and two threads each on 2 cores would wait on each other."""
    root = tmp_path_factory.mktemp("resume")
    data = write_cifar(str(root / "data"), per_batch=16, n_test=32)
    common = [*RUNNER, "--data-dir", data, "--epochs", "2", "--batch-size", "8", "--log-every", "1",
              "--warmup-steps", "2", "--precision", "bf16", "--device", "cpu", "--wandb-mode", "offline",
              "--out-dir", str(root), "--resume", "auto"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    whole = subprocess.Popen([*common, "--name", "whole"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, env=env)
    status, _, err = sigterm_at_line([*common, "--name", "part"], "step 12/20", env=env)
    assert status == 75, err
    again = subprocess.run([*common, "--name", "part"], capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0 and "resumed from" in again.stdout, again.stderr
    _, err = whole.communicate(timeout=300)
    assert whole.returncode == 0, err
    return root / "whole", root / "part"


@pytest.mark.system  # two runner processes side by side, one stopped and resumed
def test_a_stopped_and_resumed_run_reports_the_summary_of_the_unbroken_run(unbroken_and_resumed):
    whole_dir, part_dir = unbroken_and_resumed
    whole = json.load(open(whole_dir / "result.json"))
    part = json.load(open(part_dir / "result.json"))
    assert (part["train/segments"], whole["train/segments"]) == (2, 1)
    for key in ("train/steps", "train/images", "test/best_acc", "test/last_acc"):
        assert part[key] == whole[key], key
    # Epoch-level figures are the same computation in both runs: their whole-run aggregates match exactly,
    # where a summary of the last process alone would hold epoch 2 only.
    for key in ("train/acc", "train/epoch_loss", "test/acc", "test/loss"):
        assert part[key] == whole[key], key
    assert part["epoch/time_s"]["max"] > 0 and part["time/train_s"] >= sum([part["epoch/time_s"]["min"]] * 2) * 0.99
    # Both segments' steps are timed, each after its own warm-up: 20 steps - 2 x 2 warm-up steps.
    assert whole["train/timed_steps"] == 18 and part["train/timed_steps"] == 16
    assert 0.5 < part["train/images_per_s"] / whole["train/images_per_s"] < 2  # timing noise on a shared CPU
    assert part["mem/rss_peak_bytes"] > 0
    # What W&B shows is the same whole-run summary, not the last process's.
    for run_dir, result in ((whole_dir, whole), (part_dir, part)):
        summary = _summary(run_dir)["summary"]
        assert summary["train/epoch_loss"] == pytest.approx(result["train/epoch_loss"])
        assert summary["train/timed_steps"] == result["train/timed_steps"]
        assert summary["train/images_per_s"] == pytest.approx(result["train/images_per_s"])
    a = torch.load(whole_dir / "checkpoint.pt", weights_only=True)["state"]["model"]
    b = torch.load(part_dir / "checkpoint.pt", weights_only=True)["state"]["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # the resumed run trained exactly as the unbroken one


@pytest.mark.system  # two runner processes side by side, one stopped and resumed
def test_resuming_a_run_that_ended_does_nothing_and_rewrites_nothing(unbroken_and_resumed):
    whole_dir, _ = unbroken_and_resumed
    result = whole_dir / "result.json"
    before = (result.read_bytes(), os.path.getmtime(result), sorted(os.listdir(whole_dir / "wandb")))
    again = run_cli("--resume", str(whole_dir), "--device", "cpu", "--wandb-mode", "offline")
    assert again.returncode == 0 and "has already ended (finished at step 20)" in again.stdout, again.stderr
    assert (result.read_bytes(), os.path.getmtime(result), sorted(os.listdir(whole_dir / "wandb"))) == before


def _quick(out_dir, *extra):
    return ["--dataset", "synthetic", "--max-steps", "2", "--batch-size", "4", "--warmup-steps", "0",
            "--device", "cpu", "--wandb-mode", "disabled", "--out-dir", str(out_dir), *extra]


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    from train.launch.signals import StopRequest

    out = tmp_path_factory.mktemp("identity")
    stop = StopRequest()
    stop.signal = signal.SIGTERM  # stopped after its first step: a checkpoint to resume
    result = train(parse_args(_quick(out, "--name", "first")), stop=stop)
    assert result["preempted"]
    return out, result["run_dir"]


@pytest.mark.parametrize("change, named", [
    (["--lr", "0.01"], "lr 0.005 -> 0.01"),
    (["--epochs", "3"], "epochs 600 -> 3"),
    (["--momentum", "0.5"], "momentum 0.9 -> 0.5"),
    (["--weight-decay", "0"], "weight_decay 0.0005 -> 0.0"),
    (["--seed", "1"], "seed 0 -> 1"),
    (["--batch-size", "8"], "batch_size 4 -> 8"),
    (["--lr-schedule", "constant"], "lr_schedule 'cosine' -> 'constant'"),
    (["--optimizer", "adamw"], "optimizer 'sgd' -> 'adamw'"),
    (["--loader", "torch"], "loader 'device' -> 'torch'"),
    (["--compile", "default"], "compile 'none' -> 'default'"),
    (["--lr-scaling", "linear", "--lr", "0.0025"], "lr 0.005 -> 0.0025; lr_scaling 'none' -> 'linear'"),
])
def test_resume_refuses_a_different_experiment_naming_the_difference(stopped_run, change, named):
    out, run_dir = stopped_run
    with pytest.raises(UsageError) as e:
        train(parse_args([*_quick(out, "--resume", run_dir), *change]))
    assert named in str(e.value) and "different experiment" in str(e.value)


def test_a_checkpoint_from_before_compile_resumes_as_the_eager_run_it_was(stopped_run, tmp_path):
    _, run_dir = stopped_run
    old = tmp_path / "before-compile"
    shutil.copytree(run_dir, old)
    (old / "result.json").unlink(missing_ok=True)  # another test of this module may have finished the run
    ckpt = torch.load(old / "checkpoint.pt", weights_only=True)
    del ckpt["experiment"]["compile"]  # as checkpoints were written before --compile existed
    torch.save(ckpt, old / "checkpoint.pt")
    with pytest.raises(UsageError) as e:
        train(parse_args([*_quick(tmp_path, "--resume", str(old), "--max-steps", "4"), "--compile", "default"]))
    assert "compile 'none' -> 'default'" in str(e.value)
    assert train(parse_args(_quick(tmp_path, "--resume", str(old), "--max-steps", "4")))["train/steps"] == 4


def test_resume_accepts_changes_that_do_not_change_the_result(stopped_run, tmp_path):
    out, run_dir = stopped_run
    result = train(parse_args([*_quick(out, "--resume", run_dir), "--log-every", "7", "--nvml-hz", "0",
                               "--max-steps", "3", "--tags", "again"]))
    assert result["train/steps"] == 3 and result["train/segments"] == 2


def test_resume_with_another_world_size_is_refused_in_one_line(tmp_path):
    from train.launch.signals import StopRequest

    stop = StopRequest()
    stop.signal = signal.SIGTERM
    first = train(parse_args(_quick(tmp_path, "--name", "one", "--lr-scaling", "linear")), stop=stop)
    result = run_cli(*_quick(tmp_path, "--gpus", "2", "--lr-scaling", "linear", "--resume", first["run_dir"]),
                     timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]  # not torch's own log
    assert len(errors) == 1 and "world_size 1 -> 2" in errors[0] and "effective_lr 0.005 -> 0.01" in errors[0]


def test_the_experiment_identity_is_one_list_with_the_effective_lr():
    cfg = parse_args(["--lr", "0.1", "--lr-scaling", "linear", "--loader", "device", "--num-workers", "7"])
    one, four = (experiment(cfg, world_size=n, train_images=100, device="cuda") for n in (1, 4))
    assert one["effective_lr"] == 0.1 and four["effective_lr"] == pytest.approx(0.4)
    assert one["num_workers"] is None  # the device loader has no workers: not part of the experiment
    assert differences(one, four) == ["effective_lr 0.1 -> 0.4", "world_size 1 -> 4"]
    assert differences(one, {**one, "out_dir": "x"}) == ["out_dir None -> 'x'"]  # new keys count, either side


def test_divergence_ends_the_run_as_a_result_and_resume_auto_leaves_it(tmp_path):
    argv = ["--dataset", "synthetic", "--max-steps", "40", "--batch-size", "4", "--log-every", "2", "--lr", "1e6",
            "--device", "cpu", "--wandb-mode", "offline", "--out-dir", str(tmp_path), "--name", "boom",
            "--resume", "auto"]
    first = run_cli(*argv)
    assert first.returncode == 3, first.stderr
    result = json.load(open(tmp_path / "boom" / "result.json"))
    step = result["train/diverged_at_step"]
    assert result["end"] == "diverged" and 1 <= step < 40 and result["train/steps"] < 40
    assert f"diverged: the training loss (or a weight) was not finite at step {step}" in first.stdout
    summary = _summary(tmp_path / "boom")
    assert summary["summary"]["train/diverged_at_step"] == step and summary["exit_code"] == 3
    again = run_cli(*argv)
    assert again.returncode == 0 and f"has already ended (diverged at step {step})" in again.stdout


def test_lost_updates_count_updates_rounded_away():
    layer = torch.nn.Linear(2, 1, bias=False).to(torch.bfloat16)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 1.0]]))
    lost = LostUpdates(layer)
    lost.before_step()
    layer.weight.grad = torch.tensor([[1e-4, 0.5]], dtype=torch.bfloat16)  # 1 - 1e-4 is 1 in bf16; 1 - 0.5 is not
    torch.optim.SGD(layer.parameters(), lr=1.0).step()
    lost.after_step()
    assert lost.read() == {"precision/lost_update_frac": 0.5}
    assert lost.read() == {}  # one measured step per window, read once


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_every_run_logs_its_lost_updates_and_pure_bf16_loses_most(tmp_path, precision):
    result = train(parse_args(["--dataset", "synthetic", "--max-steps", "2", "--batch-size", "4", "--log-every",
                               "1", "--device", "cpu", "--wandb-mode", "disabled", "--precision", precision,
                               "--out-dir", str(tmp_path)]))  # two windows, each measured on its step
    frac = result["precision/lost_update_frac"]
    assert set(frac) == {"mean", "min", "max", "last"}
    if precision == "bf16":  # no fp32 master weights: at lr 0.005 most updates are below half an ulp
        assert frac["mean"] > 0.3
    else:
        assert frac["mean"] < 0.01


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("name", ["fp32", "tf32", "amp_fp16", "amp_bf16", "fp16", "bf16"])
def test_one_optimizer_step_changes_every_trainable_tensor_in_every_precision_the_device_runs(device, name):
    from train.numerics import precision
    from train.numerics.models import resnet

    policy = precision.get(name)
    try:
        policy.check_device(torch.device(device))
    except UsageError as e:
        pytest.skip(f"{device} does not run {name}: {e}")
    torch.manual_seed(0)
    model = policy.prepare(resnet(18).to(device))
    opt = precision.make_optimizer(model, "sgd", lr=1.0, momentum=0.9, weight_decay=5e-4)
    scaler = policy.grad_scaler(device)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x = torch.randn(8, 3, 32, 32, device=device, dtype=policy.input_dtype)
    with policy.autocast(device):
        loss = torch.nn.functional.cross_entropy(model(x).float(), torch.arange(8, device=device) % 10)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p.detach(), before[n])]
    assert unchanged == []


def test_a_run_records_which_code_made_it(tmp_path):
    result = train(parse_args(_quick(tmp_path, "--wandb-mode", "offline", "--name", "prov")))
    config = _summary(result["run_dir"])["config"]
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert config["provenance"]["git_commit"] == head
    assert isinstance(config["provenance"]["git_dirty"], bool)
    assert config["provenance"]["started_at"].startswith("20")
    assert config["experiment"]["seed"] == 0 and config["experiment"]["world_size"] == 1


def test_the_grid_has_a_seed_axis_and_repeats_over_seeds():
    def points(*extra):
        out = subprocess.run([sys.executable, "-m", "train.sweep", os.path.join(ROOT, "sweeps", "grid.yaml"), "list",
                              *extra], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return [json.loads(line) for line in out.stdout.splitlines()]

    once, thrice = points(), points("--seeds", "0", "1", "2")
    assert {p["seed"] for p in once} == {0} and len(once) == 72
    assert len(thrice) == 216 and {p["seed"] for p in thrice} == {0, 1, 2}
    assert len({p["_name"] for p in thrice}) == 216  # every repeat has its own run folder and W&B id
    assert {p["_name"] for p in once} <= {p["_name"] for p in thrice}  # seed 0 runs are found again


def test_the_last_window_finds_a_weight_that_is_not_finite_though_every_loss_was():
    from train.runner.divergence import _first_non_finite

    losses = [torch.tensor(2.3), torch.tensor(2.2)]
    weights = [torch.ones(4, 3, dtype=torch.bfloat16), torch.ones(7)]
    assert _first_non_finite(losses, weights).tolist() == [pytest.approx(2.25), -1.0, 1.0]
    for bad in (float("nan"), float("inf"), float("-inf")):
        for i in range(2):
            broken = [w.clone() for w in weights]
            broken[i].view(-1)[2] = bad
            assert _first_non_finite(losses, broken).tolist()[1:] == [-1.0, 0.0], (bad, i)
    assert _first_non_finite([torch.tensor(1.0), torch.tensor(float("nan"))], []).tolist()[1:] == [1.0, 1.0]
