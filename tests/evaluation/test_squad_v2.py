"""Hand-computed cases for the SQuAD v2.0 metric port (expected numbers derived in comments)."""
from __future__ import annotations

import logging

import pytest

from metaqa.data.records import Answer, QARecord
from metaqa.evaluation.squad_v2 import (
    compute_exact,
    compute_f1,
    get_tokens,
    gold_from_records,
    normalize_answer,
    squad_v2_metrics,
)


# --------------------------------------------------------------------------- normalisation
@pytest.mark.parametrize(
    "raw, expected",
    [
        # lower -> drop punctuation -> drop articles -> fold whitespace
        ("  The  Cabinet, Office! ", "cabinet office"),
        ("An apple a day", "apple day"),
        # articles only as whole words: "theatre", "another", "banana" survive
        ("the theatre and another banana", "theatre and another banana"),
        # punctuation removed *before* articles: "the-end" -> "theend" (kept, not an article)
        ("The-End.", "theend"),
        # "a.b." -> "ab"; tabs/newlines fold to one space
        ("A.B.\t\nC", "ab c"),
        # only string.punctuation (ASCII) is removed: the em dash stays, like the official script
        ("Café—Bar", "café—bar"),
        ("The", ""),
        ("", ""),
    ],
)
def test_normalize_answer(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


def test_get_tokens() -> None:
    assert get_tokens("") == []
    assert get_tokens("the") == []
    assert get_tokens("The Cabinet  Office.") == ["cabinet", "office"]


# --------------------------------------------------------------------------- EM / F1
def test_compute_exact() -> None:
    assert compute_exact("The Cabinet Office", "cabinet office.") == 1
    assert compute_exact("The Cabinet Office", "Cabinet") == 0
    assert compute_exact("", "") == 1
    assert compute_exact("", "the") == 1  # "the" normalises to ""
    assert compute_exact("", "London") == 0
    assert isinstance(compute_exact("a", "b"), int)


def test_compute_f1_partial_overlap() -> None:
    # gold [cabinet, office], pred [cabinet]: P = 1/1, R = 1/2, F1 = 2*0.5/1.5 = 0.6667
    assert compute_f1("the Cabinet Office", "Cabinet") == pytest.approx(2 / 3)
    # gold [x, y, y, z], pred [y, y, y]: overlap min(2,3) = 2 -> P = 2/3, R = 2/4
    # F1 = 2*(1/3)/(7/6) = 4/7 = 0.5714
    assert compute_f1("x y y z", "y y y") == pytest.approx(4 / 7)
    assert compute_f1("Paris", "London") == 0.0


def test_compute_f1_empty_sides() -> None:
    # either side empty: F1 = 1 only when both are empty
    assert compute_f1("", "") == 1.0
    assert compute_f1("", "London") == 0.0
    assert compute_f1("London", "") == 0.0
    assert compute_f1("", "the .") == 1.0  # prediction normalises to nothing


# --------------------------------------------------------------------------- full metric
GOLD = {
    "q1": ["the Cabinet Office"],          # answerable
    "q2": ["Paris", "the city of Paris"],  # answerable, two golds
    "q3": [],                              # unanswerable
    "q4": [],                              # unanswerable
}
PREDS = {"q1": "Cabinet", "q2": "Paris city", "q3": "", "q4": "London"}
# Raw scores:
#   q1: EM 0, F1 2/3                    (P=1, R=1/2)
#   q2: EM 0; F1 vs "paris" = 2/3 (P=1/2, R=1); vs [city, of, paris] = 0.8 (P=1, R=2/3) -> max 0.8
#   q3: "" vs [""] -> EM 1, F1 1
#   q4: "London" vs [""] -> EM 0, F1 0


def test_single_unanswerable_only_empty_is_right() -> None:
    for pred, score in (("", 100.0), ("the", 100.0), ("London", 0.0)):
        m = squad_v2_metrics({"q": []}, {"q": pred})
        assert m["exact"] == score and m["f1"] == score
        assert m["NoAns_total"] == 1 and "HasAns_total" not in m


def test_multiple_golds_take_max() -> None:
    m = squad_v2_metrics({"q2": GOLD["q2"]}, {"q2": "Paris city"})
    assert m["exact"] == 0.0
    assert m["f1"] == pytest.approx(80.0)  # from the second gold, not 66.67 from the first
    m = squad_v2_metrics({"q2": GOLD["q2"]}, {"q2": "city of Paris"})
    assert m["exact"] == 100.0 and m["f1"] == 100.0


def test_partial_overlap_metric_scale() -> None:
    m = squad_v2_metrics({"q1": ["the Cabinet Office"]}, {"q1": "Cabinet"})
    assert m["exact"] == 0.0
    assert m["f1"] == pytest.approx(66.6667, abs=1e-3)


def test_has_ans_no_ans_split() -> None:
    m = squad_v2_metrics(GOLD, PREDS)
    # exact = 100 * (0 + 0 + 1 + 0) / 4 = 25
    # f1    = 100 * (2/3 + 0.8 + 1 + 0) / 4 = 61.667
    assert m["exact"] == pytest.approx(25.0)
    assert m["f1"] == pytest.approx(100 * (2 / 3 + 0.8 + 1) / 4)
    assert m["total"] == 4
    # HasAns (q1, q2): exact 0, f1 = 100 * (2/3 + 0.8) / 2 = 73.333
    assert m["HasAns_exact"] == 0.0
    assert m["HasAns_f1"] == pytest.approx(73.3333, abs=1e-3)
    assert m["HasAns_total"] == 2
    # NoAns (q3, q4): one right out of two -> 50 / 50
    assert m["NoAns_exact"] == 50.0 and m["NoAns_f1"] == 50.0
    assert m["NoAns_total"] == 2
    # the metric applies no threshold and has no oracle: best_* is metaqa.evaluation.scoring's
    assert not any(k.startswith("best_") for k in m)


def test_subset_keys_only_when_non_empty() -> None:
    m = squad_v2_metrics({"a": ["x"], "b": ["y"]}, {"a": "x", "b": "z"})
    assert m == {"exact": 50.0, "f1": 50.0, "total": 2,
                 "HasAns_exact": 50.0, "HasAns_f1": 50.0, "HasAns_total": 2}


def test_missing_prediction_counts_as_empty(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="metaqa.evaluation.squad_v2"):
        # q2 unanswerable and missing -> scored as "" -> right: exact 100 over 2
        m = squad_v2_metrics({"q1": ["x"], "q2": []}, {"q1": "x"})
    assert m["exact"] == 100.0 and m["total"] == 2
    assert "1 of 2 gold ids have no prediction" in caplog.text
    # answerable and missing -> wrong: exact 50 over 2 (official would give 100 over 1)
    m = squad_v2_metrics({"q1": ["x"], "q2": ["y"]}, {"q1": "x", "extra": "ignored"})
    assert m["exact"] == 50.0 and m["total"] == 2


def test_gold_texts_normalising_to_empty() -> None:
    # official quirk kept: has-ans is decided by the raw list, the gold becomes [""]
    m = squad_v2_metrics({"q": ["The"]}, {"q": ""})
    assert m["exact"] == 100.0 and m["HasAns_total"] == 1 and "NoAns_total" not in m


def test_empty_gold_raises() -> None:
    with pytest.raises(ValueError):
        squad_v2_metrics({}, {})


# --------------------------------------------------------------------------- records
def _records() -> list[QARecord]:
    ctx = "The Cabinet Office met Arsenal."
    return [
        QARecord("r1", "gov", ctx, "Who met?", (Answer("The Cabinet Office", 0),)),
        QARecord("r2", "gov", ctx, "Who won?", is_impossible=True),
        QARecord("r3", "sport", ctx, "Which club?", (Answer("Arsenal", 23),)),
    ]


def test_gold_from_records() -> None:
    assert gold_from_records(_records()) == {
        "r1": ["The Cabinet Office"], "r2": [], "r3": ["Arsenal"],
    }
