"""Collect every run under a run or sweep dir into one table, and the data its plots need.

A run is a directory with a summary.json (`run_stage` writes one for every stage: stage, status,
metrics or error, overrides, config-group choices). Metric keys are whatever the stage returned:
unknown keys are just more columns. Beside its summary a run may hold, and the report uses:
- per-theme metrics: `per_theme.json` with "before"/"after" (finetune), `metrics.json` with
  "per_theme" (eval), `val_per_theme.json` (train, meta_train); looked for in the run dir and its
  sub-dirs that are not runs themselves (a demo run keeps them in eval/, train/);
- latency samples: `latencies.json`, {system@threads: [ms, ...]} (bench);
- one F1/latency point per system: `bench.json` "rows" (bench), else the run's own metrics.
Job dirs of a sweep (a `.hydra/` dir) without a summary.json are listed as `missing`: killed,
or still running. W&B run dirs and hidden dirs are never searched. A `metaqa run` / `demo`
chain dir is not a run of its own (its steps are), nor is the dir of the job running the report.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from omegaconf import OmegaConf

from metaqa.config import CONF_DIR
from metaqa.tracking.run import SUMMARY, flatten

CHAIN_STAGES = ("run", "demo")  # a chain's summary repeats the metrics of its steps (runs below it)
PER_THEME_FILES = ("per_theme.json", "metrics.json", "val_per_theme.json")  # first found wins
F1_KEYS = ("f1", "val/f1", "after/f1", "eval/f1")        # then any key ending in /f1
LATENCY_KEYS = ("latency_p50_ms", "p50_ms", "best_p50_ms", "latency_ms_p50", "latency_ms_mean",
                "latency_ms", "mean_ms")               # matched as a key or a key's last segment
HEADLINE = re.compile(r"(^|/)(f1|exact|HasAns_f1|NoAns_f1|f1_gain|para_acc|accuracy|score)$"
                      r"|latency|p50|p95|qps|per_s$|throughput|model_mb|params_m")


@dataclass
class Run:
    path: Path
    name: str                     # the dir relative to the report's root ("." for the root itself)
    stage: str = ""
    status: str = "missing"       # ok | failed | missing (no summary.json)
    metrics: dict[str, Any] = field(default_factory=dict)   # flattened: nested keys as a/b
    error: str = ""
    seconds: float | None = None
    overrides: list[str] = field(default_factory=list)
    choices: dict[str, str] = field(default_factory=dict)
    per_theme: dict[str, dict[str, dict]] = field(default_factory=dict)  # series ("", before, after) -> theme -> metrics
    latencies: dict[str, list[float]] = field(default_factory=dict)
    points: list[dict[str, Any]] = field(default_factory=list)         # bench rows: variant, threads, f1, p50_ms
    optimized_metric: str | list | None = None                          # the stage's objective, from summary.json


def natural_key(path: Path) -> list:
    """Job dirs 0, 1, 2, … 10 in numeric order."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def _searchable(path: Path, root: Path) -> bool:
    parts = path.relative_to(root).parts
    return not any(p == "wandb" or p.startswith(".") for p in parts)


def collect_runs(root: str | Path, exclude: Sequence[str | Path] = ()) -> list[Run]:
    """Every run under `root` (root included), in natural path order; report runs and anything
    under `exclude` are left out."""
    root = Path(root).resolve()
    excluded = [Path(p).resolve() for p in exclude]
    running = running_dir()

    def wanted(d: Path) -> bool:
        return _searchable(d, root) and d != running and not any(d == e or e in d.parents for e in excluded)

    run_dirs = {p.parent for p in root.rglob(SUMMARY) if wanted(p.parent)}
    job_dirs = {p.parent for p in root.rglob(".hydra") if p.is_dir() and wanted(p.parent)}
    runs = []
    for d in sorted(run_dirs | job_dirs, key=natural_key):
        run = read_run(d, root, run_dirs)
        chain = run.stage in CHAIN_STAGES and run.status == "ok" and any(d in r.parents for r in run_dirs)
        if run.stage != "report" and not chain:  # an ok chain's steps are its runs
            runs.append(run)
    return runs


def running_dir() -> Path | None:
    """The dir of the Hydra job running now (the chain whose report step this is): not a run of
    its own, and its summary.json, if any, is from an earlier attempt."""
    from hydra.core.hydra_config import HydraConfig

    return Path(str(HydraConfig.get().runtime.output_dir)).resolve() if HydraConfig.initialized() else None


