"""Where a step's time goes: the rules that put each operator (CPU) or kernel (CUDA) of a profiled step in an
operation class, and the step-time breakdown by class, read from the profiler's Chrome trace. Torch-free: the
trace is JSON, so the rules and the arithmetic are tested on hand-written traces (docs/profile.md).

Non-overlap rule. CPU operators nest (aten::conv2d > aten::convolution > aten::mkldnn_convolution), so each
operator contributes only its self time (its span less its children's spans), and the class of that self time is
decided for the operator where it sits:
  1. a scope on its stack (itself or an enclosing span) decides first, the outermost one: everything inside the
     optimizer's step is optimizer time, everything while the loader produced the batch is data time;
  2. else the innermost operator on its stack that an op rule names (itself first): aten::empty inside
     aten::mkldnn_convolution is convolution time;
  3. else "other".
The step's own annotation is no operator: its self time, the host's time between operators (Python, the
profiler's own marks), is the host gap. On CUDA the classes are the kernels' and copies' device time (a kernel's
scope is its launching operator's stack); the host gap is the step's span less the time any device stream was
busy, and the all-reduce's time that ran under compute is reported apart (overlapped), not added twice.
"""

from __future__ import annotations

import re
from collections import defaultdict

from train.contract.metrics import PROFILE_CLASS_NAMES, PROFILE_CLASSES

STEP_ANNOTATION = "profile/step"  # spans one profiled step (train/measure/profiler.py records it)
DATA_ANNOTATION = "profile/data"  # spans the loader's producing of the step's batch

# The classes, in the order tables and plots show them; together they are the step time (the metric contract's
# prof/<class>_ms keys).
CLASSES = PROFILE_CLASSES
CLASS_NAMES = PROFILE_CLASS_NAMES

# Scopes: spans whose whole contents are one class, matched on any enclosing span (the outermost wins).
SCOPE_RULES = [
    ("data", r"^profile/data$"),
    ("optimizer", r"^Optimizer\.(step|zero_grad)#"),
    ("comm", r"^(nccl:|gloo:|c10d::|DDP\.)"),
]
# Op rules: operator (CPU) and kernel (CUDA) names, the first match wins; the innermost named operator decides.
OP_RULES = [
    # Inductor's compiled graph on CPU: its own time is its fused C++ kernels (element-wise work with the
    # normalisations and reductions fused in); first, as its random hash could spell any later rule's word
    ("elementwise", r"^## Call CompiledFxGraph "),
    # autograd's bookkeeping, not the node's work; a tensor subclass's dispatch (torchao's float8 tensors)
    ("other", r"^autograd::engine::evaluate_function|^PythonSubclass$"),
    ("grad_scaling", r"amp_foreach_non_finite|amp_update_scale|non_finite_check|unscale"),
    ("comm", r"nccl|all_?reduce|reduce_scatter|all_?gather|c10d::|gloo"),
    ("copy", r"^(Memcpy|Memset)|^aten::(copy_|_to_copy|to|clone|contiguous)$|cudaMemcpy"),
    ("loss", r"nll_loss|log_softmax|softmax|cross_entropy"),
    ("norm", r"batch_norm|layer_norm|group_norm|bn_fw|bn_bw|batchnorm|welford"),
    # attention is matmul time: its products (QK^T, AV) are in the counted FLOPs the achieved rate divides by
    # triton_tem_: Inductor's template kernels (its mm/bmm/conv under max-autotune)
    ("conv_matmul", r"conv|^aten::(mm|bmm|addmm|baddbmm|matmul|linear|_scaled_mm)$|gemm|cutlass|xmma|gmma|cudnn|"
                    r"wgrad|dgrad|^triton_tem_|scaled_dot_product|attention|flash|fmha"),
    ("optimizer", r"multi_tensor_apply|_foreach_|sgd|adam"),
    # (?<!mat)mul: not torchao's matmul_with_hp_or_float8_args (its own time is Python: other)
    ("elementwise", r"add|(?<!mat)mul|div|sub|relu|gelu|silu|sigmoid|tanh|dropout|threshold|clamp|abs|amax|"
                    r"elementwise|pool|mean|sum|reduce|fill|zero_|where|index|flip|pad|cat|neg|sqrt|exp|gather|"
                    r"scatter|roll"),
]
# Tensor-core kernels among convolution and matmul kernels, by the names cuBLAS, cuDNN and CUTLASS give them
# (HMMA/WGMMA instruction shapes, "tensorop", the xmma/gmma families).
TENSOR_CORE = r"h?mma|16816|1688|884|tensorop|wgmma|xmma|gmma|_s16|_h16|bf16.*gemm|gemm.*bf16|cutlass.*f16"
# ...except the plain-fp32 (FFMA) kernels of those families: cuDNN's xmma kernels for fp32 with TF32 off are named
# f32f32_f32f32 and ffma, where its TF32 ones say tf32f32; cuBLAS's SIMT GEMMs are sgemm/dgemm.
NOT_TENSOR_CORE = r"ffma|sgemm|dgemm|(?<!t)f32f32_f32f32"

