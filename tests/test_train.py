"""The training harness in-process: exact resume, skip, failure isolation, checks, losses."""

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module

import ablations.configs  # noqa: F401  (registers the model group)
from ablations import loop, run, store
from ablations.checks import ConfigError, check_config
from ablations.distributed import Dist
from ablations.losses import SoftTargets, TETLoss, TimeMeanCrossEntropy
from ablations.rundir import RunRecord
from gradprobe import fast
from gradprobe.fast import allocator, cl_pool

#: Every random source of the recipe: flips, RandAugment, erasing (python random), mixup (numpy).
RANDOM = [
    "dataset.augment.hflip=0.5",
    "dataset.augment.randaugment=rand-m9-n1-mstd0.4-inc1",
    "dataset.augment.random_erasing=0.5",
    "loss.mixup.mixup_alpha=0.5",
    "loss.mixup.off_epoch=2",
    "probe=landing",
    "probe.every=3",
]
TIMES = ("epoch_time_s", "images_per_s")


def config(*overrides: str):
    with initialize_config_module("ablations.conf", version_base="1.3"):
        return compose("config", overrides=["debug=tiny", *overrides])  # about 1 s an epoch


def run_job(cfg, sweep: Path, run_id: str = "run") -> str:
    return run.run_job(cfg, sweep / run_id, sweep)


def numbers(doc: dict) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMES} for row in doc["history"]]


def same_rows(a: list[dict], b: list[dict]) -> bool:
    def key(v):
        return "nan" if isinstance(v, float) and math.isnan(v) else v

    return [{k: key(v) for k, v in r.items()} for r in a] == [
        {k: key(v) for k, v in r.items()} for r in b
    ]


def test_resumed_run_ends_with_exactly_the_uninterrupted_numbers(tmp_path, monkeypatch):
    cfg = config(*RANDOM)
    assert run_job(cfg, tmp_path / "straight") == "finished"
    straight = store.read_run(tmp_path / "straight", "run")

    # kill after epoch 2 is checkpointed: the process dies before recording anything else
    update = RunRecord.update

    def killed_after_two(self, history, probe_rows):
        update(self, history, probe_rows)
        if len(history) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(RunRecord, "update", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        run_job(cfg, tmp_path / "killed")
    interrupted = store.read_run(tmp_path / "killed", "run")
    assert interrupted["status"] == "running" and len(interrupted["history"]) == 2
    monkeypatch.setattr(RunRecord, "update", update)

    torch.manual_seed(1234)  # the resumed process starts from a different global RNG state
    assert run_job(cfg, tmp_path / "killed") == "finished"
    resumed = store.read_run(tmp_path / "killed", "run")
    assert resumed["status"] == "finished" and len(resumed["history"]) == 3
    assert numbers(resumed) == numbers(straight)
    assert same_rows(resumed["probe"], straight["probe"]) and len(straight["probe"]) > 0
    assert {r["step"] for r in straight["probe"]} == {0, 3, 6, 9, 12, 15, 18, 21}
    a = torch.load(tmp_path / "straight" / "run" / "checkpoints" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "killed" / "run" / "checkpoints" / "last.pt", weights_only=False)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_run_records_every_file(tmp_path):
    cfg = config("trainer.epochs=1")
    assert run_job(cfg, tmp_path) == "finished"
    run_dir = tmp_path / "run"
    for name in (
        "config.yaml",
        "environment.json",
        "metrics.csv",
        "summary.json",
        "checkpoints/last.pt",
    ):
        assert (run_dir / name).exists(), name
    header = (run_dir / "metrics.csv").read_text().splitlines()[0]
    assert (
        header
        == "epoch,train_loss,train_top1,test_loss,test_top1,test_top5,lr,epoch_time_s,images_per_s"
    )
    doc = store.read_run(tmp_path, "run")
    assert doc["final"]["epochs_done"] == 1 and doc["params"] > 0 and doc["T"] == 2
    assert doc["model"] == "sps_tokenizer_cifar(embed_dim=16)" and doc["family"] == "sps"
    assert doc["versions"]["torch"] == torch.__version__.split("+")[0] or doc["versions"]["torch"]
    env = json.loads((run_dir / "environment.json").read_text())
    assert env["mode"] == "fast" and env["precision"] == "fp32"
    assert env["lif_kernel"] in ("fused-inductor", "fused-eager")
    # the plan as a whole: a field added to StepPlan appears without an edit here
    assert {field.name for field in dataclasses.fields(fast.StepPlan)} <= env.keys()
    assert env["amp_dtype"] is None and env["cuda_graph"] is False
    assert doc["invocation"] is None  # not launched by the command (tests/test_train_sweep.py)


def test_a_checkpoint_of_either_mode_resumes_in_the_other(tmp_path, monkeypatch):
    update = RunRecord.update

    def killed_after_one(self, history, probe_rows):
        update(self, history, probe_rows)
        if len(history) == 1:
            raise KeyboardInterrupt

    for first, then in (("reference", "fast"), ("fast", "reference")):
        monkeypatch.setattr(RunRecord, "update", killed_after_one)
        with pytest.raises(KeyboardInterrupt):
            run_job(config("trainer.epochs=2", f"trainer.mode={first}"), tmp_path, first)
        monkeypatch.setattr(RunRecord, "update", update)
        assert (
            run_job(config("trainer.epochs=2", f"trainer.mode={then}"), tmp_path, first)
            == "finished"
        )
        doc = store.read_run(tmp_path, first)
        assert len(doc["history"]) == 2
        env = json.loads((tmp_path / first / "environment.json").read_text())
        assert env["mode"] == then


def test_tensorboard_logger_writes_event_files(tmp_path):
    assert run_job(config("trainer.epochs=1", "logger=tensorboard"), tmp_path) == "finished"
    assert list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))


