"""The epoch loop: train one epoch, evaluate, record, checkpoint.

The loop owns the neurons' state: `spikingjelly.activation_based.functional.reset_net` runs
after every batch, in training and in evaluation. How a step computes is the `TrainStep`'s
business; the loop only hands it batches.
"""

from __future__ import annotations

import logging
import sys
import time

import torch
from omegaconf import DictConfig
from spikingjelly.activation_based import functional
from tqdm import tqdm

from ablations.build import Parts
from ablations.distributed import Dist
from ablations.rundir import RunRecord
from ablations.state import Progress, checkpoint
from ablations.step import TrainStep

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run stops."""


def total_epochs(tcfg: DictConfig) -> int:
    """The schedule's epochs and the cooldown after it."""
    return int(tcfg.epochs) + int(tcfg.cooldown_epochs or 0)


def step_scheduler(scheduler: object, epoch: int) -> None:
    """Advance to ``epoch``: timm schedulers take the epoch, torch's count calls."""
    if hasattr(scheduler, "step_update"):
        scheduler.step(epoch)
    else:
        scheduler.step()


def topk_correct(
    logits: torch.Tensor, y: torch.Tensor, ks: tuple[int, ...] = (1, 5)
) -> list[torch.Tensor]:
    top = logits.topk(min(max(ks), logits.shape[-1]), dim=-1).indices
    hits = top == y[:, None]
    return [hits[:, :k].any(-1).sum() for k in ks]


def use_bar(progress: str) -> bool:
    return progress == "bar" or (progress == "auto" and sys.stderr.isatty())


def train_epochs(
    tcfg: DictConfig,
    parts: Parts,
    step: TrainStep,
    progress: Progress,
    record: RunRecord,
    dist: Dist,
    writer=None,
) -> None:
    """Train from ``progress.epoch`` to the planned epoch count, recording every epoch."""
    probe, total = step.probe, total_epochs(tcfg)
    progress.started = time.time()
    for epoch in range(progress.epoch, total):
        t0 = time.time()
        lr = parts.optimizer.param_groups[0]["lr"]
        train = train_one_epoch(parts, step, epoch, tcfg, dist)
        if probe is not None:
            probe.disable()  # evaluation steps are not training steps
        test = evaluate(parts, int(tcfg.eval_batch_size), dist)
        if probe is not None:
            probe.enable()
        step_scheduler(parts.scheduler, epoch + 1)
        row = {"epoch": epoch + 1, **train, **test, "lr": lr, "epoch_time_s": time.time() - t0}
        row["images_per_s"] = row.pop("train_images") / row.pop("train_time_s")
        progress.history.append(row)
        progress.epoch = epoch + 1
        if probe is not None:
            frame = probe.to_frame()
            progress.probe_rows += [{"epoch": epoch + 1, **r} for r in frame.to_dict("records")]
            probe.clear()
        log.info(
            "%s: epoch %d/%d train loss %.4f top-1 %.2f | test loss %.4f top-1 %.2f top-5 %.2f"
            " | lr %.2e | %.1f s, %.0f img/s",
            record.run_id,
            epoch + 1,
            total,
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
        record.save_checkpoint(checkpoint(parts, progress))
        record.update(progress.history, progress.probe_rows)


def train_one_epoch(
    parts: Parts, step: TrainStep, epoch: int, tcfg: DictConfig, dist: Dist
) -> dict:
    """One pass over the training split; returns mean loss, top-1 and throughput figures."""
    parts.net.train()
    device = parts.plan.device
    batch_size = int(tcfg.batch_size)
    steps = parts.data.steps_per_epoch(batch_size, dist.world)
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
    functional.reset_net(parts.backbone)
    batches = parts.data.train_batches(epoch, batch_size, dist.rank, dist.world)
    for i, (x, y) in enumerate(batches):
        if i >= steps:
            break
        x, soft = parts.targets(x, y, epoch)
        loss, out = step(x, soft)
        functional.reset_net(parts.backbone)
        # On CUDA the check reads the device only every log_every steps (no host sync per step).
        bad = bad | ~torch.isfinite(loss)
        if (not on_cuda or (i + 1) % check_every == 0 or i + 1 == steps) and bool(bad):
            value, where = (loss.item(), "") if not on_cuda else ("non-finite", " or earlier")
            raise NonFiniteLossError(
                f"training loss is {value} at epoch {epoch + 1}, step {i}{where}: the run "
                "stops (lower optim.lr or set trainer.grad_clip)"
            )
        loss_sum += loss * len(y)
        correct += topk_correct(out.float().mean(0), y, (1,))[0]
        seen += len(y)
        if bar is not None:
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        elif tcfg.progress != "none" and dist.is_main and (i + 1) % int(tcfg.log_every) == 0:
            log.info("epoch %d step %d/%d loss %.4f", epoch + 1, i + 1, steps, loss.item())
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
def evaluate(parts: Parts, batch_size: int, dist: Dist) -> dict:
    """Loss, top-1 and top-5 on the test split (the mean over T of the logits)."""
    # without the DDP wrapper: ranks may hold different numbers of test batches
    net = getattr(parts.net, "module", parts.net)
    net.eval()
    device = parts.plan.device
    sums = torch.zeros(4, device=device)
    functional.reset_net(parts.backbone)
    for x, y in parts.data.test_batches(batch_size, dist.rank, dist.world):
        with parts.plan.autocast():
            logits = net(x).float().mean(0)
        functional.reset_net(parts.backbone)
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
