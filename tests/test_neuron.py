"""Neuron construction: reference defaults, LIF maths (eq. 3-5), clear errors.

How a LIF is computed (fused kernel, per-timestep loop) is not a neuron setting but the step
mode's: those kernels are tested with `gradprobe.fast` (``tests/test_fast_fused_lif.py``,
``tests/test_fast_reference_mode.py``).
"""

import pytest
import torch

from gradprobe.neuron import NeuronConfig, is_spiking_neuron, make_neuron


def test_reference_defaults():
    lif = make_neuron()
    assert (lif.tau, lif.v_threshold, lif.v_reset, lif.detach_reset) == (2.0, 1.0, 0.0, True)
    assert lif.step_mode == "m" and lif.surrogate_function.alpha == 4.0
    assert is_spiking_neuron(lif) and not is_spiking_neuron(torch.nn.ReLU())


def test_lif_matches_equations_3_to_5():
    torch.manual_seed(0)
    x = torch.randn(6, 3, 5) * 2
    lif = make_neuron()
    got = lif(x)
    v = torch.zeros(3, 5)
    want = []
    for xt in x:
        h = v + (xt - v) / 2.0  # eq. (3) with V_reset = 0
        s = (h >= 1.0).float()  # eq. (4)
        v = h * (1 - s)  # eq. (5), hard reset to 0
        want.append(s)
    assert torch.equal(got, torch.stack(want))


def test_plif_and_overrides():
    plif = make_neuron(NeuronConfig(kind="plif", tau=2.0))
    assert plif.w.requires_grad
    attn = make_neuron(NeuronConfig(), v_threshold=0.5)
    assert attn.v_threshold == 0.5


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("kind", "izhikevich", "choices: lif, plif"),
        ("surrogate", "relu", "choices: sigmoid, atan"),
        ("tau", 1.0, "tau must be > 1"),
    ],
)
def test_bad_config_names_value_and_choices(field, value, message):
    with pytest.raises(ValueError, match=message):
        NeuronConfig(**{field: value})


def test_the_kernel_is_not_a_neuron_setting():
    """``trainer.mode`` alone picks the LIF kernel; a neuron config has no second switch."""
    with pytest.raises(TypeError, match="kernel"):
        NeuronConfig(kernel="loop")
    assert type(make_neuron()).__name__ == "LIFNode"  # spikingjelly's own, on every device
