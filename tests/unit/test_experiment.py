"""A run's experiment identity: what a resume must match and what the report pools runs by."""

from train.runner.options import differences, effective_lr, experiment, parse_args, saved_experiment


def _identity(*argv, world_size=1):
    return experiment(parse_args(list(argv)), world_size=world_size, train_images=50000, device="cuda")


def test_only_settings_that_change_the_result_are_part_of_it():
    base = _identity()
    same = _identity("--out-dir", "elsewhere", "--name", "x", "--log-every", "7", "--nvml-hz", "0", "--max-steps", "9",
                     "--wandb-mode", "offline")
    assert differences(base, same) == []
    assert differences(base, _identity("--precision", "bf16", "--seed", "1")) == \
        ["precision 'fp32' -> 'bf16'", "seed 0 -> 1"]  # sorted by key: one line names every change


def test_data_loader_workers_count_only_for_the_loader_that_has_them():
    assert _identity("--loader", "device", "--num-workers", "7")["num_workers"] is None
    assert _identity("--loader", "torch", "--num-workers", "7")["num_workers"] == 7


def test_a_run_cut_short_at_a_target_is_an_experiment_of_its_own():
    assert "stop_at_acc" not in _identity()
    assert differences(_identity(), _identity("--stop-at-acc", "0.9")) == ["stop_at_acc None -> 0.9"]


def test_the_effective_lr_grows_with_the_gpus_only_under_linear_scaling():
    assert effective_lr(parse_args(["--lr", "0.1"]), 8) == 0.1
    assert effective_lr(parse_args(["--lr", "0.1", "--lr-scaling", "linear"]), 8) == 0.8
    assert _identity("--lr", "0.1", "--lr-scaling", "linear", world_size=2)["effective_lr"] == 0.2


def test_a_checkpoint_from_before_a_setting_existed_is_the_run_with_its_default():
    today = _identity()
    before_compile = {k: v for k, v in today.items() if k != "compile"}
    assert differences(saved_experiment(before_compile), today) == []
    assert differences(saved_experiment(before_compile), _identity("--compile", "default")) == \
        ["compile 'none' -> 'default'"]
