import itertools

import numpy as np

from metaqa.data.features import featurize
from metaqa.data.records import Answer, QARecord
from metaqa.evaluation.postprocess import postprocess


def records():
    ctx = "Marie Curie won the Nobel Prize in Physics in 1903 and in Chemistry in 1911."
    return [
        QARecord("a", "t", ctx, "When did she win in physics?", (Answer("1903", ctx.index("1903")),)),
        QARecord("b", "t", ctx, "Who won?", (Answer("Marie Curie", 0),)),
    ]


def peaked(feats, f, s_tok, e_tok, width, null=0.0):
    start, end = np.full(width, -5.0), np.full(width, -5.0)
    start[s_tok] = end[e_tok] = 5.0
    start[0] = end[0] = null / 2
    return start, end


def brute_force(record, feats, start, end, n_best, max_len, null_threshold):
    """HF utils_qa.py semantics, written as plainly as possible."""
    best, best_span, null = -np.inf, None, np.inf
    for f in np.flatnonzero(feats.example_index == 0):
        off = feats.offsets[f]
        null = min(null, start[f, 0] + end[f, 0])
        n = len(off)
        s_idx = np.argsort(-start[f, :n], kind="stable")[:n_best]
        e_idx = np.argsort(-end[f, :n], kind="stable")[:n_best]
        for s, e in itertools.product(s_idx, e_idx):
            if off[s, 0] < 0 or off[e, 0] < 0 or e < s or e - s + 1 > max_len:
                continue
            if start[f, s] + end[f, e] > best:
                best, best_span = start[f, s] + end[f, e], (off[s, 0], off[e, 1])
    if best_span is None or null - best > null_threshold:
        return ""
    return record.context[best_span[0] : best_span[1]]


def test_picks_the_peaked_span_and_respects_null(tokenizer):
    recs = records()
    feats = featurize(tokenizer, recs, with_labels=True)
    width = max(len(o) for o in feats.offsets)
    rows = [peaked(feats, f, feats.start_positions[f], feats.end_positions[f], width) for f in range(len(feats))]
    start, end = np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])
    preds = postprocess(recs, feats, start, end)
    assert [p.text for p in preds] == ["1903", "Marie Curie"]
    assert preds[0].start == recs[0].answers[0].start
    # a strong CLS score makes it "no answer", unless the threshold forgives it
    start[:, 0] = end[:, 0] = 20.0
    assert [p.text for p in postprocess(recs, feats, start, end)] == ["", ""]
    assert postprocess(recs, feats, start, end, null_threshold=100.0)[0].text == "1903"
    assert postprocess(recs, feats, start, end, version_2=False)[1].text == "Marie Curie"


def test_max_answer_length_excludes_long_spans(tokenizer):
    recs = records()[:1]
    feats = featurize(tokenizer, recs)
    width = len(feats.offsets[0])
    ctx_tokens = np.flatnonzero(feats.offsets[0][:, 0] >= 0)
    start, end = peaked(feats, 0, ctx_tokens[0], ctx_tokens[-1], width)
    pred = postprocess(recs, feats, start[None], end[None], max_answer_length=3)[0]
    assert len(tokenizer.tokenize(pred.text)) <= 3


def test_matches_brute_force_reference_on_random_logits_with_many_windows(tokenizer):
    rng = np.random.default_rng(0)
    ctx = " ".join(f"token{i} is here." for i in range(120))
    recs = [QARecord(f"q{i}", "t", ctx, f"Question {i}?", (), True) for i in range(3)]
    feats = featurize(tokenizer, recs, max_seq_length=96, doc_stride=32, with_labels=False)
    assert len(feats) > 6
    width = max(len(o) for o in feats.offsets)
    for trial in range(5):
        start = rng.normal(size=(len(feats), width)).astype(np.float32)
        end = rng.normal(size=(len(feats), width)).astype(np.float32)
        preds = postprocess(recs, feats, start, end, n_best=5, max_answer_length=8, null_threshold=-1.0)
        for i, p in enumerate(preds):
            sub = np.flatnonzero(feats.example_index == i)
            from metaqa.data.features import Features
            one = Features({}, np.zeros(len(sub), dtype=int), [feats.offsets[f] for f in sub])
            assert p.text == brute_force(recs[i], one, start[sub], end[sub], 5, 8, -1.0), (trial, i)
