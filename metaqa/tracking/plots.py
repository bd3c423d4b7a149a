"""Plots written straight to PNG with matplotlib's Agg canvas (no display, and the global pyplot
backend is left alone, so importing this never changes anyone else's plotting)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def latency_plot(samples: Mapping[str, Sequence[float] | np.ndarray], path: str | Path,
                 title: str = "latency per question", log_scale: bool = True,
                 unit: str = "ms") -> Path:
    """Horizontal box plots (whiskers at p1/p99, outliers shown) of each named latency sample,
    with the p50 printed beside each box; log-scale latency axis by default. Returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [n for n, s in samples.items() if len(s)]
    if not names:
        raise ValueError("no latency samples to plot")
    data = [np.asarray(samples[n], dtype=np.float64) for n in names]
    fig = Figure(figsize=(8, 1.2 + 0.7 * len(names)), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    import inspect

    horizontal = ({"orientation": "horizontal"} if "orientation" in inspect.signature(ax.boxplot).parameters
                  else {"vert": False})  # matplotlib >= 3.10 deprecates vert=
    box = ax.boxplot(data, **horizontal, whis=(1, 99), showfliers=True, widths=0.6, patch_artist=True,
                     flierprops={"marker": ".", "markersize": 3, "alpha": 0.5},
                     medianprops={"color": "black"})
    for i, patch in enumerate(box["boxes"]):
        patch.set_facecolor(f"C{i % 10}")
        patch.set_alpha(0.6)
    ax.set_yticks(range(1, len(names) + 1), labels=names)
    for i, x in enumerate(data, start=1):
        p50 = float(np.median(x))
        ax.annotate(f"p50 {p50:.3g} {unit}", (float(x.max()), i), xytext=(6, 0),
                    textcoords="offset points", va="center", fontsize=8)
    if log_scale:
        from matplotlib.ticker import FuncFormatter

        ax.set_xscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else ""))
    ax.invert_yaxis()  # first sample on top
    ax.set_xlabel(f"latency per question ({unit}{', log scale' if log_scale else ''})")
    ax.set_title(title)
    ax.grid(axis="x", which="both", alpha=0.3)
    lo, hi = ax.get_xlim()
    ax.set_xlim(lo, hi * (3.0 if log_scale else 1.25))  # room for the p50 labels
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def pareto_plot(points: Sequence[Mapping], path: str | Path, xlabel: str = "latency per question (ms)",
                ylabel: str = "F1", title: str = "F1 vs latency") -> Path:
    """Scatter of `points` (dicts with latency, f1, label, pareto) with the Pareto front (lowest
    latency for its F1) drawn as a step line and labelled; other points labelled when few."""
    if not points:
        raise ValueError("no points to plot")
    fig = _figure(7.5, 4.8)
    ax = fig.subplots()
    rest = [p for p in points if not p["pareto"]]
    front = sorted((p for p in points if p["pareto"]), key=lambda p: p["latency"])
    if rest:
        ax.scatter([p["latency"] for p in rest], [p["f1"] for p in rest], s=28, color="0.6", label="dominated")
    ax.scatter([p["latency"] for p in front], [p["f1"] for p in front], s=48, color="C3", zorder=3,
               label="Pareto front")
    ax.step([p["latency"] for p in front], [p["f1"] for p in front], where="post", color="C3", alpha=0.6)
    for p in front + (rest if len(points) <= 12 else []):
        ax.annotate(str(p["label"])[:40], (p["latency"], p["f1"]), xytext=(5, 4), textcoords="offset points",
                    fontsize=7, color="C3" if p["pareto"] else "0.35")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    lo, hi = ax.get_xlim()
    ax.set_xlim(lo, hi + 0.25 * (hi - lo))  # room for the labels
    return _save(fig, path)


def per_theme_plot(series: Mapping[str, Mapping[str, float]], path: str | Path, ylabel: str = "F1",
                   title: str = "F1 per theme") -> Path:
    """Grouped bars: one group per theme, one bar per series (e.g. before / after meta-learning,
    or one per run), value printed on each bar when there is room."""
    names = [n for n, values in series.items() if values]
    if not names:
        raise ValueError("no per-theme values to plot")
    themes = sorted({t for n in names for t in series[n]})
    width = 0.8 / len(names)
    fig = _figure(max(6.0, 2.5 + len(themes) * (0.3 + 0.15 * len(names))), 4.2)
    ax = fig.subplots()
    x = np.arange(len(themes))
    for i, name in enumerate(names):
        values = [series[name].get(t, np.nan) for t in themes]
        bars = ax.bar(x - 0.4 + width * (i + 0.5), values, width, label=str(name)[:50], color=f"C{i % 10}")
        if len(names) * len(themes) <= 24:
            ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    ax.set_xticks(x, labels=themes, rotation=30 if len(themes) > 6 else 0, ha="right" if len(themes) > 6 else "center")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


def learning_curve_plot(curves: Mapping[str, Sequence[Mapping]], path: str | Path, metric: str = "f1",
                        title: str = "dev F1 while training") -> Path:
    """One line per run: `metric` of each validation point (dicts with step and the metric)
    against the optimiser step."""
    fig = _figure(6.5, 4.0)
    ax = fig.subplots()
    for i, (name, points) in enumerate(curves.items()):
        pts = [p for p in points if metric in p]
        if pts:
            ax.plot([p["step"] for p in pts], [p[metric] for p in pts], marker="o", ms=3,
                    label=str(name)[:50], color=f"C{i % 10}")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel(f"dev {metric}")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def f1_vs_k_plot(series: Mapping[str, Mapping[int, Sequence[float]]], path: str | Path, ylabel: str = "F1 after",
                 title: str = "F1 vs k") -> Path:
    """One line per series: the mean over its runs (seeds) at each k, with the runs' min-max as
    the error bar; k on a categorical axis (0, 16, 64, 256 are not evenly spaced)."""
    names = [n for n, points in series.items() if points]
    if not names:
        raise ValueError("no F1-vs-k values to plot")
    ks = sorted({k for n in names for k in series[n]})
    fig = _figure(6.5, 4.2)
    ax = fig.subplots()
    for i, name in enumerate(names):
        at = [k for k in ks if series[name].get(k)]
        values = [np.asarray(series[name][k], dtype=float) for k in at]
        mean = np.array([v.mean() for v in values])
        err = [mean - [v.min() for v in values], [v.max() for v in values] - mean]
        ax.errorbar([ks.index(k) for k in at], mean, yerr=err, marker="o", capsize=3, label=str(name)[:60],
                    color=f"C{i % 10}")
    ax.set_xticks(range(len(ks)), labels=[str(k) for k in ks])
    ax.set_xlabel("k (labelled target examples)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)
