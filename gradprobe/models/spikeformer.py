"""Spikeformer (Li, Lei & Yang 2022): a convolutional tokenizer of SEW residual blocks with PLIF
neurons, then spatio-temporal attention (spec section 6).

Convolutional Tokenizer (CT): SEW blocks ``conv-BN-PLIF → conv-BN-PLIF`` joined by ADD to a
shortcut (``AvgPool(stride) → 1x1 conv-BN-PLIF`` when stride or width changes, else identity).
The reference downsamples with stride-2 convs; that first conv-BN-PLIF of every stride-2 block is
a downsampling site here, so ``downsample="strided_conv"`` (our default) is the reference and the
other variants replace the stride by a pool placed per variant. The shortcut's AvgPool is not a
site: it reduces the input *before* its conv, so no pre-spike map reaches a reduction there; it
is left as in the reference in every variant.

Spatio-temporal attention (STA) blocks, each: temporal attention across T at every position
(pre-LayerNorm, softmax, then ``temporal_fc``, zero-initialised except in block 0), spatial
attention across the H·W tokens of each step, and an MLP ``LN → Linear → PLIF → Linear``; all
with residuals. Attention is real-valued softmax attention (timm's ``Attention``, qkv without
bias), so this backbone is not spike-driven. Learnable spatial and temporal embeddings are added
to the tokens; the temporal one is resized by nearest interpolation when the input has another T,
as in the reference. After a final LayerNorm, attention pooling (softmax of a Linear(D→1) over all
N·T tokens) feeds the head.

Per-timestep logits: the pooled vector is ``Σ_t Σ_n w_tn x_tn``. `Spikeformer.forward_seq`
returns ``head(T · Σ_n w_tn x_tn)`` for each t; since the head is linear, their mean over T is
exactly the reference output.

Deviation: the ImageNet reference uses a custom PLIAF neuron (analog output); we use PLIF
everywhere (``neuron=`` can change it). No reference parameter integers exist for this family.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Attention
from torch import nn

from gradprobe.downsample import ConvBNLIF, PoolSpec, build_downsample, check_sequence
from gradprobe.models import register_model
from gradprobe.models.base import SpikingClassifier, check_sizes
from gradprobe.models.layers import init_transformer_weights
from gradprobe.neuron import NeuronConfig, make_neuron


class PooledShortcut(ConvBNLIF):
    """The SEW shortcut ``AvgPool(stride) → 1x1 conv-BN-PLIF``, pooled functionally.

    The pool is a call, not a module: this reduction happens before the conv, so the shortcut
    is not a downsampling site, and no pool module sits where a site scan could pair it with
    the neuron of the preceding conv-BN-PLIF.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, *, neuron: NeuronConfig
    ) -> None:
        super().__init__(in_channels, out_channels, 1, neuron=neuron)
        self.stride = stride

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            T, B = x_seq.shape[:2]
            pooled = F.avg_pool2d(x_seq.flatten(0, 1), self.stride, self.stride)
            x_seq = pooled.reshape(T, B, *pooled.shape[1:])
        return super().forward(x_seq)


class SEWBlock(nn.Module):
    """SEW residual block ``conv1 → conv2 (+) shortcut`` (ADD of spikes), multi-step.

    With ``stride == 2`` the first unit is a downsampling site of variant ``downsample``;
    otherwise both units are plain conv-BN-PLIF.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        kernel_size: int,
        downsample: str,
        *,
        neuron: NeuronConfig,
        pool: PoolSpec | None = None,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"SEW block stride must be 1 or 2, got {stride}")
        if stride == 2:
            self.conv1 = build_downsample(
                downsample, in_channels, out_channels, kernel_size, neuron=neuron, pool=pool
            )
        else:
            self.conv1 = ConvBNLIF(in_channels, out_channels, kernel_size, neuron=neuron)
        self.conv2 = ConvBNLIF(out_channels, out_channels, kernel_size, neuron=neuron)
        self.shortcut = (
            PooledShortcut(in_channels, out_channels, stride, neuron=neuron)
            if stride != 1 or in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x_seq)) + self.shortcut(x_seq)


class PLIFMLP(nn.Module):
    """``Linear → PLIF → Linear`` on ``[T, B, N, D]`` (the PLIF integrates over T)."""

    def __init__(self, dim: int, hidden_dim: int, neuron: NeuronConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.lif = make_neuron(neuron)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.lif(self.fc1(x_seq)))


class STABlock(nn.Module):
    """Divided spatio-temporal attention block on ``[T, B, N, D]``: temporal, spatial, MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, neuron: NeuronConfig) -> None:
        super().__init__()
        self.temporal_norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.temporal_attn = Attention(dim, num_heads=num_heads, qkv_bias=False)
        self.temporal_fc = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=False)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = PLIFMLP(dim, int(dim * mlp_ratio), neuron)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B, N, D = x.shape
        xt = x.permute(1, 2, 0, 3).reshape(B * N, T, D)  # attend across T per position
        res = self.temporal_attn(self.temporal_norm1(xt)).reshape(B, N, T, D).permute(2, 0, 1, 3)
        x = x + self.temporal_fc(res)
        xs = x.reshape(T * B, N, D)  # attend across positions per step
        x = x + self.attn(self.norm1(xs)).reshape(T, B, N, D)
        return x + self.mlp(self.norm2(x))


