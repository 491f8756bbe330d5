"""The report's energy: energy per image above idle beside the total, and energy from the integral of sampled
power marked as such, from summaries shaped as the runner writes them (no W&B files: rows from Run objects)."""

from report.collect import Run
from report.columns import INTEGRAL_MARK
from report.prose import observations
from report.rows import build
from report.write import _notes, csv_rows, table_lines


def _run(name, precision, seed, energy, above, source):
    config = {"precision": precision, "depth": 18, "batch_size": 128, "seed": seed, "total_steps": 1000,
              "system": {"device": "cuda", "device_name": "NVIDIA H100 80GB HBM3", "world_size": 1}}
    summary = {"train/images_per_s": 1e4, "train/timed_steps": 400, "train/steps": 410,
               "nvml/energy_per_image_j": energy, "nvml/energy_above_idle_per_image_j": above,
               **({"nvml/energy_source": source} if source else {})}
    return Run(id=name, name=name, state="finished", config=config, summary=summary)


def _table(runs):
    rows, _ = build(runs)
    lines = table_lines(rows)
    return rows, [dict(zip(lines[0], line)) for line in lines[1:]]


def test_energy_above_idle_stands_beside_energy_per_image_and_only_the_integral_is_marked():
    runs = [_run("fp32", "fp32", 0, 0.02, 0.015, "counter"),
            _run("bf16-a", "bf16", 0, 0.01, 0.006, "power_integral"),  # a GPU without the energy counter
            _run("bf16-b", "bf16", 1, 0.01, 0.006, "counter")]
    rows, table = _table(runs)
    fp32, bf16 = table
    assert fp32["Energy/image (J)"] == "0.0200" and fp32["Energy/image above idle (J)"] == "0.0150"
    assert bf16["Energy/image (J)"] == f"0.0100 {INTEGRAL_MARK}"
    assert bf16["Energy/image above idle (J)"] == f"0.0060 {INTEGRAL_MARK}"
    assert any(note.startswith(f"{INTEGRAL_MARK} energy from the integral of sampled power") for note in _notes(rows))
    csv = [dict(zip(csv_rows(rows)[0], line)) for line in csv_rows(rows)[1:]]
    assert [r["energy_source"] for r in csv] == ["counter", "counter+power_integral"]
    assert "energy per image above idle 0.40× fp32's (0.0060 vs 0.0150 J)" in observations(rows, "resnet18", ("cuda", 1))
    # a run from before the label (and the idle measurement): the counter's energy, no mark, no above-idle
    rows, table = _table([_run("fp32", "fp32", 0, 0.02, None, None)])
    assert table[0]["Energy/image (J)"] == "0.0200" and "Energy/image above idle (J)" not in table[0]
    assert not any(INTEGRAL_MARK in note for note in _notes(rows))
