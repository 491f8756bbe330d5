"""The CUDA paths, on a GPU node: step timing without a per-step sync, allocator peaks, NVML telemetry (units and
plausibility), the launcher's and the benchmark's parents without a CUDA context, NCCL, every precision (dtypes,
loss scale, skipped steps), TF32 for matmul and cuDNN convolutions, and torch.compile (tf32 + max-autotune, CUDA
graphs under reduce-overhead). Every GPU test lives here. Each is skipped, with the reason, where torch sees no
CUDA device (`python -m pytest -q -rs -m gpu tests` prints the reasons).

Each test's docstring says how it fails for the bug it names: none of them can be run on the CPU machines the
suite is written on, so that is their argument for being right (issue 19)."""

import contextlib
import json
import os
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT

from train.contract.errors import UsageError
from train.contract.metrics import PROFILE_CLASSES
from train.measure.memory import MemoryMonitor
from train.measure.timing import StepTimer
from train.numerics import precision
from train.runner.options import PRECISIONS, parse_args
from train.runner.session import train

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: torch sees none")]

RUNNER = [sys.executable, os.path.join(ROOT, "train", "run.py")]
GiB = 2**30


def _run(tmp_path, *extra, steps=4, batch=16):
    # No idle-power measurement (3 s a run by default) but where a test asks for it: GPU minutes are few.
    return train(parse_args(["--dataset", "synthetic", "--max-steps", str(steps), "--batch-size", str(batch),
                             "--log-every", "2", "--warmup-steps", "1", "--device", "cuda", "--wandb-mode",
                             "disabled", "--idle-power-s", "0", "--out-dir", str(tmp_path), *extra]))


@contextlib.contextmanager
def _sync_is_an_error():
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def _captured_config(monkeypatch) -> list[dict]:
    """The run's W&B config, caught on its way to W&B (the runs here have W&B disabled)."""
    from train.runner import session
    from train.runner.wandb_config import wandb_config

    configs = []
    monkeypatch.setattr(session, "wandb_config", lambda *a, **k: configs.append(wandb_config(*a, **k)) or configs[-1])
    return configs


def _nvidia_files(pid: int) -> set[str]:
    """The /dev/nvidia* files a process holds open, from /proc (NVML's process list gives host PIDs in a container)."""
    found = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("/dev/nvidia"):
                    found.add(target)
    return found


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


# A CUDA context opens /dev/nvidia-uvm (cuInit does); NVML, which the launcher uses to count GPUs, opens only
# /dev/nvidiactl and /dev/nvidia<N>. So a parent holding /dev/nvidia-uvm has initialised CUDA.
UVM = "/dev/nvidia-uvm"


def _watch(proc: subprocess.Popen) -> tuple[set[str], set[str], str]:
    """While `proc` runs: the /dev/nvidia* files it held, those its descendants held, and what it printed."""
    parent, children, out = set(), set(), []
    for line in proc.stdout:
        out.append(line)
        parent |= _nvidia_files(proc.pid)
        for child in _descendants(proc.pid):
            children |= _nvidia_files(child)
    proc.wait(timeout=600)
    return parent, children, "".join(out)


# --- timing and memory -------------------------------------------------------------------------------------

def test_step_timing_needs_no_sync_per_step_and_agrees_with_the_wall_clock():
    """Fails for a hidden per-step sync in the timer (an event's `synchronize`, an `elapsed_time` read per step,
    a `.item()`): the steps run under set_sync_debug_mode("error"), which raises on any synchronizing call; only
    `collect()`, the window's one read, runs outside it. And for events that miss the device work (recorded on
    another stream, or before the kernels): their total would fall short of the wall clock."""
    device = torch.device("cuda")
    timer = StepTimer(device)
    a = torch.randn(2048, 2048, device=device)
    torch.cuda.synchronize()
    started = time.perf_counter()
    with _sync_is_an_error():
        for _ in range(5):
            timer.start()
            timer.data_ready()
            for _ in range(20):
                a = (a @ a).clamp_(-1, 1)
            timer.end()
    times = timer.collect()  # waits on the last event
    wall = time.perf_counter() - started
    total = sum(step for step, _ in times)
    assert len(times) == 5 and all(step > 0 for step, _ in times)
    assert 0.8 * wall <= total <= 1.01 * wall  # the events cover the device work, launch gaps aside


