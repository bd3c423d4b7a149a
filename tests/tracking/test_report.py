"""`metaqa report` over a tree of runs of several stages (written here as the stages write them):
collection, the table, failed and unfinished runs, the Pareto front, and the plots."""
import csv
import json

import pytest

from metaqa.stages import report
from metaqa.tracking.plots import pareto_plot, per_theme_plot
from metaqa.tracking.report import (
    collect_runs,
    f1_latency_points,
    f1_metric,
    f1_vs_k_series,
    latency_metric,
    pareto_front,
    per_theme_series,
    varying_overrides,
)
from metaqa.tracking.run import run_stage

THEMES = {"Jazz": {"f1": 40.0, "exact": 30.0}, "Beekeeping": {"f1": 60.0, "exact": 50.0}}


def write(path, payload):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))


def summary(stage, status="ok", metrics=None, overrides=(), error=None, choices=None):
    s = {"stage": stage, "status": status, "seconds": 1.5, "overrides": list(overrides),
         "choices": choices or {"model": "tiny"}}
    if status == "ok":
        s["metrics"] = metrics or {}
    else:
        s.update(error=error, traceback="Traceback ...")
    return s


@pytest.fixture
def sweep(tmp_path):
    """A train sweep: 3 ok jobs, 1 failed, 1 killed (no summary.json), plus W&B's copy of a
    summary and an earlier report (both must be ignored)."""
    root = tmp_path / "sweep"
    results = {0: (1e-4, 30.0, 2.0), 1: (1e-3, 45.0, 3.0), 2: (3e-3, 20.0, 2.5)}  # lr, f1, latency
    for job, (lr, f1, ms) in results.items():
        metrics = {"val/f1": f1, "val/exact": f1 - 5, "val/latency_p50_ms": ms, "custom/thing": job}
        write(root / str(job) / "summary.json", summary("train", metrics=metrics, overrides=[
            "model=tiny", f"module.optimizer.lr={lr}"]))
        write(root / str(job) / "val_per_theme.json", {t: {**m, "f1": m["f1"] + job} for t, m in THEMES.items()})
        write(root / str(job) / "wandb" / "run-x" / "files" / "summary.json", summary("train", metrics={}))
    write(root / "3" / "summary.json", summary("train", "failed", overrides=["model=tiny", "module.optimizer.lr=1.0"],
                                               error="FileNotFoundError: /data/missing does not exist"))
    (root / "4" / ".hydra").mkdir(parents=True)
    (root / "4" / ".hydra" / "overrides.yaml").write_text("- model=tiny\n- module.optimizer.lr=0.5\n")
    write(root / "old_report" / "summary.json", summary("report", metrics={"runs": 9}))
    return root


def test_collect_runs_reads_every_job_and_skips_wandb_and_reports(sweep):
    runs = collect_runs(sweep)
    assert [(r.name, r.status) for r in runs] == [("0", "ok"), ("1", "ok"), ("2", "ok"), ("3", "failed"),
                                                  ("4", "missing")]
    assert runs[1].metrics["custom/thing"] == 1 and runs[0].choices == {"model": "tiny"}
    assert runs[3].error.startswith("FileNotFoundError") and "still running" in runs[4].error
    assert runs[4].overrides == ["model=tiny", "module.optimizer.lr=0.5"]  # from .hydra
    assert runs[2].per_theme[""]["Jazz"]["f1"] == 42.0
    assert varying_overrides(runs) == ["module.optimizer.lr"]
    assert f1_metric(runs) == "val/f1" and latency_metric(runs) == "val/latency_p50_ms"


def test_pareto_front_keeps_what_nothing_beats():
    # (latency, f1): lower latency and higher F1 win
    points = [(1.0, 10.0), (2.0, 30.0), (2.5, 20.0), (3.0, 45.0), (3.0, 40.0), (1.0, 10.0)]
    assert pareto_front(points) == [True, True, False, True, False, True]


def test_points_and_series_from_runs(sweep):
    runs = collect_runs(sweep)
    points = f1_latency_points(runs, "val/f1", "val/latency_p50_ms")
    assert [(p["run"], p["pareto"]) for p in points] == [("0", True), ("1", True), ("2", False)]
    series = per_theme_series(runs, "f1", max_runs=2, rank_key="val/f1")  # the 2 best, in run order
    assert list(series) == ["lr=0.0001", "lr=0.001"] and series["lr=0.001"] == {"Jazz": 41.0, "Beekeeping": 61.0}


