"""What a run is built from and how one training step runs: precision, optimisers, CUDA graphs
and `ablations.step.TrainStep` (eager, scaled, replayed)."""

import re

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module
from spikingjelly.activation_based import functional

import ablations.configs  # noqa: F401  (registers the model group)
from ablations.build import (
    TimestepOutputs,
    build_optimizer,
    cuda_graph_step,
    fused_optimizer,
    precision,
)
from ablations.checks import ConfigError
from ablations.distributed import Dist
from ablations.losses import TimeMeanCrossEntropy
from ablations.step import TrainStep
from gradprobe import fast
from gradprobe.models import create_model
from gradprobe.probe import attach_probe

CPU = torch.device("cpu")


def config(*overrides: str):
    with initialize_config_module("ablations.conf", version_base="1.3"):
        return compose("config", overrides=["debug=tiny", *overrides])


def cpu_plan(mode: str = "fast", exact: bool = False) -> fast.StepPlan:
    return fast.StepPlan(mode, CPU, None, "loop", False, 0, exact=exact)


def scaler(enabled: bool = False) -> torch.amp.GradScaler:
    return torch.amp.GradScaler("cpu", enabled=enabled)


@pytest.mark.parametrize(
    ("amp", "device", "name", "dtype", "scaled"),
    [
        ("auto", "cpu", "fp32", None, False),
        ("auto", "cuda", "bf16", torch.bfloat16, False),
        ("fp16", "cuda", "fp16", torch.float16, True),
        ("bf16", "cpu", "bf16", torch.bfloat16, False),
        ("fp32", "cuda", "fp32", None, False),
    ],
)
def test_precision_is_trainer_amp_alone(amp, device, name, dtype, scaled):
    rounding = precision(amp, torch.device(device))
    assert (rounding.name, rounding.dtype, rounding.scaled) == (name, dtype, scaled)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["trainer.cuda_graph=auto"], None),  # CPU: eager, silently
        (["trainer.cuda_graph=off", "trainer.device=cuda"], None),
        (["trainer.cuda_graph=auto", "trainer.mode=reference", "trainer.device=cuda"], None),
        (["trainer.cuda_graph=on", "trainer.mode=reference"], "trainer.mode=reference"),
        (["trainer.cuda_graph=on", "optim=sgd"], "SGD (no capturable mode)"),
    ],
)
def test_when_the_harness_captures_cuda_graphs(overrides, expected):
    cfg = config(*overrides)
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(cfg.optim, model)
    device = torch.device("cpu" if cfg.trainer.device == "auto" else cfg.trainer.device)
    plan = fast.StepPlan(str(cfg.trainer.mode), device, None, "loop", False, 0)
    args = (cfg.trainer, model, optimizer, F.cross_entropy, plan, scaler(), Dist())
    if expected is None:
        assert cuda_graph_step(*args) is None
    else:
        with pytest.raises(ConfigError, match=re.escape(expected)):
            cuda_graph_step(*args)


def tiny_step(graph=None, probe_every: int | None = None, enabled: bool = False, clip=None):
    """A `TrainStep` on a one-step tokenizer and a batch for it."""
    torch.manual_seed(0)
    model = create_model("sps_tokenizer_cifar", downsample="maxpool_lif", T=1, embed_dim=16)
    probe = attach_probe(model, every=probe_every) if probe_every else None
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    net, loss_fn = TimestepOutputs(model), TimeMeanCrossEntropy()
    step = TrainStep(net, optimizer, loss_fn, cpu_plan(), scaler(enabled), clip, graph, probe)
    x, target = torch.rand(2, 3, 32, 32), torch.full((2, 10), 0.1)
    return step, model, x, target


def test_an_eager_step_is_the_plain_step():
    """A disabled GradScaler (every precision but fp16) leaves the plain step's bits."""
    step, model, x, target = tiny_step(clip=0.5)
    plain, _, _, _ = tiny_step()
    out = plain.net(x)
    loss = plain.loss_fn(out, target)
    plain.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(plain.net.parameters(), 0.5)
    plain.optimizer.step()
    got, got_out = step(x, target)
    assert torch.equal(got, loss.detach()) and got_out.shape == out.shape
    assert not got.requires_grad and not got_out.requires_grad
    for a, b in zip(model.parameters(), plain.net.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_scaled_step_steps_like_an_unscaled_one():
    """fp16's loss scaling (here on float32 CPU steps: powers of two, exact) changes nothing."""
    scaled, model, x, target = tiny_step(enabled=True)
    unscaled, reference, _, _ = tiny_step()
    for _ in range(2):
        assert torch.equal(scaled(x, target)[0], unscaled(x, target)[0])
        functional.reset_net(model)  # as the loop does after every step
        functional.reset_net(reference)
    assert scaled.scaler.get_scale() == 65536.0  # GradScaler's initial scale: it ran
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_failed_capture_leaves_the_run_eager(caplog):
    class BrokenCapture:
        graph, failed = None, None

        def fits(self, x, target):
            return self.failed is None

        def capture(self, x, target):
            self.failed = "RuntimeError: capture refused"
            raise RuntimeError("capture refused")

    step, _, x, target = tiny_step(graph=BrokenCapture(), probe_every=100)
    step.probe.step = 0  # the next step is not one the probe measures: it would be replayed
    loss, _ = step(x, target)
    assert torch.isfinite(loss) and step.probe.enabled
    assert step.probe.step == 1  # counted once: the eager step, not also a skipped replay
    assert (
        "CUDA graph capture failed, training eagerly: RuntimeError: capture refused" in caplog.text
    )
    functional.reset_net(step.net)
    step(x, target)  # no second capture
    assert step.probe.step == 2 and caplog.text.count("capture failed") == 1
    step.probe.remove()


@pytest.mark.parametrize(
    ("overrides", "mode", "exact", "device", "fused"),
    [
        ([], "fast", False, "cpu", True),  # fast mode on CPU: PyTorch's fused AdamW kernel
        (["optim=adam"], "fast", False, "cpu", True),
        ([], "fast", True, "cpu", False),  # trainer.exact keeps the per-tensor loop
        ([], "reference", True, "cpu", False),  # as the official code steps
        ([], "fast", False, "cuda", False),  # CUDA keeps its (graph-captured) optimiser
        (["optim=sgd"], "fast", False, "cpu", False),
        (["+optim.fused=false"], "fast", False, "cpu", False),  # the user's choice wins
    ],
)
def test_fast_mode_fuses_adam_on_cpu(overrides, mode, exact, device, fused) -> None:
    cfg = config(*overrides)
    plan = fast.StepPlan(mode, torch.device(device), None, "loop", False, 0, exact=exact)
    assert fused_optimizer(cfg.optim, plan) is fused
    optimizer = build_optimizer(cfg.optim, torch.nn.Linear(2, 2), plan if device == "cpu" else None)
    assert bool(optimizer.defaults.get("fused")) is (fused and device == "cpu")


def test_fused_adamw_steps_like_the_loop() -> None:
    cfg = config()
    models = [torch.nn.Linear(8, 4) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    optimizers = [build_optimizer(cfg.optim, models[0], cpu_plan())]
    optimizers.append(build_optimizer(cfg.optim, models[1]))
    assert optimizers[0].defaults["fused"] and not optimizers[1].defaults.get("fused")
    x = torch.randn(16, 8)
    for _ in range(3):
        for model, optimizer in zip(models, optimizers, strict=True):
            optimizer.zero_grad()
            model(x).square().mean().backward()
            optimizer.step()
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
