"""The metric contract: the W&B keys every run logs. The runner logs by these names, the report reads them,
and the tests on both sides check them from here."""

# Step metrics share the train/step axis; a key under one of these prefixes is a step metric.
STEP_PREFIXES = ("train", "mem", "amp", "epoch", "test", "nvml", "comm", "dist", "precision")

STEP_KEYS = ["train/step", "epoch", "train/loss", "train/lr", "train/step_time_s", "train/step_time_p90_s",
             "train/data_time_s", "train/images_per_s", "precision/lost_update_frac"]
CUDA_STEP_KEYS = ["mem/max_allocated_bytes", "mem/max_reserved_bytes"]  # allocator peaks, reset per window
CPU_STEP_KEYS = ["mem/rss_peak_bytes"]  # the process's peak RSS: no allocator on CPU
NVML_STEP_KEYS = ["nvml/pcie_tx_bytes_per_s", "nvml/pcie_rx_bytes_per_s", "nvml/nvlink_tx_bytes_per_s",
                  "nvml/nvlink_rx_bytes_per_s", "nvml/memory_used_bytes", "nvml/power_w", "nvml/energy_j",
                  "nvml/sm_clock_mhz", "nvml/util_pct", "nvml/temperature_c", "nvml/throttle_reasons",
                  "nvml/power_integral_j", "nvml/energy_counter_vs_power"]  # GPUs only
COMM_STEP_KEYS = ["comm/allreduce_bytes", "comm/allreduce_time_s", "comm/algbw_bytes_per_s", "comm/busbw_bytes_per_s",
                  "dist/step_time_max_s", "dist/step_time_min_s"]  # DDP only
SCALED_STEP_KEYS = ["amp/loss_scale", "amp/skipped_steps"]  # amp_fp16 and fp16 only
EPOCH_KEYS = ["epoch", "train/acc", "test/loss", "test/acc", "epoch/time_s", "cum/train_s", "cum/images"]
NVML_EPOCH_KEYS = ["cum/energy_j"]  # GPUs with NVML's energy counter or power
SUMMARY_KEYS = ["model/params", "model/size_bytes", "ckpt/size_bytes", "time/train_s", "time/setup_s",
                "train/images_per_s", "train/images_per_s_per_gpu", "train/step_time_s", "train/timed_steps",
                "train/images",
                "train/segments", "train/steps", "test/acc", "test/best_acc", "test/last_acc",
                "precision/lost_update_frac", "train/end", "mem/params_bytes", "mem/grads_bytes",
                "mem/optimizer_bytes", "provenance/segments"]
# time_to_acc/<percent> per --target-acc (0.93 -> time_to_acc/93): these fields where reached, absent where not
TIME_TO_ACC_PREFIX = "time_to_acc/"
TIME_TO_ACC_FIELDS = ["time_s", "epoch", "step", "images", "test_acc"]
NVML_TIME_TO_ACC_FIELDS = ["energy_j"]
# GPUs with NVML: training energy from its source, the counter beside the power integral, energy above idle
NVML_ENERGY_SUMMARY_KEYS = ["nvml/energy_total_j", "nvml/energy_per_image_j", "nvml/energy_source",
                            "nvml/power_integral_total_j", "nvml/energy_counter_vs_power", "nvml/idle_power_w",
                            "nvml/energy_above_idle_j", "nvml/energy_above_idle_per_image_j",
                            "nvml/energy_above_idle_clamped"]
ENERGY_SOURCES = ("counter", "power_integral")  # nvml/energy_source: the energy counter, or the power integral
CUDA_SUMMARY_KEYS = ["mem/peak_allocated_bytes", "mem/peak_reserved_bytes", "mem/data_bytes", "mem/measurement_bytes",
                     "mem/activations_bytes"]
CPU_SUMMARY_KEYS = ["mem/rss_peak_bytes"]
DIVERGED_SUMMARY_KEYS = ["train/diverged_at_step"]  # only in runs that diverged
# --profile K: the profiled window's step time by operation class (docs/profile.md), logged once at the window's
# last step and in the summary. The class names are defined here (the report reads them); the rules that fill
# them are train/measure/profile_classes.py's.
PROFILE_CLASSES = ("conv_matmul", "norm", "elementwise", "loss", "optimizer", "grad_scaling", "data", "comm", "copy",
                   "other", "host_gap")
PROFILE_CLASS_NAMES = {  # as tables, plots and sentences name them
    "conv_matmul": "convolution and matmul", "norm": "normalisation", "elementwise": "element-wise and activation",
    "loss": "loss", "optimizer": "optimizer step", "grad_scaling": "gradient scaling",
    "data": "data and augmentation", "comm": "communication", "copy": "memory copies and casts",
    "other": "other operators", "host_gap": "host gaps",
}
PROFILE_KEYS = ["prof/step_ms", "prof/steps", *(f"prof/{c}_{unit}" for c in PROFILE_CLASSES for unit in ("ms", "share")),
                "prof/conv_matmul_flops_per_s", "prof/conv_matmul_peak_frac", "prof/optimizer_bytes",
                "prof/optimizer_bytes_per_s"]
CUDA_PROFILE_KEYS = ["prof/tensor_core_share", "prof/comm_overlapped_ms"]
# Runs of `python -m train.benchmark` points only: their timed rounds (train/contract/rounds.py says how they are
# measured): the benchmark invocation's id, each round's step times (s) in round order, its warm-up steps left out.
BENCHMARK_SUMMARY_KEYS = ["bench/id", "bench/round_step_s", "bench/warmup_steps"]
CONFIG_KEYS = ["depth", "precision", "batch_size", "lr", "effective_lr", "optimizer", "epochs", "seed",
               "experiment", "provenance", "precision_settings", "model", "system", "data", "total_steps", "nvml",
               "nodecheck"]
# config `nodecheck` (train/contract/node_ceilings.py): {"used": False, "reason"} or, from this node's node check:
NODECHECK_KEYS = ["used", "path", "checked_at", "quick", "matmul_kind", "matmul_flops_per_s", "allreduce_dtype",
                  "allreduce_busbw_bytes_per_s", "allreduce_world_size", "memory_copy_bytes_per_s"]
CONFIG_NESTED = {
    "precision_settings": ["name", "param_dtype", "autocast_dtype", "batchnorm_dtype", "loss_scaler", "fp8_recipe",
                           "tf32_matmul", "tf32_cudnn", "memory_format"],
    "model": ["arch", "params", "forward_flops_per_image", "train_flops_per_image", "linear_products"],
    "system": ["device", "device_name", "world_size", "torch", "cuda", "cudnn", "peak_flops_per_s", "peak_source"],
    "data": ["train_images", "test_images", "synthetic", "steps_per_epoch", "global_batch_size"],
    "experiment": ["depth", "arch", "precision", "dataset", "train_images", "batch_size", "world_size", "device",
                   "optimizer", "lr", "lr_scaling", "effective_lr", "momentum", "weight_decay", "lr_schedule",
                   "lr_warmup_epochs", "epochs", "seed",
                   "loader", "num_workers", "grad_compress", "compile"],
    "provenance": ["git_commit", "git_dirty", "started_at", "segments"],  # segments: one entry per segment
}


def target_pct(target: float) -> str:
    """93 for 0.93, 93_5 for 0.935: an accuracy target as a percentage, no dot (it names a key)."""
    return f"{round(100 * target, 4):g}".replace(".", "_")


def target_key(target: float) -> str:
    """time_to_acc/93 for 0.93, time_to_acc/93_5 for 0.935: the summary key of a target's crossing."""
    return TIME_TO_ACC_PREFIX + target_pct(target)
