"""SQuAD v2.0 metrics: a compact port of the official ``evaluate-v2.0.py``.

Why a port: ``evaluate.load("squad_v2")`` fetches the metric script from the Hugging Face hub,
and this project must run offline. The functions below follow the official script's semantics
line for line (normalisation, EM/F1, the HasAns/NoAns split), so numbers are comparable with
published SQuAD v2.0 results. The official script's ``na_probs`` threshold is left out: the
decoder decides "no answer" and the metric scores its text as given; the oracle threshold sweep
(``best_f1``) is `metaqa.evaluation.scoring.oracle_thresholds`, over the un-blanked spans.

Deliberate differences from the official script, all at the edges:

* A gold id with no prediction is scored as if the prediction were ``""`` (the official script
  prints a warning and leaves the id out of the scores). We log one warning with the count.
* An empty ``gold`` raises ``ValueError`` (the official script divides by zero).

Kept as in the official script: an example "has an answer" when its gold list is non-empty,
even if every gold text normalises to ``""`` (then its gold becomes ``[""]``).
"""
from __future__ import annotations

import collections
import logging
import re
import string
from collections.abc import Iterable, Mapping

from metaqa.data.records import QARecord

logger = logging.getLogger(__name__)

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def get_tokens(s: str) -> list[str]:
    if not s:
        return []
    return normalize_answer(s).split()


def compute_exact(a_gold: str, a_pred: str) -> int:
    return int(normalize_answer(a_gold) == normalize_answer(a_pred))


def compute_f1(a_gold: str, a_pred: str) -> float:
    gold_toks = get_tokens(a_gold)
    pred_toks = get_tokens(a_pred)
    if not gold_toks or not pred_toks:
        # If either is no-answer, F1 is 1 if they agree, 0 otherwise.
        return float(gold_toks == pred_toks)
    common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_toks)
    recall = num_same / len(gold_toks)
    return (2 * precision * recall) / (precision + recall)


def _gold_answers(answers: list[str]) -> list[str]:
    """Golds whose normalised text is non-empty; ``[""]`` when none (unanswerable)."""
    golds = [a for a in answers if normalize_answer(a)]
    return golds or [""]


def _make_eval_dict(
    exact_scores: Mapping[str, float], f1_scores: Mapping[str, float], qid_list: list[str]
) -> dict[str, float]:
    total = len(qid_list)
    return {
        "exact": 100.0 * sum(exact_scores[k] for k in qid_list) / total,
        "f1": 100.0 * sum(f1_scores[k] for k in qid_list) / total,
        "total": total,
    }


def squad_v2_metrics(gold: Mapping[str, list[str]], predictions: Mapping[str, str]) -> dict[str, float]:
    """SQuAD v2.0 metrics on a 0-100 scale, keyed like the official script's output.

    ``gold`` maps id -> gold answer texts (``[]`` for unanswerable). ``predictions`` maps
    id -> predicted text (``""`` = no answer); predictions for ids not in ``gold`` are ignored,
    and a gold id missing from ``predictions`` is scored as the empty prediction ``""`` (the
    official script skips it instead; we log a warning with the count). Returns ``exact``,
    ``f1``, ``total`` and ``HasAns_*``/``NoAns_*`` (only for non-empty subsets).
    """
    if not gold:
        raise ValueError("squad_v2_metrics: gold is empty, there is nothing to score")

    missing = [qid for qid in gold if qid not in predictions]
    if missing:
        logger.warning(
            "%d of %d gold ids have no prediction; scored as the empty answer (e.g. %s)",
            len(missing), len(gold), missing[0],
        )
    preds = {qid: predictions.get(qid, "") for qid in gold}
    qid_to_has_ans = {qid: bool(answers) for qid, answers in gold.items()}
    exact_raw: dict[str, float] = {}
    f1_raw: dict[str, float] = {}
    for qid, answers in gold.items():
        golds = _gold_answers(answers)
        exact_raw[qid] = max(compute_exact(a, preds[qid]) for a in golds)
        f1_raw[qid] = max(compute_f1(a, preds[qid]) for a in golds)

    out = _make_eval_dict(exact_raw, f1_raw, list(gold))
    has_ans_qids = [k for k, v in qid_to_has_ans.items() if v]
    no_ans_qids = [k for k, v in qid_to_has_ans.items() if not v]
    for prefix, qids in (("HasAns", has_ans_qids), ("NoAns", no_ans_qids)):
        if qids:
            for key, value in _make_eval_dict(exact_raw, f1_raw, qids).items():
                out[f"{prefix}_{key}"] = value
    return out


def gold_from_records(records: Iterable[QARecord]) -> dict[str, list[str]]:
    """id -> gold answer texts; unanswerable records map to ``[]``."""
    return {r.id: ([] if r.is_impossible else r.answer_texts) for r in records}