def test_other_stages_bench_finetune_demo(stage_cfg, tmp_path):
    root = tmp_path / "runs"
    write(root / "bench" / "summary.json", summary("bench", metrics={"best_p50_ms": 3.0, "best_variant": "int8_dynamic"}))
    write(root / "bench" / "bench.json", {"rows": [
        {"variant": "fp32", "threads": 1, "p50_ms": 5.0, "f1": 50.0},
        {"variant": "int8_dynamic", "threads": 1, "p50_ms": 3.0, "f1": 49.0}]})
    write(root / "bench" / "latencies.json", {"fp32@1": [5.0, 5.5], "int8_dynamic@1": [3.0, 3.1]})
    write(root / "finetune" / "summary.json", summary("finetune", metrics={"before/f1": 40.0, "after/f1": 50.0}))
    write(root / "finetune" / "per_theme.json", {"before": THEMES, "after": THEMES})
    write(root / "demo" / "summary.json", summary("demo", metrics={"f1": 47.0}))
    write(root / "demo" / "eval" / "metrics.json", {"overall": {"f1": 47.0}, "per_theme": THEMES})
    runs = {r.stage: r for r in collect_runs(root)}
    assert set(runs["finetune"].per_theme) == {"before", "after"}
    assert set(runs["demo"].per_theme[""]) == {"Jazz", "Beekeeping"}
    points = f1_latency_points(list(runs.values()), "f1", None)  # bench rows are points of their own
    assert [(p["label"], p["pareto"]) for p in points] == [("fp32@1", True), ("int8_dynamic@1", True)]
    report.run(stage_cfg("report", [f"dir={root}"], out=root / "report"))
    md = (root / "report" / "report.md").read_text()
    assert "3 runs: 3 ok" in md and "before/f1" in md and "best_p50_ms" in md
    for name in ("f1_vs_latency.png", "per_theme_f1.png", "latency.png"):
        assert is_png(root / "report" / name)


def test_report_stage_writes_table_failures_and_plots(stage_cfg, sweep):
    out = sweep / "report"
    result = run_stage("report", report.run, stage_cfg("report", [f"dir={sweep}"], out=out))
    assert result is None  # optimized_metric: null
    s = json.loads((out / "summary.json").read_text())["metrics"]
    assert (s["runs"], s["ok"], s["failed"], s["missing"]) == (5, 3, 1, 1)
    assert s["best/train/run"] == "1" and s["best/train/value"] == 45.0 and s["best/train/ranked_by"] == "val/f1"
    assert s["plots"] == 2
    md = (out / "report.md").read_text()
    assert "5 runs: 3 ok, 1 failed, 1 without a summary.json" in md
    assert "FileNotFoundError: /data/missing does not exist" in md and "still running" in md
    assert "| 1 | train | ok | 0.001 | 45.00 | 3.00 |" in md  # varied override, F1, latency first
    assert "![F1 vs latency](f1_vs_latency.png)" in md and "no run has latency samples" in md
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert [r["run"] for r in rows] == ["0", "1", "2", "3", "4"]
    assert rows[2]["custom/thing"] == "2" and rows[3]["error"].startswith("FileNotFoundError")
    assert rows[2]["per_theme/Jazz/f1"] == "42.0" and rows[3]["per_theme/Jazz/f1"] == ""
    for name in ("f1_vs_latency.png", "per_theme_f1.png"):
        assert is_png(out / name)
    # a second report ignores the first one (its summary.json says stage: report)
    run_stage("report", report.run, stage_cfg("report", [f"dir={sweep}"], out=out))
    assert json.loads((out / "summary.json").read_text())["metrics"]["runs"] == 5