def test_finished_runs_are_skipped(tmp_path, monkeypatch):
    cfg = config("trainer.epochs=1")
    assert run_job(cfg, tmp_path) == "finished"
    monkeypatch.setattr(run, "fit", lambda *a, **k: pytest.fail("a finished run was trained again"))
    assert run_job(cfg, tmp_path) == "finished"


def test_a_run_that_raises_is_recorded_failed(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(loop, "train_one_epoch", boom)
    assert run_job(config(), tmp_path) == "failed"
    doc = store.read_run(tmp_path, "run")
    assert doc["status"] == "failed" and doc["error"] == "RuntimeError: disk on fire"


def test_non_finite_loss_stops_the_run(tmp_path):
    assert run_job(config("loss=tet", "loss.phi=inf"), tmp_path) == "failed"
    doc = store.read_run(tmp_path, "run")
    assert doc["error"].startswith("training loss is inf at epoch 1, step 0: the run stops")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.name=nope", "unknown model 'nope'; choices: spik"),
        (
            "downsample.name=nope",
            "unknown downsampling variant 'nope'; choices: avgpool_lif, lif_maxpool",
        ),
        (
            "dataset.loader=nope",
            "unknown dataset loader 'nope'; choices: cifar10, cifar100, cifar10_dvs",
        ),
        ("loss.name=nope", "unknown loss 'nope'; choices: ce, tet"),
        ("model.T=0", "model.T must be a positive integer or null, got 0"),
        ("dataset.img_size=30", "img_size 30 is not supported"),
        ("trainer.amp=fp8", "unknown trainer.amp 'fp8'; choices: auto, bf16, fp16, fp32"),
        ("trainer.mode=turbo", "unknown trainer.mode 'turbo'; choices: fast, reference"),
        ("trainer.exact=maybe", "trainer.exact must be true or false, got 'maybe'"),
        ("trainer.retain_memory=1", "trainer.retain_memory must be true or false, got 1"),
        # trainer.mode alone picks the LIF kernel: a neuron has no kernel setting
        ("+neuron.kernel=loop", "bad neuron settings: NeuronConfig.__init__() got an unexpected"),
    ],
)
def test_bad_choices_are_rejected_before_training(tmp_path, monkeypatch, caplog, override, message):
    cfg = config(override)
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    assert message in str(err.value) and "\n" not in str(err.value)
    monkeypatch.setattr(run, "fit", lambda *a, **k: pytest.fail("training started"))
    assert run_job(cfg, tmp_path) == "rejected"
    assert message in caplog.text
    assert not list(tmp_path.rglob("*.json"))  # a rejected config never touches the store


def test_missing_data_is_rejected_before_the_model_is_built(tmp_path, monkeypatch, caplog):
    cfg = config("dataset=cifar10", f"paths.data={tmp_path}", "dataset.download=false")
    monkeypatch.setattr(run, "build_model", lambda *a, **k: pytest.fail("model built"))
    assert run_job(cfg, tmp_path) == "rejected"
    assert "dataset.download=true" in caplog.text and not store.read_run(tmp_path, "run")