@pytest.mark.parametrize("name", ["fp32", "amp_fp16"])
def test_the_runners_steps_between_log_windows_never_sync(tmp_path, monkeypatch, name):
    """Fails for a per-step host sync anywhere in the runner's steps (the loader, the forward and backward, the
    loss scaler, the optimizer, the skipped-step count, the lost-update probe, the console): from the end of the
    first log window on, every step runs under set_sync_debug_mode("error"), where a synchronizing call raises and
    fails the run; only the log windows themselves (their one sync each) run in the default mode. The first
    window's steps are left out: cuDNN's benchmark search, once per shape, frees the allocator's cache.
    amp_fp16 adds GradScaler's path."""
    from train.runner import loop, window

    train_epoch, log = loop._train_epoch, window.LogWindow.log
    windows = []

    def epoch(t, w, clock):
        try:
            return train_epoch(t, w, clock)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    def window_may_sync(self, *args):
        torch.cuda.set_sync_debug_mode("default")
        try:
            return log(self, *args)
        finally:
            windows.append(self.t.state.progress.step)
            torch.cuda.set_sync_debug_mode("error")  # the steps up to the next window

    monkeypatch.setattr(loop, "_train_epoch", epoch)
    monkeypatch.setattr(window.LogWindow, "log", window_may_sync)
    summary = _run(tmp_path, "--precision", name, steps=12, batch=64)
    assert summary["train/steps"] == 12 and windows == [2, 4, 6, 8, 10, 12]  # 10 steps ran where a sync raises


def test_allocator_peaks_are_per_window_and_reset():
    """Fails for peaks that are not reset per window (the second window would report the first one's 256 MiB) and
    for a run peak that is not the maximum over windows. Each block is freed inside its window: reset sets the
    peak to the memory in use, so a block alive across the reset would count in the next window too."""
    device = torch.device("cuda")
    monitor = MemoryMonitor(device)
    base = torch.cuda.memory_allocated(device)
    block = torch.empty(256 * 2**20, dtype=torch.uint8, device=device)
    del block
    first = monitor.read_and_reset()["mem/max_allocated_bytes"]
    small = torch.empty(16 * 2**20, dtype=torch.uint8, device=device)
    del small
    second = monitor.read_and_reset()["mem/max_allocated_bytes"]
    assert first >= base + 256 * 2**20
    assert base + 16 * 2**20 <= second < base + 256 * 2**20
    assert monitor.peaks["mem/peak_allocated_bytes"] == first


def test_on_a_gpu_activations_are_the_allocator_peak_less_the_tensors(tmp_path):
    """Fails if a memory part is missed or counted twice: the parts must add up to the allocator's peak exactly."""
    result = _run(tmp_path, "--precision", "amp_bf16", steps=20, batch=128)
    parts = sum(result[f"mem/{k}_bytes"] for k in ("params", "grads", "optimizer", "data", "measurement",
                                                   "activations"))
    assert parts == result["mem/peak_allocated_bytes"] and result["mem/activations_bytes"] > 0


# --- NVML ----------------------------------------------------------------------------------------------------

@pytest.fixture
def nvml_handle():
    pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed")
    from train.measure.nvml import handle_for_cuda_device

    pynvml.nvmlInit()
    return pynvml, handle_for_cuda_device(pynvml, torch.cuda.current_device())


