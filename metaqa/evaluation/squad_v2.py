"""SQuAD v2.0 metrics: a compact port of the official ``evaluate-v2.0.py``.

Why a port: ``evaluate.load("squad_v2")`` fetches the metric script from the Hugging Face hub,
and this project must run offline. The functions below follow the official script's semantics
line for line (normalisation, EM/F1, the HasAns/NoAns split, ``apply_no_ans_threshold`` and
``find_best_thresh``), so numbers are comparable with published SQuAD v2.0 results.

Deliberate differences from the official script, all at the edges:

* A gold id with no prediction is scored as if the prediction were ``""`` (the official script
  prints a warning and leaves the id out of the scores). We log one warning with the count.
* When ``na_probs`` is given but lacks an id, that id's no-answer probability is taken as 0.0
  (the official script raises ``KeyError``); a warning with the count is logged.
* An empty ``gold`` raises ``ValueError`` (the official script divides by zero).

Kept as in the official script: an example "has an answer" when its gold list is non-empty,
even if every gold text normalises to ``""`` (then its gold becomes ``[""]``); ``best_*`` is
computed from the raw scores (before ``na_prob_thresh``); ties in ``na_probs`` are swept in the
order of the ``na_probs`` mapping.
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


def _apply_no_ans_threshold(
    scores: Mapping[str, float],
    na_probs: Mapping[str, float],
    qid_to_has_ans: Mapping[str, bool],
    na_prob_thresh: float,
) -> dict[str, float]:
    new_scores: dict[str, float] = {}
    for qid, s in scores.items():
        pred_na = na_probs[qid] > na_prob_thresh
        new_scores[qid] = float(not qid_to_has_ans[qid]) if pred_na else s
    return new_scores


def _make_eval_dict(
    exact_scores: Mapping[str, float], f1_scores: Mapping[str, float], qid_list: list[str]
) -> dict[str, float]:
    total = len(qid_list)
    return {
        "exact": 100.0 * sum(exact_scores[k] for k in qid_list) / total,
        "f1": 100.0 * sum(f1_scores[k] for k in qid_list) / total,
        "total": total,
    }


def _find_best_thresh(
    preds: Mapping[str, str],
    scores: Mapping[str, float],
    na_probs: Mapping[str, float],
    qid_to_has_ans: Mapping[str, bool],
) -> tuple[float, float]:
    """Official sweep: start from predicting null everywhere, answer in order of na_prob."""
    num_no_ans = sum(1 for k in qid_to_has_ans if not qid_to_has_ans[k])
    cur_score: float = num_no_ans
    best_score: float = cur_score
    best_thresh = 0.0
    qid_list = sorted(na_probs, key=lambda k: na_probs[k])
    for qid in qid_list:
        if qid not in scores:
            continue
        if qid_to_has_ans[qid]:
            diff = scores[qid]
        else:
            diff = -1 if preds[qid] else 0
        cur_score += diff
        if cur_score > best_score:
            best_score = cur_score
            best_thresh = na_probs[qid]
    return 100.0 * best_score / len(scores), best_thresh


def squad_v2_metrics(
    gold: Mapping[str, list[str]],
    predictions: Mapping[str, str],
    na_probs: Mapping[str, float] | None = None,
    na_prob_thresh: float = 1.0,
) -> dict[str, float]:
    """SQuAD v2.0 metrics on a 0-100 scale, keyed like the official script's output.

    ``gold`` maps id -> gold answer texts (``[]`` for unanswerable). ``predictions`` maps
    id -> predicted text (``""`` = no answer); predictions for ids not in ``gold`` are ignored,
    and a gold id missing from ``predictions`` is scored as the empty prediction ``""`` (the
    official script skips it instead; we log a warning with the count). ``na_probs`` (id ->
    no-answer probability) enables ``best_exact``/``best_f1`` and their thresholds; when it is
    None every na_prob is 0.0. A prediction whose na_prob is above ``na_prob_thresh`` counts as
    empty. Returns ``exact``, ``f1``, ``total``, ``HasAns_*``/``NoAns_*`` (only for non-empty
    subsets) and, with ``na_probs``, ``best_exact``, ``best_exact_thresh``, ``best_f1``,
    ``best_f1_thresh``.
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

    if na_probs is None:
        na: dict[str, float] = {qid: 0.0 for qid in gold}
    else:
        no_prob = [qid for qid in gold if qid not in na_probs]
        if no_prob:
            logger.warning(
                "%d of %d gold ids have no na_prob; taken as 0.0 (e.g. %s)",
                len(no_prob), len(gold), no_prob[0],
            )
        # Caller's order first (it decides how ties are swept), then the missing ids.
        na = {qid: float(p) for qid, p in na_probs.items() if qid in gold}
        na.update({qid: 0.0 for qid in no_prob})

    qid_to_has_ans = {qid: bool(answers) for qid, answers in gold.items()}
    exact_raw: dict[str, float] = {}
    f1_raw: dict[str, float] = {}
    for qid, answers in gold.items():
        golds = _gold_answers(answers)
        exact_raw[qid] = max(compute_exact(a, preds[qid]) for a in golds)
        f1_raw[qid] = max(compute_f1(a, preds[qid]) for a in golds)

    exact_thr = _apply_no_ans_threshold(exact_raw, na, qid_to_has_ans, na_prob_thresh)
    f1_thr = _apply_no_ans_threshold(f1_raw, na, qid_to_has_ans, na_prob_thresh)

    out = _make_eval_dict(exact_thr, f1_thr, list(gold))
    has_ans_qids = [k for k, v in qid_to_has_ans.items() if v]
    no_ans_qids = [k for k, v in qid_to_has_ans.items() if not v]
    for prefix, qids in (("HasAns", has_ans_qids), ("NoAns", no_ans_qids)):
        if qids:
            for key, value in _make_eval_dict(exact_thr, f1_thr, qids).items():
                out[f"{prefix}_{key}"] = value

    if na_probs is not None:
        out["best_exact"], out["best_exact_thresh"] = _find_best_thresh(
            preds, exact_raw, na, qid_to_has_ans
        )
        out["best_f1"], out["best_f1_thresh"] = _find_best_thresh(
            preds, f1_raw, na, qid_to_has_ans
        )
    return out


def gold_from_records(records: Iterable[QARecord]) -> dict[str, list[str]]:
    """id -> gold answer texts; unanswerable records map to ``[]``."""
    return {r.id: ([] if r.is_impossible else r.answer_texts) for r in records}


def per_theme_metrics(
    records: Iterable[QARecord],
    predictions: Mapping[str, str],
    na_probs: Mapping[str, float] | None = None,
    na_prob_thresh: float = 1.0,
) -> dict[str, dict[str, float]]:
    """``squad_v2_metrics`` restricted to each theme's records, keyed by theme (no overall)."""
    by_theme: dict[str, list[QARecord]] = collections.defaultdict(list)
    for r in records:
        by_theme[r.theme].append(r)
    return {
        theme: squad_v2_metrics(gold_from_records(recs), predictions, na_probs, na_prob_thresh)
        for theme, recs in by_theme.items()
    }
