import pytest
import torch

from train.numerics import vit
from train.numerics.models import FORWARD_FLOPS, count_params, forward_flops_per_image, linear_products, resnet

# Published counts of the CIFAR layout (kuangliu/pytorch-cifar): params exact, forward MACs exact.
EXPECTED = {18: (11_173_962, 555_422_720), 34: (21_282_122, 1_159_402_496), 50: (23_520_842, 1_297_829_888)}


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_parameter_count_and_flops_match_the_cifar_layout(depth):
    model = resnet(depth)
    params, macs = EXPECTED[depth]
    assert count_params(model) == params
    assert forward_flops_per_image(model) == 2 * macs == FORWARD_FLOPS[depth]  # the runner's table, uncounted


def test_cifar_stem_keeps_resolution_and_outputs_ten_classes():
    model = resnet(18).eval()
    assert model.conv1.stride == (1, 1) and model.conv1.kernel_size == (3, 3)
    assert isinstance(model.maxpool, torch.nn.Identity)
    seen = {}
    model.layer4.register_forward_hook(lambda m, i, o: seen.update(shape=o.shape))
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 32, 32))
    assert out.shape == (2, 10)
    assert seen["shape"][-2:] == (4, 4)  # 32 -> 4 through three stride-2 stages, no max-pool


def test_bottleneck_puts_the_stride_on_the_3x3_conv():
    block = resnet(50).layer2[0]
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2) and block.conv2.kernel_size == (3, 3)


def test_linear_products_are_measured_on_the_meta_device_largest_first_or_unknown():
    with torch.device("meta"):
        assert linear_products(resnet(18)) == [[1, 512, 10, 1]]  # the head, on the pooled features
        assert linear_products(vit.vit_s(None))[:2] == [[65, 384, 1536, 12], [65, 1536, 384, 12]]  # fc1, fc2
        reads_a_value = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3072, 10))
        reads_a_value.register_forward_pre_hook(lambda m, args: args[0].sum().item())  # no value on meta
        assert linear_products(reads_a_value) is None
