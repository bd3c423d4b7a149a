"""OnnxPredictor over an fp32 export of the tiny reader: same answers as the PyTorch path."""
import numpy as np
import pytest

from metaqa.data.records import QARecord
from metaqa.export.io import prediction_row
from metaqa.export.predictor import OnnxPredictor
from metaqa.models.inference import DecodeConfig, predict_records
from tests.export.conftest import WINDOW


@pytest.fixture(scope="module")
def predictor(fp32_dir):
    return OnnxPredictor(fp32_dir, threads=1, **WINDOW)


def torch_answers(reader, tokenizer, records, decode=None):
    return predict_records(reader[1], tokenizer, records, decode=decode, **WINDOW)


def assert_same(got, ref):
    assert [p.id for p in got] == [p.id for p in ref]
    assert [p.text for p in got] == [p.text for p in ref]
    assert [(p.start, p.end) for p in got] == [(p.start, p.end) for p in ref]
    np.testing.assert_allclose([p.score for p in got], [p.score for p in ref], atol=1e-4)
    np.testing.assert_allclose([p.null_score for p in got], [p.null_score for p in ref], atol=1e-4)


def test_batched_and_unbatched_answers_equal_pytorch(predictor, reader, tokenizer, sample_records):
    ref = torch_answers(reader, tokenizer, sample_records)
    assert any(p.text for p in ref)  # the comparison covers real spans, not only ""
    assert_same(predictor.predict(sample_records, batch_size=5), ref)
    assert_same([predictor.answer(r.question, r.context, r.id) for r in sample_records[:4]], ref[:4])


def test_long_context_reads_every_window(predictor, reader, tokenizer):
    sentences = [f"Station {i} of the northern line opened in {1900 + i} with {i * 3} platforms." for i in range(60)]
    context = " ".join(sentences) + " The treasure lies under the old oak tree behind the mill."
    record = QARecord("long", "t", context, "Where does the treasure lie?", is_impossible=True)
    assert len(predictor.featurize([record])) > 3
    got = predictor.answer(record.question, record.context, "long")
    assert_same([got], torch_answers(reader, tokenizer, [record]))
    if got.text:
        assert context[got.start : got.end] == got.text


def test_non_ascii_text(predictor, reader, tokenizer):
    context = ("Der Zürcher Komponist Jürg Wyttenbach schrieb „Exécution ajournée“ in Genève; "
               "東京 was his second home, naïve critics said ½ of it was café music. 🎻")
    records = [QARecord("u1", "t", context, "Wer schrieb „Exécution ajournée“?", is_impossible=True),
               QARecord("u2", "t", context, "東京は何ですか？", is_impossible=True)]
    got = predictor.predict(records)
    assert_same(got, torch_answers(reader, tokenizer, records))
    for p in got:  # character offsets into the original (non-ASCII) context
        assert p.text == "" or context[p.start : p.end] == p.text


def test_no_answer_and_always_answer(predictor, reader, tokenizer, sample_records):
    never = OnnxPredictor(predictor.model_dir, decode={"null_threshold": -1e6}, **WINDOW)
    got = never.predict(sample_records[:4])
    assert [p.text for p in got] == [""] * 4
    assert_same(got, torch_answers(reader, tokenizer, sample_records[:4], DecodeConfig(null_threshold=-1e6)))
    row = prediction_row(got[0])
    assert row["answer"] == "" and row["start"] is None and row["end"] is None
    assert isinstance(row["null_score"], float)
    always = OnnxPredictor(predictor.model_dir, decode=DecodeConfig(version_2=False), **WINDOW)
    assert all(p.text for p in always.predict(sample_records[:4]))


def test_empty_input_is_a_clear_error(predictor):
    with pytest.raises(ValueError, match="question is empty"):
        predictor.answer("", "Ada wrote the first program.")
    with pytest.raises(ValueError, match="context is empty"):
        predictor.answer("Who?", "   \n")
    with pytest.raises(ValueError, match=r"item 0: missing \['context'\]"):
        predictor.predict([{"question": "Who?"}])
    with pytest.raises(TypeError, match="question must be a string"):
        predictor.answer(None, "text")
    assert predictor.predict([]) == []


def test_mappings_are_answered_like_records(predictor):
    got = predictor.predict([{"id": "x", "question": "Who wrote it?", "context": "Ada Lovelace wrote it."},
                             {"question": "Where?", "context": "In London, in 1843."}])
    assert [p.id for p in got] == ["x", "1"]
    one = predictor.answer("Who wrote it?", "Ada Lovelace wrote it.", "x")
    assert (one.text, one.start) == (got[0].text, got[0].start)


def test_threads_and_bad_dirs(fp32_dir, tmp_path):
    assert OnnxPredictor(fp32_dir, threads=2).session.get_session_options().intra_op_num_threads == 2
    with pytest.raises(FileNotFoundError, match="metaqa export"):
        OnnxPredictor(tmp_path)
    with pytest.raises(ValueError, match="doc_stride"):
        OnnxPredictor(fp32_dir, max_seq_length=128, doc_stride=100)
