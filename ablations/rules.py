"""What each config value the harness reads may be: `RULES`, one line per key.

`ablations.checks.check_values` holds a composed config against this table, so that a mistake
(``seed=abc``, ``optim.lr=-1``, ``trainer.batch_size=0``, ``trainer.deterministic=maybe``) is
one line naming the key, the value and what is allowed, before anything is built. Names chosen
from a registry (``model.name``, ``trainer.mode``, ...) are checked by `ablations.checks`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Allowed:
    """What one config value may be: ``kind`` ``int``, ``number``, ``flag`` or ``text``, within
    the bounds ``low``/``high`` (inclusive, or strict with ``above``/``below``), or ``None`` where
    ``null``.

    Example:
        >>> Allowed("int", low=1).problem(0)
        'must be a positive integer'
        >>> Allowed("number", low=0, high=1, above=True, below=True).describe()
        'a number in (0, 1)'
    """

    kind: str
    low: float | None = None
    high: float | None = None
    above: bool = False
    below: bool = False
    null: bool = False

    def problem(self, value: object) -> str | None:
        """``"must be ..."`` when ``value`` is not allowed, else ``None``."""
        if value is None and self.null:
            return None
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = {
            "int": number and isinstance(value, int),
            "number": number,
            "flag": isinstance(value, bool),
            "text": isinstance(value, str) and value.strip() != "",
        }[self.kind]
        if ok and number and self.low is not None:
            ok = value > self.low if self.above else value >= self.low
        if ok and number and self.high is not None:
            ok = value < self.high if self.below else value <= self.high
        return None if ok else f"must be {self.describe()}"

    def describe(self) -> str:
        """What is allowed, in words."""
        what = "an integer" if self.kind == "int" else "a number"
        if self.kind == "flag":
            text = "true or false"
        elif self.kind == "text":
            text = "a non-empty string"
        elif self.high is not None:
            left, right = "(["[not self.above], ")]"[not self.below]
            text = f"a number in {left}{self.low:g}, {self.high:g}{right}"
        elif self.low is None:
            text = what
        elif self.low == 0:
            kind = "integer" if self.kind == "int" else "number"
            text = f"a positive {kind}" if self.above else f"a non-negative {kind}"
        elif self.low == 1 and self.kind == "int" and not self.above:
            text = "a positive integer"
        else:
            text = f"{what} {'>' if self.above else '>='} {self.low:g}"
        return f"{text} or null" if self.null else text


INT1, INT0 = Allowed("int", low=1), Allowed("int", low=0)
POSITIVE, NONNEG = Allowed("number", low=0, above=True), Allowed("number", low=0)
FLAG, SHARE = Allowed("flag"), Allowed("number", low=0, high=1)

#: Every value the harness reads, by key; a key absent from a config (e.g. ``dataset.frames``
#: outside the event datasets) is not checked. The order is the order of the checks: keys that
#: others interpolate (``trainer.epochs`` in ``sched.t_initial``) come before them.
RULES: dict[str, Allowed] = {
    "seed": INT0,
    "experiment_name": Allowed("text"),
    "paths.data": Allowed("text"),
    "paths.sweeps": Allowed("text"),
    "trainer.epochs": INT1,
    "trainer.cooldown_epochs": Allowed("int", low=0, null=True),
    "trainer.batch_size": INT1,
    "trainer.eval_batch_size": INT1,
    "trainer.max_steps_per_epoch": Allowed("int", low=1, null=True),
    "trainer.grad_clip": Allowed("number", low=0, null=True),
    "trainer.cpu_threads": Allowed("int", low=1, null=True),
    "trainer.gpu_by_job_num": FLAG,
    "trainer.deterministic": FLAG,
    "trainer.ddp": FLAG,
    "trainer.ddp_timeout_s": INT1,
    "trainer.num_workers": INT0,
    "trainer.log_every": INT1,
    "trainer.rerun_finished": FLAG,
    "trainer.lock_lease_s": POSITIVE,
    "trainer.exact": FLAG,
    "trainer.retain_memory": FLAG,
    "model.T": Allowed("int", low=1, null=True),
    "dataset.root": Allowed("text", null=True),
    "dataset.download": FLAG,
    "dataset.num_classes": INT1,
    "dataset.img_size": INT1,
    "dataset.in_channels": INT1,
    "dataset.limit_train": Allowed("int", low=1, null=True),
    "dataset.limit_test": Allowed("int", low=1, null=True),
    "dataset.train_size": INT1,
    "dataset.test_size": INT1,
    "dataset.frames": Allowed("int", low=1, null=True),
    "dataset.train_ratio": Allowed("number", low=0, high=1, above=True, below=True, null=True),
    "dataset.in_memory": FLAG,
    "dataset.augment.hflip": SHARE,
    "dataset.augment.random_erasing": SHARE,
    "dataset.augment.randaugment": Allowed("text", null=True),
    "dataset.augment.snn_augment_wide": FLAG,
    "downsample.kernel_size": INT1,
    "downsample.stride": INT1,
    "downsample.padding": INT0,
    "downsample.count_include_pad": FLAG,
    "neuron.tau": Allowed("number", low=1, above=True, null=True),
    "neuron.v_threshold": Allowed("number"),
    "neuron.v_reset": Allowed("number", null=True),
    "neuron.detach_reset": FLAG,
    "neuron.decay_input": FLAG,
    "neuron.alpha": POSITIVE,
    "loss.label_smoothing": SHARE,
    "loss.lamb": NONNEG,
    "loss.phi": Allowed("number"),
    "loss.mixup.mixup_alpha": NONNEG,
    "loss.mixup.cutmix_alpha": NONNEG,
    "loss.mixup.prob": SHARE,
    "loss.mixup.switch_prob": SHARE,
    "loss.mixup.off_epoch": Allowed("int", low=0, null=True),
    "optim.lr": POSITIVE,
    "optim.weight_decay": NONNEG,
    "optim.eps": NONNEG,
    "optim.momentum": NONNEG,
    "optim.nesterov": FLAG,
    "sched.t_initial": INT1,
    "sched.lr_min": NONNEG,
    "sched.warmup_t": INT0,
    "sched.warmup_lr_init": NONNEG,
    "sched.warmup_prefix": FLAG,
    "sched.t_in_epochs": FLAG,
    "sched.T_max": INT1,
    "sched.eta_min": NONNEG,
    "sched.factor": SHARE,
    "sched.total_iters": INT0,
    "probe.every": INT1,
    "logger.tensorboard": FLAG,
}
