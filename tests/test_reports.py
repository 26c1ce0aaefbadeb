"""reports: golden statistics on a hand-made store, the paper's layout, formats and robustness.

The store below is small enough to check by hand. Spikformer-4-384, 400 epochs, T=4:

=========  ============  ==================  =====================================
dataset    variant       seeds (accuracy)    expected
=========  ============  ==================  =====================================
cifar10    lif_maxpool   90, 91, 92          mean 91, sd 1 (baseline)
cifar10    maxpool_lif   92, 93, 94          +2.00; Welch t = 2/sqrt(2/3), df = 4
cifar10    avgpool_lif   95, 95.5, 96        +4.50; t = 6.97, df = 2.94, p < 0.01
cifar10    strided_conv  89                  -2.00; one seed: no test
cifar100   lif_maxpool   70, 72 (+1 failed)  mean 71, sd sqrt(2)
cifar100   maxpool_lif   73, 73              +2.00; t = 2, df = 1 (Cauchy)
cifar100   avgpool_lif   (1 running)         no mean, not averaged
=========  ============  ==================  =====================================
"""

import math
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ablations.store import SCHEMA, write_run
from reports.__main__ import main
from reports.build import build_report
from reports.figures import model_palette
from reports.load import load_results
from reports.paper import TABLES, paper_reference, paper_tables, parse_model
from reports.precision import snapshots, summarize_precision
from reports.render import latex_escape, to_latex
from reports.screen import BadResultsError
from reports.stats import summarize_cells
from reports.tables import build_table


