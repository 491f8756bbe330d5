"""An offline sweep's points: W&B's grid order, and names and run ids that stay fixed across reruns."""

from train.sweep.cli import flags, grid, point_name


def test_the_grid_sorts_names_varies_the_last_fastest_and_keeps_each_values_order():
    config = {"parameters": {"precision": {"values": ["fp32", "bf16"]}, "depth": {"values": [50, 18]},
                             "dataset": {"value": "synthetic"}}}
    assert grid(config) == [
        {"dataset": "synthetic", "depth": 50, "precision": "fp32"},
        {"dataset": "synthetic", "depth": 50, "precision": "bf16"},
        {"dataset": "synthetic", "depth": 18, "precision": "fp32"},
        {"dataset": "synthetic", "depth": 18, "precision": "bf16"},
    ]


def test_a_points_name_and_run_id_are_fixed_by_the_sweep_and_its_values():
    point = {"depth": 34, "lr": 0.1, "precision": "bf16", "seed": 1}
    name, run_id = point_name("grid", point)
    assert name.startswith("depth34-precisionbf16-seed1-") and len(run_id) == 8
    assert point_name("grid", dict(point)) == (name, run_id)  # a rerun finds the same folder and W&B run
    assert point_name("grid", dict(reversed(point.items())))[1] == run_id  # the values, not their order
    assert point_name("grid", {**point, "lr": 0.2})[1] != run_id  # any value makes another point
    assert point_name("smoke", point)[1] != run_id  # another sweep's point is another run
    assert len(point_name("grid", {"lr": 0.1})[0]) == 12  # nothing readable to name it by: the digest alone


def test_a_point_becomes_the_flags_wandb_would_pass():
    assert flags({"depth": 18, "ckpt_artifact": True, "download": False, "lr": 0.1}) == \
        ["--depth=18", "--ckpt_artifact", "--lr=0.1"]
