"""Everything a run is built from its config: model, step plan, precision, data, loss, optimiser,
scheduler, CUDA graph, probe and writer.

Precision has one owner here, `precision`: ``trainer.amp`` alone sets the autocast dtype and
whether losses are scaled, in either ``trainer.mode``, so the mode changes kernels and layouts
but never the rounding of the forward. ``auto`` is bf16 autocast on CUDA and float32 on CPU;
``fp16`` is the official code's ``--amp`` (with a GradScaler).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from timm.optim import param_groups_weight_decay
from torch import nn

from ablations.checks import ConfigError, model_kwargs
from ablations.data import LoaderData, TensorData, build_dataset
from ablations.distributed import Dist
from ablations.keys import instantiate_target
from ablations.losses import SoftTargets, build_loss
from ablations.rundir import RunRecord
from ablations.step import TrainStep
from gradprobe import fast
from gradprobe.models import create_model

#: Optimisers with a fused CPU kernel (one pass over each tensor instead of ~10 ops per tensor).
FUSED_CPU_OPTIMIZERS = ("torch.optim.Adam", "torch.optim.AdamW")


@dataclass(frozen=True)
class Precision:
    """How a step rounds: ``name`` (``fp32``, ``bf16``, ``fp16``) and the autocast ``dtype``
    (``None``: float32, no autocast)."""

    name: str
    dtype: torch.dtype | None

    @property
    def scaled(self) -> bool:
        """float16 gradients underflow: the loss is scaled (``torch.amp.GradScaler``)."""
        return self.dtype == torch.float16


def precision(amp: str, device: torch.device) -> Precision:
    """The precision of ``trainer.amp`` on ``device`` (the one place it is decided).

    Example:
        >>> precision("auto", torch.device("cpu"))
        Precision(name='fp32', dtype=None)
    """
    name = ("bf16" if device.type == "cuda" else "fp32") if amp == "auto" else amp
    return Precision(name, fast.AMP_DTYPES[name])


class TimestepOutputs(nn.Module):
    """Calls the backbone's ``forward_timesteps`` through ``__call__`` (so DDP sees it)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_timesteps(x)


@dataclass
class Parts:
    """What one run trains with, built from its config (`build_parts`)."""

    backbone: nn.Module
    net: nn.Module  # the backbone's per-timestep outputs, inside DDP with several ranks
    plan: fast.StepPlan
    precision: Precision
    data: TensorData | LoaderData
    loss_fn: nn.Module
    targets: SoftTargets
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler  # enabled for fp16 alone
    graph: fast.CUDAGraphStep | None  # the replayed train step of trainer.cuda_graph


def pick_device(cfg: DictConfig, job_num: int, dist: Dist) -> torch.device:
    """``trainer.device``, with ``auto`` meaning CUDA when present; DDP ranks take their local GPU."""
    if cfg.device != "auto":
        return torch.device(cfg.device)
    if not torch.cuda.is_available():
        return torch.device("cpu")
    if dist.world > 1:
        return torch.device("cuda", dist.local_rank)
    if cfg.gpu_by_job_num:
        return torch.device("cuda", job_num % torch.cuda.device_count())
    return torch.device("cuda")


def build_model(cfg: DictConfig, device: torch.device) -> tuple[nn.Module, fast.StepPlan]:
    """The backbone, configured for ``trainer.mode`` on ``device``, and its step plan.

    A CPU fast-mode step computes reference mode's forward bit for bit; ``trainer.exact`` also
    keeps its gradients float32 and its BatchNorms on reference mode's kernels
    (`gradprobe.fast.configure`). The plan's autocast dtype is `precision`'s.
    """
    tcfg = cfg.trainer
    if tcfg.get("retain_memory", False) and device.type == "cpu":
        fast.allocator.retain_freed_memory()  # asked for by name: process-wide, for good
    backbone = create_model(cfg.model.name, **model_kwargs(cfg))
    plan = fast.configure(
        backbone,
        mode=str(tcfg.mode),
        device=device,
        exact=bool(tcfg.get("exact", False)),
        precision=precision(str(tcfg.amp), device).name,
    )
    return backbone, plan


def fused_optimizer(cfg: DictConfig, plan: fast.StepPlan | None) -> bool:
    """Whether fast mode gives the ``optim`` group's Adam/AdamW PyTorch's fused CPU kernel.

    It does where the plan says so (`gradprobe.fast.StepPlan.fused_optimizer`: fast mode on CPU
    unless ``trainer.exact``). An explicit ``optim.fused`` (``+optim.fused=false``) wins.
    """
    if "fused" in cfg or plan is None:
        return False
    return cfg.get("_target_") in FUSED_CPU_OPTIMIZERS and plan.fused_optimizer


def build_optimizer(
    cfg: DictConfig, model: nn.Module, plan: fast.StepPlan | None = None
) -> torch.optim.Optimizer:
    """The ``optim`` group's optimiser; 1-D parameters (biases, norms) get no weight decay.
    With a fast-mode CPU ``plan``, Adam and AdamW run fused (`fused_optimizer`)."""
    groups = param_groups_weight_decay(model, float(cfg.get("weight_decay", 0.0)))
    if fused_optimizer(cfg, plan):
        return instantiate_target(cfg, params=groups, fused=True)
    return instantiate_target(cfg, params=groups)


