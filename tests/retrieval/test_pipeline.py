"""Retrieve-then-read with a tiny ONNX reader; decisions, early exit and calibration."""
import math

import pytest

from metaqa.evaluation.devrev import Outcome, answerability_auc, devrev_report, theme_score, time_factor
from metaqa.inference import OnnxPredictor
from metaqa.retrieval.index import ThemeIndex
from metaqa.retrieval.longdoc import SentenceFilter
from metaqa.retrieval.pipeline import (
    Candidate,
    PipelineAnswer,
    RetrieveThenRead,
    Thresholds,
    calibrate,
    decide,
)
from tests.export.conftest import reader_cfg
from tests.retrieval.conftest import BM25, OFF_TOPIC, PARAGRAPHS, QUESTIONS, THEMES, WINDOW


@pytest.fixture(scope="module")
def reader(tiny_onnx_dir):
    return OnnxPredictor(tiny_onnx_dir, threads=1, reader=reader_cfg(version_2=False))


@pytest.fixture(scope="module")
def pipe(reader):
    """BM25 without a minimum score: always reads the top 3."""
    return RetrieveThenRead(ThemeIndex.build(THEMES, {**BM25, "min_score": None}), reader, top_k=3)


def test_on_topic_question_reads_the_top_paragraphs_and_answers_from_one(pipe):
    pipe.thresholds = Thresholds("span")
    question, right = QUESTIONS[3]
    got = pipe.answer(question, "Mixed", "q3")
    assert got.hits[0].paragraph == right and len(got.candidates) == 3
    assert got.paragraph in [c.paragraph for c in got.candidates]
    assert got.answer and PARAGRAPHS[got.paragraph][got.start : got.end] == got.answer
    assert got.latency_ms > 0 and not got.early_exit


def test_off_topic_question_gets_no_paragraph(reader):
    pipe = RetrieveThenRead(ThemeIndex.build(THEMES, BM25), reader, top_k=3)  # min_score 0
    got = pipe.answer(OFF_TOPIC, "Mixed")
    assert (got.paragraph, got.answer, got.candidates, got.hits) == (None, "", [], [])
    assert pipe.answer(QUESTIONS[0][0], "Mixed").candidates  # an on-topic question is still read


def test_null_and_exit_thresholds(pipe):
    question = QUESTIONS[0][0]
    pipe.thresholds = Thresholds("margin", null_threshold=1e9)
    assert pipe.answer(question, "Mixed").paragraph is None  # nobody clears the bar: "no paragraph"
    pipe.thresholds = Thresholds("margin", exit_threshold=-1e9)
    exited = pipe.answer(question, "Mixed")
    assert exited.early_exit and len(exited.candidates) == 1 and exited.paragraph == exited.hits[0].paragraph
    assert len(pipe.answer(question, "Mixed", early_exit=False).candidates) == 3


def test_long_paragraphs_are_filtered_and_answers_map_back(reader):
    from tests.retrieval.test_longdoc import DOCUMENT

    themes = {"Rails": [DOCUMENT, "Trains run on rails."]}
    pipe = RetrieveThenRead(ThemeIndex.build(themes, BM25), reader, top_k=2, thresholds=Thresholds("span"),
                            sentence_filter=SentenceFilter(reader.tokenizer, WINDOW["max_seq_length"]))
    got = pipe.answer("Where does the treasure lie buried?", "Rails")
    assert got.paragraph == 0 and got.answer
    assert DOCUMENT[got.start : got.end] == got.answer  # offsets in the original long paragraph
    assert pipe._lengths[("Rails", 0)] > pipe.sentence_filter.budget("Where does the treasure lie buried?")


def cand(paragraph, score, text="x", null=0.0, rank=0):
    return Candidate(paragraph, rank, 1.0, text, 0, len(text), score, null)


def trace(*candidates):
    return PipelineAnswer("q", "?", "T", None, "", -1, -1, 0.0, [], list(candidates), False, 1.0)


def test_decide_picks_the_most_confident_candidate():
    cands = [cand(0, 2.0, null=1.0), cand(1, 5.0, null=6.0, rank=1), cand(2, 3.0, null=-1.0, rank=2)]
    assert decide(cands, Thresholds("span"))[0].paragraph == 1
    assert decide(cands, Thresholds("margin"))[0].paragraph == 2  # 3 - (-1) = 4 is the best margin
    assert decide(cands, Thresholds("margin", null_threshold=4.5)) == (None, 4.0)
    assert decide([cand(0, -math.inf)], Thresholds("span"))[0] is None