# Tokenizer layouts: per block (stride, width as a fraction of D), and the conv kernel.
_CONFIGS = {
    "dvs_cifar10": dict(
        blocks=[(2, 4), (1, 4), (2, 2), (1, 2), (2, 1), (1, 1)],
        kernel_size=3,
        in_channels=2,
        img_size=128,
        num_classes=10,
        T=4,
        embed_dim=256,
        depth=7,
        num_heads=4,
        mlp_ratio=2.0,
    ),
    "dvs_gesture": dict(
        blocks=[(2, 4), (2, 2), (2, 1)],
        kernel_size=5,
        in_channels=2,
        img_size=128,
        num_classes=11,
        T=16,
        embed_dim=256,
        depth=7,
        num_heads=4,
        mlp_ratio=2.0,
    ),
    "imagenet": dict(
        blocks=[(2, 8), (1, 8), (2, 4), (1, 4), (2, 2), (1, 2), (2, 1), (1, 1)],
        kernel_size=3,
        in_channels=3,
        img_size=224,
        num_classes=1000,
        T=4,
        embed_dim=512,
        depth=7,
        num_heads=8,
        mlp_ratio=3.0,
    ),
}


class Spikeformer(SpikingClassifier):
    """Spikeformer with every stride-2 tokenizer conv built as variant ``downsample``.

    Args:
        config: ``"dvs_cifar10"``, ``"dvs_gesture"`` or ``"imagenet"``: tokenizer layout and the
            defaults below (spec section 6).
        downsample: Variant at every site; the reference is ``strided_conv``.
        num_classes: Classes (10, 11, 1000).
        T: Time steps (4, 16, 4); sets the temporal embedding's length.
        embed_dim: Width D of the tokens (tokenizer widths scale with it).
        depth: STA blocks (7).
        num_heads: Attention heads (4, 4, 8).
        mlp_ratio: MLP hidden width over D (2, 2, 3).
        in_channels: Input channels (2, 2, 3).
        img_size: Input side; a multiple of 2 ** (number of sites).
        neuron: Spiking-neuron settings; ``None`` is PLIF with initial tau 2.
        tau: Overrides the (initial) membrane time constant.
        pool: Reduction geometry of the pooled variants; ``None`` is (3, 2, 1).
    """

    def __init__(
        self,
        config: str,
        *,
        downsample: str = "strided_conv",
        num_classes: int | None = None,
        T: int | None = None,
        embed_dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        mlp_ratio: float | None = None,
        in_channels: int | None = None,
        img_size: int | None = None,
        neuron: NeuronConfig | None = None,
        tau: float | None = None,
        pool: PoolSpec | None = None,
    ) -> None:
        super().__init__()
        if config not in _CONFIGS:
            raise ValueError(
                f"unknown Spikeformer config {config!r}; choices: {', '.join(_CONFIGS)}"
            )
        cfg = _CONFIGS[config]

        def pick(value, key):
            return cfg[key] if value is None else value

        self.config = config
        self.downsample = downsample
        self.T = int(pick(T, "T"))
        self.in_channels = int(pick(in_channels, "in_channels"))
        self.img_size = int(pick(img_size, "img_size"))
        self.num_classes = int(pick(num_classes, "num_classes"))
        dim = int(pick(embed_dim, "embed_dim"))
        check_sizes("Spikeformer", num_heads=pick(num_heads, "num_heads"))
        check_sizes("Spikeformer", at_least=0, depth=pick(depth, "depth"))
        self.neuron = neuron or NeuronConfig(kind="plif")
        if tau is not None:
            self.neuron = self.neuron.replace(tau=float(tau))

        self.n_sites = sum(stride == 2 for stride, _ in cfg["blocks"])
        factor = 2**self.n_sites
        if self.img_size < factor or self.img_size % factor:
            raise ValueError(
                f"img_size {self.img_size} is not supported by Spikeformer {config!r}: its "
                f"{self.n_sites} stride-2 sites need a positive multiple of {factor}"
            )
        widths = [self.in_channels] + [dim // div for _, div in cfg["blocks"]]
        if min(widths) < 1 or any(dim % div for _, div in cfg["blocks"]):
            raise ValueError(f"embed_dim {dim} must be divisible by the tokenizer's width divisors")
        self.tokenizer = nn.Sequential(
            *(
                SEWBlock(
                    widths[i],
                    widths[i + 1],
                    stride,
                    cfg["kernel_size"],
                    downsample,
                    neuron=self.neuron,
                    pool=pool,
                )
                for i, (stride, _) in enumerate(cfg["blocks"])
            )
        )
        n_tokens = (self.img_size // factor) ** 2
        self.pos_embed = nn.Parameter(torch.zeros(1, 1, n_tokens, dim))
        self.time_embed = nn.Parameter(torch.zeros(self.T, 1, 1, dim))
        self.blocks = nn.Sequential(
            *(
                STABlock(
                    dim,
                    int(pick(num_heads, "num_heads")),
                    pick(mlp_ratio, "mlp_ratio"),
                    self.neuron,
                )
                for _ in range(int(pick(depth, "depth")))
            )
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.attention_pool = nn.Linear(dim, 1)
        self.head = nn.Linear(dim, self.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.tokenizer.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks.apply(init_transformer_weights)
        self.norm.apply(init_transformer_weights)
        init_transformer_weights(self.attention_pool)
        init_transformer_weights(self.head)
        for block in list(self.blocks)[1:]:
            nn.init.zeros_(block.temporal_fc.weight)
            nn.init.zeros_(block.temporal_fc.bias)

    def forward_seq(self, x_seq: torch.Tensor) -> torch.Tensor:
        check_sequence(x_seq)
        T, B = x_seq.shape[:2]
        x = self.tokenizer(x_seq).flatten(3).transpose(-1, -2)  # [T, B, N, D]
        if x.shape[2] != self.pos_embed.shape[2]:
            raise ValueError(
                f"Spikeformer {self.config!r} was built for img_size {self.img_size} "
                f"({self.pos_embed.shape[2]} tokens); got input of shape {tuple(x_seq.shape)}"
            )
        time_embed = self.time_embed
        if time_embed.shape[0] != T:  # nearest resize, as the reference
            time_embed = F.interpolate(time_embed.flatten(1).T[None], size=T, mode="nearest")
            time_embed = time_embed[0].T.reshape(T, 1, 1, -1)
        x = self.norm(self.blocks(x + self.pos_embed + time_embed))
        # attention pooling: one softmax over all N·T tokens of a sample
        weights = self.attention_pool(x).permute(1, 0, 2, 3).reshape(B, -1).softmax(-1)
        weights = weights.reshape(B, T, -1, 1).transpose(0, 1)  # [T, B, N, 1]
        return self.head(T * (weights * x).sum(2))


def _build(config: str, kwargs: dict) -> Spikeformer:
    return Spikeformer(config, **kwargs)


@register_model()
def spikeformer_dvs_cifar10(**kwargs: object) -> Spikeformer:
    """Spikeformer for CIFAR10-DVS: 6 SEW blocks 3x3 (strides 2,1,2,1,2,1; 3 sites), 16x16
    tokens, 7 STA blocks, D 256, 4 heads, MLP 2, T 4.

    Example:
        >>> model = spikeformer_dvs_cifar10(downsample="maxpool_lif")
    """
    return _build("dvs_cifar10", kwargs)


@register_model()
def spikeformer_dvs_gesture(**kwargs: object) -> Spikeformer:
    """Spikeformer for DVS128 Gesture: 3 SEW blocks 5x5 (all stride 2; 3 sites), 16x16 tokens,
    7 STA blocks, D 256, 4 heads, MLP 2, T 16, 11 classes.

    Example:
        >>> model = spikeformer_dvs_gesture(downsample="maxpool_lif")
    """
    return _build("dvs_gesture", kwargs)


@register_model()
def spikeformer_imagenet(**kwargs: object) -> Spikeformer:
    """Spikeformer for ImageNet: 8 SEW blocks 3x3 (strides 2,1,...; 4 sites), 14x14 tokens,
    7 STA blocks, D 512, 8 heads, MLP 3, T 4 (PLIF in place of the reference's PLIAF).

    Example:
        >>> model = spikeformer_imagenet(downsample="maxpool_lif")
    """
    return _build("imagenet", kwargs)
