"""`gradprobe.fast.swap`: the one mechanism that installs the fast path and reference mode."""

from __future__ import annotations

import pytest
import torch
from spikingjelly.activation_based import functional, layer, neuron

from gradprobe import fast
from gradprobe.fast import FusedLIFNode, LoopLIFNode
from gradprobe.fast.cl_pool import FastMaxPool2d
from gradprobe.fast.swap import plain_class, restore_modules, swap_class, swap_modules
from gradprobe.models import create_model


def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(
        "spikformer_4_256_cifar", downsample="maxpool_lif", T=2, embed_dim=32, num_heads=2, depth=1
    )


def test_swapping_keeps_parameters_state_and_hooks() -> None:
    model = tiny()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    params = [id(p) for p in model.parameters()]
    calls = []
    lif = model.stem.stages.stage4.lif
    attn = model.blocks[0].attn
    for module in (lif, attn):
        module.register_forward_hook(lambda m, i, o: calls.append(type(m).__name__))
    x = torch.rand(2, 3, 32, 32)
    model.eval()  # BatchNorm keeps its running statistics
    for mode in ("fast", "reference", "fast"):
        fast.configure(model, mode, device="cpu", compile_kernels=False)
        functional.reset_net(model)
        with torch.no_grad():
            model(x)
    assert calls == [
        "FusedLIFNode",
        "TokenStreamSelfAttention",
        "LoopLIFNode",
        "ReferenceTokenSelfAttention",
        "FusedLIFNode",
        "TokenStreamSelfAttention",
    ]
    assert [id(p) for p in model.parameters()] == params
    assert list(model.state_dict()) == list(state)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert restore_modules(model) > 0
    assert restore_modules(model) == 0  # every module has its own class back
    assert type(lif) is neuron.LIFNode and type(model.blocks).__name__ == "Sequential"


def test_print_shows_the_swapped_class_and_its_settings() -> None:
    model = tiny()
    fast.configure(model, "fast", device="cpu", compile_kernels=False, exact=True)
    text = repr(model)
    assert "FusedLIFNode(" in text and "compiled=False, bf16_margin=False" in text
    assert "FastPointwiseBN(\n" in text and "exact=True" in text
    assert "FastMaxPool2d(" in text
    assert "TokenStream(" not in text  # exact keeps the model's own stream


def test_swap_modules_matches_own_classes_and_sets_options() -> None:
    model = torch.nn.Sequential(
        neuron.LIFNode(step_mode="m"),
        neuron.ParametricLIFNode(step_mode="m"),  # a subclass: not matched
        layer.MaxPool2d(2, step_mode="m"),
    )
    assert swap_modules(model, {neuron.LIFNode: FusedLIFNode}, compiled=True) == 1
    assert type(model[0]) is FusedLIFNode and model[0].compiled and not model[0].bf16_margin
    assert type(model[1]) is neuron.ParametricLIFNode
    # a swapped module counts as its own class; the settings of the class it leaves go
    assert swap_modules(model, {neuron.LIFNode: LoopLIFNode}) == 1
    assert type(model[0]) is LoopLIFNode and "compiled" not in model[0].__dict__
    assert plain_class(LoopLIFNode) is neuron.LIFNode
    assert swap_modules(model, {layer.MaxPool2d: FastMaxPool2d}) == 1
    assert restore_modules(model) == 2


def test_swap_class_refuses_what_cannot_run_in_place() -> None:
    lif = neuron.LIFNode(step_mode="m")
    with pytest.raises(TypeError, match="LoopLIFNode has no option compiled"):
        swap_class(lif, LoopLIFNode, compiled=True)
    with pytest.raises(TypeError, match="FastMaxPool2d does not run in place of LIFNode"):
        swap_class(lif, FastMaxPool2d)
    assert type(lif) is neuron.LIFNode
