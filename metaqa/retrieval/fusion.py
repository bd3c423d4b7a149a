"""Reciprocal-rank fusion (Cormack et al., 2009): combine rankings, not raw scores.

BM25 scores are unbounded and cosine similarities live in [-1, 1]; adding them would let one
scale dominate. RRF only uses each item's rank r (1-based) in every list: sum of 1 / (k + r).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

RRF_K = 60  # the constant from the paper; large k flattens the head of each ranking


def ranks(scores: np.ndarray) -> np.ndarray:
    """1-based rank of every item, best score first; ties keep index order."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    out = np.empty(len(order), dtype=np.int64)
    out[order] = np.arange(1, len(order) + 1)
    return out


def reciprocal_rank_fusion(score_lists: Sequence[np.ndarray], k: int = RRF_K,
                           weights: Sequence[float] | None = None) -> np.ndarray:
    """Fused score per item: sum over lists of weight / (k + rank in that list)."""
    if not score_lists:
        raise ValueError("reciprocal_rank_fusion: no rankings to fuse")
    sizes = {len(s) for s in score_lists}
    if len(sizes) != 1:
        raise ValueError(f"reciprocal_rank_fusion: rankings cover different numbers of items {sorted(sizes)}")
    if k < 0:
        raise ValueError(f"reciprocal_rank_fusion: k={k} must be >= 0")
    weights = [1.0] * len(score_lists) if weights is None else list(weights)
    if len(weights) != len(score_lists):
        raise ValueError(f"reciprocal_rank_fusion: {len(weights)} weights for {len(score_lists)} rankings")
    fused = np.zeros(sizes.pop(), dtype=np.float64)
    for w, scores in zip(weights, score_lists):
        fused += w / (k + ranks(scores))
    return fused
