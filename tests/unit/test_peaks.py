"""The dense peak FLOP/s a run's MFU is measured against, by GPU name and precision."""

import pytest

from train.measure.peaks import peak_flops, run_peak


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


@pytest.mark.parametrize("name", ["NVIDIA H100 NVL", "NVIDIA H200 NVL"])
def test_the_nvl_cards_are_not_given_the_sxm_peak(name):
    # A match on the name fragment "H100"/"H200" gave these PCIe cards the SXM part's 989 TFLOP/s.
    assert peak_flops(name, "bf16") == 835.5e12 < peak_flops("NVIDIA H200", "bf16")
    assert (peak_flops(name, "fp32"), peak_flops(name, "tf32")) == (60e12, 417.5e12)


def test_a_mig_slice_has_no_whole_gpu_peak():
    assert peak_flops("NVIDIA H100 80GB HBM3 MIG 1g.10gb", "bf16") is None


def test_the_users_peak_wins_over_the_datasheet_and_says_so():
    assert run_peak("NVIDIA H200", "bf16", None) == {"peak_flops_per_s": 989.4e12, "peak_source": "datasheet"}
    assert run_peak("NVIDIA H200", "bf16", 700.0) == {"peak_flops_per_s": 700e12, "peak_source": "user"}
    assert run_peak(None, "fp32", None) == {"peak_flops_per_s": None, "peak_source": None}