_SCOPES = [(cls, re.compile(rx)) for cls, rx in SCOPE_RULES]
_OPS = [(cls, re.compile(rx, re.IGNORECASE)) for cls, rx in OP_RULES]
_TENSOR_CORE = re.compile(TENSOR_CORE, re.IGNORECASE)
_NOT_TENSOR_CORE = re.compile(NOT_TENSOR_CORE, re.IGNORECASE)
_DEVICE_CATS = ("kernel", "gpu_memcpy", "gpu_memset")
_HOST_CATS = ("cpu_op", "user_annotation", "python_function", "cuda_runtime", "cuda_driver")


def op_class(name: str) -> str | None:
    """The class an op rule gives this operator or kernel name; None when no rule names it."""
    for cls, rx in _OPS:
        if rx.search(name):
            return cls
    return None


def classify(name: str, stack: list[str] = ()) -> str:
    """The class of an operator's self time (or a kernel's time); `stack`: the enclosing spans' names,
    outermost first. Scopes first (outermost), then the innermost named operator, then "other"."""
    names = [*stack, name]
    for outer in names:
        for cls, rx in _SCOPES:
            if rx.search(outer):
                return cls
    for inner in reversed(names):
        cls = op_class(inner)
        if cls is not None:
            return cls
    return "other"


def is_tensor_core(kernel: str) -> bool:
    return bool(_TENSOR_CORE.search(kernel)) and not _NOT_TENSOR_CORE.search(kernel)


def _spans(events: list[dict], cats: tuple[str, ...]) -> list[dict]:
    return [e for e in events if e.get("ph") == "X" and e.get("cat") in cats and "dur" in e]


def _with_stacks(ops: list[dict]) -> list[tuple[dict, list[str], float]]:
    """(event, names of its enclosing spans outermost first, its self time in us) for one thread's spans."""
    out, stack = [], []  # stack entries: [event, its children's time, the names above it]
    for e in sorted(ops, key=lambda e: (e["ts"], -e["dur"])):
        while stack and e["ts"] >= stack[-1][0]["ts"] + stack[-1][0]["dur"]:
            out.append(stack.pop())
        if stack:
            stack[-1][1] += e["dur"]
        stack.append([e, 0.0, [s[0]["name"] for s in stack]])
    out.extend(reversed(stack))
    return [(e, above, max(0.0, e["dur"] - children)) for e, children, above in out]


