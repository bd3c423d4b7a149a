"""`metaqa report dir=<run or sweep dir>`: one table over every run below `dir`, failed runs with
their error, and plots (F1 vs latency with the Pareto front, per-theme F1 — per domain before /
after for finetune runs —, F1 vs k per arm for k-shot finetune runs, learning curves, latency per
export variant), written to <dir>/report/ (report.md, report.csv, *.png)."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

from metaqa.config import CONF_DIR, ConfigError
from metaqa.fileio import write_csv, write_text_atomic
from metaqa.tracking.plots import f1_vs_k_plot, latency_plot, learning_curve_plot, pareto_plot, per_theme_plot
from metaqa.tracking.report import (
    best_runs,
    collect_runs,
    f1_latency_points,
    f1_metric,
    f1_vs_k_series,
    failures_markdown,
    headline_metrics,
    latency_metric,
    latency_samples,
    learning_curves,
    markdown,
    per_theme_series,
    run_label,
    table_rows,
    varying_overrides,
)
from metaqa.tracking.run import job_info, run_stage

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    root = Path(cfg.dir)
    if not root.is_dir():
        raise ConfigError("dir", f"{root} is not a directory",
                          "pass dir=<a run or sweep dir>, e.g. dir=outputs/train/multirun/<time>")
    out = Path(cfg.out)
    runs = collect_runs(root, exclude=[out])
    if not runs:
        raise ConfigError("dir", f"no run under {root} (no summary.json, no .hydra job dir)",
                          "pass the dir of a `metaqa <stage>` run or sweep, e.g. dir=outputs/train/multirun/<time>")
    f1_key, latency_key = f1_metric(runs, cfg.f1_metric), latency_metric(runs, cfg.latency_metric)
    if cfg.f1_metric != "auto" and f1_key is None:
        log.warning("f1_metric=%s: no run has it", cfg.f1_metric)

    rows, columns = table_rows(runs)
    write_csv(out / "report.csv", rows, columns)

    plots, notes = {}, []
    points = f1_latency_points(runs, f1_key, latency_key)
    if points:
        plots["F1 vs latency"] = pareto_plot(
            points, out / "f1_vs_latency.png",
            xlabel="p50 ms per question (bench rows)" if all(p.get("bench") for p in points)
            else f"{latency_key or 'p50_ms'} (ms, lower is better)",
            ylabel="F1 of the timed answers (bench rows)" if all(p.get("bench") for p in points) else f1_key or "f1", title=f"F1 vs latency, {sum(p['pareto'] for p in points)} of {len(points)} on the Pareto front")
    else:
        notes.append("F1 vs latency: no run has both an F1 and a latency metric "
                     "(train with `callbacks=latency`, or report bench runs).")
    series = per_theme_series(runs, cfg.per_theme_metric, cfg.max_series, f1_key)
    if series:
        varied = [k.rsplit(".", 1)[-1] for k in varying_overrides(runs)]
        what = ("before/after fine-tuning" if any(s.endswith(("before", "after")) for s in series)
                else "multitask (meta=none) vs meta-learning" if "meta" in varied else "per run")
        plots["per-theme " + cfg.per_theme_metric] = per_theme_plot(
            series, out / "per_theme_f1.png", ylabel=cfg.per_theme_metric,
            title=f"{cfg.per_theme_metric} per theme, {what}")
    else:
        notes.append("Per-theme plot: no run has per-theme metrics (val_per_theme.json, metrics.json, per_theme.json).")
    by_k = f1_vs_k_series(runs)
    if by_k:
        runs_per_point = max(len(v) for points in by_k.values() for v in points.values())
        plots["F1 vs k"] = f1_vs_k_plot(by_k, out / "f1_vs_k.png", ylabel="F1 after fine-tuning",
                                        title=f"F1 vs k per arm (mean, min-max over ≤ {runs_per_point} seeds)")
    curves = learning_curves(runs, cfg.max_series)
    if curves:
        plots["learning curves"] = learning_curve_plot(curves, out / "learning_curves.png",
                                                       title="dev F1 while training, per run")
    samples = latency_samples(runs)
    if samples:
        plots["latency per export variant"] = latency_plot(samples, out / "latency.png",
                                                           title="latency per question, per system")
    else:
        notes.append("Latency distributions: no run has latency samples (bench's latencies.json).")

    text = document(cfg, runs, rows, f1_key, latency_key, points, plots, notes, out)
    write_text_atomic(out / "report.md", text)
    print(text)
    log.info("report of %d runs in %s", len(runs), out)

    ok = [r for r in runs if r.status == "ok"]
    summary = {"runs": len(runs), **status_counts(runs), "plots": len(plots)}
    for stage, (best, metric) in best_runs(ok).items():  # each stage by its own optimized_metric
        summary[f"best/{stage}/run"] = best.name
        summary[f"best/{stage}/ranked_by"] = metric
        summary[f"best/{stage}/value"] = float(best.metrics[metric])
    return summary


def document(cfg: DictConfig, runs, rows, f1_key, latency_key, points, plots, notes, out: Path) -> str:
    keys = varying_overrides(runs)
    on_front = {p["run"] for p in points if p["pareto"]}
    counts = ", ".join(f"{n} {'without a summary.json' if status == 'missing' else status}"
                       for status, n in status_counts(runs).items())
    ranked_by = [metric for _, metric in best_runs(runs).values()]  # each stage's objective is a column
    metrics = headline_metrics(runs, [*ranked_by, f1_key, latency_key], cfg.max_columns)
    columns = ["run", "stage", "status", *keys, *metrics, "seconds"] + (["pareto"] if on_front else [])
    shown = [{**row, **{k: short_value(row[k]) for k in keys}, "pareto": "yes" if row["run"] in on_front else ""}
             for row in rows]
    lines = [f"# Report: {cfg.dir}", "",
             f"{len(runs)} runs: {counts}. "
             f"`{' '.join(['metaqa report', *job_info()['overrides']])}`, "
             f"{time.strftime('%Y-%m-%d %H:%M')}. Every metric of every run: [report.csv](report.csv)."]
    for stage, (best, metric) in best_runs(runs).items():
        label = run_label(best, keys)
        lines.append(f"Best `{stage}` run by its optimized_metric `{metric}`: **{best.metrics[metric]:.2f}**, "
                     f"run `{best.name}`" + (f" ({label})." if label != best.name else "."))
    lines += ["", markdown(shown, columns)]
    failures = failures_markdown(runs)
    if failures:
        lines += ["", failures]
    if plots or notes:
        lines += ["", "## Plots", ""]
        lines += [f"![{name}]({path.relative_to(out)})" for name, path in plots.items()]
        lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def status_counts(runs) -> dict[str, int]:
    """Runs per status: ok, failed, then interrupted or any other status when present, missing last."""
    counts = {status: 0 for status in ("ok", "failed")}
    for run in runs:
        if run.status != "missing":
            counts[run.status] = counts.get(run.status, 0) + 1
    return {**counts, "missing": sum(r.status == "missing" for r in runs)}


def short_value(value) -> str:
    """An override value for the Markdown table: a path's last part, a float to 3 digits."""
    text = str(value)
    if "/" in text:
        return Path(text).name
    try:
        return text if text.isdigit() else f"{float(text):.3g}"
    except ValueError:
        return text


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="report")
def main(cfg: DictConfig) -> float | None:
    return run_stage("report", run, cfg)
