"""The step-time breakdown's rules (docs/profile.md): one test per rule, on operator and kernel names, and the
arithmetic on hand-written Chrome traces: self times, scopes, host gaps, CUDA overlap and tensor cores."""

import pytest

from train.contract.metrics import PROFILE_KEYS
from train.measure.profile_classes import (
    CLASSES,
    DATA_ANNOTATION,
    OP_RULES,
    SCOPE_RULES,
    STEP_ANNOTATION,
    breakdown,
    classify,
    is_tensor_core,
    metrics,
)

# Per op rule: names it must classify (CPU operators as torch.profiler names them, CUDA kernels as cuDNN, cuBLAS,
# CUTLASS, NCCL and ATen name them). Every rule in OP_RULES has an entry: a new rule needs its examples.
OP_EXAMPLES = {
    "other": ["autograd::engine::evaluate_function: ConvolutionBackward0", "aten::empty", "aten::as_strided",
              "PythonSubclass", "matmul_with_hp_or_float8_args"],  # torchao float8's dispatch and Python
    "grad_scaling": ["aten::_amp_foreach_non_finite_check_and_unscale_", "aten::_amp_update_scale_",
                     "void at::native::amp_update_scale_cuda_kernel<float>(float*, int*, float const*)"],
    "comm": ["ncclDevKernel_AllReduce_Sum_f32_RING_LL(ncclDevComm*, unsigned long, ncclWork*)",
             "c10d::allreduce_", "gloo:all_reduce"],
    "copy": ["aten::copy_", "aten::_to_copy", "aten::to", "aten::clone", "Memcpy HtoD (Pageable -> Device)",
             "Memset (Device)"],
    "loss": ["aten::nll_loss_forward", "aten::_log_softmax", "aten::_log_softmax_backward_data",
             "void at::native::(anonymous namespace)::nll_loss_forward_reduce_cuda_kernel_2d<float, float, long>",
             "void at::native::(anonymous namespace)::cunn_SoftMaxForward<4, float, float, float, at::native::"],
    "norm": ["aten::native_batch_norm", "aten::native_batch_norm_backward",
             "void cudnn::bn_fw_tr_1C11_kernel_NCHW<float, float, int, 512, true, 1>",
             "void at::native::batch_norm_collect_statistics_channels_last_kernel<at::native::Var, float>"],
    "conv_matmul": ["aten::mkldnn_convolution", "aten::convolution_backward", "aten::mm", "aten::addmm",
                    "sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc_tilesize128x128x64",
                    "void cutlass::Kernel2<cutlass_80_tensorop_s16816gemm_bf16_128x64_64x3_tn_align8>",
                    "ampere_sgemm_128x64_nn", "void cudnn::engines_precompiled::nchwToNhwcKernel<float>",
                    "sm80_xmma_wgrad_implicit_gemm_indexed_tf32f32_tf32f32_f32_nhwckrsc_nchw",
                    # fp8's matmul (torchao float8), attention (the ViTs) on CPU and its CUDA kernels
                    "aten::_scaled_mm", "aten::_scaled_dot_product_flash_attention_for_cpu",
                    "aten::_scaled_dot_product_flash_attention_for_cpu_backward", "aten::_efficient_attention_forward",
                    "void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128, 128, 4, false, false>>",
                    "fmha_cutlassB_bf16_aligned_64x64_k64_sm80(PyTorchMemEffAttention::AttentionBackwardKernel)",
                    "sm90_xmma_gemm_e4m3bf16_e4m3f32_f32_tn_n_tilesize128x128x128_warpgroupsize1x1x1",
                    "triton_tem_fused_addmm_0", "triton_tem_fused_mm_3"],  # Inductor's max-autotune templates
    "optimizer": ["aten::_foreach_add_",
                  "void at::native::(anonymous namespace)::multi_tensor_apply_kernel<at::native::(anonymous "
                  "namespace)::TensorListMetadata<3>, at::native::(anonymous namespace)::FusedSgdMathFunctor"],
    "elementwise": ["aten::add_", "aten::mul", "aten::clamp_min_", "aten::threshold_backward",
                    "aten::adaptive_avg_pool2d", "aten::flip", "aten::index", "aten::gelu", "aten::gelu_backward",
                    "aten::abs", "aten::amax",  # the ViTs' activation; torchao's fp8 scales (max |x|)
                    "triton_poi_fused_add_gelu_1", "triton_red_fused_abs_amax_2",  # Inductor's fused kernels
                    "## Call CompiledFxGraph fgujmt42pzbnnconvgemmncclcatjj6f",  # on CPU; whatever its hash spells
                    "void at::native::vectorized_elementwise_kernel<4, at::native::(anonymous namespace)::"
                    "launch_clamp_scalar(at::TensorIteratorBase&, c10::Scalar, c10::Scalar, at::native::detail::"
                    "ClampLimits)::{lambda()#1}::operator()() const", "void at::native::reduce_kernel<512, 1>"],
}


