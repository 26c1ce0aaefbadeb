"""The real config tree composes: every option of every group, and every experiment."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

import ablations.configs  # registers the model group and the run-id resolver
from ablations.checks import check_config
from ablations.configs import run_id_from_overrides
from ablations.data import list_datasets
from ablations.losses import LOSSES
from gradprobe.downsample import list_downsamples
from gradprobe.labels import BUILTIN_ORDER
from gradprobe.models import list_models

CONF = Path(ablations.configs.__file__).parent / "conf"
GROUPS = (
    "downsample",
    "neuron",
    "dataset",
    "loss",
    "optim",
    "sched",
    "trainer",
    "speed",
    "probe",
    "logger",
    "launcher",
    "paths",
    "debug",
)
SPEED_KEYS = {"mode", "amp", "exact", "cuda_graph", "retain_memory"}
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_cfg(*overrides: str, hydra: bool = False):
    with initialize_config_module("ablations.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes(group, option):
    cfg = compose_cfg(f"{group}={option}")
    OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_is_a_group_option(name):
    cfg = compose_cfg(f"model={name}")
    assert cfg.model.name == name and cfg.model.T is None and dict(cfg.model.kwargs) == {}


def test_registry_names_match_config_names():
    assert options("downsample") == list_downsamples()
    assert {
        OmegaConf.load(CONF / "dataset" / f"{o}.yaml").get("loader") for o in options("dataset")
    } <= set(list_datasets())
    assert {"ce", "tet"} == set(LOSSES.names())


def test_group_files_comment_every_key():
    for path in CONF.rglob("*.yaml"):
        lines = path.read_text().splitlines()
        assert lines[0].startswith("#"), f"{path} must open with a comment saying what it is"


@pytest.mark.parametrize("group", ["speed", "debug"])
def test_every_value_has_its_comment(group):
    for path in (CONF / group).glob("*.yaml"):
        for line in path.read_text().splitlines():
            key, _, value = line.partition(":")
            if value.strip() and not line.lstrip().startswith(("#", "-")):
                assert "#" in value, f"{path.name}: {key.strip()} has no comment"


def test_speed_presets_fill_the_trainer_node():
    """``speed=<preset>`` chooses the keys; ``trainer.<key>=`` still sets one of them."""
    default = compose_cfg()
    assert "speed" not in default and default.trainer.keys() >= SPEED_KEYS
    for option in options("speed"):
        assert set(OmegaConf.load(CONF / "speed" / f"{option}.yaml")) == SPEED_KEYS
    assert (default.trainer.mode, default.trainer.exact, default.trainer.retain_memory) == (
        "fast",
        False,
        False,
    )
    assert compose_cfg("speed=exact").trainer.exact is True
    assert compose_cfg("speed=reference").trainer.mode == "reference"
    assert compose_cfg("speed=reference", "trainer.mode=fast").trainer.mode == "fast"
    assert compose_cfg("trainer.mode=reference").trainer.mode == "reference"
    assert compose_cfg("experiment=quickstart").trainer.exact is True


def test_debug_runs_are_tiny_and_pass_checks():
    for option in options("debug"):
        cfg = compose_cfg(f"debug={option}")
        assert cfg.dataset.loader == "synthetic" and cfg.trainer.epochs <= 3
        assert check_config(cfg) == 2


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_passes_checks(experiment):
    cfg = compose_cfg(f"experiment={experiment}", hydra=True)
    assert cfg.experiment_name == experiment
    params = cfg.hydra.sweeper.params
    assert params, "every experiment sweeps something"
    # every job of the sweep passes the pre-training checks (but for the data and the device,
    # which are this machine's: ImageNet is not here)
    first = [f"{k}={str(v).split(',')[0]}" for k, v in params.items()]
    job = compose_cfg(f"experiment={experiment}", *first)
    T = check_config(job, here=False)
    assert T >= 1


def test_quickstart_sweeps_the_four_variants():
    cfg = compose_cfg("experiment=quickstart", hydra=True)
    assert sorted(cfg.hydra.sweeper.params.downsample.split(",")) == sorted(BUILTIN_ORDER)
    assert cfg.dataset.loader == "digits" and cfg.probe.name == "landing"


def test_paper_recipes():
    c10 = compose_cfg("experiment=paper_table1_cifar10")
    assert (c10.trainer.epochs, c10.trainer.cooldown_epochs, c10.trainer.batch_size) == (
        400,
        10,
        64,
    )
    assert (c10.optim.lr, c10.optim.weight_decay, c10.sched.warmup_t, c10.sched.lr_min) == (
        5e-4,
        0.06,
        20,
        1e-5,
    )
    assert c10.loss.mixup.mixup_alpha == 0.5 and c10.loss.mixup.off_epoch == 200
    assert c10.dataset.augment.randaugment == "rand-m9-n1-mstd0.4-inc1"
    c100 = compose_cfg("experiment=paper_table1_cifar100")
    assert c100.dataset.num_classes == 100 and c100.trainer.epochs == 400
    inet = compose_cfg("experiment=paper_table2_imagenet")
    assert (
        inet.loss.mixup.cutmix_alpha == 1.0 and inet.trainer.ddp and inet.optim.weight_decay == 0.05
    )
    dvs = compose_cfg("experiment=paper_table4_dvs128")
    assert dvs.dataset.num_classes == 11 and dvs.trainer.epochs == 192 and dvs.optim.lr == 1e-3
    assert dvs.loss.mixup.prob == 0.5 and dvs.loss.mixup.off_epoch == 75


def test_run_dirs_come_from_the_overrides():
    cfg = compose_cfg("seed=3", "downsample=avgpool_lif", hydra=True)
    assert cfg.hydra.job.override_dirname == "downsample=avgpool_lif,seed=3"
    assert run_id_from_overrides(cfg.hydra.job.override_dirname) == "downsample=avgpool_lif,seed=3"
    assert run_id_from_overrides("paths.data=/x/y") == "paths.data=_x_y"
    long = run_id_from_overrides(",".join(f"k{i}=v" for i in range(100)))
    assert len(long) <= 120 and long == run_id_from_overrides(
        ",".join(f"k{i}=v" for i in range(100))
    )
