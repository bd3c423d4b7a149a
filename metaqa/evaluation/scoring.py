"""The scoring contract: every F1 / EM that metaqa reports, selects on or gates with is `score`.

- SQuAD v1 (`version_2=False`): the official v1.1 metric on the decoder's best span. No null
  threshold, no "na_probs": a span is scored as given.
- SQuAD v2 (`version_2=True`): the headline `exact` / `f1` / `HasAns_*` / `NoAns_*` are the official
  v2.0 metric on the decoder's text as given — the decoder alone decides "no answer"
  (null − best > `decode.null_threshold`); the metric applies no second threshold.
- `best_exact` / `best_f1` and their `_thresh` are an **oracle** (they read the gold answers):
  the no-answer threshold swept over the *un-blanked* best span of every question with
  null − best as its score, so the sweep can land above or below the decoder's threshold.
  Answer iff null − best <= thresh, which is the decoder's own rule: `decode.null_threshold=<thresh>`
  reproduces `best_f1` (up to the official sweep's quirks, kept: a span or gold answer that
  normalises to "", such as "the", is counted as an answer / as answerable). The sweep is the official `find_best_thresh` (start from "no answer"
  everywhere, answer questions in order of their score) with equal scores switched together, so the
  threshold it reports is one a decoder can use; when answering nothing is best it is just below
  the lowest score.
"""
from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence

import numpy as np

from metaqa.data.records import QARecord
from metaqa.evaluation.postprocess import SpanPrediction
from metaqa.evaluation.squad_v1 import exact_match_score, f1_score, squad_v1_metrics
from metaqa.evaluation.squad_v2 import _gold_answers, compute_exact, compute_f1, gold_from_records, squad_v2_metrics
from metaqa.evaluation.stats import bootstrap_mean_ci


def score(records: Sequence[QARecord], predictions: Sequence[SpanPrediction],
          version_2: bool) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(overall metrics, per-theme metrics) of `predictions` against `records`' gold answers."""
    by_theme: dict[str, list[QARecord]] = collections.defaultdict(list)
    for r in records:
        by_theme[r.theme].append(r)
    by_id = {p.id: p for p in predictions}
    overall = _metrics(records, by_id, version_2)
    return overall, {theme: _metrics(recs, by_id, version_2) for theme, recs in by_theme.items()}


def score_texts(records: Sequence[QARecord], texts: Mapping[str, str], version_2: bool) -> dict[str, float]:
    """The headline metrics of answer texts alone (no oracle: it needs each question's best span);
    for readers outside metaqa, such as `transformers.pipeline`."""
    gold = gold_from_records(records)
    return squad_v2_metrics(gold, texts) if version_2 else squad_v1_metrics(gold, texts)


def texts_at_threshold(spans: Mapping[str, str], diffs: Mapping[str, float | None],
                       null_threshold: float) -> dict[str, str]:
    """The decoder's v2 answers at another threshold, from an eval run's spans.json (id → best span)
    and na_probs.json (id → null − best; None where the reader found no span): "" when
    null − best > `null_threshold`, the decoder's own rule."""
    return {qid: "" if diffs.get(qid) is None or diffs[qid] > null_threshold else span
            for qid, span in spans.items()}


def per_question(records: Sequence[QARecord], predictions: Sequence[SpanPrediction],
                 version_2: bool) -> dict[str, tuple[float, float]]:
    """id → (F1, EM) in 0–100 for each question, by the same official formulas as `score` (max over
    gold answers; v2: an unanswerable gold is [""]); their mean is `score`'s f1 / exact. For
    intervals over questions (`metaqa.evaluation.stats`)."""
    return per_question_texts(records, {p.id: p.text for p in predictions}, version_2)


def per_question_texts(records: Sequence[QARecord], by_id: Mapping[str, str],
                       version_2: bool) -> dict[str, tuple[float, float]]:
    """`per_question` of answer texts by id (e.g. an eval run's predictions.json)."""
    out = {}
    for qid, answers in gold_from_records(records).items():
        text = by_id.get(qid, "")
        if version_2:
            golds = _gold_answers(answers)
            out[qid] = (100.0 * max(compute_f1(g, text) for g in golds),
                        100.0 * max(compute_exact(g, text) for g in golds))
        else:
            out[qid] = (100.0 * max(f1_score(text, g) for g in answers),
                        100.0 * max(float(exact_match_score(text, g)) for g in answers))
    return out


def f1_interval(records: Sequence[QARecord], by_id: Mapping[str, str], version_2: bool) -> tuple[float, float]:
    """95% bootstrap interval over questions of the F1 of answer texts by id (one run: no seed variance)."""
    _, low, high = bootstrap_mean_ci([[f1 for f1, _ in per_question_texts(records, by_id, version_2).values()]])
    return low, high


def _metrics(records: Sequence[QARecord], by_id: Mapping[str, SpanPrediction], version_2: bool) -> dict[str, float]:
    gold = gold_from_records(records)
    out = score_texts(records, {qid: by_id[qid].text for qid in gold if qid in by_id}, version_2)
    if not version_2:
        return out
    spans = {qid: by_id[qid].span_text for qid in gold if qid in by_id}
    diffs = {qid: by_id[qid].score_diff for qid in gold if qid in by_id}
    out.update(oracle_thresholds(gold, spans, diffs))
    return out


def oracle_thresholds(gold: Mapping[str, list[str]], spans: Mapping[str, str],
                      diffs: Mapping[str, float]) -> dict[str, float]:
    """`best_exact`, `best_exact_thresh`, `best_f1`, `best_f1_thresh` over the un-blanked `spans`
    (id → best span text) with `diffs` (id → null − best; +inf where there is no span)."""
    has_ans = {qid: bool(answers) for qid, answers in gold.items()}
    out: dict[str, float] = {}
    for name, fn in (("exact", compute_exact), ("f1", compute_f1)):
        gains = {}
        for qid, answers in gold.items():
            span = spans.get(qid, "")
            if has_ans[qid]:
                gains[qid] = float(max(fn(a, span) for a in _gold_answers(answers)))
            else:
                gains[qid] = -1.0 if span else 0.0  # answering a no-answer question (official rule)
        best, thresh = _sweep(gains, diffs, base=sum(not v for v in has_ans.values()))
        out[f"best_{name}"] = 100.0 * best / len(gold)
        out[f"best_{name}_thresh"] = thresh
    return out


def _sweep(gains: Mapping[str, float], diffs: Mapping[str, float], base: float) -> tuple[float, float]:
    """(best total score, its threshold): answer the questions with diff <= thresh."""
    finite = sorted((float(d), qid) for qid, d in diffs.items() if qid in gains and np.isfinite(d))
    if not finite:
        return base, 0.0
    best, thresh, current = base, finite[0][0] - 1.0, base
    i = 0
    while i < len(finite):  # equal diffs switch together: a threshold cannot split them
        d = finite[i][0]
        while i < len(finite) and finite[i][0] == d:
            current += gains[finite[i][1]]
            i += 1
        if current > best:
            best, thresh = current, d
    return best, thresh