def build_parts(
    cfg: DictConfig, backbone: nn.Module, plan: fast.StepPlan, dist: Dist, T: int
) -> Parts:
    """Data, loss, targets, optimiser, scheduler and scaler around a configured backbone.

    Raises:
        ConfigError: The training split holds less than one batch per rank.
        gradprobe.data.DataNotFoundError: The dataset is missing or empty.
    """
    device = plan.device
    data = build_dataset(
        cfg.dataset,
        device=device,
        seed=int(cfg.seed),
        frames=T,
        num_workers=int(cfg.trainer.num_workers),
    )
    batch = int(cfg.trainer.batch_size)
    if data.steps_per_epoch(batch, dist.world) == 0:
        ranks = f" over {dist.world} ranks" if dist.world > 1 else ""
        raise ConfigError(
            f"trainer.batch_size={batch}{ranks} is more than the {data.train_size} training "
            f"samples: an epoch would have no full batch; choices: trainer.batch_size up to "
            f"{data.train_size // dist.world}"
        )
    net = dist.wrap(TimestepOutputs(backbone), device)
    loss_fn = build_loss(cfg.loss)
    optimizer = build_optimizer(cfg.optim, backbone, plan)  # after configure: it moved the model
    rounding = precision(str(cfg.trainer.amp), device)
    scaler = torch.amp.GradScaler(device.type, enabled=rounding.scaled)
    return Parts(
        backbone=backbone,
        net=net,
        plan=plan,
        precision=rounding,
        data=data,
        loss_fn=loss_fn,
        targets=SoftTargets(cfg.loss, int(cfg.dataset.num_classes)),
        optimizer=optimizer,
        scheduler=instantiate_target(cfg.sched, optimizer=optimizer),
        scaler=scaler,
        graph=cuda_graph_step(cfg.trainer, net, optimizer, loss_fn, plan, scaler, dist),
    )


def grad_clip(tcfg: DictConfig) -> float | None:
    """``trainer.grad_clip`` as a float, ``None`` for no clipping."""
    return float(tcfg.grad_clip) if tcfg.grad_clip else None


def cuda_graph_step(
    tcfg: DictConfig,
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    plan: fast.StepPlan,
    scaler: torch.amp.GradScaler,
    dist: Dist,
) -> fast.CUDAGraphStep | None:
    """The replayed-graph train step of ``trainer.cuda_graph``, or ``None`` for eager steps.

    ``auto`` uses one where it applies: fast mode, one CUDA process, no loss scaling (fp16
    checks for infs on the host), an optimizer with a capturable mode. ``on`` requires it.
    """
    setting = str(tcfg.get("cuda_graph", "auto"))
    reasons = [
        why
        for why, bad in (
            (f"trainer.mode={plan.mode}", plan.mode != "fast"),
            (f"device {plan.device}", plan.device.type != "cuda"),
            ("DDP", dist.world > 1),
            ("fp16 with a GradScaler", scaler.is_enabled()),
            (
                f"{type(optimizer).__name__} (no capturable mode)",
                not fast.supports_cuda_graph(optimizer),
            ),
        )
        if bad
    ]
    if setting == "off" or (setting == "auto" and reasons):
        return None
    if reasons:
        raise ConfigError(f"trainer.cuda_graph=on cannot run with {', '.join(reasons)}")
    return fast.CUDAGraphStep(net, optimizer, loss_fn, plan, grad_clip=grad_clip(tcfg))


def build_probe(cfg: DictConfig, parts: Parts, dist: Dist, start_epoch: int):
    """The gradient-landing probe of ``probe=landing`` (rank 0 only), or ``None``."""
    if cfg.probe.name != "landing" or not dist.is_main:
        return None
    from gradprobe.probe import attach_probe

    tcfg = cfg.trainer
    probe = attach_probe(parts.backbone, every=int(cfg.probe.every))
    per_epoch = parts.data.steps_per_epoch(int(tcfg.batch_size), dist.world)
    per_epoch = min(per_epoch, int(tcfg.max_steps_per_epoch or per_epoch))
    probe.step = per_epoch * start_epoch - 1  # the step counter continues across a resume
    return probe


def build_step(cfg: DictConfig, parts: Parts, probe=None) -> TrainStep:
    """The run's `TrainStep`: eager, scaled (fp16) or replaying `Parts.graph`."""
    return TrainStep(
        parts.net,
        parts.optimizer,
        parts.loss_fn,
        parts.plan,
        parts.scaler,
        grad_clip=grad_clip(cfg.trainer),
        graph=parts.graph,
        probe=probe,
    )


def build_writer(cfg: DictConfig, record: RunRecord, dist: Dist):
    """A TensorBoard ``SummaryWriter`` under ``<run dir>/tb`` (``logger=tensorboard``, rank 0),
    or ``None``."""
    if not cfg.logger.tensorboard or not dist.is_main:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(record.run_dir / "tb"))


def environment(parts: Parts) -> dict:
    """How a step computes, for ``environment.json``: every field of the plan (values JSON cannot
    hold as text) and the harness's own choices."""
    plain = (bool, int, float, str, type(None))
    env = {}
    for field in dataclasses.fields(parts.plan):
        value = getattr(parts.plan, field.name)
        env[field.name] = value if isinstance(value, plain) else str(value)
    env.update(
        precision=parts.precision.name,
        cuda_graph=parts.graph is not None,
        fused_optimizer=bool(parts.optimizer.defaults.get("fused")),
    )
    return env
