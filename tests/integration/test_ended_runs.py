"""When a run has ended: only a result.json that proves it (parses, names its end) says so; a run cut by
--max-steps trains on when resumed with a larger one, as the unbroken longer run did; the others stay ended
and the line says what would continue them."""

import glob
import json
import os

import pytest
import torch
from conftest import run_in_process, write_cifar
from wandb_reader import _inspect

from train.runner.options import parse_args
from train.runner.resume import plan_resume

TIMING = ("time", "sys", "nvml", "mem/rss", "train/images_per_s", "train/data_time_s", "epoch/time_s", "cum/train_s",
          "train/step_time",
          "_")


def _run(args):
    return run_in_process(*args)


def _history(run_dir) -> list[dict]:
    """Every history record of every W&B segment of the run, in order, without the timing keys."""
    records = []
    for wandb_dir in sorted(glob.glob(os.path.join(run_dir, "wandb", "offline-run-*"))):
        for line in _inspect(wandb_dir).splitlines():
            record = json.loads(line)
            if record.get("type") == "history":
                records.append({k: v for k, v in record["history"]["item"].items() if not k.startswith(TIMING)})
    return records


@pytest.fixture(scope="module")
def pilot_extended_and_unbroken(tmp_path_factory):
    """A pilot of 2 steps (one whole epoch: 80 images, batches of 40) of a 3-epoch run, rerun as it was, then
    extended to 4 steps; beside it the unbroken 4-step run."""
    root = tmp_path_factory.mktemp("extend")
    data = write_cifar(str(root / "data"), per_batch=16, n_test=32)
    common = ["--data-dir", data, "--epochs", "3", "--batch-size", "40", "--log-every", "1", "--warmup-steps", "0",
              "--device", "cpu", "--wandb-mode", "offline", "--out-dir", str(root), "--resume", "auto"]
    pilot = _run([*common, "--name", "pilot", "--max-steps", "2"])
    assert pilot.returncode == 0, pilot.stderr
    result = root / "pilot" / "result.json"
    before = result.read_bytes()
    again = _run([*common, "--name", "pilot", "--max-steps", "2"])
    unchanged = result.read_bytes() == before
    extended = _run([*common, "--name", "pilot", "--max-steps", "4"])
    unbroken = _run([*common, "--name", "unbroken", "--max-steps", "4"])
    assert unbroken.returncode == 0, unbroken.stderr
    return {"root": root, "common": common, "pilot_result": json.loads(before), "again": again,
            "unchanged": unchanged, "extended": extended}


def test_the_same_max_steps_leaves_a_pilot_ended_and_says_what_would_continue_it(pilot_extended_and_unbroken):
    again = pilot_extended_and_unbroken["again"]
    assert again.returncode == 0, again.stderr
    assert "has already ended (finished at step 2); nothing to do: it stopped at --max-steps 2: resume with a " \
           "larger --max-steps (or none) to train on" in again.stdout
    assert pilot_extended_and_unbroken["unchanged"]  # nothing rewritten


def test_a_larger_max_steps_extends_the_pilot_to_the_unbroken_longer_run(pilot_extended_and_unbroken):
    f = pilot_extended_and_unbroken
    extended, root = f["extended"], f["root"]
    assert extended.returncode == 0, extended.stderr
    assert "extending the run, which had finished at step 2, to step 4" in extended.stdout
    ext = json.load(open(root / "pilot" / "result.json"))  # written anew: the whole run's summary
    whole = json.load(open(root / "unbroken" / "result.json"))
    assert ext["run_id"] == f["pilot_result"]["run_id"]  # the same W&B run
    assert len({json.loads(_inspect(d, "--summary"))["run_id"]
                for d in glob.glob(str(root / "pilot" / "wandb" / "offline-run-*"))}) == 1
    assert (ext["train/steps"], ext["train/images"], ext["train/segments"], ext["end"]) == (4, 160, 2, "finished")
    for key in ("train/steps", "train/images", "test/best_acc", "test/last_acc", "train/loss", "train/acc", "test/acc",
                "train/epoch_loss"):
        assert ext[key] == whole[key], key
    assert _history(root / "pilot") == _history(root / "unbroken")  # every record, epoch ends and evaluations
    a = torch.load(root / "pilot" / "checkpoint.pt", weights_only=True)["state"]["model"]
    b = torch.load(root / "unbroken" / "checkpoint.pt", weights_only=True)["state"]["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit-identical on one CPU thread


def test_a_run_that_trained_all_its_epochs_diverged_or_reached_its_target_stays_ended(
        pilot_extended_and_unbroken, tmp_path):
    root = pilot_extended_and_unbroken["root"]
    saved = torch.load(root / "unbroken" / "checkpoint.pt", weights_only=True)
    saved["experiment"]["epochs"] = 2  # 2 epochs of 2 steps: its 4 steps were all its epochs
    os.makedirs(tmp_path / "all")
    torch.save(saved, tmp_path / "all" / "checkpoint.pt")
    (tmp_path / "all" / "result.json").write_text(json.dumps({"end": "finished", "train/steps": 4}))
    plan = plan_resume(parse_args(["--resume", str(tmp_path / "all"), "--max-steps", "10"]))
    assert (plan.ended, plan.checkpoint) == ("finished at step 4", None)
    assert "trained all its --epochs" in plan.hint
    for result, how, hint in [({"end": "diverged", "train/diverged_at_step": 3}, "diverged at step 3", "diverged"),
                              ({"end": "target_reached", "train/steps": 6}, "reached --stop-at-acc at step 6",
                               "--stop-at-acc")]:
        (tmp_path / "all" / "result.json").write_text(json.dumps(result))
        plan = plan_resume(parse_args(["--resume", str(tmp_path / "all")]))
        assert plan.ended == how and hint in plan.hint


def test_a_truncated_result_json_is_said_and_the_run_continues_from_its_checkpoint_and_rewrites_it(tmp_path):
    args = ["--dataset", "synthetic", "--max-steps", "1", "--batch-size", "4", "--warmup-steps", "0", "--device",
            "cpu", "--wandb-mode", "disabled", "--out-dir", str(tmp_path), "--name", "cut", "--resume", "auto"]
    assert _run(args).returncode == 0
    result = tmp_path / "cut" / "result.json"
    whole = json.loads(result.read_text())
    result.write_text(result.read_text()[:40])  # as a node that died mid-write leaves it
    again = _run(args)
    assert again.returncode == 0, again.stderr
    assert "has already ended" not in again.stdout and "resumed from" in again.stdout
    assert again.stderr.count("\n") == 1 and f"{result} is unreadable (not JSON" in again.stderr
    rewritten = json.loads(result.read_text())
    assert (rewritten["end"], rewritten["train/steps"], rewritten["run_id"]) == ("finished", 1, whole["run_id"])


def test_an_unreadable_result_json_without_a_checkpoint_says_what_to_do_and_exits_2(tmp_path):
    os.makedirs(tmp_path / "cut")
    (tmp_path / "cut" / "result.json").write_text('{"train/steps": 2}')  # parses, but names no end
    out = _run(["--dataset", "synthetic", "--device", "cpu", "--out-dir", str(tmp_path), "--name", "cut",
                "--resume", "auto", "--wandb-mode", "disabled"])
    assert out.returncode == 2 and "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert "result.json is unreadable (its 'end' is None" in out.stderr
    assert "no checkpoint to continue from: move that folder aside" in out.stderr
    assert os.listdir(tmp_path / "cut") == ["result.json"]  # nothing written
