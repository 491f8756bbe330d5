"""The metric contract's key lists (docs/metric-contract.md), for the tests: train/contract/metrics.py, the one
list both sides use."""

from train.contract.metrics import (
    COMM_STEP_KEYS,
    CONFIG_KEYS,
    CONFIG_NESTED,
    CPU_STEP_KEYS,
    CPU_SUMMARY_KEYS,
    CUDA_STEP_KEYS,
    CUDA_SUMMARY_KEYS,
    DIVERGED_SUMMARY_KEYS,
    EPOCH_KEYS,
    NVML_EPOCH_KEYS,
    NVML_STEP_KEYS,
    NVML_TIME_TO_ACC_FIELDS,
    SCALED_STEP_KEYS,
    STEP_KEYS,
    SUMMARY_KEYS,
    TIME_TO_ACC_FIELDS,
)

__all__ = ["CONFIG_KEYS", "CONFIG_NESTED", "COMM_STEP_KEYS", "CPU_STEP_KEYS", "CPU_SUMMARY_KEYS", "CUDA_STEP_KEYS",
           "CUDA_SUMMARY_KEYS", "DIVERGED_SUMMARY_KEYS", "EPOCH_KEYS", "NVML_EPOCH_KEYS", "NVML_STEP_KEYS",
           "NVML_TIME_TO_ACC_FIELDS", "SCALED_STEP_KEYS", "STEP_KEYS", "SUMMARY_KEYS", "TIME_TO_ACC_FIELDS"]
