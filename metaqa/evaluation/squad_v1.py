"""SQuAD v1.1 metrics: a port of the official ``evaluate-v1.1.py``, nothing added.

v1.1 has no unanswerable questions and no null handling: a prediction is scored as given, EM and
F1 are the max over every gold answer, and a question without a prediction scores 0 (the official
script counts it in the total too). Its F1 differs from v2.0's in one place: an empty prediction
(or gold) scores 0, never 1. Normalisation is the same as v2.0's (`normalize_answer`).
"""
from __future__ import annotations

import collections
import logging
from collections.abc import Mapping

from metaqa.evaluation.squad_v2 import normalize_answer

logger = logging.getLogger(__name__)


def f1_score(prediction: str, ground_truth: str) -> float:
    prediction_tokens = normalize_answer(prediction).split()
    ground_truth_tokens = normalize_answer(ground_truth).split()
    common = collections.Counter(prediction_tokens) & collections.Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(prediction_tokens)
    recall = num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def exact_match_score(prediction: str, ground_truth: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(ground_truth)


def squad_v1_metrics(gold: Mapping[str, list[str]], predictions: Mapping[str, str]) -> dict[str, float]:
    """``exact`` and ``f1`` (0-100) and ``total``, as the official v1.1 script computes them.

    ``gold`` maps id -> gold answer texts (at least one each: v1.1 questions are answerable);
    ``predictions`` maps id -> predicted text. A gold id without a prediction scores 0.
    """
    if not gold:
        raise ValueError("squad_v1_metrics: gold is empty, there is nothing to score")
    unanswerable = [qid for qid, answers in gold.items() if not answers]
    if unanswerable:
        raise ValueError(
            f"{len(unanswerable)} of {len(gold)} questions have no gold answer (e.g. {unanswerable[0]!r}); "
            "SQuAD v1.1 scoring needs answerable questions. Fix: score them as SQuAD v2 "
            "(reader.decode.version_2=true, or a data config with version_2: true)")
    missing = sum(qid not in predictions for qid in gold)
    if missing:
        logger.warning("%d of %d questions have no prediction; they score 0 (as in the official v1.1 script)",
                       missing, len(gold))
    exact = f1 = 0.0
    for qid, answers in gold.items():
        if qid not in predictions:
            continue
        exact += max(exact_match_score(predictions[qid], a) for a in answers)
        f1 += max(f1_score(predictions[qid], a) for a in answers)
    total = len(gold)
    return {"exact": 100.0 * exact / total, "f1": 100.0 * f1 / total, "total": total}
