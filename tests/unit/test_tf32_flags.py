"""Every TF32 getter, legacy and new, reads back each precision policy's choice without raising. On torch 2.14 a
policy that set only the new `fp32_precision` API made `allow_tf32` and `get_float32_matmul_precision()` raise
("mix of the legacy and new APIs"), and Inductor's max-autotune reads the latter: `--compile max-autotune
--precision tf32` failed. Readable on CPU: these are process-wide flags, no GPU is needed to set or read them."""

import pytest
import torch

from train.numerics import precision


@pytest.fixture
def restore_flags():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _all_getters() -> dict:
    read = {
        "matmul.allow_tf32": lambda: torch.backends.cuda.matmul.allow_tf32,
        "cudnn.allow_tf32": lambda: torch.backends.cudnn.allow_tf32,
        "get_float32_matmul_precision": torch.get_float32_matmul_precision,
    }
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        read |= {"matmul.fp32_precision": lambda: torch.backends.cuda.matmul.fp32_precision,
                 "cudnn.conv.fp32_precision": lambda: torch.backends.cudnn.conv.fp32_precision,
                 "cudnn.rnn.fp32_precision": lambda: torch.backends.cudnn.rnn.fp32_precision}
    return {name: get() for name, get in read.items()}  # a getter that raises fails the test here


# Each policy after each other one: the flags are process-wide, so a run's policy lands on the previous one's.
@pytest.mark.parametrize("before", ["fp32", "tf32", "amp_bf16"])
@pytest.mark.parametrize("name", ["fp32", "tf32", "amp_fp16", "amp_bf16", "fp16", "bf16"])
def test_every_tf32_getter_agrees_after_each_policy(restore_flags, before, name):
    precision.get(before).set_backend_flags()
    policy = precision.get(name)
    flags = policy.set_backend_flags()
    got = _all_getters()
    assert got["matmul.allow_tf32"] is policy.tf32 and got["cudnn.allow_tf32"] is policy.tf32, got
    assert got["get_float32_matmul_precision"] == ("high" if policy.tf32 else "highest"), got
    mode = "tf32" if policy.tf32 else "ieee"
    assert all(got[k] == mode for k in got if k.endswith("fp32_precision")), got
    assert flags == {"tf32_matmul": policy.tf32, "tf32_cudnn": policy.tf32}