def read_run(path: Path, root: Path, run_dirs: set[Path] = frozenset()) -> Run:
    run = Run(path=path, name=str(path.relative_to(root)))
    if (path / SUMMARY).is_file():
        summary = _read_json(path / SUMMARY) or {}
        run.stage = summary.get("stage", "")
        run.status = summary.get("status", "unknown")
        run.metrics = flatten(summary.get("metrics") or {})
        run.error = summary.get("error") or ("" if run.status == "ok" else "summary.json unreadable or without a status")
        run.seconds = summary.get("seconds")
        run.overrides = list(summary.get("overrides") or [])
        run.choices = dict(summary.get("choices") or {})
        run.optimized_metric = summary.get("optimized_metric")
    else:
        run.error = "no summary.json: killed, or still running"
    if not run.choices:  # summaries written before choices were recorded: Hydra's own record
        run.choices = _hydra_choices(path)
        if run.status == "missing":
            run.overrides = _hydra_overrides(path)
    run.per_theme = _per_theme(path, run_dirs - {path})
    latencies = _read_json(path / "latencies.json")
    if isinstance(latencies, dict):
        run.latencies = {str(k): [float(x) for x in v] for k, v in latencies.items() if isinstance(v, list) and v}
    bench = _read_json(path / "bench.json")
    if isinstance(bench, dict):
        run.points = [r for r in bench.get("rows", []) if isinstance(r, dict)]
    return run


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _hydra_choices(path: Path) -> dict[str, str]:
    import yaml

    try:
        hydra = yaml.safe_load((path / ".hydra" / "hydra.yaml").read_text())["hydra"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return {}
    choices = (hydra.get("runtime") or {}).get("choices") or {}
    return {k: v for k, v in choices.items() if v is not None and not k.startswith("hydra")}


def _hydra_overrides(path: Path) -> list[str]:
    import yaml

    try:
        return list(yaml.safe_load((path / ".hydra" / "overrides.yaml").read_text()) or [])
    except (OSError, yaml.YAMLError):
        return []


def _per_theme(path: Path, other_runs: set[Path]) -> dict[str, dict[str, dict]]:
    """{series: {theme: metrics}} from the first per-theme file in the run dir, then its sub-dirs
    (two levels, skipping sub-dirs that are runs of their own)."""
    dirs = [path] + sorted((d for d in path.glob("*/") if d.is_dir() and d not in other_runs
                            and not d.name.startswith(".") and d.name != "wandb"), key=natural_key)
    for d in dirs:
        for name in PER_THEME_FILES:
            data = _read_json(d / name)
            if not isinstance(data, dict):
                continue
            if name == "per_theme.json" and {"before", "after"} <= set(data):
                return {"before": data["before"], "after": data["after"]}
            if name == "metrics.json":
                data = data.get("per_theme")
            if isinstance(data, dict) and data and all(isinstance(v, dict) for v in data.values()):
                return {"": data}
    return {}


# --------------------------------------------------------------------------- choosing metrics
def pick_metric(runs: Sequence[Run], wanted: str | None, preferred: Sequence[str], suffix: str | None = None) -> str | None:
    """`wanted` when a run has it; for "auto"/None the first of `preferred` (as a key, or a key's
    last segment) that some run has, then any key ending in `suffix`."""
    keys = [k for r in runs for k in r.metrics if isinstance(r.metrics[k], (int, float))]
    if wanted not in (None, "auto"):
        return wanted if wanted in keys else None
    for name in preferred:  # exact keys first: `after/f1` beats `before/f1` of a finetune run
        if name in keys:
            return name
    for name in preferred:
        for k in keys:
            if k.endswith("/" + name):
                return k
    return next((k for k in keys if suffix and k.endswith(suffix)), None)


def f1_metric(runs: Sequence[Run], wanted: str | None = "auto") -> str | None:
    return pick_metric(runs, wanted, F1_KEYS, "/f1")


def ranking_metric(run: Run) -> str | None:
    """The metric a run is ranked by: its stage's `optimized_metric` (recorded in summary.json; for
    older summaries the stage's base config default). None when it has one of several objectives."""
    name = run.optimized_metric
    if name is None and run.stage:
        base = CONF_DIR / f"{run.stage}.yaml"
        name = OmegaConf.load(base).get("optimized_metric") if base.is_file() else None
    return name if isinstance(name, str) and isinstance(run.metrics.get(name), (int, float)) else None


def best_runs(runs: Sequence[Run]) -> dict[str, tuple[Run, str]]:
    """Per stage, the ok run with the highest value of its ranking metric, and that metric."""
    best: dict[str, tuple[Run, str]] = {}
    for run in runs:
        metric = ranking_metric(run) if run.status == "ok" else None
        if metric is None:
            continue
        held = best.get(run.stage)
        if held is None or run.metrics[metric] > held[0].metrics[held[1]]:
            best[run.stage] = (run, metric)
    return best


def latency_metric(runs: Sequence[Run], wanted: str | None = "auto") -> str | None:
    return pick_metric(runs, wanted, LATENCY_KEYS)


def varying_overrides(runs: Sequence[Run]) -> list[str]:
    """Override keys whose value is not the same in every run (what a sweep varied; absent counts
    as a value), in first-seen order."""
    parsed = [_parse_overrides(run.overrides) for run in runs]
    keys = list(dict.fromkeys(k for p in parsed for k in p))
    return [k for k in keys if len({p.get(k) for p in parsed}) > 1]


def _parse_overrides(overrides: Sequence[str]) -> dict[str, str]:
    pairs = (o.lstrip("+~").split("=", 1) for o in overrides)
    return {p[0]: (p[1] if len(p) > 1 else "") for p in pairs}


def run_label(run: Run, keys: Sequence[str]) -> str:
    """Short label from the varied overrides: `lr=0.001 train_source=later`; else the run's dir."""
    parsed = _parse_overrides(run.overrides)
    parts = [f"{k.rsplit('.', 1)[-1]}={_short(parsed[k])}" for k in keys if k in parsed]
    return " ".join(parts) or run.name


GENERIC_DIRS = ("reader", "onnx", "model")  # a run's output dirs: their parent says which run


def _short(value: str) -> str:
    if "/" not in value:
        return value
    path = Path(value)
    return f"{path.parent.name}/{path.name}" if path.name in GENERIC_DIRS and path.parent.name else path.name


# --------------------------------------------------------------------------- table
def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """Which (latency, f1) points no other point beats: latency <= and F1 >=, one of them strictly."""
    return [not any(x2 <= x and y2 >= y and (x2 < x or y2 > y) for x2, y2 in points) for x, y in points]


def f1_latency_points(runs: Sequence[Run], f1_key: str | None, latency_key: str | None) -> list[dict[str, Any]]:
    """One point per bench row (system@threads) of a bench run, else one per run that has both
    metrics; each with label, run, latency, f1 and whether it is on the Pareto front."""
    keys = varying_overrides(runs)
    benches = sum(bool(r.points) for r in runs if r.status == "ok")
    points = []
    for run in runs:
        if run.status != "ok":
            continue
        prefix = f"{run_label(run, keys)} " if benches > 1 else ""
        rows = [r for r in run.points if _number(r.get("p50_ms")) and _number(r.get("f1"))]
        if rows:
            points += [{"label": f"{prefix}{r.get('variant')}@{r.get('threads')}", "run": run.name,
                        "latency": float(r["p50_ms"]), "f1": float(r["f1"]), "bench": True} for r in rows]
        elif f1_key and latency_key and _number(run.metrics.get(f1_key)) and _number(run.metrics.get(latency_key)):
            points.append({"label": run_label(run, keys), "run": run.name,
                           "latency": float(run.metrics[latency_key]), "f1": float(run.metrics[f1_key])})
    for point, front in zip(points, pareto_front([(p["latency"], p["f1"]) for p in points])):
        point["pareto"] = front
    return points


def per_theme_columns(run: Run, metrics: Sequence[str] = ("f1", "exact")) -> dict[str, float]:
    """The run's per-theme metrics as flat keys: per_theme/[before/|after/]<theme>/<metric>."""
    flat = {}
    for series, themes in run.per_theme.items():
        for theme, values in themes.items():
            for m in metrics:
                if isinstance(values, dict) and _number(values.get(m)):
                    flat["/".join(x for x in ("per_theme", series, theme, m) if x)] = float(values[m])
    return flat


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v  # not NaN


def table_rows(runs: Sequence[Run]) -> tuple[list[dict[str, Any]], list[str]]:
    """Every run as one flat row (run, stage, status, seconds, varied overrides, choices, every
    metric, per-theme F1/EM, overrides, error) and the union of the columns, in that order."""
    keys = varying_overrides(runs)
    rows, columns = [], ["run", "stage", "status", "seconds"]
    for run in runs:
        parsed = _parse_overrides(run.overrides)
        row = {"run": run.name, "stage": run.stage, "status": run.status, "seconds": run.seconds,
               **{k: parsed.get(k, "") for k in keys},
               **{f"choice/{k}": v for k, v in run.choices.items()},
               **run.metrics, **per_theme_columns(run), "overrides": " ".join(run.overrides), "error": run.error}
        rows.append(row)
        columns += [c for c in row if c not in columns and c not in ("overrides", "error")]
    return rows, columns + ["overrides", "error"]


def headline_metrics(runs: Sequence[Run], first: Sequence[str | None] = (), limit: int = 12) -> list[str]:
    """Metric columns for the Markdown table: `first` (the F1 and latency picked for the plots),
    then quality, speed and size metrics of any stage, up to `limit`."""
    keys: list[str] = list(dict.fromkeys(k for k in first if k))
    for run in runs:
        keys += [k for k in run.metrics if HEADLINE.search(k) and not k.endswith("_thresh") and k not in keys]
    return keys[:limit]


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.2f}" if v == 0 or abs(v) >= 0.1 else f"{v:.3g}"
    return "" if v is None else str(v)


