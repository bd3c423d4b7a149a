"""The DevRev (Inter IIT 11.0) score of a retrieve-then-read system, per theme and overall.

For every question the system returns a paragraph of the question's theme, or "no paragraph",
and an answer ("" = no answer). Our reading of the rule:

* paragraph accuracy = (answerable questions given their own paragraph + unanswerable questions
  given "no paragraph") / questions. An answerable question answered "no paragraph" is wrong;
  an unanswerable one given any paragraph is wrong, whatever the answer text.
* F1 = the SQuAD F1 of the answer text, max over gold answers; an unanswerable question scores
  1 only for "" (the official SQuAD v2 rule). Both are fractions in [0, 1].
* theme score = paragraph accuracy + F1, times 200 / AIT when the theme's average inference
  time per question AIT (ms) exceeds 200 ms. Overall = the theme scores weighted by their
  numbers of questions (and paragraph accuracy / F1 / latency likewise over all questions).

Retrieval recall@k (answerable questions only: is the gold paragraph among the top k?), the
answerable / unanswerable halves (`*_has_ans`, `*_no_ans`), how well the system's confidence
separates answerable from unanswerable questions (`answerability_auc`, 0.5 = no signal) and
latency percentiles are reported beside it; they are not part of the DevRev score.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

from metaqa.evaluation.latency import median_ci
from metaqa.evaluation.squad_v2 import compute_exact, compute_f1, normalize_answer
from metaqa.evaluation.stats import bootstrap_mean_ci

AIT_BUDGET_MS = 200.0
RECALL_KS = (1, 5)


@dataclass(frozen=True)
class Outcome:
    """What the system did on one question, and the truth."""

    id: str
    theme: str
    gold_paragraph: int | None  # None = unanswerable (the right output is "no paragraph")
    gold_answers: tuple[str, ...]
    predicted_paragraph: int | None
    answer: str
    latency_ms: float
    gold_rank: int | None = None  # 0-based rank of the gold paragraph in the retrieval, None if absent
    confidence: float = math.nan  # the system's confidence in its best answer (for answerability_auc)


def answer_f1(gold_answers: Sequence[str], prediction: str) -> float:
    golds = [a for a in gold_answers if normalize_answer(a)] or [""]
    return max(compute_f1(g, prediction) for g in golds)


def answer_exact(gold_answers: Sequence[str], prediction: str) -> float:
    golds = [a for a in gold_answers if normalize_answer(a)] or [""]
    return float(max(compute_exact(g, prediction) for g in golds))


def answerability_auc(answerable: Sequence[bool], confidence: Sequence[float]) -> float:
    """ROC AUC of `confidence` for telling answerable from unanswerable questions (0.5 = no
    signal); nan when one class is missing or a confidence is unknown."""
    y = np.asarray(answerable, dtype=bool)
    c = np.asarray(confidence, dtype=float)
    if y.all() or not y.any() or np.isnan(c).any():
        return float("nan")
    return float(roc_auc_score(y, np.nan_to_num(c, neginf=-1e30, posinf=1e30)))


def paragraph_correct(gold_paragraph: int | None, predicted_paragraph: int | None) -> bool:
    return gold_paragraph == predicted_paragraph


def time_factor(ait_ms: float, budget_ms: float = AIT_BUDGET_MS) -> float:
    """1 up to the budget, then budget / AIT (the DevRev penalty for slow systems)."""
    return 1.0 if ait_ms <= budget_ms else budget_ms / ait_ms


def theme_score(paragraph_accuracy: float, f1: float, ait_ms: float, budget_ms: float = AIT_BUDGET_MS) -> float:
    return (paragraph_accuracy + f1) * time_factor(ait_ms, budget_ms)


def _summary(outcomes: Sequence[Outcome], budget_ms: float) -> dict[str, float]:
    para = np.array([paragraph_correct(o.gold_paragraph, o.predicted_paragraph) for o in outcomes], dtype=float)
    f1 = np.array([answer_f1(o.gold_answers, o.answer) for o in outcomes])
    exact = np.array([answer_exact(o.gold_answers, o.answer) for o in outcomes])
    latency = np.array([o.latency_ms for o in outcomes])
    answerable = [o for o in outcomes if o.gold_paragraph is not None]
    out = {
        "questions": len(outcomes),
        "answerable": len(answerable),
        "para_acc": float(para.mean()),
        "f1": float(f1.mean()),
        "exact": float(exact.mean()),
        # the two halves of the score with their bootstrap 95% intervals over questions
        **dict(zip(("para_acc_ci_low", "para_acc_ci_high"), bootstrap_mean_ci(para)[1:])),
        **dict(zip(("f1_ci_low", "f1_ci_high"), bootstrap_mean_ci(f1)[1:])),
        "latency_ms_mean": float(latency.mean()),
        "latency_ms_p50": float(np.percentile(latency, 50)),
        # the p50's bootstrap 95% interval over questions (one pass: a drift of the machine is not in it)
        **dict(zip(("latency_ms_p50_ci_low", "latency_ms_p50_ci_high"), median_ci(latency)[1:])),
        "latency_ms_p95": float(np.percentile(latency, 95)),
        "no_paragraph_rate": float(np.mean([o.predicted_paragraph is None for o in outcomes])),
    }
    has_ans = np.array([o.gold_paragraph is not None for o in outcomes])
    out["answerability_auc"] = answerability_auc(has_ans, [o.confidence for o in outcomes])
    for name, mask in (("has_ans", has_ans), ("no_ans", ~has_ans)):  # the two halves of the score
        out[f"para_acc_{name}"] = float(para[mask].mean()) if mask.any() else float("nan")
        out[f"f1_{name}"] = float(f1[mask].mean()) if mask.any() else float("nan")
    for k in RECALL_KS:
        hits = [o.gold_rank is not None and o.gold_rank < k for o in answerable]
        out[f"recall_at_{k}"] = float(np.mean(hits)) if hits else float("nan")
    out["theme_score"] = theme_score(out["para_acc"], out["f1"], out["latency_ms_mean"], budget_ms)
    return out


def devrev_report(outcomes: Iterable[Outcome], budget_ms: float = AIT_BUDGET_MS) -> dict:
    """{"overall": {...}, "per_theme": {theme: {...}}}; overall theme_score = question-weighted mean."""
    outcomes = list(outcomes)
    if not outcomes:
        raise ValueError("devrev_report: no outcomes to score")
    by_theme: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        by_theme[o.theme].append(o)
    per_theme = {theme: _summary(rows, budget_ms) for theme, rows in sorted(by_theme.items())}
    overall = _summary(outcomes, budget_ms)
    weights = np.array([t["questions"] for t in per_theme.values()], dtype=float)
    overall["theme_score"] = float(np.average([t["theme_score"] for t in per_theme.values()], weights=weights))
    overall["themes"] = len(per_theme)
    return {"overall": overall, "per_theme": per_theme}
