"""The ViTs' stated counts against PyTorch's own count, the model registry, and the ViT's training recipe."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from train.numerics import registry, vit
from train.numerics.models import count_params, flops_per_image
from train.runner.options import parse_args
from train.runner.setup import warmed_up

SMALL = [vit.ViTSize(32, 2, 2), vit.ViTSize(48, 3, 1, mlp_ratio=2)]


def _counted(model: torch.nn.Module, backward: bool) -> int:
    # The math attention is two batched products FlopCounterMode counts; the CPU's fused kernel it does not count.
    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel(SDPBackend.MATH):
        out = model(torch.zeros(2, 3, 32, 32))
        if backward:
            out.sum().backward()
    return counter.get_total_flops() // 2  # per image


@pytest.mark.parametrize("size", SMALL)
def test_stated_counts_equal_pytorchs_count_attention_included(size):
    model = vit.ViT(size)
    assert count_params(model) == vit.params(size)
    forward, train = flops_per_image(model)
    assert forward == _counted(model, backward=False)
    assert train == _counted(model, backward=True)
    uncounted = FlopCounterMode(display=False)  # the CPU's fused attention: what a count without MATH misses
    with uncounted, torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    assert forward - uncounted.get_total_flops() == 4 * vit.TOKENS ** 2 * size.width * size.layers  # QK^T and AV


def test_study_sizes_state_their_counts():
    # ViT-S/4 and ViT-B/4 on 65 tokens, 10 classes (formula in train/numerics/vit.py, checked above)
    assert (vit.params(vit.ViTSize(384, 6, 12)), vit.forward_flops(vit.ViTSize(384, 6, 12))) == (21_342_346,
                                                                                               2_840_618_496)
    assert (vit.params(vit.ViTSize(768, 12, 12)), vit.forward_flops(vit.ViTSize(768, 12, 12))) == (85_152_010,
                                                                                                11_201_989_632)
    assert count_params(registry.build("vit-s", None)) == 21_342_346


def test_a_vit_trains_with_its_recipe_unless_the_command_line_says_otherwise():
    cfg = parse_args(["--model", "vit-s"])
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.lr_warmup_epochs, cfg.depth) == ("adamw", 1e-3, 0.05, 5.0,
                                                                                         None)
    assert parse_args(["--model", "vit-s", "--lr", "3e-4"]).lr == 3e-4
    resnet = parse_args([])
    assert (resnet.arch, resnet.optimizer, resnet.lr, resnet.lr_warmup_epochs, resnet.depth) == ("resnet", "sgd",
                                                                                                0.005, 0.0, 18)


def test_depth_with_a_vit_is_refused_in_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(["--model", "vit-s", "--use_34"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--use_34 picks a ResNet" in err


def test_warm_up_rises_linearly_then_anneals_to_zero():
    m = warmed_up(4, 12, anneal=True)
    assert [m(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert m(4) == 1.0 and m(8) == pytest.approx(0.5) and m(12) == pytest.approx(0.0)
