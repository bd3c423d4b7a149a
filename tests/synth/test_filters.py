"""Roundtrip filter and negatives with real readers (a tiny random BERT, in PyTorch and ONNX):
the mechanics (overlap, threshold, reasons), not the quality of a random reader's answers."""
import math

import numpy as np
import pytest

from metaqa.config import ConfigError
from metaqa.data.records import Answer, QARecord
from metaqa.synth.filters import (
    Borrowed,
    NegativeSampler,
    QAReader,
    RoundtripFilter,
    confidence,
    spans_overlap,
    tfidf_similarity,
)
from tests.synth.conftest import PARAGRAPH

ANSWERS = ["Barack Obama", "Paris", "March 1998", "three", "$5 million", "Random House"]


def generated():
    return [QARecord(f"q{i}", "T", PARAGRAPH, f"Question {i} about {a.split()[0]}?",
                     (Answer(a, PARAGRAPH.index(a)),)) for i, a in enumerate(ANSWERS)]


def test_spans_overlap():
    assert spans_overlap(0, 5, 4, 9) and spans_overlap(4, 9, 0, 5) and spans_overlap(2, 3, 0, 10)
    assert not spans_overlap(0, 5, 5, 9) and not spans_overlap(5, 9, 0, 5)


@pytest.mark.parametrize("kind", ["pytorch", "onnx"])
def test_roundtrip_threshold_and_overlap(kind, reader_dir, onnx_dir):
    reader = QAReader(reader_dir if kind == "pytorch" else onnx_dir, batch_size=4, max_seq_length=128,
                      doc_stride=32)
    assert reader.kind == kind
    records = generated()
    predictions = reader.predict(records)
    overlaps = [spans_overlap(p.start, p.end, r.answers[0].start, r.answers[0].start + len(r.answers[0].text))
                for r, p in zip(records, predictions)]

    keep_all = RoundtripFilter(reader, threshold=-math.inf).check(records)
    assert [v.kept for v in keep_all] == overlaps  # -inf: exactly the overlapping spans survive
    assert all(v.reason == "roundtrip_no_overlap" for v in keep_all if not v.kept)
    assert [v.reader_answer for v in keep_all] == [p.text for p in predictions]

    drop_all = RoundtripFilter(reader, threshold=math.inf).check(records)
    assert not any(v.kept for v in drop_all)
    assert [v.reason for v in drop_all] == ["roundtrip_low_score" if o else "roundtrip_no_overlap" for o in overlaps]

    # a threshold between the scores splits the overlapping ones by confidence
    margins = sorted(confidence(p) for p, o in zip(predictions, overlaps) if o)
    if margins:
        middle = RoundtripFilter(reader, threshold=margins[len(margins) // 2]).check(records)
        assert sum(v.kept for v in middle) == len(margins) - len(margins) // 2


def test_roundtrip_on_gold_spans_keeps_what_the_reader_itself_answers(reader_dir):
    """Records whose gold answer IS the reader's own answer always pass at threshold -inf."""
    reader = QAReader(reader_dir, max_seq_length=128, doc_stride=32)
    base = generated()
    own = [QARecord(r.id, r.theme, r.context, r.question, (Answer(p.text, p.start),))
           for r, p in zip(base, reader.predict(base)) if p.text.strip()]
    assert own and all(v.kept for v in RoundtripFilter(reader, -math.inf).check(own))


def test_reader_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="reader"):
        QAReader(tmp_path / "missing")
    with pytest.raises(ConfigError, match=r"config `reader_dir`: .* \(no config.json\)"):
        QAReader(tmp_path)
    with pytest.raises(ConfigError, match="roundtrip.score"):
        RoundtripFilter(None, 0.0, "probability")
    with pytest.raises(ConfigError, match="negatives.judge"):
        NegativeSampler(judge="reader")


def test_tfidf_similarity():
    sims = tfidf_similarity(["Who visited Paris in 1998?", "What is the boiling point of mercury?", "the a of"],
                            [PARAGRAPH, PARAGRAPH, PARAGRAPH])
    assert sims[0] > 0.1 > sims[1] == 0.0 and sims[2] == 0.0


def test_negatives_tfidf_judge_and_reasons():
    sampler = NegativeSampler(per_paragraph=2, judge="auto")  # no reader: TF-IDF
    assert sampler.judge_by == "tfidf"
    unrelated = Borrowed("What is the boiling point of mercury?", "357 degrees", "p2")
    similar = Borrowed("Who visited Paris with advisers from the United Nations?", "Bill Clinton", "p3")
    answer_here = Borrowed("What did the trip cost?", "$5 million", "p4")
    items = [(b, QARecord(f"n{i}", "T", PARAGRAPH, b.question, (), True))
             for i, b in enumerate([unrelated, similar, answer_here])]
    verdicts = sampler.judge(items)
    assert [v.kept for v in verdicts] == [True, False, False]
    assert [v.reason for v in verdicts] == [None, "negative_tfidf_similar", "negative_answer_in_paragraph"]


def test_negatives_reader_judge(reader_dir):
    reader = QAReader(reader_dir, max_seq_length=128, doc_stride=32)
    b = Borrowed("What is the boiling point of mercury?", "357 degrees", "p2")
    item = [(b, QARecord("n0", "T", PARAGRAPH, b.question, (), True))]
    margin = confidence(reader.predict([item[0][1]])[0])
    below = NegativeSampler(reader=reader, reader_max_margin=margin + 1).judge(item)[0]
    above = NegativeSampler(reader=reader, reader_max_margin=margin - 1).judge(item)[0]
    assert below.kept and not above.kept and above.reason == "negative_reader_answers"


def test_negative_pool_borrows_only_from_other_paragraphs_of_the_theme():
    sampler = NegativeSampler(per_paragraph=3, pool_size=4)
    sampler.remember("A", [Borrowed(f"q{i}?", "x", f"p{i % 2}") for i in range(6)])
    sampler.remember("B", [Borrowed("b?", "y", "p9")])
    assert len(sampler.pools["A"]) == 4  # bounded
    picked = sampler.propose("A", "p0", np.random.default_rng(0))
    assert picked and all(b.source == "p1" for b in picked)
    assert sampler.propose("C", "p0", np.random.default_rng(0)) == []
    assert sampler.propose("A", "p0", np.random.default_rng(1)) == sampler.propose("A", "p0", np.random.default_rng(1))
