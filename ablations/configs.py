"""What the Hydra config tree needs from Python: the ``model`` group and the run-id resolver.

The ``model`` group is generated from the backbone registry rather than written as one yaml per
model size: every name in `gradprobe.models.list_models()` becomes an option ``model=<name>``
with the keys below, so a backbone registered in `gradprobe.models` is selectable the moment it
exists. Each option holds::

    name: <registry name>  # backbone in gradprobe.models' registry
    T: null                # time steps; null: the backbone's reference default (4; DVS 16)
    kwargs: {}             # family options for create_model; add keys with +model.kwargs.depth=1

Importing this module registers both (it is idempotent); `ablations.train` and the tests do.
"""

from __future__ import annotations

import hashlib
import re

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from gradprobe.models import list_models

MAX_RUN_ID = 120
_UNSAFE = re.compile(r"[^A-Za-z0-9._,=+-]")


def run_id_from_overrides(override_dirname: str) -> str:
    """The run directory name for a job: its overrides made safe for a file name.

    Hydra joins the job's overrides (sorted, minus the keys that never change numbers) into
    ``hydra.job.override_dirname``; this keeps that readable and deterministic so that the same
    command always maps to the same folder. Long names are shortened with a hash suffix.

    Example:
        >>> run_id_from_overrides("downsample=maxpool_lif,model.kwargs.depth=[1]")
        'downsample=maxpool_lif,model.kwargs.depth=_1_'
        >>> run_id_from_overrides("")
        'default'
    """
    safe = _UNSAFE.sub("_", override_dirname) or "default"
    if len(safe) > MAX_RUN_ID:
        digest = hashlib.sha1(override_dirname.encode()).hexdigest()[:10]
        safe = f"{safe[: MAX_RUN_ID - 11]}-{digest}"
    return safe


def model_node(name: str) -> dict:
    """The config node of the ``model`` group option for a registered backbone."""
    return {"name": name, "T": None, "kwargs": {}}


def register_configs() -> None:
    """Register the run-id resolver and one ``model`` group option per registered backbone."""
    if not OmegaConf.has_resolver("gp_run_id"):
        OmegaConf.register_new_resolver("gp_run_id", run_id_from_overrides)
    store = ConfigStore.instance()
    for name in list_models():
        store.store(group="model", name=name, node=model_node(name))


register_configs()
