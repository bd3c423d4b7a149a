"""The scoring contract against faithful copies of the official SQuAD scripts (thousands of random
cases), and the hand cases where the old contract went wrong."""
from __future__ import annotations

import numpy as np
import pytest

from metaqa.data.features import featurize
from metaqa.data.records import Answer, QARecord
from metaqa.evaluation.postprocess import SpanPrediction, postprocess
from metaqa.evaluation.scoring import f1_interval, oracle_thresholds, score, score_texts
from metaqa.evaluation.squad_v1 import squad_v1_metrics
from metaqa.evaluation.squad_v2 import normalize_answer
from tests.evaluation import official_squad as official

WORDS = ["the", "a", "an", "Cabinet", "office", "Office.", "London", "1843", "of", "(punct!)", "Ada", "—", "", "The"]


def random_text(rng, max_words=4) -> str:
    return " ".join(rng.choice(WORDS, size=rng.integers(0, max_words + 1)))


def random_case(rng, n: int, unanswerable: float, clean: bool = False):
    """(records, SQuAD dataset, span texts, decoder texts, diffs) for n random questions; `clean`:
    no gold or span text that normalises to "" (where the official sweep's accounting is off)."""
    records, qas, spans, texts, diffs = [], [], {}, {}, {}
    for i in range(n):
        qid = f"q{i}"
        impossible = rng.random() < unanswerable
        golds = [] if impossible else [random_text(rng) or "Ada" for _ in range(rng.integers(1, 4))]
        if clean:
            golds = [g if normalize_answer(g) else "Ada" for g in golds]
        context = " ".join(golds) + " filler"
        answers = tuple(Answer(g, context.index(g)) for g in golds)
        records.append(QARecord(qid, f"t{i % 3}", context, "q?", answers, impossible))
        qas.append({"id": qid, "answers": [{"text": g} for g in golds]})
        spans[qid] = random_text(rng)
        if clean and not normalize_answer(spans[qid]):
            spans[qid] = "London"
        diffs[qid] = float(rng.normal(0, 3))  # distinct with probability 1
        texts[qid] = "" if diffs[qid] > 0 else spans[qid]
    return records, [{"paragraphs": [{"qas": qas}]}], spans, texts, diffs


def predictions(records, spans, texts, diffs):
    return [SpanPrediction(r.id, texts[r.id], spans[r.id], 0, 1, 0.0, diffs[r.id]) for r in records]


def test_v1_matches_the_official_v11_script_on_random_cases():
    rng = np.random.default_rng(0)
    for _ in range(150):  # 150 x 20 = 3,000 questions
        records, dataset, spans, _, _ = random_case(rng, 20, unanswerable=0.0)
        preds = {qid: t for qid, t in spans.items() if rng.random() > 0.05}  # a few unanswered
        ours = squad_v1_metrics({r.id: list(r.answer_texts) for r in records}, preds)
        theirs = official.v1_evaluate(dataset, preds)
        assert ours["exact"] == pytest.approx(theirs["exact_match"]) and ours["f1"] == pytest.approx(theirs["f1"])


def test_v2_headline_matches_the_official_v20_script_on_random_cases():
    rng = np.random.default_rng(1)
    for _ in range(150):
        records, dataset, _, texts, _ = random_case(rng, 20, unanswerable=0.4)
        ours = score_texts(records, texts, version_2=True)
        theirs = official.v2_main(dataset, texts)  # no na_prob file: the texts are scored as given
        assert set(ours) == set(theirs)
        for key, value in theirs.items():
            assert ours[key] == pytest.approx(value), key


def test_oracle_matches_the_official_sweep_over_unblanked_spans():
    """best_* = the official find_best_thresh given the un-blanked spans and null − best as na_prob;
    the threshold agrees whenever answering something beats answering nothing."""
    rng = np.random.default_rng(2)
    for _ in range(150):
        records, dataset, spans, texts, diffs = random_case(rng, 20, unanswerable=0.4)
        ours, _ = score(records, predictions(records, spans, texts, diffs), version_2=True)
        theirs = official.v2_main(dataset, spans, na_probs=diffs)
        assert ours["best_f1"] == pytest.approx(theirs["best_f1"])
        assert ours["best_exact"] == pytest.approx(theirs["best_exact"])
        no_answer_f1 = 100.0 * sum(r.is_impossible for r in records) / len(records)
        if ours["best_f1"] > no_answer_f1:
            assert ours["best_f1_thresh"] == pytest.approx(theirs["best_f1_thresh"])
        assert ours["f1"] == pytest.approx(official.v2_main(dataset, texts)["f1"])  # headline: the decoder's texts


