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
