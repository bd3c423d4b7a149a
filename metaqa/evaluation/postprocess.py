"""Window logits → answer spans per record, following HF `utils_qa.py`, vectorised with numpy.

For each window: the n-best start and end tokens, pairs inside the context with
start <= end and length <= max_answer_length; the best pair over an example's windows wins.
The null score is the minimum over the example's windows of start[CLS] + end[CLS]; with
SQuAD v2 semantics the prediction is "" when null − best > null_threshold; with v1 semantics
(`version_2=False`) it is always the best span. Scoring is `metaqa.evaluation.scoring.score`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from metaqa.data.features import NO_OFFSET, Features
from metaqa.data.records import QARecord


@dataclass
class DecodeConfig:
    """How window logits become an answer (the `reader.decode` config node)."""

    n_best: int = 20
    max_answer_length: int = 30
    null_threshold: float = 0.0  # v2: "" when null − best > this
    version_2: bool = True  # False: always the best span (SQuAD v1), scored with the v1.1 metric

    def as_kwargs(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SpanPrediction:
    id: str
    text: str  # the decoder's answer; "" = no answer
    span_text: str  # the best non-null span, whatever the decoder decided ("" if none)
    start: int  # char offset of the best non-null span in the context (-1 if none)
    end: int  # exclusive
    score: float  # start + end logit of the best non-null span (-inf if none)
    null_score: float  # start + end logit of CLS, min over windows

    @property
    def score_diff(self) -> float:
        """null − best (+inf without a span): larger = more likely unanswerable."""
        return self.null_score - self.score


def postprocess(
    records: Sequence[QARecord],
    features: Features,
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    n_best: int = 20,
    max_answer_length: int = 30,
    null_threshold: float = 0.0,
    version_2: bool = True,
) -> list[SpanPrediction]:
    """`start_logits`/`end_logits`: (windows, tokens) arrays, row f = window f of `features`."""
    n_windows, width = start_logits.shape
    offsets = np.full((n_windows, width, 2), NO_OFFSET, dtype=np.int64)
    for f, off in enumerate(features.offsets):
        offsets[f, : len(off)] = off[:width]
    in_context = offsets[:, :, 0] != NO_OFFSET
    start = np.where(in_context, start_logits, -np.inf)
    end = np.where(in_context, end_logits, -np.inf)

    k = min(n_best, width)
    rows = np.arange(n_windows)[:, None]
    top_start = np.argsort(-start, axis=1, kind="stable")[:, :k]  # (F, k)
    top_end = np.argsort(-end, axis=1, kind="stable")[:, :k]
    pair = start[rows, top_start][:, :, None] + end[rows, top_end][:, None, :]  # (F, k, k)
    length = top_end[:, None, :] - top_start[:, :, None] + 1
    pair = np.where((length >= 1) & (length <= max_answer_length), pair, -np.inf)
    flat = pair.reshape(n_windows, -1)
    best = flat.argmax(axis=1)
    window_score = flat[np.arange(n_windows), best]
    window_start = top_start[np.arange(n_windows), best // k]
    window_end = top_end[np.arange(n_windows), best % k]
    window_null = start_logits[:, 0] + end_logits[:, 0]

    # Reduce windows → examples; windows of one example are contiguous in `features`.
    ex = features.example_index
    first = np.flatnonzero(np.r_[True, ex[1:] != ex[:-1]])
    segment = np.cumsum(np.r_[True, ex[1:] != ex[:-1]]) - 1
    example_best = np.maximum.reduceat(window_score, first)
    example_null = np.minimum.reduceat(window_null, first)
    winners = np.flatnonzero(window_score == example_best[segment])
    _, keep = np.unique(segment[winners], return_index=True)
    winner = winners[keep]  # first window reaching the example's best score

    predictions = []
    for seg, f in enumerate(winner):
        record = records[ex[f]]
        score, null = float(example_best[seg]), float(example_null[seg])
        if np.isfinite(score):
            s_char = int(offsets[f, window_start[f], 0])
            e_char = int(offsets[f, window_end[f], 1])
            text = record.context[s_char:e_char]
        else:
            s_char, e_char, text = -1, -1, ""
        answer = "" if version_2 and (not np.isfinite(score) or null - score > null_threshold) else text
        predictions.append(SpanPrediction(record.id, answer, text, s_char, e_char, score, null))
    return predictions

