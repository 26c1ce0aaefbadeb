"""The training loop of one run: build, resume, train, evaluate, record.

`run_job` is everything one sweep job does. It never raises for a run that goes wrong: the run
is recorded as failed in the results store (one line saying why) and the sweep goes on. A run
the store marks finished is skipped; a run with a checkpoint resumes from it.

Resuming is exact: the checkpoint written after every epoch holds the model, optimiser and
scheduler states, the history, and the torch / CUDA / numpy / ``random`` generator states; the
data order of each epoch comes from its own seeded generator. On CPU a resumed run therefore
ends with the same numbers as one that was never interrupted.

The loop owns the neurons' state: `spikingjelly.activation_based.functional.reset_net` runs
after every batch, in training and in evaluation.

How a step computes is `gradprobe.fast`'s plan, chosen by ``trainer.mode`` (``fast``: fused LIF
kernels; ``reference``: the official code's per-timestep loop and reshapes). Precision is
``trainer.amp`` alone, in either mode, so the mode changes kernels and layouts but never the
autocast dtype. On CPU both modes run float32 and fire the same spikes.
"""

from __future__ import annotations

import logging
import math
import os
import random
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from spikingjelly.activation_based import functional
from timm.optim import param_groups_weight_decay
from torch import nn
from tqdm import tqdm

from ablations.checks import ConfigError, check_config, model_kwargs
from ablations.data import LoaderData, TensorData, build_dataset
from ablations.distributed import Dist
from ablations.losses import SoftTargets, build_loss
from ablations.rundir import RunRecord
from gradprobe import fast
from gradprobe.data import DataNotFoundError
from gradprobe.models import create_model

log = logging.getLogger(__name__)

#: Autocast dtype of each ``trainer.amp`` value (``auto`` resolves per device in `step_plan`).
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run stops."""


class TimestepOutputs(nn.Module):
    """Calls the backbone's ``forward_timesteps`` through ``__call__`` (so DDP sees it)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_timesteps(x)


def instantiate_target(node: DictConfig, **kwargs: object) -> object:
    """Build an optimiser or scheduler from its ``_target_`` node (the only ``_target_`` use)."""
    return instantiate(node, **kwargs, _convert_="all")


#: Optimisers with a fused CPU kernel (one pass over each tensor instead of ~10 ops per tensor).
FUSED_CPU_OPTIMIZERS = ("torch.optim.Adam", "torch.optim.AdamW")


def fused_optimizer(cfg: DictConfig, plan: fast.StepPlan | None) -> bool:
    """Whether fast mode gives the ``optim`` group's Adam/AdamW PyTorch's fused CPU kernel.

    It does where the plan says so (`gradprobe.fast.StepPlan.fused_optimizer`: fast mode on CPU
    unless ``trainer.exact``). An explicit ``optim.fused``
    (``+optim.fused=false``) wins.
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


def step_scheduler(scheduler: object, epoch: int) -> None:
    """Advance to ``epoch``: timm schedulers take the epoch, torch's count calls."""
    if hasattr(scheduler, "step_update"):
        scheduler.step(epoch)
    else:
        scheduler.step()