def _doc(run_id, acc, *, dataset="cifar10", variant="lif_maxpool", seed=0, family="spikformer",
         model=None, T=4, epochs=400, status="finished", probe=(), error=None):  # fmt: skip
    history = [
        {"epoch": e, "train_loss": 2.0 - e / 400, "train_top1": acc - 1, "test_loss": 1.5 - e / 400,
         "test_top1": acc - 2 + 2 * e / (epochs - 1), "test_top5": 99.0, "lr": 1e-3,
         "epoch_time_s": 1.0, "images_per_s": 100.0}
        for e in range(0, epochs, max(1, epochs // 4))
    ]  # fmt: skip
    history[-1]["test_top1"] = acc
    return {
        "schema": SCHEMA, "run_id": run_id, "status": status, "error": error,
        "experiment": "golden", "model": model or f"{family}_4_384_cifar", "family": family,
        "downsample": variant, "dataset": dataset, "seed": seed, "T": T, "loss": "ce",
        "epochs_planned": epochs, "params": 9_320_000, "history": history, "probe": list(probe),
        "final": None if status != "finished" else {
            "test_top1": acc, "best_test_top1": acc + 0.5, "test_top5": 99.0,
            "test_loss": 1.0, "epochs_done": epochs, "wall_time_s": 1.0,
        },
    }  # fmt: skip


def _probe(epoch, site, t, precision, windows, mass=None, tie=0.5):
    return {"epoch": epoch, "step": epoch * 10, "site": site, "t": t, "precision": precision,
            "mass_at_argmax": precision if mass is None else mass, "tie_rate": tie,
            "spike_rate": 0.1, "windows": windows}  # fmt: skip


GOLDEN = [
    ("c10-base-0", 90.0, {"probe": [_probe(0, "s1", 0, 0.2, 100), _probe(0, "s1", 1, 0.6, 300),
                                    _probe(399, "s1", 0, 0.4, 100),
                                    _probe(399, "s1", 1, 0.4, 100)]}),
    ("c10-base-1", 91.0, {"seed": 1, "probe": [_probe(0, "s1", 0, 0.3, 100),
                                               _probe(399, "s1", 0, 0.6, 100)]}),
    ("c10-base-2", 92.0, {"seed": 2}),
    ("c10-cml-0", 92.0, {"variant": "maxpool_lif"}),
    ("c10-cml-1", 93.0, {"variant": "maxpool_lif", "seed": 1}),
    ("c10-cml-2", 94.0, {"variant": "maxpool_lif", "seed": 2}),
    ("c10-avg-0", 95.0, {"variant": "avgpool_lif",
                         "probe": [_probe(0, "s1", 0, math.nan, 100, mass=0.11)]}),
    ("c10-avg-1", 95.5, {"variant": "avgpool_lif", "seed": 1}),
    ("c10-avg-2", 96.0, {"variant": "avgpool_lif", "seed": 2}),
    ("c10-stride-0", 89.0, {"variant": "strided_conv",
                            "probe": [_probe(0, "s1", 0, math.nan, 0, tie=math.nan)]}),
    ("c100-base-0", 70.0, {"dataset": "cifar100"}),
    ("c100-base-1", 72.0, {"dataset": "cifar100", "seed": 1}),
    ("c100-base-2", 0.0, {"dataset": "cifar100", "seed": 2, "status": "failed",
                          "error": "RuntimeError: CUDA out of memory"}),
    ("c100-cml-0", 73.0, {"dataset": "cifar100", "variant": "maxpool_lif"}),
    ("c100-cml-1", 73.0, {"dataset": "cifar100", "variant": "maxpool_lif", "seed": 1}),
    ("c100-avg-0", 0.0, {"dataset": "cifar100", "variant": "avgpool_lif", "status": "running"}),
]  # fmt: skip


def _write_store(root, docs=GOLDEN):
    for run_id, acc, kw in docs:
        write_run(root, _doc(run_id, acc, **kw))
    return root


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return _write_store(tmp_path_factory.mktemp("sweep"))


@pytest.fixture(scope="module")
def cells(store):
    return summarize_cells(load_results(store).runs)


@pytest.fixture(scope="module")
def built(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    assert main(["build", "--results", str(store), "--out", str(out)]) == 0
    return out


def _cell(cells, dataset, variant):
    row = cells[(cells["dataset"] == dataset) & (cells["variant"] == variant)]
    assert len(row) == 1
    return row.iloc[0]


# -- statistics ---------------------------------------------------------------------------------


def test_golden_means_sds_and_deltas(cells):
    base = _cell(cells, "cifar10", "lif_maxpool")
    assert (base["n"], base["mean"], base["sd"]) == (3, 91.0, 1.0)
    assert math.isnan(base["delta"]) and math.isnan(base["p_value"])
    cml = _cell(cells, "cifar10", "maxpool_lif")
    assert cml["mean"] == 93.0 and cml["sd"] == 1.0 and cml["delta"] == 2.0
    avg = _cell(cells, "cifar10", "avgpool_lif")
    assert avg["mean"] == 95.5 and avg["sd"] == 0.5 and avg["delta"] == 4.5
    stride = _cell(cells, "cifar10", "strided_conv")
    assert stride["n"] == 1 and math.isnan(stride["sd"]) and stride["delta"] == -2.0


def test_golden_welch_p_values(cells):
    # df = 4: two-sided p = 1 - u(3 - u^2)/2 with u = t / sqrt(t^2 + 4)
    t = 2 / math.sqrt(2 / 3)
    u = t / math.sqrt(t * t + 4)
    cml = _cell(cells, "cifar10", "maxpool_lif")
    assert cml["p_value"] == pytest.approx(1 - u * (3 - u * u) / 2, rel=1e-9)
    assert not cml["significant"]
    avg = _cell(cells, "cifar10", "avgpool_lif")  # t = 6.97 on 2.94 df
    assert avg["p_value"] < 0.01 and avg["significant"]
    # df = 1 (one side has no spread): the Cauchy tail, p = 1 - 2 atan(t) / pi with t = 2
    c100 = _cell(cells, "cifar100", "maxpool_lif")
    assert c100["p_value"] == pytest.approx(1 - 2 * math.atan(2) / math.pi, rel=1e-9)
    stride = _cell(cells, "cifar10", "strided_conv")
    assert math.isnan(stride["p_value"]) and pd.isna(stride["significant"])


def test_failed_and_running_runs_are_counted_not_averaged(cells):
    base = _cell(cells, "cifar100", "lif_maxpool")
    assert (base["n"], base["mean"], base["n_failed"]) == (2, 71.0, 1)
    assert base["sd"] == pytest.approx(math.sqrt(2))
    running = _cell(cells, "cifar100", "avgpool_lif")
    assert (running["n"], running["n_incomplete"]) == (0, 1) and math.isnan(running["mean"])


def test_best_metric_reads_best_test_top1(store):
    runs = load_results(store, metric="best_test_top1").runs
    assert runs.set_index("run_id").loc["c10-base-0", "acc"] == 90.5


def test_duplicate_seed_is_listed_not_averaged(tmp_path):
    _write_store(tmp_path, [("a", 90.0, {}), ("b", 99.0, {}), ("c", 91.0, {"seed": 1})])
    results = load_results(tmp_path)
    assert results.runs.set_index("run_id").loc["b", "problem"] == "duplicate seed of a"
    assert _cell(summarize_cells(results.runs), "cifar10", "lif_maxpool")["mean"] == 90.5


# -- the paper's numbers and layout -------------------------------------------------------------


def test_paper_reference_maps_every_spikformer_row():
    ref = paper_reference()
    assert len(paper_tables()) == 126
    assert ref.groupby("table").size().to_dict() == {1: 16, 2: 12, 3: 32, 4: 16, 5: 3}
    top = ref[(ref["table"] == 2) & (ref["family"] == "spikingformer") & (ref["arch"] == "8-768")]
    assert top.set_index("variant")["paper"].to_dict() == {
        "lif_maxpool": 75.85,
        "maxpool_lif": 77.64,
    }
    assert set(ref.loc[ref["table"] == 4, "dataset"]) == {"cifar10_dvs", "dvs128_gesture"}
    assert parse_model("spikformer_2_256_dvs") == ("spikformer", "2-256", 2, 256)


def test_table1_markdown_cells(cells):
    table = build_table(TABLES[0], cells, "test_top1")
    rows = table.display.set_index([("", "Method"), ("", "Backbone")])
    cml = rows.loc[("ConvBN-MaxPool-LIF", "Spikformer-4-384-400E")]
    assert cml[("CIFAR10", "ours")] == "93.00 ± 1.00 (+2.00)"
    assert cml[("CIFAR10", "n")] == "3"
    assert cml[("CIFAR10", "vs. baseline")] == "no (p=0.070)"
    assert cml[("CIFAR10", "paper")] == "96.04"
    assert cml[("CIFAR10", "ours - paper")] == "-3.04"
    base = rows.loc[("ConvBN-LIF-MaxPool", "Spikformer-4-384-400E")]
    assert base[("CIFAR100", "n")] == "2 (1 failed)"
    assert base[("CIFAR100", "vs. baseline")] == "baseline"
    avg = rows.loc[("ConvBN-AvgPool-LIF", "Spikformer-4-384-400E")]
    assert avg[("CIFAR10", "vs. baseline")] == "yes (p=0.006)"
    stride = rows.loc[("ConvBN(stride=2)-LIF", "Spikformer-4-384-400E")]
    assert stride[("CIFAR10", "ours")] == "89.00 (-2.00)"
    assert stride[("CIFAR10", "vs. baseline")] == "n/a"
    # the paper's Spikingformer rows are there, without runs of ours
    spiking = rows.loc[("ConvBN-LIF-MaxPool", "Spikingformer-4-384-400E")]
    assert (spiking[("CIFAR10", "ours")], spiking[("CIFAR10", "paper")]) == ("—", "95.81")
    assert "ConvBN-AvgPool-LIF, Spikformer-4-384-400E, T=4: CIFAR100" in table.missing  # running
    assert not any(m.startswith("ConvBN-MaxPool-LIF, Spikformer") for m in table.missing)
    assert "ConvBN-LIF-MaxPool, Spikingformer-4-384-400E, T=4: CIFAR10, CIFAR100" in table.missing


def test_table1_latex_has_the_papers_structure(cells):
    table = build_table(TABLES[0], cells, "test_top1")
    latex = to_latex(table.display, table.caption, "tab:table1", table.n_label_columns)
    lines = latex.splitlines()
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert lines.count(rule) == 1
    assert r"\multicolumn{5}{c}{CIFAR10} & \multicolumn{5}{c}{CIFAR100} \\" in latex
    assert r"\cmidrule(lr){4-8} \cmidrule(lr){9-13}" in latex
    assert "Method & Backbone & Time Step & ours" in latex
    body = lines[lines.index(r"\midrule") + 1 : lines.index(r"\bottomrule")]
    methods = [line.split(" & ")[0] for line in body]
    backbones = [line.split(" & ")[1] for line in body]
    variants = ["ConvBN-LIF-MaxPool", "ConvBN-MaxPool-LIF", "ConvBN-AvgPool-LIF",
                "ConvBN(stride=2)-LIF"]  # fmt: skip
    assert methods == variants * 2  # rows: method × backbone, Spikingformer first as in the paper
    assert backbones == ["Spikingformer-4-384-400E"] * 4 + ["Spikformer-4-384-400E"] * 4
    assert r"93.00 $\pm$ 1.00 (+2.00)" in latex
    assert "±" not in latex and "—" not in latex


def test_latex_escape():
    assert latex_escape("a_b & 5% ± —") == r"a\_b \& 5\% $\pm$ ---"


def test_dvs_rows_match_the_paper_at_any_length(tmp_path):
    _write_store(tmp_path, [
        ("d", 80.0, {"dataset": "cifar10_dvs", "model": "spikformer_2_256_dvs", "T": 16,
                     "epochs": 8}),
    ])  # fmt: skip
    cells = summarize_cells(load_results(tmp_path).runs)
    table = build_table(TABLES[3], cells, "test_top1")
    row = table.tidy[(table.tidy["n"] > 0)].iloc[0]
    assert (row["paper"], row["backbone"]) == (80.6, "Spikformer-2-256-8E")
    assert "Spikformer-2-256" in set(table.display[("", "Architecture")])


# -- the build: files, coverage, robustness, determinism ---------------------------------------


def test_build_writes_tables_figures_and_coverage(built):
    for stem in ("table1", "precision"):
        for suffix in ("csv", "tex", "md"):
            assert (built / f"{stem}.{suffix}").stat().st_size > 0
    assert not (built / "table2.md").exists()
    figures = sorted(p.name for p in [*built.glob("*.png"), *built.glob("*.pdf")])
    assert "fig2_cifar100_4-384_T4_400E.png" in figures
    assert "precision_cifar10_4-384_T4_400E.pdf" in figures
    assert all((built / name).stat().st_size > 1000 for name in figures)
    coverage = (built / "coverage.md").read_text()
    assert "- table2 (paper Table 2): not covered, no runs" in coverage
    assert "- c100-base-2: failed: RuntimeError: CUDA out of memory" in coverage
    assert "- c100-avg-0: incomplete (running, 4 of 400 epochs)" in coverage
    tidy = pd.read_csv(built / "table1.csv")
    assert len(tidy) == 16 and set(tidy["metric"]) == {"test_top1"}


def test_precision_is_window_weighted_over_time_steps(store, cells):
    precision = summarize_precision(snapshots(load_results(store)), cells).set_index("variant")
    base = precision.loc["lif_maxpool"]
    # seed 0: (0.2*100 + 0.6*300) / 400 = 0.5 then 0.4; seed 1: 0.3 then 0.6
    assert base["precision_first_mean"] == pytest.approx(0.4)
    assert base["precision_last_mean"] == pytest.approx(0.5)
    assert (base["n"], base["acc_mean"]) == (2, 91.0)
    avg = precision.loc["avgpool_lif"]
    assert math.isnan(avg["precision_first_mean"]) and avg["mass_at_argmax_first_mean"] == 0.11
    assert math.isnan(precision.loc["strided_conv", "tie_rate_first_mean"])


def test_rebuild_is_byte_identical(store, built, tmp_path):
    copy = shutil.copytree(store, tmp_path / "moved")  # another location, same inputs
    main(["build", "--results", str(copy / "results"), "--out", str(tmp_path / "again")])
    first = sorted(p.name for p in built.iterdir())
    assert first == sorted(p.name for p in (tmp_path / "again").iterdir())
    for name in first:
        assert (built / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name


def test_corrupt_file_stops_the_build_or_is_skipped_with_a_warning(tmp_path):
    _write_store(tmp_path, GOLDEN[:6])
    (tmp_path / "results" / "broken.json").write_text('{"schema": "gradprobe.run/1", "run_')
    with (
        pytest.warns(UserWarning, match="broken.json"),
        pytest.raises(BadResultsError, match=r"broken\.json: Unterminated string"),
    ):
        build_report(tmp_path, tmp_path / "out", figures=False)
    assert not (tmp_path / "out").exists()
    with pytest.warns(UserWarning, match="broken.json"):
        report = build_report(tmp_path, tmp_path / "out", figures=False, skip_bad=True)
    assert "broken.json" in report.coverage and "1 files skipped" in report.coverage
    assert (tmp_path / "out" / "table1.md").exists()


def test_datasets_the_paper_lacks_get_a_table1_of_their_own(tmp_path):
    _write_store(tmp_path, [
        ("q-base", 80.0, {"dataset": "digits", "model": "spikformer_2_64_tiny", "epochs": 3}),
        ("q-cml", 84.0, {"dataset": "digits", "model": "spikformer_2_64_tiny", "epochs": 3,
                         "variant": "maxpool_lif"}),
    ])  # fmt: skip
    report = build_report(tmp_path, tmp_path / "out", figures=False)
    md = (tmp_path / "out" / "table1_other.md").read_text()
    assert "| Digits ours" in md and "paper" not in md.split("\n\n")[1]
    assert "84.00 (+4.00)" in md
    assert [t.spec.stem for t in report.tables] == ["table1_other"]
    assert "table1 (paper Table 1): not covered" in report.coverage


def test_sweeps_with_the_same_run_ids_are_read_together(tmp_path):
    for dataset in ("cifar10", "cifar100"):  # the harness names runs by their overrides
        _write_store(tmp_path / "sweeps" / dataset, [
            ("downsample=lif_maxpool", 90.0, {"dataset": dataset}),
            ("downsample=maxpool_lif", 92.0, {"dataset": dataset, "variant": "maxpool_lif"}),
        ])  # fmt: skip
    runs = load_results(tmp_path / "sweeps").runs
    assert set(runs["run_id"]) == {
        f"{d}/downsample={v}"
        for d in ("cifar10", "cifar100")
        for v in ("lif_maxpool", "maxpool_lif")
    }
    assert (runs["problem"] == "").all()
    main(
        [
            "build",
            "--results",
            str(tmp_path / "sweeps" / "cifar10"),
            str(tmp_path / "sweeps" / "cifar100"),
            "--out",
            str(tmp_path / "out"),
            "--no-figures",
        ]
    )
    md = (tmp_path / "out" / "table1.md").read_text()
    assert md.count("92.00 (+2.00)") == 2  # CIFAR10 and CIFAR100 in one row
    with pytest.raises(FileNotFoundError, match="no results store"):
        load_results(tmp_path / "nowhere")


def test_a_store_of_unfinished_runs_still_builds(tmp_path):
    _write_store(tmp_path, [("r", 0.0, {"dataset": "digits", "status": "running"})])
    report = build_report(tmp_path, tmp_path / "out", figures=True)
    md = (tmp_path / "out" / "table1_other.md").read_text()
    assert "| 0 (1 not finished)" in md
    assert "0 finished and averaged, 0 failed, 1 unfinished" in report.coverage
    assert not list((tmp_path / "out").glob("*.png"))


def test_a_variant_reports_do_not_know_is_named_by_its_run_documents(tmp_path):
    """A variant registered elsewhere (with a label) and one without a label, beside the
    baseline: rows after the paper's four, the documents' label or else the name."""
    docs = [
        _doc("base", 90.0),
        _doc("new-0", 92.0, variant="my_pool", probe=[_probe(0, "s1", 0, 0.9, 100)]),
        _doc("new-1", 93.0, variant="my_pool", seed=1),
        _doc("bare", 91.0, variant="zz_pool"),
    ]
    for doc in docs:
        if doc["downsample"] == "my_pool":
            doc["downsample_label"] = "ConvBN-MyPool-LIF"
        write_run(tmp_path, doc)
    results = load_results(tmp_path)
    assert results.labels == {"my_pool": "ConvBN-MyPool-LIF"}
    build_report(tmp_path, tmp_path / "out")
    table1 = (tmp_path / "out" / "table1.md").read_text().splitlines()
    rows = [line.split("|") for line in table1 if "| Spikformer-4-384-400E" in line]
    assert [row[1].strip() for row in rows] == [
        "ConvBN-LIF-MaxPool", "ConvBN-MaxPool-LIF", "ConvBN-AvgPool-LIF", "ConvBN(stride=2)-LIF",
        "ConvBN-MyPool-LIF", "zz_pool",
    ]  # fmt: skip
    assert rows[4][4].strip() == "92.50 ± 0.71 (+2.50)"  # CIFAR10 ours
    table3 = (tmp_path / "out" / "table3.md").read_text()
    assert "Spikformer + ConvBN-MyPool-LIF" in table3 and "Spikformer + zz_pool" in table3
    assert "Spikformer + ConvBN-MyPool-LIF" in (tmp_path / "out" / "precision.md").read_text()
    assert set(snapshots(results)["model"]) == {"Spikformer + ConvBN-MyPool-LIF"}
    assert list(model_palette(results.usable, results.labels)) == [
        "Spikformer", "Spikformer + ConvBN-MyPool-LIF", "Spikformer + zz_pool"
    ]  # fmt: skip


def test_reports_never_import_torch(store, tmp_path):
    """reports reads files only: a whole build, figures included, runs without torch."""
    code = (
        "import sys; from reports.__main__ import main; "
        f"main(['build', '--results', {str(store)!r}, '--out', {str(tmp_path)!r}]); "
        "import reports.build, reports.figures, reports.load, reports.paper, "
        "reports.precision, reports.render, reports.stats, reports.tables; "
        "heavy = {'torch', 'spikingjelly', 'captum', 'hydra'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, capture_output=True)
    assert (tmp_path / "table1.md").exists()


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="needs a LaTeX install")
def test_latex_tables_compile(built, tmp_path):
    for path in built.glob("*.tex"):
        shutil.copy(path, tmp_path)
    done = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "tables.tex"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:]
    assert (tmp_path / "tables.pdf").stat().st_size > 0


ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("study", ["repro_table1_mini", "repro_table1_gpu"])
def test_committed_studies_rebuild_to_their_committed_reports(study, tmp_path):
    """The committed reports are what `python -m reports build` makes of the committed stores."""
    folder = ROOT / "reports" / study
    assert main(["build", "--results", str(folder), "--out", str(tmp_path), "--no-figures"]) == 0
    committed = folder / "report"
    rebuilt = sorted(p.name for p in tmp_path.iterdir())
    assert rebuilt and set(rebuilt) <= {p.name for p in committed.iterdir()}
    for name in rebuilt:
        assert (tmp_path / name).read_bytes() == (committed / name).read_bytes(), name


def test_readme_quotes_the_committed_mini_study():
    table = (ROOT / "reports/repro_table1_mini/report/table1_other.md").read_text()
    readme = (ROOT / "reports/repro_table1_mini/README.md").read_text()
    for cell in (
        "34.20 ± 1.82",
        "33.93 ± 2.80 (-0.27)",
        "28.07 ± 1.94 (-6.13)",
        "28.87 ± 2.15",
        "39.17 ± 2.38",
        "38.97 ± 3.18 (-0.20)",
        "33.50 ± 0.46",
        "36.50 ± 1.75",
    ):
        assert cell in table and cell.split(" (")[0] in readme, cell