def test_a_run_logs_nvml_power_energy_and_memory_in_their_units(tmp_path, nvml_handle):
    """Fails for a wrong unit or multiplier (power in mW, energy in mJ, memory in KiB or MiB would be 1000x or 2^10x
    off these bounds), for energy that is not the run's (energy ≈ mean power × training time, within 25%), and for a
    sampler that did not sample (the keys would be missing)."""
    pynvml, handle = nvml_handle
    limit_w = pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000  # mW
    total_bytes = torch.cuda.get_device_properties(0).total_memory
    s = _run(tmp_path, "--precision", "amp_bf16", "--nvml-hz", "20", "--idle-power-s", "1", steps=400, batch=256)
    power, energy, seconds = s["nvml/power_w_mean"], s["nvml/energy_total_j"], s["time/train_s"]
    assert 20 <= s["nvml/idle_power_w"] <= power <= 1.1 * limit_w, (s["nvml/idle_power_w"], power, limit_w)
    assert 0.75 * power * seconds <= energy <= 1.25 * power * seconds, (energy, power, seconds)
    if s["nvml/energy_source"] == "counter":  # and the counter agrees with the integral of sampled power
        assert 0.75 <= s["nvml/energy_counter_vs_power"] <= 1.25, s["nvml/energy_counter_vs_power"]
    assert s["mem/peak_reserved_bytes"] <= s["nvml/memory_used_bytes_max"] <= total_bytes
    assert 0 < s["nvml/util_pct_mean"] <= 100 and 100 <= s["nvml/sm_clock_mhz_mean"] <= 3000


def test_nvml_counts_the_pcie_bytes_of_a_known_copy(nvml_handle):
    """Fails for PCIe counters read with a wrong multiplier or scope, or with TX and RX swapped: 2 GiB copied to the
    GPU must show as about 2 GiB received (RX, the GPU's side) and little sent, and the copy back as sent."""
    from train.measure.nvml import NvmlSampler

    pynvml, handle = nvml_handle
    sampler = NvmlSampler(pynvml, handle, hz=1, say=print)  # not started: ticked here, around each copy
    if "pcie_rx" not in sampler.counters:
        pytest.skip("this GPU or driver has no PCIe byte counters (fields 197/198): the sampler falls back to "
                    "nvmlDeviceGetPcieThroughput, a sampled rate")
    host = torch.empty(GiB, dtype=torch.uint8, pin_memory=True)
    device = torch.empty(GiB, dtype=torch.uint8, device="cuda")

    def bytes_moved(copy) -> tuple[float, float]:
        torch.cuda.synchronize()
        sampler.tick()
        sampler.window()  # from here
        for _ in range(2):
            copy()
        torch.cuda.synchronize()
        time.sleep(0.2)  # the counters lag the copy a little
        sampler.tick()
        return sampler.totals.window_delta("pcie_rx"), sampler.totals.window_delta("pcie_tx")

    rx, tx = bytes_moved(lambda: device.copy_(host, non_blocking=True))
    assert 0.85 * 2 * GiB <= rx <= 1.3 * 2 * GiB and tx < 0.25 * 2 * GiB, (rx, tx)
    rx, tx = bytes_moved(lambda: host.copy_(device, non_blocking=True))
    assert 0.85 * 2 * GiB <= tx <= 1.3 * 2 * GiB and rx < 0.25 * 2 * GiB, (rx, tx)


# --- processes that must not hold a CUDA context ---------------------------------------------------------------

@pytest.mark.system  # the elastic launcher and its worker
def test_the_launcher_never_holds_a_cuda_context(tmp_path):
    """Fails if the launcher (the elastic agent, alive for the whole job) initialises CUDA: it would hold
    /dev/nvidia-uvm. The worker must hold it, or the check could not see a context at all. Read from /proc, as
    NVML's process list gives the host's PIDs inside a container."""
    proc = subprocess.Popen([*RUNNER, "--gpus", "1", "--dataset", "synthetic", "--max-steps", "300", "--log-every",
                             "10", "--wandb-mode", "disabled", "--idle-power-s", "0", "--out-dir", str(tmp_path)],
                            stdout=subprocess.PIPE, text=True)
    launcher, workers, out = _watch(proc)
    assert proc.returncode == 0, out[-2000:]
    assert UVM in workers, (workers, "the worker showed no CUDA context: the check sees nothing here")
    assert UVM not in launcher, launcher


