"""Spiking ResNet-19 as trained by TET on CIFAR (Deng et al. 2022; tdBN's ResNet-19 layout).

Our choice of convolutional SNN: it is the ResNet-19 of the CML paper's Table 3 (TET, 12.63M
parameters), so CML can be tested outside transformers on the same CIFAR inputs.

Layout (from the TET code): conv 3x3 3→64-BN-LIF; three stages of basic blocks with widths
128, 256, 512, block counts 3, 3, 2 and strides 1, 2, 2; spatial mean; Linear(512→256)-LIF;
Linear(256→K). A basic block is ``conv-BN-LIF → conv-BN``, plus the shortcut (identity, or a
1x1 conv-BN with the block's stride when the width or size changes), then a LIF after the ADD.
BatchNorm is plain BatchNorm2d over T·B (TET's ``tdBatchNorm``). Parameter count: 12,630,858 for
10 classes (the paper's 12.63M), 12,653,988 for 100.

Downsampling sites: the first conv-BN-LIF of the two stride-2 blocks (``layer2.0.conv1`` and
``layer3.0.conv1``), whose stride-2 3x3 conv is the reference, i.e. ``downsample="strided_conv"``
(our default). The 1x1 stride-2 shortcut conv is not a site: its BN output is added to the main
path before any neuron, so it keeps its stride in every variant (both paths give ceil(H/2)).

Neuron: TET's LIF is ``u ← 0.5·u + x``, hard reset to 0 without detaching the spike, threshold 1,
i.e. spikingjelly's LIF with tau 2, ``decay_input=False``, ``detach_reset=False`` (our default).
TET's triangle surrogate (gamma 1) is not among `gradprobe.neuron.SURROGATES`; the default
Sigmoid(alpha 4) surrogate is used instead.
"""

from __future__ import annotations

import torch
from spikingjelly.activation_based import layer
from torch import nn

from gradprobe.downsample import ConvBN, ConvBNLIF, PoolSpec, build_downsample, check_sequence
from gradprobe.models import register_model
from gradprobe.models.base import SpikingClassifier, check_sizes
from gradprobe.neuron import NeuronConfig, make_neuron

#: TET's LIF in spikingjelly terms (see the module docstring).
TET_NEURON = NeuronConfig(tau=2.0, decay_input=False, detach_reset=False)


class BasicBlock(nn.Module):
    """``conv1-BN-LIF → conv2-BN (+) shortcut → LIF``; with ``stride == 2``, conv1-BN-LIF is a
    downsampling site of variant ``downsample``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        downsample: str,
        *,
        neuron: NeuronConfig,
        pool: PoolSpec | None = None,
    ) -> None:
        super().__init__()
        if stride == 2:
            self.conv1 = build_downsample(
                downsample, in_channels, out_channels, neuron=neuron, pool=pool
            )
        elif stride == 1:
            self.conv1 = ConvBNLIF(in_channels, out_channels, neuron=neuron)
        else:
            raise ValueError(f"basic block stride must be 1 or 2, got {stride}")
        self.conv2 = ConvBN(out_channels, out_channels)
        self.shortcut = (
            ConvBN(in_channels, out_channels, kernel_size=1, stride=stride)
            if stride != 1 or in_channels != out_channels
            else nn.Identity()
        )
        self.lif = make_neuron(neuron)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self.lif(self.conv2(self.conv1(x_seq)) + self.shortcut(x_seq))


class SpikingResNet19(SpikingClassifier):
    """Spiking ResNet-19 with the stride-2 blocks' first conv built as variant ``downsample``.

    Args:
        downsample: Variant at both sites; the reference is ``strided_conv``.
        num_classes: Classes (10).
        T: Time steps (4, as TET on CIFAR).
        in_channels: Input channels (3).
        img_size: Input side (32); a multiple of 4.
        width: Stem width; stage widths are 2x, 4x, 8x it (TET: 64 → 128, 256, 512).
        layers: Basic blocks per stage (3, 3, 2).
        fc_hidden: Width of the hidden classifier layer (256).
        neuron: LIF settings; ``None`` is `TET_NEURON`.
        tau: Overrides the membrane time constant.
        pool: Reduction geometry of the pooled variants; ``None`` is (3, 2, 1).
    """

    def __init__(
        self,
        *,
        downsample: str = "strided_conv",
        num_classes: int = 10,
        T: int = 4,
        in_channels: int = 3,
        img_size: int = 32,
        width: int = 64,
        layers: tuple[int, int, int] = (3, 3, 2),
        fc_hidden: int = 256,
        neuron: NeuronConfig | None = None,
        tau: float | None = None,
        pool: PoolSpec | None = None,
    ) -> None:
        super().__init__()
        blocks = {f"layers[{i}]": n for i, n in enumerate(layers)}
        check_sizes("SpikingResNet19", width=width, fc_hidden=fc_hidden, **blocks)
        self.downsample, self.T, self.in_channels = downsample, int(T), int(in_channels)
        self.img_size, self.num_classes = int(img_size), int(num_classes)
        if self.img_size < 4 or self.img_size % 4:
            raise ValueError(
                f"img_size {self.img_size} is not supported by spiking ResNet-19: its 2 stride-2 "
                f"sites need a positive multiple of 4 (CIFAR: 32)"
            )
        self.neuron = neuron or TET_NEURON
        if tau is not None:
            self.neuron = self.neuron.replace(tau=float(tau))
        self.conv1 = ConvBNLIF(self.in_channels, width, neuron=self.neuron)
        stages, channels = [], width
        for i, (n_blocks, stride) in enumerate(zip(layers, (1, 2, 2), strict=True)):
            out = width * 2 ** (i + 1)
            blocks = [BasicBlock(channels, out, stride, downsample, neuron=self.neuron, pool=pool)]
            blocks += [
                BasicBlock(out, out, 1, downsample, neuron=self.neuron, pool=pool)
                for _ in range(n_blocks - 1)
            ]
            stages.append(nn.Sequential(*blocks))
            channels = out
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = layer.AdaptiveAvgPool2d(1, step_mode="m")
        self.fc1 = nn.Linear(channels, fc_hidden)
        self.fc1_lif = make_neuron(self.neuron)
        self.fc2 = nn.Linear(fc_hidden, self.num_classes)

    def forward_seq(self, x_seq: torch.Tensor) -> torch.Tensor:
        check_sequence(x_seq)
        if x_seq.shape[-1] % 4 or x_seq.shape[-2] % 4:
            raise ValueError(
                f"spiking ResNet-19 halves the input twice; height and width must be multiples "
                f"of 4, got {tuple(x_seq.shape[-2:])}"
            )
        x = self.layer3(self.layer2(self.layer1(self.conv1(x_seq))))
        x = self.avgpool(x).flatten(2)  # [T, B, C]
        return self.fc2(self.fc1_lif(self.fc1(x)))


@register_model()
def spiking_resnet19_cifar(**kwargs: object) -> SpikingResNet19:
    """Spiking ResNet-19 (TET, CIFAR 32x32, T 4), sites at ``layer2.0.conv1``/``layer3.0.conv1``.

    Example:
        >>> model = spiking_resnet19_cifar(downsample="maxpool_lif", num_classes=100)
    """
    return SpikingResNet19(**kwargs)
