"""The Spikformer SPS tokenizer alone: a small, fast model with the two CIFAR downsampling sites.

It is Spikformer's CIFAR stem (four conv-BN-LIF stages, stages 3 and 4 being downsampling sites
``stem.stages.stage3`` / ``stem.stages.stage4``, plus the RPE conv-BN-LIF added to the stage-4
spikes), then a mean over tokens and a Linear head per time step, with no transformer blocks.
It is the default model of ``gradprobe probe``: the probe measures the sites, and the sites do
not depend on what follows the stem beyond the gradient it sends back.
"""

from __future__ import annotations

from gradprobe.models import register_model
from gradprobe.models.spikformer import Spikformer


@register_model()
def sps_tokenizer_cifar(*, embed_dim: int = 128, **kwargs: object) -> Spikformer:
    """Spikformer's CIFAR SPS stem with a linear head (depth 0, no attention).

    Args:
        embed_dim: Stem output width D (stage widths D/8, D/4, D/2, D). The reference
            Spikformer-4-384 uses 384; the default 128 keeps CPU runs short.
        **kwargs: Any `Spikformer` argument except ``form``, ``depth`` and ``num_heads``:
            ``downsample``, ``num_classes``, ``T``, ``neuron``, ``img_size``, ``pool``, ...

    Example:
        >>> from gradprobe.models import create_model
        >>> model = create_model("sps_tokenizer_cifar", downsample="maxpool_lif", T=2)
        >>> list(model.downsample_sites())
        ['stem.stages.stage3', 'stem.stages.stage4']
    """
    return Spikformer(
        form="cifar", depth=0, embed_dim=embed_dim, num_heads=1, legacy_params=False, **kwargs
    )