def test_every_op_rule_has_examples():
    assert {cls for cls, _ in OP_RULES} == set(OP_EXAMPLES)
    assert set(OP_EXAMPLES) | {cls for cls, _ in SCOPE_RULES} | {"host_gap"} == set(CLASSES)


@pytest.mark.parametrize("cls,name", [(cls, name) for cls, names in OP_EXAMPLES.items() for name in names])
def test_op_rule(cls, name):
    assert classify(name) == cls


@pytest.mark.parametrize("scope,cls", [("Optimizer.step#SGD.step", "optimizer"),
                                       ("Optimizer.zero_grad#SGD.zero_grad", "optimizer"),
                                       (DATA_ANNOTATION, "data"), ("nccl:all_reduce", "comm"),
                                       ("DDP.reducer::copy_bucket_to_grad", "comm")])
def test_scope_rule_decides_for_everything_inside_it(scope, cls):
    """The optimizer's element-wise updates are optimizer time; the loader's flips and crops are data time."""
    assert classify("aten::add_", [STEP_ANNOTATION, scope]) == cls
    assert classify("aten::empty", [STEP_ANNOTATION, scope, "aten::mul"]) == cls


def test_innermost_named_operator_decides_below_no_scope():
    assert classify("aten::empty", ["aten::conv2d", "aten::mkldnn_convolution"]) == "conv_matmul"
    assert classify("aten::copy_", ["aten::batch_norm"]) == "copy"  # a named operator is its own class
    assert classify("aten::resize_", ["aten::native_batch_norm"]) == "norm"
    assert classify("aten::empty", []) == "other"


def test_outermost_scope_wins():
    assert classify("aten::add_", [DATA_ANNOTATION, "Optimizer.step#SGD.step"]) == "data"


@pytest.mark.parametrize("kernel,tensor_core", [
    ("sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc", True),
    ("void cutlass::Kernel2<cutlass_80_tensorop_s16816gemm_bf16_128x64_64x3_tn_align8>", True),
    ("ampere_bf16_s16816gemm_bf16_128x128_ldg8_f2f_stages_32x5_tn", True),
    ("ampere_sgemm_128x64_nn", False),
    # cuDNN's xmma family in plain fp32 (TF32 off: FFMA) and in TF32 (tensor cores)
    ("sm90_xmma_fprop_implicit_gemm_f32f32_f32f32_f32_nhwckrsc_nhwc_tilesize128x128x8_stage3_warpsize2x2x1_g1_ffma_"
     "aligna4_alignc4_execute_kernel__5x_cudnn", False),
    ("sm80_xmma_dgrad_implicit_gemm_f32f32_f32f32_f32_nhwckrsc_nchw_tilesize64x64x8", False),
    ("sm80_xmma_fprop_implicit_gemm_tf32f32_tf32f32_f32_nhwckrsc_nhwc_tilesize128x128x16_stage4_warpsize2x2x1", True),
    ("void implicit_convolve_sgemm<float, float, 128, 5, 5, 3, 3, 3, 1, false, false, true>", False),
])
def test_tensor_core_kernels_by_name(kernel, tensor_core):
    assert is_tensor_core(kernel) is tensor_core


def _x(name, ts, dur, cat="cpu_op", tid=1, **args):
    return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "pid": 1, "tid": tid, "args": args}