@pytest.mark.system  # the benchmark and a process per point
def test_the_benchmark_gives_cuda_points_their_turns_without_a_context_of_its_own(tmp_path):
    """Fails if the benchmark's parent initialises CUDA (it used torch.cuda.current_device() for its refusals and
    get_device_name() for its heading): it would hold /dev/nvidia-uvm while its points train. Also checks the
    heading names the GPU from the points' own word, and the turns and ratios as before."""
    proc = subprocess.Popen([sys.executable, "-m", "train.benchmark", "--device", "cuda", "--precisions", "fp32",
                             "bf16", "--bare", "--rounds", "2", "--steps", "6", "--warmup-steps", "2", "--batch-size",
                             "16", "--wandb-mode", "disabled", "--out-dir", str(tmp_path)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    parent, points, out = _watch(proc)
    assert proc.returncode == 0, out[-4000:]
    assert UVM in points and UVM not in parent, (parent, points)
    assert out.count("== round 2/2") == 4 and "failed" not in out
    assert f"on GPU {torch.cuda.get_device_name()}," in out
    bf16 = next(line.split() for line in out.splitlines() if line.split()[:2] == ["18", "bf16"])
    assert bf16[5].endswith("x") and "peak alloc MiB" in out
    assert "runner/bare (step)" in out


# --- NCCL and the precisions ---------------------------------------------------------------------------------

def test_nccl_all_reduce_in_one_process(tmp_path):
    import torch.distributed as dist

    assert dist.is_nccl_available()
    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1,
                            device_id=torch.device("cuda", 0))
    try:
        x = torch.full((4,), 3.0, device="cuda")
        dist.all_reduce(x)
        torch.cuda.synchronize()
        assert x.tolist() == [3.0] * 4
    finally:
        dist.destroy_process_group()


def _dtypes_seen(monkeypatch) -> dict:
    """The dtypes the model computes in while it trains: conv1's and fc's outputs, bn1's weight."""
    from train.runner import setup

    seen, build = {}, setup.build_model

    def watch(name, dtype_of):
        def hook(module, args, out):  # returns None: a value would replace the module's output
            seen.setdefault(name, dtype_of(module, out))
        return hook

    def build_and_watch(cfg, policy):
        model, facts = build(cfg, policy)
        model.conv1.register_forward_hook(watch("conv1", lambda m, out: out.dtype))
        model.fc.register_forward_hook(watch("fc", lambda m, out: out.dtype))
        model.bn1.register_forward_hook(watch("bn1_weight", lambda m, out: m.weight.dtype))
        return model, facts

    monkeypatch.setattr(setup, "build_model", build_and_watch)
    return seen


@pytest.mark.parametrize("name", PRECISIONS)
def test_every_precision_trains_in_its_dtypes_with_its_loss_scaling(tmp_path, monkeypatch, name):
    """Fails for a policy that computes in the wrong dtype (autocast not entered, weights not cast), casts
    BatchNorm, saves weights in another dtype, scales the loss where it should not (or not where it should), or
    skips most of its steps (a loss scale that never settles)."""
    policy = precision.get(name)
    major, _ = torch.cuda.get_device_capability()
    if policy.fp8_recipe:  # the ResNet has no Linear fp8 converts: refused before the device is asked
        with pytest.raises(UsageError, match="cannot help resnet18"):
            _run(tmp_path, "--precision", name)
        return
    if policy.needs_ampere and major < 8:
        with pytest.raises(UsageError):
            _run(tmp_path, "--precision", name)
        return
    seen, configs = _dtypes_seen(monkeypatch), _captured_config(monkeypatch)
    summary = _run(tmp_path, "--precision", name, steps=30, batch=64)
    assert summary["train/steps"] == 30 and summary["train/images_per_s"] > 0
    assert summary["train/diverged_at_step"] is None
    compute = policy.autocast_dtype or policy.param_dtype
    assert seen == {"conv1": compute, "fc": compute, "bn1_weight": torch.float32}, seen
    settings = configs[0]["precision_settings"]
    assert settings["loss_scaler"] is policy.loss_scaling and settings["tf32_cudnn"] is policy.tf32
    if policy.loss_scaling:
        assert 0 <= summary["amp/skipped_steps"] < 15  # a few at the start, while the scale falls to fit
        assert 1 <= summary["amp/loss_scale"]["last"] <= 65536.0
    else:
        assert summary["amp/skipped_steps"] is None and "amp/loss_scale" not in summary
    state = torch.load(os.path.join(summary["run_dir"], "checkpoint.pt"), weights_only=True)["state"]["model"]
    weights = {k: v.dtype for k, v in state.items() if v.is_floating_point()}
    bn = {k for k in weights if k.split(".")[-2].startswith("bn") or "downsample.1." in k}
    assert {weights[k] for k in bn} == {torch.float32}
    assert {weights[k] for k in weights if k not in bn} == {policy.param_dtype}


@pytest.mark.parametrize("model,name,tensor_cores", [
    ("resnet", "fp32", False), ("resnet", "tf32", True), ("resnet", "amp_bf16", True),
    ("vit-s", "amp_bf16", True), ("vit-s", "fp8_tensorwise", True)])  # the ViT: attention, LayerNorm, fp8 GEMMs
def test_the_profile_classifies_this_gpus_kernels(tmp_path, model, name, tensor_cores):
    """Fails where the kernel-name rules (train/measure/profile_classes.py, written before any GPU ran them) miss
    the kernels cuDNN, cuBLAS, flash attention and torchao's float8 really launch here: over 10% of the profiled
    step in `other`, convolutions and matmuls under a third of it or no normalisation, classes that do not add up
    to the step, or tensor-core kernels not told apart (fp32 keeps TF32 off: no tensor cores; the others on them).
    The message lists the unclassified kernels, to write the rule they need."""
    from train.measure.profile_classes import classify, is_tensor_core

    if name.startswith("fp8") and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 needs compute capability 8.9+ (the fp8 test checks its refusal here)")
    summary = _run(tmp_path, "--model", model, "--precision", name, "--profile", "3", steps=8, batch=256)
    share = {c: summary[f"prof/{c}_share"] for c in PROFILE_CLASSES}
    [trace] = (os.path.join(summary["run_dir"], "profile", f) for f in os.listdir(os.path.join(summary["run_dir"],
                                                                                                "profile")))
    with open(trace) as f:
        kernels = {e["name"] for e in json.load(f)["traceEvents"] if e.get("cat") == "kernel"}
    unnamed = sorted(k for k in kernels if classify(k) == "other")[:20]
    assert share["other"] < 0.10, f"{share['other']:.0%} of the step unclassified; kernels: {unnamed}"
    assert share["conv_matmul"] > 1 / 3 and share["norm"] > 0, share
    assert sum(summary[f"prof/{c}_ms"] for c in PROFILE_CLASSES) == pytest.approx(summary["prof/step_ms"], rel=0.02)
    convs = sorted(k for k in kernels if classify(k) == "conv_matmul")
    if tensor_cores:
        assert summary["prof/tensor_core_share"] > 0.8, [k for k in convs if not is_tensor_core(k)][:20]
    else:
        assert summary["prof/tensor_core_share"] < 0.05, [k for k in convs if is_tensor_core(k)][:20]


def _relative_error(got: torch.Tensor, exact: torch.Tensor) -> float:
    return ((got.double() - exact).norm() / exact.norm()).item()


def test_fp32_turns_tf32_off_and_tf32_turns_it_on_for_matmul_and_cudnn_convolutions():
    """Fails for either switch not reaching its backend: a cuDNN convolution (what a convnet runs) and a matmul,
    each against float64: IEEE fp32 is ~1e-6 off, TF32's 10-bit mantissa ~1e-3. `fp32` leaving cuDNN's TF32 on
    (its default) shows as a large conv error; `tf32` not switching it on, as a small one. And for flags that do
    not read back (torch 2.14 raised on allow_tf32 after the new API alone)."""
    torch.manual_seed(0)
    a = torch.randn(1024, 1024, device="cuda")
    x, w = torch.randn(8, 64, 32, 32, device="cuda"), torch.randn(64, 64, 3, 3, device="cuda")
    exact_mm = a.double() @ a.double()
    exact_conv = F.conv2d(x.double(), w.double(), padding=1)
    errors = {}
    try:
        for name in ("tf32", "fp32"):
            flags = precision.get(name).set_backend_flags()
            on = name == "tf32"
            assert flags == {"tf32_matmul": on, "tf32_cudnn": on}
            assert torch.backends.cuda.matmul.allow_tf32 is on and torch.backends.cudnn.allow_tf32 is on
            assert torch.get_float32_matmul_precision() == ("high" if on else "highest")
            errors[name] = (_relative_error(a @ a, exact_mm), _relative_error(F.conv2d(x, w, padding=1), exact_conv))
    finally:
        precision.get("fp32").set_backend_flags()
    assert all(e < 5e-5 for e in errors["fp32"]), errors  # Winograd or FFT algorithms stay near 1e-5
    assert all(1e-4 < e < 1e-2 for e in errors["tf32"]), errors


# --- torch.compile -------------------------------------------------------------------------------------------

@pytest.fixture
def fresh_dynamo():
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    yield counters
    torch._dynamo.reset()


@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_a_compiled_run_trains_and_saves_the_uncompiled_model(tmp_path, fresh_dynamo, mode):
    summary = _run(tmp_path, "--precision", "fp32", "--compile", mode)
    assert summary["train/steps"] == 4 and summary["time/compile_s"] > 0
    state = torch.load(os.path.join(summary["run_dir"], "checkpoint.pt"), weights_only=True)["state"]["model"]
    assert not any(k.startswith(("_orig_mod.", "compiled.")) for k in state)


def test_tf32_compiles_with_max_autotune(tmp_path, fresh_dynamo):
    """Fails for TF32 flags Inductor cannot read: its autotuner and its FX-graph cache key call
    torch.get_float32_matmul_precision(), which raised "mix of the legacy and new APIs" on torch 2.14 when the
    policy set only the new fp32_precision API. Convolutions are left to ATen here (autotuning them all takes
    minutes); the classifier's matmul is still autotuned."""
    import torch._inductor.config as inductor

    patch = inductor.patch(max_autotune_conv_backends="ATEN") if hasattr(inductor, "max_autotune_conv_backends") \
        else contextlib.nullcontext()
    try:
        with patch:
            summary = _run(tmp_path, "--precision", "tf32", "--compile", "max-autotune")
        assert summary["train/steps"] == 4 and summary["time/compile_s"] > 0
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        precision.get("fp32").set_backend_flags()


def test_reduce_overhead_runs_the_steps_as_cuda_graphs(tmp_path, monkeypatch, fresh_dynamo):
    """Fails if reduce-overhead quietly skips CUDA graphs (Inductor counts each skip: mutated inputs, CPU tensors,
    dynamic shapes) or never replays one: then the mode would only be `default` under another name."""
    replays = []
    replay = torch.cuda.CUDAGraph.replay

    def counted(self):
        replays.append(1)
        return replay(self)

    monkeypatch.setattr(torch.cuda.CUDAGraph, "replay", counted)
    summary = _run(tmp_path, "--precision", "amp_bf16", "--compile", "reduce-overhead", steps=8)
    assert summary["train/steps"] == 8
    assert fresh_dynamo["inductor"]["cudagraph_skips"] == 0, dict(fresh_dynamo["inductor"])
    assert len(replays) >= 8, len(replays)  # forward and backward graphs, replayed on the steps after recording


@pytest.mark.parametrize("name", ["fp8_tensorwise", "fp8_rowwise"])
def test_fp8_trains_a_vit_compiled_where_the_gpu_has_fp8_and_is_refused_elsewhere(tmp_path, monkeypatch, name):
    """Fails if fp8 does not run (or is not refused in one line) on this GPU, if it runs uncompiled against
    torchao's advice, or if its config lacks the recipe or the bf16 peak its second MFU needs."""
    pytest.importorskip("torchao.float8", reason="fp8 needs torchao (requirements.txt)")
    args = ("--model", "vit-smoke", "--precision", name, "--compile", "default")
    if torch.cuda.get_device_capability() < (8, 9):
        with pytest.raises(UsageError, match="compute capability 8.9"):
            _run(tmp_path, *args)
        return
    configs = _captured_config(monkeypatch)
    summary = _run(tmp_path, *args, steps=30, batch=64)
    assert summary["train/steps"] == 30 and summary["train/diverged_at_step"] is None
    assert configs[0]["precision_settings"]["fp8_recipe"] == name.removeprefix("fp8_")
    assert "peak_bf16_flops_per_s" in configs[0]["system"]