def test_oracle_threshold_reproduces_best_f1_through_the_decoder_both_directions():
    rng = np.random.default_rng(3)
    for _ in range(50):
        records, _, spans, _, diffs = random_case(rng, 30, unanswerable=0.4, clean=True)
        best = oracle_thresholds({r.id: [] if r.is_impossible else list(r.answer_texts) for r in records}, spans, diffs)
        redecoded = {qid: spans[qid] if diffs[qid] <= best["best_f1_thresh"] else "" for qid in spans}
        assert score_texts(records, redecoded, True)["f1"] == pytest.approx(best["best_f1"])


def test_best_threshold_may_lie_above_the_decoders_threshold():
    """The old sweep ran over texts the decoder had already blanked, so it could only lower the
    threshold. A correct span blanked at diff 3 (decoder threshold 0) is found at threshold 3."""
    r = QARecord("h", "t", "Ada wrote it.", "Who?", (Answer("Ada", 0),))
    n = QARecord("n", "t", "Ada wrote it.", "When?", (), True)
    preds = [SpanPrediction("h", "", "Ada", 0, 3, 1.0, 4.0),  # diff 3 > 0: blanked by the decoder
             SpanPrediction("n", "", "wrote", 4, 9, 1.0, 9.0)]  # diff 8: rightly blanked
    m, _ = score([r, n], preds, version_2=True)
    assert m["f1"] == pytest.approx(50.0)
    assert m["best_f1"] == pytest.approx(100.0) and m["best_f1_thresh"] == pytest.approx(3.0)
    below = [SpanPrediction("h", "Ada", "Ada", 0, 3, 5.0, 1.0), SpanPrediction("n", "wrote", "wrote", 4, 9, 5.0, 2.0)]
    m, _ = score([r, n], below, version_2=True)  # both diffs negative: the best threshold is between them
    assert m["best_f1"] == pytest.approx(100.0) and -4.0 <= m["best_f1_thresh"] < -3.0


def test_v1_correct_span_under_a_dominant_cls_logit_scores_100(tokenizer):
    """SQuAD v1 has no null handling: the official v1.1 script gives 100 to a correct span, however
    much the CLS logit exceeds it (the old contract passed null − best as a probability: 0)."""
    r = QARecord("v1", "t", "Ada Lovelace wrote the first program.", "Who wrote the first program?",
                 (Answer("Ada Lovelace", 0),))
    features = featurize(tokenizer, [r], 64, 16, with_labels=True)
    start = np.full((1, len(features.offsets[0])), -10.0, dtype=np.float32)
    end = start.copy()
    start[0, features.start_positions[0]] = end[0, features.end_positions[0]] = 5.0
    start[0, 0] = end[0, 0] = 50.0  # "no answer" is far more likely to the model
    preds = postprocess([r], features, start, end, version_2=False)
    assert preds[0].text == "Ada Lovelace" and preds[0].score_diff == pytest.approx(90.0)
    m, per_theme = score([r], preds, version_2=False)
    assert m == {"exact": 100.0, "f1": 100.0, "total": 1} and per_theme["t"]["f1"] == 100.0


def test_a_null_threshold_above_one_is_not_overridden_by_the_metric():
    """decode.null_threshold=2: the decoder answers at diff 1.5, and the metric scores that answer."""
    r = QARecord("h", "t", "Ada wrote it.", "Who?", (Answer("Ada", 0),))
    preds = [SpanPrediction("h", "Ada", "Ada", 0, 3, 1.0, 2.5)]  # diff 1.5 <= 2: answered
    assert score([r], preds, version_2=True)[0]["f1"] == pytest.approx(100.0)


def test_v1_refuses_unanswerable_questions_with_the_fix():
    r = QARecord("n", "t", "Ada wrote it.", "When?", (), True)
    with pytest.raises(ValueError, match="version_2=true"):
        score([r], [SpanPrediction("n", "", "", -1, -1, -np.inf, 0.0)], version_2=False)


def test_f1_interval_brackets_the_f1_of_the_texts():
    records = [QARecord(f"q{i}", "t", "Ada wrote it.", "Who?", (Answer("Ada", 0),), False) for i in range(20)]
    texts = {f"q{i}": "Ada" if i % 2 else "wrote" for i in range(20)}
    f1 = score_texts(records, texts, False)["f1"]
    low, high = f1_interval(records, texts, False)
    assert f1 == 50.0 and low < f1 < high
    assert f1_interval(records, {r.id: "Ada" for r in records}, False) == (100.0, 100.0)  # no spread, no width
