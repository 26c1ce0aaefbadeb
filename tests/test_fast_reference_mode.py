"""`gradprobe.fast.reference_mode`: the official code's loop and layouts, swapped in and out.

That reference mode computes the fast path's numbers is `tests/test_fast.py`'s business; here:
the loop LIF computes the model's own LIF, and the layouts are installed where they apply and
named in ``print(model)``.
"""

from __future__ import annotations

import torch
from spikingjelly.activation_based import functional

from gradprobe import fast
from gradprobe.fast import LoopLIFNode, set_lif_kernel
from gradprobe.fast.reference_mode import ReferenceSPSStem, ReferenceTokenSelfAttention
from gradprobe.models import create_model
from gradprobe.neuron import make_neuron


def tiny(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    sizes = {"embed_dim": 32, "num_heads": 2, "depth": 1} if "former" in name else {}
    return create_model(name, downsample="lif_maxpool", T=2, num_classes=10, **sizes)


def test_loop_lif_equals_the_models_lif_forward_and_backward() -> None:
    torch.manual_seed(1)
    x = torch.randn(4, 2, 3, 7, 7, requires_grad=True)
    outs, grads = [], []
    for kernel in ("auto", "loop"):
        lif = make_neuron()
        assert set_lif_kernel(lif, kernel) == 1
        assert (type(lif) is LoopLIFNode) is (kernel == "loop")
        y = lif(x)
        (g,) = torch.autograd.grad((y * torch.arange(y.numel()).view_as(y)).sum(), x)
        outs.append(y)
        grads.append(g)
        functional.reset_net(lif)
    assert torch.equal(outs[0], outs[1])
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-6, atol=1e-7)


def test_reference_layout_is_mirrored_for_cifar_transformers() -> None:
    for name in ("spikformer_4_256_cifar", "spikingformer_4_256_cifar"):
        assert fast.configure(tiny(name), "reference", device="cpu").reference_layout
    resnet = tiny("spiking_resnet19_cifar")
    assert not fast.configure(resnet, "reference", device="cpu").reference_layout
    assert type(resnet).__name__ == "ReferenceSpikingResNet19"  # the references' repeat over T


def test_print_names_what_reference_mode_runs() -> None:
    model = tiny("spikformer_4_256_cifar")
    fast.configure(model, "reference", device="cpu")
    text = repr(model)
    assert text.startswith("ReferenceSpikformer(")
    for name in ("ReferenceSPSStem", "ReferenceTokenSelfAttention", "ReferenceTokenMLP"):
        assert name in text
    assert "LoopLIFNode" in text and "LIFNode(" not in text.replace("LoopLIFNode(", "")
    assert isinstance(model.stem, ReferenceSPSStem)
    assert isinstance(model.blocks[0].attn, ReferenceTokenSelfAttention)
    fast.configure(model, "fast", device="cpu", compile_kernels=False)
    assert not any("Reference" in type(m).__name__ for m in model.modules())
    assert repr(model).startswith("Spikformer(")