def markdown(rows: Sequence[dict], columns: Sequence[str]) -> str:
    def cell(v: Any) -> str:
        return fmt(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def failures_markdown(runs: Sequence[Run]) -> str:
    bad = [r for r in runs if r.status != "ok"]
    if not bad:
        return ""
    keys = varying_overrides(runs)  # what sets these runs apart; all overrides when nothing varies
    rows = [{"run": r.name, "status": r.status, "overrides": run_label(r, keys) if keys else " ".join(r.overrides),
             "error": r.error.splitlines()[0][:300] if r.error else ""} for r in bad]
    return ("## Failed or unfinished runs\n\nTracebacks are in each run's summary.json; rerunning the "
            "sweep into the same `hydra.sweep.dir` reruns only these.\n\n"
            + markdown(rows, ["run", "status", "overrides", "error"]))


# --------------------------------------------------------------------------- plot data
def per_theme_series(runs: Sequence[Run], metric: str = "f1", max_runs: int = 8,
                     rank_key: str | None = None) -> dict[str, dict[str, float]]:
    """{series label: {theme: metric}} for runs with per-theme metrics: "<run> before" and
    "<run> after" for a finetune run, one series per other run. At most `max_runs` runs, the best
    by `rank_key` when given, shown in run order."""
    keys = varying_overrides(runs)
    ranked = [r for r in runs if r.status == "ok" and r.per_theme]
    if rank_key:
        ranked.sort(key=lambda r: -float(r.metrics[rank_key]) if _number(r.metrics.get(rank_key)) else float("inf"))
    chosen = [r for r in runs if r in ranked[:max_runs]]
    series: dict[str, dict[str, float]] = {}
    for run in chosen:
        label = run_label(run, keys) if len(runs) > 1 else ""
        for name, themes in run.per_theme.items():
            values = {t: float(m[metric]) for t, m in themes.items() if isinstance(m, dict) and _number(m.get(metric))}
            if values:
                series[" ".join(x for x in (label, name) if x) or run.name] = values
    return series


def f1_vs_k_series(runs: Sequence[Run], metric: str = "after/f1") -> dict[str, dict[int, list[float]]]:
    """{series label: {k: [metric of each run]}} over the ok finetune runs that set `k=` (two k
    values at least): one series per combination of the other varied overrides except `seed` (an
    arm: its model_dir, domain, synthetic data), its runs at one k being the seeds — the OOD
    protocol's F1 vs k per arm."""
    tuned = [r for r in runs if r.status == "ok" and r.stage == "finetune" and _number(r.metrics.get(metric))
             and "k" in _parse_overrides(r.overrides)]
    if len({_parse_overrides(r.overrides)["k"] for r in tuned}) < 2:
        return {}
    parsed = [_parse_overrides(r.overrides) for r in tuned]
    keys = [k for k in varying_overrides(tuned) if k not in ("k", "seed") and not k.endswith("output_dir")
            and len({_short(p.get(k, "")) for p in parsed}) > 1]  # a label names only what tells arms apart
    series: dict[str, dict[int, list[float]]] = {}
    for run in tuned:
        label = run_label(run, keys) if keys else "finetune"
        k = int(_parse_overrides(run.overrides)["k"])
        series.setdefault(label, {}).setdefault(k, []).append(float(run.metrics[metric]))
    return {label: dict(sorted(points.items())) for label, points in series.items()}


def latency_samples(runs: Sequence[Run], limit: int = 16) -> dict[str, list[float]]:
    """Every latency sample of every ok run ({system@threads: ms}), prefixed by the run's label
    when several runs have samples; at most `limit` of them."""
    keys = varying_overrides(runs)
    having = [r for r in runs if r.status == "ok" and r.latencies]
    samples: dict[str, list[float]] = {}
    for run in having:
        prefix = f"{run_label(run, keys)}: " if len(having) > 1 else ""
        samples.update({f"{prefix}{name}": xs for name, xs in run.latencies.items()})
    return dict(list(samples.items())[:limit])


def learning_curves(runs: Sequence[Run], max_runs: int = 8) -> dict[str, list[dict]]:
    """{run name: points} of the runs that logged a learning curve (train / meta-train runs with
    the LearningCurve callback: learning_curve.json), at most `max_runs`."""
    curves = {}
    for run in runs:
        path = run.path / "learning_curve.json"
        points = _read_json(path) if path.is_file() else None
        if isinstance(points, list) and len(points) > 1:
            curves[run.name] = points
        if len(curves) >= max_runs:
            break
    return curves