def test_a_rejected_job_leaves_no_folder_but_an_earlier_runs_files_stay(tmp_path):
    hydra_made = tmp_path / "sweep" / "made"  # what Hydra writes before the job starts
    (hydra_made / ".hydra").mkdir(parents=True)
    (hydra_made / "train.log").write_text("")
    assert run.run_job(config("seed=-1"), hydra_made, hydra_made.parent) == "rejected"
    assert not (tmp_path / "sweep").exists()
    earlier = tmp_path / "sweep" / "earlier"
    (earlier / "checkpoints").mkdir(parents=True)
    assert run.run_job(config("seed=-1"), earlier, earlier.parent) == "rejected"
    assert (earlier / "checkpoints").is_dir()


def test_tet_loss_is_the_papers_formula():
    torch.manual_seed(0)
    out, y = torch.randn(4, 3, 5), torch.tensor([0, 2, 4])
    target = F.one_hot(y, 5).float()
    lamb, phi = 0.2, 1.0
    expected = (1 - lamb) * sum(F.cross_entropy(out[t], y) for t in range(4)) / 4 + lamb * (
        (out - phi) ** 2
    ).mean()
    assert torch.allclose(TETLoss(lamb, phi)(out, target), expected)
    soft = torch.full((3, 5), 0.2)
    assert torch.allclose(
        TETLoss(0.0)(out, soft),
        torch.stack([-(soft * out[t].log_softmax(-1)).sum(-1).mean() for t in range(4)]).mean(),
    )
    assert torch.allclose(TimeMeanCrossEntropy()(out, target), F.cross_entropy(out.mean(0), y))


def test_soft_targets_smooth_and_stop_mixing():
    cfg = config().loss
    targets = SoftTargets(cfg, num_classes=4)
    x, y = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    _, soft = targets(x, y, epoch=500)  # past off_epoch: smoothing only
    assert torch.allclose(soft.sum(-1), torch.ones(4)) and torch.allclose(
        soft.max(-1).values, torch.full((4,), 0.925)
    )


@pytest.mark.parametrize("exact", [False, True])
def test_trainer_exact_picks_the_cpu_fast_path(tmp_path, monkeypatch, exact):
    """``trainer.exact``: bf16 gradient operands (on a CPU that has bf16 dot products, forced
    here) or the bit-identical fp32 step; ``environment.json`` says which ran."""
    monkeypatch.setattr("gradprobe.fast.plan.cpu_has_native_bf16", lambda: True)
    cfg = config("trainer.device=cpu", f"trainer.exact={str(exact).lower()}")
    assert run_job(cfg, tmp_path) == "finished"
    env = json.loads((tmp_path / "run" / "environment.json").read_text())
    assert env["exact"] is exact
    assert env["grad_precision"] == ("fp32" if exact else "bf16")
    assert env["precision"] == "fp32"
    assert env["fused_optimizer"] is not exact  # AdamW fused in fast mode unless exact
    assert env["retained_memory"] is allocator.is_retained()  # opt-in: never set by configure
    assert env["channels_last_pools"] is cl_pool.available()  # bit-identical: exact too


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["fast", "reference"])
def test_a_run_trains_on_cuda_with_the_probe(tmp_path, mode):
    """On CUDA: bf16 + spikingjelly's fused LIF (fast) or fp16 + GradScaler + loop (reference)."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    amp = {"fast": "bf16", "reference": "fp16"}[mode]
    overrides = [f"trainer.mode={mode}", f"trainer.amp={amp}", "probe=landing", "probe.every=2"]
    cfg = config("trainer.device=cuda", *overrides)
    assert run_job(cfg, tmp_path) == "finished"
    doc = store.read_run(tmp_path, "run")
    env = json.loads((tmp_path / "run" / "environment.json").read_text())
    assert env["precision"] == amp
    assert env["lif_kernel"] == {"fast": "spikingjelly-cuda", "reference": "loop"}[mode]
    assert doc["final"]["epochs_done"] == 3 and math.isfinite(doc["final"]["test_loss"])
    assert doc["probe"] and {row["epoch"] for row in doc["probe"]} == {1, 2, 3}
    assert env["cuda_graph"] == (mode == "fast")  # trainer.cuda_graph=auto
    steps = sorted({row["step"] for row in doc["probe"]})
    assert steps == list(range(0, steps[-1] + 1, 2))  # graph replays counted, not measured


def test_cuda_graph_setting_is_checked(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown trainer\.cuda_graph 'maybe'; choices: auto"):
        check_config(config("trainer.cuda_graph=maybe"))
    cfg = config("trainer.cuda_graph=on", "trainer.device=cpu")
    with pytest.raises(ConfigError, match=r"^trainer\.cuda_graph=on cannot run with device cpu$"):
        run.train_and_record(cfg, run.RunRecord(tmp_path / "run", tmp_path, {}), Dist(), 0, 2)
    assert run_job(cfg, tmp_path) == "rejected" and not store.read_run(tmp_path, "run")
