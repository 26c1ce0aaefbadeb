"""Losses on per-timestep logits ``[T, B, K]`` and the soft targets they are trained against.

``loss.name`` picks a loss from `LOSSES`. Every loss takes the per-timestep outputs and soft
targets ``[B, K]`` (label smoothing and mixup/cutmix make targets soft; hard labels are the
special case of one-hot rows), so any loss works with any backbone and any target recipe.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from timm.data import Mixup
from timm.data.mixup import mixup_target
from torch import nn

from gradprobe.registry import Registry

LOSSES: Registry[type[nn.Module]] = Registry("loss")


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-Σ_k target_k · log softmax(logits)_k`` (timm's SoftTargetCrossEntropy)."""
    return torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


@LOSSES.register("ce")
class TimeMeanCrossEntropy(nn.Module):
    """Cross-entropy of the mean over T of the logits: what the reference scripts train.

    Example:
        >>> loss = TimeMeanCrossEntropy()
        >>> float(loss(torch.zeros(4, 2, 10), torch.full((2, 10), 0.1)))  # doctest: +ELLIPSIS
        2.302...
    """

    def forward(self, logits_seq: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return soft_cross_entropy(logits_seq.mean(0), target)


@LOSSES.register("tet")
class TETLoss(nn.Module):
    """Temporal efficient training (spec section 5), for any backbone and soft targets.

    ``L = (1 - λ) · (1/T) Σ_t CE(O_t, y) + λ · MSE(O, φ)``, the MSE averaged over all T·B·K
    outputs as the official code does. Predictions still use the mean over T.

    Args:
        lamb: λ, the weight of the MSE term (official default 1e-3).
        phi: φ, the constant every output is pulled towards (official default 1.0).

    Example:
        >>> loss = TETLoss(lamb=1e-3, phi=1.0)
        >>> loss(torch.zeros(4, 2, 10), torch.eye(10)[:2]).shape
        torch.Size([])
    """

    def __init__(self, lamb: float = 1e-3, phi: float = 1.0) -> None:
        super().__init__()
        self.lamb, self.phi = float(lamb), float(phi)

    def forward(self, logits_seq: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits_seq = logits_seq.float()
        per_step = torch.stack([soft_cross_entropy(o, target) for o in logits_seq]).mean()
        mse = F.mse_loss(logits_seq, torch.full_like(logits_seq, self.phi))
        return (1.0 - self.lamb) * per_step + self.lamb * mse


def build_loss(cfg: DictConfig) -> nn.Module:
    """The loss ``cfg.name`` names (``cfg`` is the ``loss`` group).

    Example:
        >>> from omegaconf import OmegaConf
        >>> build_loss(OmegaConf.create({"name": "tet", "lamb": 1e-3, "phi": 1.0}))
        TETLoss()
    """
    cls = LOSSES.get(cfg.name)
    if cls is TETLoss:
        return TETLoss(lamb=cfg.lamb, phi=cfg.phi)
    return cls()


class SoftTargets:
    """Turn a labelled batch into (possibly mixed) inputs and soft targets.

    timm's `Mixup` when mixup or cutmix is on (it folds label smoothing into the mixed targets
    and needs an even batch); otherwise smoothed one-hot targets. From ``mixup.off_epoch`` on,
    mixing stops and the smoothing stays, as in the reference scripts.

    Args:
        cfg: The ``loss`` group (``label_smoothing`` and ``mixup``).
        num_classes: Classifier outputs.
    """

    def __init__(self, cfg: DictConfig, num_classes: int) -> None:
        self.num_classes = int(num_classes)
        self.smoothing = float(cfg.label_smoothing)
        mix = cfg.mixup
        self.off_epoch = mix.get("off_epoch")
        self.mixup = None
        if mix.mixup_alpha > 0 or mix.cutmix_alpha > 0:
            self.mixup = Mixup(
                mixup_alpha=mix.mixup_alpha,
                cutmix_alpha=mix.cutmix_alpha,
                prob=mix.prob,
                switch_prob=mix.switch_prob,
                mode=mix.mode,
                label_smoothing=self.smoothing,
                num_classes=self.num_classes,
            )

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, epoch: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mixup is not None and (self.off_epoch is None or epoch < self.off_epoch):
            return self.mixup(x, y)
        return x, mixup_target(y, self.num_classes, smoothing=self.smoothing)
