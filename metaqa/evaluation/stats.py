"""Intervals for results over questions × seeds: a 95% bootstrap interval of a mean, and of the
paired difference of two arms scored on the same questions with the same seeds.

A run's figure is the mean over seeds of its per-question scores (`scoring.per_question`); the
bootstrap resamples seeds and questions together (questions shared across seeds: the same test
split), so the interval holds both the k-shot draw's and the test set's variation.
"""
from __future__ import annotations

import numpy as np


def _as_matrix(values) -> np.ndarray:
    m = np.asarray(values, dtype=float)
    if m.ndim == 1:
        m = m[None, :]
    if m.ndim != 2 or m.size == 0:
        raise ValueError("pass per-question scores as (seeds, questions)")
    return m


def bootstrap_mean_ci(values, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of a (seeds, questions) matrix, resampling seeds and questions."""
    m = _as_matrix(values)
    rng = np.random.default_rng(seed)
    s_idx = rng.integers(0, m.shape[0], size=(n_boot, m.shape[0]))
    q_idx = rng.integers(0, m.shape[1], size=(n_boot, m.shape[1]))
    means = np.array([m[np.ix_(s, q)].mean() for s, q in zip(s_idx, q_idx)])
    tail = (1 - level) / 2 * 100
    return float(m.mean()), float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def paired_diff_ci(a, b, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """(mean of a − b, low, high): arm a against arm b on the same questions, seed i against seed i."""
    a, b = _as_matrix(a), _as_matrix(b)
    if a.shape != b.shape:
        raise ValueError(f"paired arms need the same (seeds, questions): {a.shape} vs {b.shape}")
    return bootstrap_mean_ci(a - b, n_boot, seed, level)