def rng_state() -> dict:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextmanager
def torch_settings(cfg: DictConfig) -> Iterator[None]:
    """Thread count and deterministic kernels for one run (``trainer`` group), restored after it
    so that a process running several jobs, or a test session, keeps its own settings."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    try:
        if cfg.cpu_threads:
            torch.set_num_threads(int(cfg.cpu_threads))
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark


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


def step_plan(tcfg: DictConfig, model: nn.Module, device: torch.device) -> fast.StepPlan:
    """Configure ``model`` for ``trainer.mode`` on ``device``; precision comes from ``trainer.amp``.

    `gradprobe.fast.configure` has its own precision per mode (float16 on CUDA in reference
    mode); the harness overrides it so that ``trainer.amp`` is the one switch for precision:
    ``auto`` is bf16 autocast on CUDA and float32 on CPU, ``fp16`` the official code's ``--amp``
    (with a GradScaler). A CPU fast-mode step computes reference mode's forward bit for bit;
    ``trainer.exact`` also keeps its gradients float32 and its BatchNorms on reference mode's
    kernels (`gradprobe.fast.configure`).
    """
    plan = fast.configure(
        model, mode=str(tcfg.mode), device=device, exact=bool(tcfg.get("exact", False))
    )
    amp = str(tcfg.amp)
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" else "fp32"
    return replace(plan, amp_dtype=AMP_DTYPES[amp])


def precision_name(plan: fast.StepPlan) -> str:
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[plan.amp_dtype]


def topk_correct(
    logits: torch.Tensor, y: torch.Tensor, ks: tuple[int, ...] = (1, 5)
) -> list[torch.Tensor]:
    top = logits.topk(min(max(ks), logits.shape[-1]), dim=-1).indices
    hits = top == y[:, None]
    return [hits[:, :k].any(-1).sum() for k in ks]


def use_bar(progress: str) -> bool:
    return progress == "bar" or (progress == "auto" and sys.stderr.isatty())


def store_identity(cfg: DictConfig, T: int | None) -> dict:
    """The identity fields of the store document, readable even from a config that fails checks."""
    name = str(cfg.model.name)
    kwargs = cfg.model.get("kwargs") or {}
    # A registered name with its architecture changed by kwargs is recorded as such.
    shown = f"{name}({','.join(f'{k}={v}' for k, v in kwargs.items())})" if kwargs else name
    epochs = cfg.trainer.epochs
    return {
        "experiment": None if cfg.experiment_name == "default" else str(cfg.experiment_name),
        "model": shown,
        "family": name.split("_")[0],
        "downsample": str(cfg.downsample.name),
        "dataset": str(cfg.dataset.name),
        "seed": int(cfg.seed),
        "T": T if T is not None else cfg.model.T,
        "loss": str(cfg.loss.name),
        "epochs_planned": int(epochs) + int(cfg.trainer.cooldown_epochs or 0)
        if isinstance(epochs, int)
        else epochs,
        "params": None,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }


def run_job(cfg: DictConfig, run_dir: Path, sweep_dir: Path, job_num: int = 0) -> str:
    """Train (or skip, or resume) one run and record it; returns its final status.

    Args:
        cfg: The composed config of the job.
        run_dir: The job's directory (its name is the run id).
        sweep_dir: The sweep directory holding ``results/``.
        job_num: The job's number in the sweep (GPU choice with ``trainer.gpu_by_job_num``).
    """
    try:
        dist = Dist.from_config(cfg.trainer)
    except ConfigError as err:
        log.error("%s failed: %s", run_dir.name, err)
        RunRecord(run_dir, sweep_dir, store_identity(cfg, None)).fail(str(err))
        return "failed"
    if not dist.is_main:
        log.setLevel(logging.WARNING)  # one voice per run: rank 0 reports progress
    record = RunRecord(run_dir, sweep_dir, store_identity(cfg, None), writes=dist.is_main)
    try:
        previous = record.previous()
        if previous and previous["status"] == "finished" and not cfg.trainer.rerun_finished:
            final = previous.get("final") or {}
            log.info(
                "%s: finished before (test top-1 %s), skipped",
                record.run_id,
                final.get("test_top1"),
            )
            return "finished"
        T = check_config(cfg)
        record.doc.update(store_identity(cfg, T))
        with torch_settings(cfg.trainer):
            fit(cfg, record, pick_device(cfg.trainer, job_num, dist), dist, T)
        return "finished"
    except (ConfigError, DataNotFoundError, NonFiniteLossError) as err:
        log.error("%s failed: %s", record.run_id, err)
        record.fail(str(err))
    except Exception as err:
        log.exception("%s failed", record.run_id)
        record.fail(f"{type(err).__name__}: {err}")
    finally:
        dist.close()
    return "failed"


def fit(cfg: DictConfig, record: RunRecord, device: torch.device, dist: Dist, T: int) -> None:
    """Build everything, resume if a checkpoint exists, and train to the planned epoch count."""
    tcfg = cfg.trainer
    seed_everything(int(cfg.seed))
    backbone = create_model(cfg.model.name, **model_kwargs(cfg))
    plan = step_plan(tcfg, backbone, device)  # before the optimiser: it moves the model
    record.doc["params"] = sum(p.numel() for p in backbone.parameters() if p.requires_grad)
    data = build_dataset(
        cfg.dataset, device=device, seed=int(cfg.seed), frames=T, num_workers=int(tcfg.num_workers)
    )
    net = dist.wrap(TimestepOutputs(backbone), device)
    loss_fn, targets = build_loss(cfg.loss), SoftTargets(cfg.loss, int(cfg.dataset.num_classes))
    optimizer = build_optimizer(cfg.optim, backbone, plan)
    scheduler = instantiate_target(cfg.sched, optimizer=optimizer)
    scaler = torch.amp.GradScaler(device.type) if plan.needs_grad_scaler else None
    graph = cuda_graph_step(tcfg, net, optimizer, loss_fn, plan, scaler, dist)
    total_epochs = int(tcfg.epochs) + int(tcfg.cooldown_epochs or 0)

    history, probe_rows, start_epoch, wall_before = [], [], 0, 0.0
    checkpoint = record.load_checkpoint()
    if checkpoint is not None:
        backbone.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        if scaler is not None and checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
        set_rng_state(checkpoint["rng"])
        history, probe_rows = checkpoint["history"], checkpoint["probe"]
        start_epoch, wall_before = checkpoint["epoch"], checkpoint["wall_time_s"]
        log.info("%s: resuming after epoch %d of %d", record.run_id, start_epoch, total_epochs)
    if graph is None:  # a checkpoint of a graphed run on CUDA resumes anywhere, eagerly
        for group in optimizer.param_groups:
            if group.get("capturable"):
                group["capturable"] = False
    step = {"mode": plan.mode, "lif_kernel": plan.lif_kernel, "precision": precision_name(plan)}
    step.update(exact=plan.exact, grad_precision=plan.grad_precision, cuda_graph=graph is not None)
    step["fused_optimizer"] = bool(optimizer.defaults.get("fused"))
    step["retained_memory"] = plan.retained_memory
    step["channels_last_pools"] = plan.channels_last_pools
    step["sparse_token_matmul"] = plan.sparse_token_matmul
    record.start(OmegaConf.to_yaml(cfg, resolve=True), str(device), step)
    record.update(history, probe_rows)
    log.info(
        "%s: %s (%s, %d params, T=%d) on %s, %d train / %d test images, %s",
        record.run_id,
        cfg.model.name,
        cfg.downsample.name,
        record.doc["params"],
        T,
        cfg.dataset.name,
        data.train_size,
        data.test_size,
        device,
    )
    log.info(
        "%s: trainer.mode=%s, LIF kernel %s (%d neurons), %s, %s gradient operands%s%s%s%s%s",
        record.run_id,
        plan.mode,
        plan.lif_kernel,
        plan.lif_count,
        step["precision"],
        plan.grad_precision,
        ", exact" if plan.exact else "",
        ", freed CPU memory retained" if plan.retained_memory else "",
        ", channels-last max-pools" if plan.channels_last_pools else "",
        ", sparse token matmuls" if plan.sparse_token_matmul else "",
        f", fused {type(optimizer).__name__}" if step["fused_optimizer"] else "",
    )
    writer = None
    if cfg.logger.tensorboard and dist.is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(record.run_dir / "tb"))
    probe = None
    if cfg.probe.name == "landing" and dist.is_main:
        from gradprobe.probe import attach_probe

        probe = attach_probe(backbone, every=int(cfg.probe.every))
        per_epoch = data.steps_per_epoch(int(tcfg.batch_size), dist.world)
        per_epoch = min(per_epoch, int(tcfg.max_steps_per_epoch or per_epoch))
        probe.step = per_epoch * start_epoch - 1  # the step counter continues across a resume

    started = time.time()
    try:
        for epoch in range(start_epoch, total_epochs):
            t0 = time.time()
            lr = optimizer.param_groups[0]["lr"]
            train = train_one_epoch(
                net,
                backbone,
                data,
                loss_fn,
                targets,
                optimizer,
                scaler,
                epoch,
                tcfg,
                plan,
                dist,
                graph=graph,
                probe=probe,
            )
            if probe is not None:
                probe.disable()  # evaluation steps are not training steps
            # without the DDP wrapper: ranks may hold different numbers of test batches
            test = evaluate(
                getattr(net, "module", net),
                backbone,
                data,
                int(tcfg.eval_batch_size),
                plan,
                dist,
            )
            if probe is not None:
                probe.enable()
            step_scheduler(scheduler, epoch + 1)
            row = {"epoch": epoch + 1, **train, **test, "lr": lr, "epoch_time_s": time.time() - t0}
            row["images_per_s"] = row.pop("train_images") / row.pop("train_time_s")
            history.append(row)
            if probe is not None:
                frame = probe.to_frame()
                probe_rows += [{"epoch": epoch + 1, **r} for r in frame.to_dict("records")]
                probe.clear()
            log.info(
                "%s: epoch %d/%d train loss %.4f top-1 %.2f | test loss %.4f top-1 %.2f top-5 %.2f | lr %.2e | %.1f s, %.0f img/s",
                record.run_id,
                epoch + 1,
                total_epochs,
                row["train_loss"],
                row["train_top1"],
                row["test_loss"],
                row["test_top1"],
                row["test_top5"],
                lr,
                row["epoch_time_s"],
                row["images_per_s"],
            )
            if writer is not None:
                for key, value in row.items():
                    if key != "epoch":
                        writer.add_scalar(key, value, epoch + 1)
            record.save_checkpoint(
                {
                    "epoch": epoch + 1,
                    "model": backbone.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    "rng": rng_state(),
                    "history": history,
                    "probe": probe_rows,
                    "wall_time_s": wall_before + time.time() - started,
                }
            )
            record.update(history, probe_rows)
    finally:
        if probe is not None:
            probe.remove()
        if writer is not None:
            writer.close()
    last = history[-1] if history else {}
    record.finish(
        {
            "test_top1": last.get("test_top1"),
            "best_test_top1": max((h["test_top1"] for h in history), default=None),
            "test_top5": last.get("test_top5"),
            "test_loss": last.get("test_loss"),
            "epochs_done": len(history),
            "wall_time_s": wall_before + time.time() - started,
        }
    )
    log.info(
        "%s: finished, test top-1 %.2f (best %.2f)",
        record.run_id,
        last.get("test_top1", math.nan),
        record.doc["final"]["best_test_top1"] or math.nan,
    )


def cuda_graph_step(
    tcfg: DictConfig,
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    plan: fast.StepPlan,
    scaler: torch.amp.GradScaler | None,
    dist: Dist,
) -> fast.CUDAGraphStep | None:
    """The replayed-graph train step of ``trainer.cuda_graph``, or ``None`` for eager steps.

    ``auto`` uses one where it applies: fast mode, one CUDA process, no GradScaler (fp16 checks
    for infs on the host), an optimizer with a capturable mode. ``on`` requires it.
    """
    setting = str(tcfg.get("cuda_graph", "auto"))
    reasons = [
        why
        for why, bad in (
            (f"trainer.mode={plan.mode}", plan.mode != "fast"),
            (f"device {plan.device}", plan.device.type != "cuda"),
            ("DDP", dist.world > 1),
            ("fp16 with a GradScaler", scaler is not None),
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
    grad_clip = float(tcfg.grad_clip) if tcfg.grad_clip else None
    return fast.CUDAGraphStep(net, optimizer, loss_fn, plan, grad_clip=grad_clip)


def replay(graph: fast.CUDAGraphStep, probe, x: torch.Tensor, target: torch.Tensor):
    """One step through ``graph`` (captured on first use, with the probe's hooks off); the probe
    counts the step as one it did not measure. ``None`` when the capture failed: nothing was
    stepped, and the caller runs this step (and the rest) eagerly."""
    measuring = probe is not None and probe.enabled
    if graph.graph is None:
        if measuring:
            probe.disable()  # capturing runs the model: no measurements, no host syncs
        try:
            graph.capture(x, target)
        except Exception:  # the model is as before the capture (CUDAGraphStep restores it)
            log.warning("CUDA graph capture failed, training eagerly: %s", graph.failed)
            return None
        finally:
            if measuring:
                probe.enable()
    loss, out = graph(x, target)
    if measuring:
        probe.skip_step()
    return loss, out


def train_one_epoch(
    net: nn.Module,
    backbone: nn.Module,
    data: TensorData | LoaderData,
    loss_fn: nn.Module,
    targets: SoftTargets,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    epoch: int,
    tcfg: DictConfig,
    plan: fast.StepPlan,
    dist: Dist,
    graph: fast.CUDAGraphStep | None = None,
    probe=None,
) -> dict:
    """One pass over the training split; returns mean loss, top-1 and throughput figures.

    With ``graph``, steps replay the captured CUDA graph, except those the ``probe`` measures
    and batches of another shape, which run eagerly."""
    net.train()
    device = plan.device
    batch_size = int(tcfg.batch_size)
    steps = data.steps_per_epoch(batch_size, dist.world)
    if tcfg.max_steps_per_epoch:
        steps = min(steps, int(tcfg.max_steps_per_epoch))
    loss_sum, correct, seen = torch.zeros((), device=device), torch.zeros((), device=device), 0
    bad = torch.zeros((), dtype=torch.bool, device=device)
    on_cuda, check_every = device.type == "cuda", max(int(tcfg.log_every), 1)
    bar = (
        tqdm(total=steps, desc=f"epoch {epoch + 1}", leave=False, dynamic_ncols=True)
        if use_bar(tcfg.progress) and dist.is_main
        else None
    )
    t0 = time.time()
    functional.reset_net(backbone)
    for step, (x, y) in enumerate(data.train_batches(epoch, batch_size, dist.rank, dist.world)):
        if step >= steps:
            break
        x, soft = targets(x, y, epoch)
        graphed = graph is not None and graph.fits(x, soft) and not (probe and probe.samples_next)
        if graphed:
            replayed = replay(graph, probe, x, soft)  # forward, backward and update
            graphed = replayed is not None  # None: the capture failed, eager from now on
        if graphed:
            loss, out = replayed
        else:
            with plan.autocast():
                out = net(x)
                loss = loss_fn(out, soft)
        # On CUDA the check reads the device only every log_every steps (no host sync per step).
        bad = bad | ~torch.isfinite(loss.detach())
        if (not on_cuda or (step + 1) % check_every == 0 or step + 1 == steps) and bool(bad):
            value, where = (loss.item(), "") if not on_cuda else ("non-finite", " or earlier")
            raise NonFiniteLossError(
                f"training loss is {value} at epoch {epoch + 1}, step {step}{where}: the run "
                "stops (lower optim.lr or set trainer.grad_clip)"
            )
        if not graphed:
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
            else:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)  # clip the true gradients
            if tcfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(backbone.parameters(), float(tcfg.grad_clip))
            if scaler is None:
                optimizer.step()
            else:
                scaler.step(optimizer)
                scaler.update()
            # let the autograd graph go now: a CUDA graph captured next must not meet its nodes
            loss, out = loss.detach(), out.detach()
        functional.reset_net(backbone)
        loss_sum += loss.detach() * len(y)
        correct += topk_correct(out.detach().float().mean(0), y, (1,))[0]
        seen += len(y)
        if bar is not None:
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        elif tcfg.progress != "none" and dist.is_main and (step + 1) % int(tcfg.log_every) == 0:
            log.info("epoch %d step %d/%d loss %.4f", epoch + 1, step + 1, steps, loss.item())
    if bar is not None:
        bar.close()
    elapsed = time.time() - t0
    totals = dist.sum(torch.stack([loss_sum, correct, torch.tensor(float(seen), device=device)]))
    seen_all = float(totals[2])
    return {
        "train_loss": float(totals[0]) / seen_all,
        "train_top1": 100.0 * float(totals[1]) / seen_all,
        "train_images": seen_all,
        "train_time_s": elapsed,
    }


@torch.no_grad()
def evaluate(
    net: nn.Module,
    backbone: nn.Module,
    data: TensorData | LoaderData,
    batch_size: int,
    plan: fast.StepPlan,
    dist: Dist,
) -> dict:
    """Loss, top-1 and top-5 on the test split (the mean over T of the logits)."""
    net.eval()
    device = plan.device
    sums = torch.zeros(4, device=device)
    functional.reset_net(backbone)
    for x, y in data.test_batches(batch_size, dist.rank, dist.world):
        with plan.autocast():
            logits = net(x).float().mean(0)
        functional.reset_net(backbone)
        top1, top5 = topk_correct(logits, y)
        loss = torch.nn.functional.cross_entropy(logits, y, reduction="sum")
        sums += torch.stack(
            [loss, top1.float(), top5.float(), torch.tensor(float(len(y)), device=device)]
        )
    sums = dist.sum(sums)
    n = float(sums[3])
    return {
        "test_loss": float(sums[0]) / n,
        "test_top1": 100.0 * float(sums[1]) / n,
        "test_top5": 100.0 * float(sums[2]) / n,
    }
