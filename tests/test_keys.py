"""Which config keys exist: added keys, the open nodes' receivers, and the table of rules."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

import ablations.configs  # noqa: F401  (registers the model group)
from ablations import keys
from ablations.rules import RULES
from gradprobe.models import list_models

CONF = Path(__file__).resolve().parents[1] / "ablations" / "conf"
GROUPS = ("dataset", "downsample", "loss", "neuron", "optim", "probe", "sched", "speed", "logger")


def compose_cfg(*overrides: str):
    with initialize_config_module("ablations.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("name", list_models())
def test_every_backbone_names_the_arguments_it_takes(name):
    params = keys.model_parameters(name)
    assert params is not None, "model.kwargs of this backbone could not be checked"
    assert {"downsample", "num_classes", "T"} <= set(params)


@pytest.mark.parametrize(
    ("group", "option"), [(g, o) for g in ("optim", "sched") for o in options(g)]
)
def test_every_optimiser_and_scheduler_key_is_an_argument_of_its_target(group, option):
    assert keys.unknown_target_key(compose_cfg(f"{group}={option}"), group) is None


def test_every_rule_names_a_key_that_some_option_defines():
    defined = set()
    for group in GROUPS:
        for option in options(group):
            defined |= set(keys.leaf_keys(compose_cfg(f"{group}={option}")))
    assert sorted(set(RULES) - defined) == []


def test_added_keys_outside_the_open_nodes_are_refused_with_the_nearest():
    cfg = compose_cfg("debug=tiny")
    groups = cfg.hydra.runtime.choices

    def check(*overrides, base=None):
        return keys.unknown_added_key(cfg, overrides, groups, base=base)

    assert check("+trainer.epoch=2") == (
        "unknown config key 'trainer.epoch' (added with +); nearest: trainer.epochs, trainer.exact"
    )
    assert check("+model.kwargs.depth=1", "+optim.fused=false", "~model.kwargs.embed_dim") is None
    assert check("+experiment=quickstart", "trainer.epochs=2") is None  # a group, a set key
    assert "cannot be deleted" in check("~trainer.epochs")
    # ++ overrides a key that exists, and adds one that does not
    assert check("++trainer.epochs=2", base=lambda: cfg) is None
    assert "(added with ++)" in check("++trainer.epoch=2", base=lambda: cfg)


def test_model_kwargs_are_checked_against_the_backbone():
    cfg = compose_cfg("experiment=quickstart")
    assert keys.bad_model_kwarg(cfg) is None
    OmegaConf.update(cfg, "model.kwargs.detph", 1, force_add=True)
    assert "takes no 'detph'); nearest: model.kwargs.depth," in keys.bad_model_kwarg(cfg)