def breakdown(trace: dict, keep: list[int] | None = None) -> dict | None:
    """Milliseconds per class per profiled step (the mean over the trace's profile/step spans, or the `keep`-th
    ones in time order: a span left unfinished is not a step), the step's span, and on CUDA the tensor-core
    share of convolution/matmul time and the overlapped all-reduce time. None when no profiled step is there."""
    events = trace.get("traceEvents", [])
    steps = sorted((e for e in _spans(events, ("user_annotation",)) if e["name"] == STEP_ANNOTATION),
                   key=lambda e: e["ts"])
    if keep is not None:
        steps = [s for i, s in enumerate(steps) if i in set(keep)]
    if not steps:
        return None
    device = _spans(events, _DEVICE_CATS)
    totals: dict[str, float] = defaultdict(float)
    extra: dict[str, float] = defaultdict(float)
    for step in steps:
        host = [e for e in _spans(events, _HOST_CATS)
                if e.get("tid") == step.get("tid") and e.get("pid") == step.get("pid") and _inside(e, step)]
        parts = _device_step(step, device, host, extra) if device else _host_step(step, host)
        for cls, us in parts.items():
            totals[cls] += us
    n = len(steps)
    out = {cls: totals.get(cls, 0.0) / n / 1e3 for cls in CLASSES}
    step_ms = sum(s["dur"] for s in steps) / n / 1e3
    result = {"classes": out, "step_ms": step_ms, "steps": n, "device": "cuda" if device else "cpu"}
    if device:
        conv = extra["conv_matmul_us"]
        result["tensor_core_share"] = extra["tensor_core_us"] / conv if conv else None
        result["comm_overlapped_ms"] = extra["comm_overlapped_us"] / n / 1e3
    return result


def _inside(e: dict, span: dict) -> bool:
    return e["ts"] >= span["ts"] and e["ts"] + e["dur"] <= span["ts"] + span["dur"] + 1e-3


def _host_step(step: dict, host: list[dict]) -> dict[str, float]:
    """CPU: each operator's self time in its class; the step annotation's own self time is the host gap."""
    parts: dict[str, float] = defaultdict(float)
    for e, stack, self_us in _with_stacks(host):
        if e is step:
            parts["host_gap"] += self_us
        elif e["name"] == STEP_ANNOTATION:
            continue  # another step's span cannot nest here; guards a malformed trace
        else:
            parts[classify(e["name"], [s for s in stack if s != STEP_ANNOTATION])] += self_us
    return parts


def _device_step(step: dict, device: list[dict], host: list[dict], extra: dict) -> dict[str, float]:
    """CUDA: device time per class of the step's kernels and copies (a kernel's scope: its launching operator's
    stack); all-reduce time under compute is counted once, as compute, and reported apart as overlapped."""
    stacks = {}
    for e, stack, _ in _with_stacks(host):
        corr = e.get("args", {}).get("correlation")
        if corr is not None:
            stacks[corr] = [s for s in stack if s != STEP_ANNOTATION]
    parts: dict[str, float] = defaultdict(float)
    compute, comm = [], []
    for k in device:
        if not _inside(k, step):
            continue
        stack = stacks.get(k.get("args", {}).get("correlation"), [])
        cls = classify(k["name"], stack)
        interval = (k["ts"], k["ts"] + k["dur"])
        (comm if cls == "comm" else compute).append(interval)
        if cls == "comm":
            continue
        parts[cls] += k["dur"]
        if cls == "conv_matmul":
            extra["conv_matmul_us"] += k["dur"]
            extra["tensor_core_us"] += k["dur"] if is_tensor_core(k["name"]) else 0.0
    busy, either = covered(compute), covered(compute + comm)
    comm_alone = either - busy
    parts["comm"] += comm_alone
    extra["comm_overlapped_us"] += covered(comm) - comm_alone
    parts["host_gap"] += max(0.0, step["dur"] - either)
    return parts


def covered(intervals: list[tuple[float, float]]) -> float:
    """Total length covered by the intervals (overlaps counted once; the all-reduce meter, comm.py, uses it too)."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def metrics(result: dict) -> dict:
    """prof/<class>_ms and prof/<class>_share (of the profiled step), the profiled step's time, and on CUDA
    the tensor-core share and the overlapped all-reduce time."""
    step = result["step_ms"]
    out = {"prof/step_ms": step, "prof/steps": result["steps"]}
    for cls, ms in result["classes"].items():
        out[f"prof/{cls}_ms"] = ms
        out[f"prof/{cls}_share"] = ms / step if step else None
    if result["device"] == "cuda":
        out["prof/tensor_core_share"] = result["tensor_core_share"]
        out["prof/comm_overlapped_ms"] = result["comm_overlapped_ms"]
    return out
