"""Retrieve, then read: question + theme → top-k paragraphs → reader on each → one answer.

1. The theme's index ranks its paragraphs; the top `top_k` are candidates (none at all when
   every paragraph scores at or below the retriever's `min_score`: "no paragraph", nothing read).
2. The reader (an `OnnxPredictor`) reads the best candidate first. If its confidence clears
   `exit_threshold`, that is the answer (early exit: one reader pass). Otherwise the other
   candidates are read in one batch and the candidate with the best confidence − rank_penalty ×
   retrieval rank wins (a large penalty trusts the retriever's order, 0 trusts the reader).
3. If the winner's confidence is below `null_threshold`, the answer is "no paragraph" ("").

Confidence is `margin` (best span score − null score, the SQuAD v2 decision) or `span` (the
best span's start + end logit alone, for readers never trained to abstain, e.g. on SQuAD v1).
The thresholds and the rank penalty come from `calibrate`, which replays recorded candidates of
a dev split (read without early exit) instead of re-running the reader for every setting.

A candidate paragraph longer than one reader window can be cut to its relevant sentences first
(`sentence_filter`, see `metaqa.retrieval.longdoc`); offsets are mapped back to the paragraph.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from metaqa.evaluation.devrev import answer_f1, answerability_auc, paragraph_correct
from metaqa.evaluation.postprocess import SpanPrediction
from metaqa.inference.engine import make_record
from metaqa.retrieval.index import Hit, ThemeIndex
from metaqa.retrieval.longdoc import FilteredContext, SentenceFilter

CONFIDENCES = ("margin", "span")


@dataclass
class Thresholds:
    confidence: str = "margin"  # margin | span
    null_threshold: float | None = None  # None: always answer from the best paragraph
    exit_threshold: float | None = None  # None: always read every candidate
    rank_penalty: float = 0.0  # subtracted per retrieval rank when candidates compete
    read_k: int | None = None  # read at most this many candidates (None: the pipeline's top_k)

    def __post_init__(self) -> None:
        if self.confidence not in CONFIDENCES:
            raise ValueError(f"confidence={self.confidence!r}: pick one of {list(CONFIDENCES)}")


@dataclass(frozen=True)
class Candidate:
    paragraph: int  # index into the theme's paragraphs
    rank: int  # retrieval rank, 0 = best
    retrieval_score: float
    text: str  # the reader's best non-null span ("" if none fits)
    start: int  # character offsets in the paragraph (-1 if none)
    end: int
    score: float  # start + end logit of that span (-inf if none)
    null_score: float


def confidence(candidate: Candidate, kind: str) -> float:
    if not math.isfinite(candidate.score):
        return -math.inf
    return candidate.score - candidate.null_score if kind == "margin" else candidate.score


@dataclass
class PipelineAnswer:
    id: str
    question: str
    theme: str
    paragraph: int | None  # the chosen paragraph of the theme; None = "no paragraph"
    answer: str  # "" when paragraph is None
    start: int  # character offsets in that paragraph (-1 when none)
    end: int
    confidence: float
    hits: list[Hit]  # the retrieval ranking (at least top_k, for recall@k)
    candidates: list[Candidate]  # the paragraphs actually read, best retrieval rank first
    early_exit: bool
    latency_ms: float

    def as_row(self) -> dict:
        row = {k: v for k, v in asdict(self).items() if k not in ("hits", "candidates")}
        row["confidence"] = self.confidence if math.isfinite(self.confidence) else None  # strict JSON
        row["retrieved"] = [h.paragraph for h in self.hits]
        row["read"] = len(self.candidates)
        return row


@dataclass
class RetrieveThenRead:
    index: ThemeIndex
    reader: object  # an OnnxPredictor (or anything with predict(records, batch_size))
    top_k: int = 3
    recall_k: int = 5  # hits kept for recall@k; only the top_k are read
    thresholds: Thresholds = field(default_factory=Thresholds)
    sentence_filter: SentenceFilter | None = None

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ValueError(f"top_k={self.top_k}: read at least one paragraph")
        self._lengths: dict[tuple[str, int], int] = {}  # paragraph token counts, for the filter

    def answer(self, question: str, theme: str, id: str = "q0", early_exit: bool = True) -> PipelineAnswer:
        started = time.perf_counter()
        paragraphs = self.index.theme_paragraphs(theme)
        hits = self.index.search(question, theme, max(self.top_k, self.recall_k))
        t = self.thresholds
        to_read = hits[: min(self.top_k, t.read_k or self.top_k)]
        candidates = self._read(question, theme, paragraphs, to_read[:1], id) if to_read else []
        exited = bool(early_exit and t.exit_threshold is not None and len(to_read) > 1
                      and confidence(candidates[0], t.confidence) >= t.exit_threshold)
        if not exited and len(to_read) > 1:
            candidates += self._read(question, theme, paragraphs, to_read[1:], id)
        best, conf = decide(candidates, t)
        latency_ms = (time.perf_counter() - started) * 1e3
        if best is None:
            return PipelineAnswer(id, question, theme, None, "", -1, -1, conf, hits, candidates, exited, latency_ms)
        return PipelineAnswer(id, question, theme, best.paragraph, best.text, best.start, best.end, conf,
                              hits, candidates, exited, latency_ms)

    # ------------------------------------------------------------------ reading
    def _read(self, question: str, theme: str, paragraphs: list[str], hits: Sequence[Hit], id: str) -> list[Candidate]:
        contexts: list[FilteredContext | None] = []
        records = []
        for hit in hits:
            text = paragraphs[hit.paragraph]
            filtered = None
            if self.sentence_filter is not None and self._too_long(question, theme, hit.paragraph, text):
                filtered = self.sentence_filter.filter(question, text)
            contexts.append(filtered)
            records.append(make_record(question, filtered.text if filtered else text, f"{id}/{hit.paragraph}"))
        predictions = self.reader.predict(records, batch_size=max(1, len(records)))
        return [self._candidate(hit, paragraphs[hit.paragraph], filtered, pred)
                for hit, filtered, pred in zip(hits, contexts, predictions)]

    def _too_long(self, question: str, theme: str, paragraph: int, text: str) -> bool:
        key = (theme, paragraph)
        if key not in self._lengths:
            tokenizer = self.sentence_filter.tokenizer
            self._lengths[key] = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        return self._lengths[key] > self.sentence_filter.budget(question)

    @staticmethod
    def _candidate(hit: Hit, paragraph: str, filtered: FilteredContext | None, pred: SpanPrediction) -> Candidate:
        start, end = pred.start, pred.end
        if start >= 0 and filtered is not None:
            start, end = filtered.to_document(start, end)
        text = paragraph[start:end] if start >= 0 else ""
        return Candidate(hit.paragraph, hit.rank, hit.score, text, start, end, pred.score, pred.null_score)


def decide(candidates: Sequence[Candidate], thresholds: Thresholds) -> tuple[Candidate | None, float]:
    """(the winning candidate, or None for "no paragraph"; its confidence). The winner has the best
    confidence − rank_penalty × rank; its own confidence decides against the null threshold."""
    if not candidates:
        return None, -math.inf
    confs = [float(confidence(c, thresholds.confidence)) for c in candidates]
    ranked = [conf - thresholds.rank_penalty * c.rank if math.isfinite(conf) else -math.inf
              for conf, c in zip(confs, candidates)]
    i = int(np.argmax(ranked))  # ties: the better retrieval rank (candidates are in rank order)
    if not math.isfinite(confs[i]):
        return None, confs[i]
    if thresholds.null_threshold is not None and confs[i] < thresholds.null_threshold:
        return None, confs[i]
    return candidates[i], confs[i]


# --------------------------------------------------------------------------- calibration
Gold = tuple  # (gold paragraph index or None, gold answer texts)


def _value(candidate: Candidate | None, gold: Gold) -> float:
    """Paragraph correct + F1 of one output (the per-question DevRev objective, in [0, 2])."""
    paragraph, answers = gold
    if candidate is None:
        return 2.0 * (paragraph is None)
    return float(paragraph_correct(paragraph, candidate.paragraph)) + answer_f1(answers, candidate.text)


def _cuts(sorted_values: np.ndarray) -> np.ndarray:
    """Positions i (0..n) where a threshold can separate sorted_values[:i] from the rest."""
    n = len(sorted_values)
    ok = np.ones(n + 1, dtype=bool)
    ok[1:n] = sorted_values[:-1] != sorted_values[1:]
    return np.flatnonzero(ok)


def _between(lo: float, hi: float) -> float:
    if not math.isfinite(lo):
        return hi - 1.0 if math.isfinite(hi) else 0.0
    if not math.isfinite(hi):
        return lo + 1.0
    return (lo + hi) / 2.0


def calibrate_kind(candidates: Sequence[Sequence[Candidate]], golds: Sequence[Gold], kind: str,
                   exit_tolerance: float = 0.002, rank_penalty: float = 0.0) -> tuple[Thresholds, dict]:
    """Best null threshold for `kind` (max mean paragraph-correct + F1 over the questions), then
    the lowest exit threshold whose objective stays within `exit_tolerance` of reading every
    candidate. `candidates[q]`: every candidate read for question q (no early exit)."""
    n = len(candidates)
    if n == 0 or n != len(golds):
        raise ValueError(f"calibrate: {n} questions with candidates for {len(golds)} golds")
    none_value = np.array([_value(None, g) for g in golds])
    best_conf, best_value, first_conf, first_value = (np.empty(n) for _ in range(4))
    for q, (cands, gold) in enumerate(zip(candidates, golds)):
        best, conf = decide(cands, Thresholds(kind, rank_penalty=rank_penalty))
        best_conf[q], best_value[q] = conf, _value(best, gold) if best else none_value[q]
        first = cands[0] if cands else None
        first_conf[q] = confidence(first, kind) if first else -math.inf
        first_value[q] = _value(first, gold) if first else none_value[q]

    # Null threshold: the i least confident questions answer "no paragraph".
    order = np.argsort(best_conf, kind="stable")
    values = best_conf[order]
    objective = (np.r_[0.0, np.cumsum(none_value[order])]
                 + np.r_[np.cumsum(best_value[order][::-1])[::-1], 0.0]) / n
    cuts = _cuts(values)
    i = int(cuts[np.argmax(objective[cuts])])
    null_threshold = -math.inf if i == 0 else _between(values[i - 1], values[i] if i < n else math.inf)
    full = np.where(best_conf < null_threshold, none_value, best_value)
    base = float(full.mean())

    # Exit threshold (>= the null threshold): the j most confident first candidates answer alone.
    desc = np.argsort(-first_conf, kind="stable")
    fvalues = first_conf[desc]
    gain = np.r_[0.0, np.cumsum(first_value[desc] - full[desc])] / n
    exit_threshold, exits = None, 0
    for j in range(1, n + 1):
        separable = j == n or fvalues[j - 1] > fvalues[j]
        if not separable or not math.isfinite(fvalues[j - 1]) or fvalues[j - 1] < null_threshold:
            continue
        if gain[j] >= -exit_tolerance:
            lowest = fvalues[j - 1] if j == n else _between(fvalues[j], fvalues[j - 1])
            exit_threshold, exits = float(max(lowest, null_threshold)), j
    none_rate = float((best_conf < null_threshold).mean())
    null_threshold = float(null_threshold) if math.isfinite(null_threshold) else None  # None: never "none"
    read_k = max((len(c) for c in candidates), default=0)
    if read_k <= 1:
        exit_threshold, exits = None, 0  # nothing left to skip
    report = {
        "confidence": kind, "rank_penalty": rank_penalty, "read_k": read_k, "questions": n,
        "null_threshold": null_threshold,
        "objective_never_none": float(best_value.mean()), "objective": base,
        "answerability_auc": answerability_auc([g[0] is not None for g in golds], best_conf),
        "no_paragraph_rate": none_rate,
        "exit_threshold": exit_threshold, "exit_rate": exits / n,
        "objective_with_exit": base + float(gain[exits]),
    }
    return Thresholds(kind, null_threshold, exit_threshold, rank_penalty, read_k), report


RANK_PENALTIES = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 1e6)  # logit units per rank; 1e6 = retrieval order decides


def calibrate(traces: Sequence[PipelineAnswer], golds: Sequence[Gold], kinds: Sequence[str] = CONFIDENCES,
              tolerance: float = 0.002, rank_penalties: Sequence[float] = RANK_PENALTIES) -> tuple[Thresholds, dict]:
    """Search confidence kind × rank penalty × paragraphs read (1..top_k, replayed from the
    traces), each with its best null and exit thresholds. The fewest paragraphs read whose
    objective is within `tolerance` of the best wins (speed for free), then the best objective
    (ties: the first kind, the smaller penalty). Traces must be read with early_exit=False."""
    top_k = max((len(t.candidates) for t in traces), default=1)
    results = [calibrate_kind([t.candidates[:k] for t in traces], golds, kind, tolerance, penalty)
               for k in range(1, max(top_k, 1) + 1) for kind in kinds for penalty in rank_penalties]
    best = max(r["objective"] for _, r in results)
    fast = min(r["read_k"] for _, r in results if r["objective"] >= best - tolerance)
    chosen = max((res for res in results if res[1]["read_k"] == fast), key=lambda res: res[1]["objective"])
    return chosen[0], {"chosen": chosen[1], "best_objective": best, "grid": [r for _, r in results]}