def test_calibration_separates_answerable_from_unanswerable():
    # Answerable questions: the right paragraph (0) with a confident right answer; unanswerable:
    # low confidence. The best null threshold lies between the two groups.
    traces = [trace(cand(0, 9.0 + i, "gold"), cand(1, 1.0, "bad", rank=1)) for i in range(5)]
    traces += [trace(cand(0, 2.0 + i * 0.1, "junk"), cand(1, 1.0, "junk", rank=1)) for i in range(5)]
    golds = [(0, ("gold",))] * 5 + [(None, ())] * 5
    thresholds, report = calibrate(traces, golds, kinds=["span"])
    assert 2.4 < thresholds.null_threshold < 9.0
    chosen = report["chosen"]
    assert chosen["objective"] == pytest.approx(2.0) and chosen["no_paragraph_rate"] == 0.5
    assert thresholds.read_k == 1  # the second paragraph never helps: read one, for free


def test_calibration_learns_whether_to_trust_the_reader_or_the_retriever():
    # The reader is more confident on the wrong second-ranked paragraph: only a rank penalty of
    # more than 2 logits per rank gets the right (first-ranked) paragraph chosen.
    traces = [trace(cand(0, 5.0, "gold"), cand(1, 7.0, "bad", rank=1)) for _ in range(4)]
    thresholds, report = calibrate(traces, [(0, ("gold",))] * 4, kinds=["span"], rank_penalties=[0.0, 1.0, 4.0])
    two = [r for r in report["grid"] if r["read_k"] == 2]
    assert [r["objective"] for r in two] == pytest.approx([0.0, 0.0, 2.0])
    assert thresholds.read_k == 1 and report["chosen"]["objective"] == pytest.approx(2.0)
    assert decide(traces[0].candidates, Thresholds("span", rank_penalty=4.0))[0].paragraph == 0


def test_calibration_reads_more_only_when_it_pays_and_exits_early_when_sure():
    # A: retrieval put the gold paragraph second, the reader finds it there. B: gold first, sure.
    a = [trace(cand(1, 3.0, "bad"), cand(0, 9.0, "gold", rank=1)) for _ in range(3)]
    b = [trace(cand(0, 10.0 + i, "gold"), cand(1, 2.0, "bad", rank=1)) for i in range(3)]
    thresholds, report = calibrate(a + b, [(0, ("gold",))] * 6, kinds=["span"], rank_penalties=[0.0])
    assert thresholds.read_k == 2 and report["chosen"]["objective"] == pytest.approx(2.0)
    assert 3.0 < thresholds.exit_threshold <= 10.0 and report["chosen"]["exit_rate"] == 0.5


def test_devrev_score_rule():
    assert time_factor(150) == 1.0 and time_factor(400) == 0.5
    assert theme_score(0.9, 0.8, 400) == pytest.approx(0.85)
    outcomes = [
        Outcome("a", "T1", 0, ("Paris",), 0, "Paris", 100.0, 0),  # right paragraph, right answer
        Outcome("b", "T1", None, (), None, "", 100.0, None),  # rightly "no paragraph"
        Outcome("c", "T2", 1, ("blue whale",), 2, "whale", 500.0, 1),  # wrong paragraph, F1 2/3
    ]
    report = devrev_report(outcomes)
    t1, t2 = report["per_theme"]["T1"], report["per_theme"]["T2"]
    assert (t1["para_acc"], t1["f1"], t1["theme_score"]) == (1.0, 1.0, 2.0)
    assert t2["f1"] == pytest.approx(2 / 3) and t2["theme_score"] == pytest.approx((0 + 2 / 3) * 200 / 500)
    overall = report["overall"]
    assert overall["para_acc"] == pytest.approx(2 / 3) and overall["recall_at_1"] == 0.5
    assert overall["recall_at_5"] == 1.0
    assert overall["theme_score"] == pytest.approx((2 * 2.0 + 1 * t2["theme_score"]) / 3)
    # intervals over questions: around the mean, none where every question scored the same
    assert overall["f1_ci_low"] < overall["f1"] < overall["f1_ci_high"] <= 1.0
    assert overall["para_acc_ci_low"] < overall["para_acc"] < overall["para_acc_ci_high"]
    assert t1["f1_ci_low"] == t1["f1_ci_high"] == 1.0


def test_answerability_auc():
    assert answerability_auc([True, True, False, False], [5.0, 4.0, 1.0, -math.inf]) == 1.0
    assert answerability_auc([True, False], [1.0, 2.0]) == 0.0
    assert answerability_auc([True, False, True, False], [1.0, 1.0, 1.0, 1.0]) == 0.5  # no signal
    assert math.isnan(answerability_auc([True, True], [1.0, 2.0]))