def test_cpu_step_is_self_times_by_class_plus_the_host_gap():
    """Nested operators count once (self time); the step annotation's own time is the host gap; the classes
    add up to the step's span exactly."""
    trace = {"traceEvents": [
        _x(STEP_ANNOTATION, 0, 1000, "user_annotation"),
        _x(DATA_ANNOTATION, 10, 90, "user_annotation"), _x("aten::flip", 20, 50),
        _x("aten::conv2d", 100, 500), _x("aten::mkldnn_convolution", 110, 480), _x("aten::empty", 120, 30),
        _x("aten::native_batch_norm", 600, 100),
        _x("Optimizer.step#SGD.step", 750, 200, "user_annotation"), _x("aten::add_", 760, 150),
        _x("aten::add_", 2000, 100),  # after the step: not counted
    ]}
    out = breakdown(trace)
    ms = out["classes"]
    assert ms["data"] == pytest.approx(0.09)  # the annotation's own 40 us and the flip's 50
    assert ms["conv_matmul"] == pytest.approx(0.5)  # 20 + 450 + 30 (aten::empty inside the convolution)
    assert ms["norm"] == pytest.approx(0.1)
    assert ms["optimizer"] == pytest.approx(0.2)
    assert ms["host_gap"] == pytest.approx(0.11)  # 1000 - 90 - 500 - 100 - 200 us
    assert ms["elementwise"] == 0
    assert sum(ms.values()) == pytest.approx(out["step_ms"]) == pytest.approx(1.0)


def test_steps_are_averaged_and_unfinished_spans_left_out():
    step = [_x(STEP_ANNOTATION, 0, 100, "user_annotation"), _x("aten::mm", 0, 100)]
    unfinished = [_x(STEP_ANNOTATION, 200, 5000, "user_annotation"), _x("aten::mm", 200, 10)]
    second = [_x(STEP_ANNOTATION, 6000, 300, "user_annotation"), _x("aten::mm", 6000, 100)]
    trace = {"traceEvents": step + unfinished + second}
    out = breakdown(trace, keep=[0, 2])
    assert out["steps"] == 2 and out["step_ms"] == pytest.approx(0.2)
    assert out["classes"]["conv_matmul"] == pytest.approx(0.1) and out["classes"]["host_gap"] == pytest.approx(0.1)
    assert breakdown({"traceEvents": []}) is None


def test_cuda_step_counts_device_time_and_overlapped_allreduce_once():
    """Kernels in their launching operator's class; an all-reduce under compute is reported as overlapped,
    not added; the host gap is the step's span with no stream busy; tensor cores as a share of conv time."""
    trace = {"traceEvents": [
        _x(STEP_ANNOTATION, 0, 1000, "user_annotation"),
        _x("aten::convolution", 10, 20), _x("cudaLaunchKernel", 12, 5, "cuda_runtime", correlation=1),
        _x("Optimizer.step#SGD.step", 40, 20, "user_annotation"),
        _x("cudaLaunchKernel", 45, 5, "cuda_runtime", correlation=2),
        _x("sm90_xmma_fprop_implicit_gemm_bf16bf16", 100, 300, "kernel", tid=7, correlation=1),
        _x("ampere_sgemm_128x64_nn", 400, 100, "kernel", tid=7),
        _x("ncclDevKernel_AllReduce_Sum_f32_RING_LL", 450, 150, "kernel", tid=9),
        _x("void at::native::vectorized_elementwise_kernel<4>", 600, 100, "kernel", tid=7, correlation=2),
    ]}
    out = breakdown(trace)
    ms = out["classes"]
    assert ms["conv_matmul"] == pytest.approx(0.4)
    assert ms["optimizer"] == pytest.approx(0.1)  # element-wise kernel launched inside the optimizer's step
    assert ms["comm"] == pytest.approx(0.1) and out["comm_overlapped_ms"] == pytest.approx(0.05)
    assert ms["host_gap"] == pytest.approx(0.4)  # 0-100 and 700-1000: no stream busy
    assert out["tensor_core_share"] == pytest.approx(0.75)
    assert sum(ms.values()) == pytest.approx(out["step_ms"])


def test_metrics_are_the_contract_keys():
    out = metrics({"classes": {c: 1.0 for c in CLASSES}, "step_ms": float(len(CLASSES)), "steps": 3,
                   "device": "cpu"})
    assert set(out) <= set(PROFILE_KEYS)
    assert sum(out[f"prof/{c}_share"] for c in CLASSES) == pytest.approx(1.0)