def test_report_of_an_empty_dir_says_what_to_pass(stage_cfg, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no run under"):
        report.run(stage_cfg("report", [f"dir={tmp_path / 'empty'}"]))


def is_png(path) -> bool:
    return path.is_file() and path.stat().st_size > 5000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_are_written_and_refuse_empty_input(tmp_path):
    points = [{"label": "a", "latency": 1.0, "f1": 10.0, "pareto": True},
              {"label": "b", "latency": 2.0, "f1": 5.0, "pareto": False}]
    assert is_png(pareto_plot(points, tmp_path / "p.png"))
    assert is_png(per_theme_plot({"before": {"Jazz": 1.0, "Bees": 2.0}, "after": {"Jazz": 3.0}}, tmp_path / "t.png"))
    with pytest.raises(ValueError):
        pareto_plot([], tmp_path / "x.png")
    with pytest.raises(ValueError):
        per_theme_plot({"a": {}}, tmp_path / "y.png")


def test_varying_overrides_counts_an_absent_key_as_a_value(tmp_path):
    from metaqa.tracking.report import Run

    runs = [Run(tmp_path, "a", overrides=["x=1"]), Run(tmp_path, "b", overrides=["x=1", "+y=2"]),
            Run(tmp_path, "c", overrides=["x=1", "z=3"])]
    assert varying_overrides(runs) == ["y", "z"]


def test_finetune_runs_are_ranked_by_after_f1_not_before(stage_cfg, tmp_path):
    """A finetune run's objective is after/f1: the run that adapted best wins, and the report says
    which metric it ranked by (the first key containing "f1" was before/f1)."""
    root = tmp_path / "ft"
    for job, (before, after) in enumerate([(60.0, 40.0), (30.0, 55.0)]):
        write(root / str(job) / "summary.json", summary("finetune", metrics={"before/f1": before, "after/f1": after},
                                                         overrides=[f"k={16 * (job + 1)}"]))
    result = report.run(stage_cfg("report", [f"dir={root}"], out=root / "report"))
    assert result["best/finetune/run"] == "1" and result["best/finetune/ranked_by"] == "after/f1"
    md = (root / "report" / "report.md").read_text()
    assert "Best `finetune` run by its optimized_metric `after/f1`: **55.00**, run `1`" in md
    assert f1_metric(collect_runs(root)) == "after/f1"  # the F1 axis too


def test_report_plots_the_runs_learning_curves(stage_cfg, sweep):
    for job, f1s in {0: [5.0, 20.0, 30.0], 1: [8.0, 30.0, 45.0]}.items():
        write(sweep / str(job) / "learning_curve.json", [{"step": 100 * (i + 1), "f1": f} for i, f in enumerate(f1s)])
    out = sweep / "report"
    run_stage("report", report.run, stage_cfg("report", [f"dir={sweep}"], out=out))
    assert json.loads((out / "summary.json").read_text())["metrics"]["plots"] == 3
    assert "![learning curves](learning_curves.png)" in (out / "report.md").read_text()
    assert is_png(out / "learning_curves.png")


def test_report_plots_f1_vs_k_per_arm_over_seeds(stage_cfg, tmp_path):
    """k-shot finetune runs of two arms (their model_dir), three seeds per k: one series per arm,
    the seeds' F1s at each k (the OOD protocol's F1 vs k)."""
    root = tmp_path / "ood"
    for arm, base in (("multitask_seed0", 40.0), ("fomaml_seed0", 45.0)):
        for k in (0, 16, 64):
            for seed in (0, 1, 2) if k else (0,):
                write(root / arm / f"k{k}_shot{seed}" / "summary.json", summary("finetune", metrics={
                    "before/f1": base, "after/f1": base + k / 8 + seed}, overrides=[
                    f"model_dir=outputs/ood/meta/{arm}/reader", f"k={k}", f"seed={seed}", "data.domain=electronics",
                    f"paths.output_dir=/runs/{arm}/k{k}_shot{seed}", f"eval_source=/data/{arm}/test.csv"]))
    series = f1_vs_k_series(collect_runs(root))
    assert set(series) == {"model_dir=multitask_seed0/reader", "model_dir=fomaml_seed0/reader"}
    assert series["model_dir=fomaml_seed0/reader"] == {0: [45.0], 16: [47.0, 48.0, 49.0], 64: [53.0, 54.0, 55.0]}
    result = report.run(stage_cfg("report", [f"dir={root}"], out=root / "report"))
    assert is_png(root / "report" / "f1_vs_k.png") and result["plots"] == 1
    assert "![F1 vs k](f1_vs_k.png)" in (root / "report" / "report.md").read_text()
    assert f1_vs_k_series(collect_runs(root / "fomaml_seed0" / "k0_shot0")) == {}  # one k: no plot
