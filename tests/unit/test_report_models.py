"""The report with several models: ResNet and ViT runs as rows of their own, the study's table for one model,
and fp8 against bf16 per model width (MFU against both peaks), from summaries shaped as the runner writes them."""

from report.collect import Run
from report.prose import fp8_observations, observations
from report.rows import build
from report.write import table_lines

FLOPS = {"resnet18": 3.333e9, "vit-s": 8.519e9, "vit-b": 33.6e9}


VIT_S = [[65, 384, 1536, 12], [65, 1536, 384, 12], [65, 384, 1152, 12], [65, 384, 384, 12], [64, 48, 384, 1],
         [1, 384, 10, 1]]  # config model.linear_products, as the runner records them for ViT-S


def _run(arch, precision, ips, profile=None):
    fp8 = precision.startswith("fp8")
    config = {"precision": precision, "depth": 18 if arch == "resnet18" else None, "seed": 0, "total_steps": 1000,
              "experiment": {"arch": "resnet" if arch == "resnet18" else arch, "precision": precision,
                             "depth": 18 if arch == "resnet18" else None, "batch_size": 128, "world_size": 1},
              "model": {"arch": arch, "train_flops_per_image": FLOPS[arch],
                        **({"linear_products": VIT_S} if arch == "vit-s" else {})},
              "system": {"device": "cuda", "device_name": "NVIDIA H100 80GB HBM3", "world_size": 1,
                         "peak_flops_per_s": 1979e12 if fp8 else 989.4e12,
                         **({"peak_bf16_flops_per_s": 989.4e12} if fp8 else {})}}
    summary = {"train/images_per_s": ips, "train/timed_steps": 400, "train/steps": 410, "test/best_acc": 0.9,
               **{f"prof/{c}_ms": ms for c, ms in (profile or {}).items()},
               **({"prof/step_ms": sum(profile.values())} if profile else {})}
    return Run(id=f"{arch}-{precision}", name=f"{arch}-{precision}", state="finished", config=config,
               summary=summary)


def test_models_are_rows_of_their_own_and_fp8_is_compared_with_bf16_per_width():
    runs = [_run("resnet18", "fp32", 1e4), _run("resnet18", "bf16", 2e4), _run("vit-s", "fp32", 5e3),
            _run("vit-s", "bf16", 1e4, {"conv_matmul": 9.0, "elementwise": 2.0, "copy": 1.0}),
            _run("vit-s", "fp8_tensorwise", 1.5e4, {"conv_matmul": 5.0, "elementwise": 2.5, "copy": 1.7}),
            _run("vit-b", "bf16", 2e3), _run("vit-b", "fp8_rowwise", 1.8e3)]
    rows, _ = build(runs)
    lines = table_lines(rows)
    table = [dict(zip(lines[0], line)) for line in lines[1:]]
    assert [(r["Model"], r["Precision"]) for r in table] == [
        ("ResNet-18", "fp32"), ("ResNet-18", "bf16"), ("ViT-B", "bf16"), ("ViT-B", "fp8_rowwise"),
        ("ViT-S", "fp32"), ("ViT-S", "bf16"), ("ViT-S", "fp8_tensorwise")]
    assert "At ViT-S on 1 GPU" in observations(rows, "vit-s", ("cuda", 1))
    assert "bf16: 2.00× fp32's (20,000 vs 10,000)" in observations(rows, "resnet18", ("cuda", 1)).replace(
        "throughput ", "")
    text = fp8_observations(rows, ("cuda", 1))
    # MFU against the fp8 peak and the bf16 peak, labelled: 8.519e9 * 1.5e4 / 1979e12 and / 989.4e12
    assert "ViT-S fp8_tensorwise: helps: 1.50× bf16's images/s (15,000 vs 10,000); its largest Linear products at " \
           "batch 128, M,K,N: 8320,384,1536 (×12), 8320,1536,384 (×12), 8320,384,1152 (×12) (fp8 gains" in text
    # where both were profiled: the matmuls' own speed-up and what fp8's scales and casts add
    assert "profiled, its matmuls took 5.0 vs 9.0 ms a step (1.80× bf16's speed) and element-wise work and casts " \
           "+1.2 ms (fp8's scales and casts); MFU 6.5% of the fp8 peak, 12.9% of bf16's (bf16: 8.6%)" in text
    assert "ViT-B fp8_rowwise: does not help: 0.90× bf16's images/s (1,800 vs 2,000); MFU" in text  # no shapes known


def test_without_fp8_runs_the_report_says_where_fp8_applies():
    rows, _ = build([_run("vit-s", "fp32", 5e3), _run("vit-s", "bf16", 1e4)])
    assert "No fp8 run here" in fp8_observations(rows, ("cuda", 1))
    rows, _ = build([_run("resnet18", "fp32", 1e4)])
    assert fp8_observations(rows, ("cuda", 1)) == ""  # a ResNet-only report is as it was
