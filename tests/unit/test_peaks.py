"""The dense peak FLOP/s a run's MFU is measured against, by GPU name and precision."""

import pytest

from train.measure.peaks import peak_flops


@pytest.mark.parametrize("precision, peak", [("fp32", 66.9e12), ("tf32", 494.7e12), ("amp_bf16", 989.4e12),
                                             ("amp_fp16", 989.4e12), ("bf16", 989.4e12), ("fp16", 989.4e12)])
def test_each_precision_is_bounded_by_its_own_class_of_peak(precision, peak):
    assert peak_flops("NVIDIA H100 80GB HBM3", precision) == peak


def test_the_pcie_h100_is_told_apart_from_the_sxm_one():
    assert peak_flops("NVIDIA H100 PCIe", "bf16") == 756e12
    assert peak_flops("NVIDIA H200", "bf16") == peak_flops("NVIDIA H100 80GB HBM3", "bf16")
    assert peak_flops("NVIDIA A100-SXM4-80GB", "tf32") == 156e12


def test_cpus_and_gpus_not_in_the_table_have_no_peak():
    assert peak_flops("Intel(R) Xeon(R) Platinum 8480+", "fp32") is None
    assert peak_flops("NVIDIA GeForce RTX 4090", "bf16") is None
