"""Per-question scores average to the official figures; bootstrap intervals cover what they should."""
import numpy as np
import pytest

from metaqa.data.records import Answer, QARecord
from metaqa.evaluation.postprocess import SpanPrediction
from metaqa.evaluation.scoring import per_question, score
from metaqa.evaluation.stats import bootstrap_mean_ci, paired_diff_ci


def records():
    return [QARecord("a", "t", "Ada wrote the book.", "Who?", (Answer("Ada", 0),)),
            QARecord("b", "t", "Ada wrote the book.", "What?", (Answer("the book", 10),)),
            QARecord("c", "t", "Ada wrote the book.", "When?", (), True)]


def pred(qid, text):
    return SpanPrediction(qid, text, text, 0, len(text), 1.0, 0.0)


@pytest.mark.parametrize("version_2", [True, False])
def test_per_question_means_are_the_official_scores(version_2):
    recs = records() if version_2 else records()[:2]
    preds = [pred("a", "Ada"), pred("b", "book"), pred("c", "")][: len(recs)]
    per = per_question(recs, preds, version_2)
    overall, _ = score(recs, preds, version_2)
    assert np.mean([f for f, _ in per.values()]) == pytest.approx(overall["f1"])
    assert np.mean([e for _, e in per.values()]) == pytest.approx(overall["exact"])


def test_bootstrap_intervals():
    rng = np.random.default_rng(0)
    a = rng.normal(60, 20, size=(3, 400))
    mean, lo, hi = bootstrap_mean_ci(a)
    assert lo < mean < hi and hi - lo < 10
    same = paired_diff_ci(a, a)
    assert same == (0.0, 0.0, 0.0)
    better = paired_diff_ci(a + 3, a)
    assert better[0] == pytest.approx(3) and better[1] == pytest.approx(3)  # a constant shift: no spread
    noisy = paired_diff_ci(a + rng.normal(1, 5, size=a.shape), a)
    assert noisy[1] < 1 < noisy[2]
    with pytest.raises(ValueError):
        paired_diff_ci(a, a[:, :10])
