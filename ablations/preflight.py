"""Check every job of a command before any is launched, and say Hydra's errors in one line.

`check_jobs` runs in the command's own process (from `ablations.callbacks.ExitStatus`), before
Hydra creates a folder: it composes each job's config as Hydra's basic sweeper will launch it
(the sweep's ``hydra.sweeper.params`` and the command line's overrides, expanded), and checks
its added keys (`ablations.keys`) and its values (`ablations.checks.check_config`). Where the
jobs run on this machine (the basic and joblib launchers) it also checks their datasets and
devices; a Slurm job checks those on its node. A job the store marks finished is not checked
(it is skipped anyway). When every job is rejected, the command stops with `NothingToRun` and
nothing is written; otherwise the rejected runs are named now and again when the command ends,
and the other runs train.

`one_line` turns Hydra's own errors (an unknown option ``experiment=nope``, an override of a key
that does not exist) into one line naming the key, the value and what is allowed.
"""

from __future__ import annotations

import re
from pathlib import Path

from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import MissingConfigException
from omegaconf import DictConfig, OmegaConf

from ablations import keys, store
from ablations.checks import ConfigError, check_config
from ablations.configs import run_id_from_overrides
from gradprobe.data import DataNotFoundError

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


class NothingToRun(Exception):
    """Every job of the command was rejected before training; ``lines`` say why (one each)."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("; ".join(lines))
        self.lines = lines


def job_overrides(master: DictConfig) -> list[list[str]] | None:
    """The overrides of every job of a multirun, as the basic sweeper expands them (``None``
    under another sweeper, whose jobs are known only as it runs)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    if master.hydra.sweeper.get("_target_") != BASIC_SWEEPER:
        return None
    params = master.hydra.sweeper.get("params") or {}
    lines = [f"{k}={v}" for k, v in params.items()]
    lines += list(master.hydra.overrides.task)
    loader = GlobalHydra.instance().config_loader()
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(lines)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def problem(master: DictConfig, cfg: DictConfig, overrides: list[str], here: bool) -> str | None:
    """Why the job ``cfg`` (composed from ``overrides``) cannot train, or ``None``."""
    loader = GlobalHydra.instance().config_loader()

    def without_force_added() -> DictConfig:
        return loader.load_sweep_config(master, [o for o in overrides if not o.startswith("++")])

    groups = list(cfg.hydra.runtime.choices)
    try:
        found = keys.unknown_added_key(cfg, overrides, groups, base=without_force_added)
        if found:
            raise ConfigError(found)
        check_config(cfg, here=here)
    except (ConfigError, DataNotFoundError) as err:
        return str(err)
    return None


def finished(cfg: DictConfig, sweep_dir: Path, run_id: str) -> bool:
    """Whether the store marks this run finished (so that the job will skip it)."""
    previous = store.read_run(sweep_dir, run_id)
    rerun = OmegaConf.select(cfg, "trainer.rerun_finished", default=False)
    return bool(previous and previous["status"] == "finished" and rerun is not True)


def check_jobs(config: DictConfig, multirun: bool) -> dict[str, str]:
    """The jobs of this command that will be rejected, by run id, with the reason.

    Args:
        config: The config Hydra gives the callback (a single run's own, a multirun's master).
        multirun: Whether the command is ``-m``.

    Raises:
        NothingToRun: Every job is rejected (nothing has been written).
    """
    if not multirun:
        jobs = [(config, list(config.hydra.overrides.task))]
        here = True
    else:
        expanded = job_overrides(config)
        if expanded is None:
            return {}
        loader = GlobalHydra.instance().config_loader()
        jobs = [(loader.load_sweep_config(config, job), job) for job in expanded]
        here = "submitit" not in str(config.hydra.launcher.get("_target_", ""))
    rejected = {}
    for cfg, overrides in jobs:
        if not str(OmegaConf.select(cfg, "paths.sweeps", default="")).strip():
            raise NothingToRun(["paths.sweeps must be a non-empty string, got ''"])
        run_id = run_id_from_overrides(cfg.hydra.job.override_dirname)
        sweep_dir = Path(cfg.hydra.sweep.dir) if multirun else Path(cfg.hydra.run.dir).parent
        if finished(cfg, sweep_dir, run_id):
            continue
        why = problem(config, cfg, overrides, here)
        if why:
            rejected[run_id] = why
    if rejected and len(rejected) == len(jobs):
        reasons = sorted(set(rejected.values()))
        if len(jobs) == 1:
            raise NothingToRun(reasons)
        if len(reasons) == 1:
            raise NothingToRun([f"all {len(jobs)} runs rejected before training: {reasons[0]}"])
        raise NothingToRun([f"{run_id}: {why}" for run_id, why in rejected.items()])
    return rejected


_OVERRIDE = re.compile(r"Could not override '([^']+)'")
_APPEND = re.compile(r"Could not append to config\. An item is already at '([^']+)'")


def one_line(err: Exception) -> str:
    """One line for an error Hydra raised while composing: the key or group, the value, and
    what is allowed (the options of a group, the nearest keys of a key)."""
    text = str(err)
    if isinstance(err, MissingConfigException) and err.missing_cfg_file and err.options:
        group, _, option = err.missing_cfg_file.rpartition("/")
        if group:
            return f"unknown {group} {option!r}; choices: {', '.join(err.options)}"
    match = _OVERRIDE.search(text)
    if match:
        key = match.group(1)
        return f"unknown config key {key!r}; {keys.nearest(key, default_keys())}"
    match = _APPEND.search(text)
    if match:
        key = match.group(1)
        return f"config key {key!r} exists already: set it without the + ({key}=...)"
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("provider=")]
    if "Config search path:" in lines:
        lines = lines[: lines.index("Config search path:")]
    cause = err.__cause__
    if cause is not None and str(cause).splitlines() and str(cause).splitlines()[0] not in text:
        lines.append(str(cause).splitlines()[0])
    return "; ".join(lines)


def default_keys() -> list[str]:
    """Every key of the default config (the candidates for a key that does not exist)."""
    from hydra import compose, initialize_config_module

    try:
        if GlobalHydra.instance().is_initialized():
            return keys.leaf_keys(compose("config"))
        with initialize_config_module("ablations.conf", version_base="1.3"):
            return keys.leaf_keys(compose("config"))
    except Exception:  # a broken config tree: no suggestion rather than a second error
        return []
