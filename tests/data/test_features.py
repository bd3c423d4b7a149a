import numpy as np

from metaqa.data.features import NO_OFFSET, FeatureDataset, featurize
from metaqa.data.formats import read_squad_json
from metaqa.data.records import Answer, QARecord
from metaqa.evaluation.squad_v2 import normalize_answer
from tests.conftest import shared


def rec(context, question, answer=None, rid="r"):
    if answer is None:
        return QARecord(rid, "t", context, question, (), True)
    return QARecord(rid, "t", context, question, (Answer(answer, context.index(answer)),), False)


def decode(record, features, f):
    s, e = features.start_positions[f], features.end_positions[f]
    off = features.offsets[f]
    return record.context[off[s, 0] : off[e, 1]]


def test_labels_decode_to_answer_and_offsets_mark_context_only(tokenizer):
    r = rec("The Eiffel Tower was finished in 1889 by Gustave Eiffel's company.", "When was it finished?", "1889")
    feats = featurize(tokenizer, [r])
    assert len(feats) == 1
    assert decode(r, feats, 0) == "1889"
    seq_ids = tokenizer(r.question, r.context).sequence_ids()
    in_context = feats.offsets[0][:, 0] != NO_OFFSET
    assert in_context.tolist() == [s == 1 for s in seq_ids]


def test_unanswerable_and_out_of_window_answers_point_at_cls(tokenizer):
    filler = " ".join(f"word{i}" for i in range(300))
    r = rec(filler + " The treasure is buried under the old oak tree.", "Where is the treasure?", "under the old oak tree")
    feats = featurize(tokenizer, [r, rec(filler, "Where is it?", None, "imp")], max_seq_length=128, doc_stride=48)
    mine = np.flatnonzero(feats.example_index == 0)
    assert len(mine) > 3  # several windows
    labelled = [f for f in mine if feats.start_positions[f] != 0]
    assert labelled, "some window must contain the answer"
    assert all(decode(r, feats, f) == "under the old oak tree" for f in labelled)
    unlabelled = [f for f in mine if feats.start_positions[f] == 0]
    assert all(feats.end_positions[f] == 0 for f in unlabelled)
    imp = np.flatnonzero(feats.example_index == 1)
    assert (feats.start_positions[imp] == 0).all() and (feats.end_positions[imp] == 0).all()
    # windows overlap by doc_stride tokens and never exceed max_seq_length
    assert max(len(ids) for ids in feats.encodings["input_ids"]) <= 128


def test_collate_pads_to_longest(tokenizer):
    feats = featurize(tokenizer, [rec("Short one.", "What?", "Short"), rec("A much longer context " * 5 + "end.", "Which?", "end")])
    ds = FeatureDataset(feats, tokenizer.pad_token_id)
    batch = ds.collate([ds[0], ds[1]])
    width = max(len(x) for x in feats.encodings["input_ids"])
    assert batch["input_ids"].shape == (2, width)
    assert batch["attention_mask"][0].sum() == len(feats.encodings["input_ids"][0])
    assert batch["start_positions"].tolist() == feats.start_positions.tolist()


def test_labels_decode_on_squad_v11_dev(tokenizer):
    """≥ 99% of answerable SQuAD v1.1 dev labels decode back to the gold answer text."""
    records = read_squad_json(shared("squad/dev-v1.1.json")).records
    feats = featurize(tokenizer, records, max_seq_length=384, doc_stride=128)
    ok = {}
    for f in range(len(feats)):
        i = int(feats.example_index[f])
        if feats.start_positions[f] == 0:
            ok.setdefault(i, False)
            continue
        got = normalize_answer(decode(records[i], feats, f))
        ok[i] = ok.get(i, False) or got == normalize_answer(records[i].answers[0].text)
    rate = sum(ok.values()) / len(records)
    assert len(ok) == len(records) == 10570
    assert rate >= 0.99, rate
