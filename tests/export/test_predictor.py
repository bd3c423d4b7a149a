"""OnnxPredictor over an fp32 export of the tiny reader: same answers as the PyTorch path."""
import numpy as np
import pytest

from metaqa.data.records import QARecord
from metaqa.export.io import prediction_row
from metaqa.inference import OnnxPredictor, ReaderConfig, TorchPredictor, load_predictor
from tests.export.conftest import reader_cfg
from tests.export.conftest import torch_answers as _torch_answers


@pytest.fixture(scope="module")
def predictor(fp32_dir):
    return OnnxPredictor(fp32_dir, threads=1, reader=reader_cfg())


def torch_answers(reader, tokenizer, records, **decode):
    return _torch_answers(reader[1], tokenizer, records, **decode)


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
    never = OnnxPredictor(predictor.model_dir, reader=reader_cfg(null_threshold=-1e6))
    got = never.predict(sample_records[:4])
    assert [p.text for p in got] == [""] * 4
    assert all(p.span_text for p in got)  # the best span is kept for the oracle threshold sweep
    assert_same(got, torch_answers(reader, tokenizer, sample_records[:4], null_threshold=-1e6))
    row = prediction_row(got[0])
    assert row["answer"] == "" and row["start"] is None and row["end"] is None
    assert isinstance(row["null_score"], float)
    always = OnnxPredictor(predictor.model_dir, reader=reader_cfg(version_2=False))
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
        OnnxPredictor(fp32_dir, reader=ReaderConfig(max_seq_length=128, doc_stride=100))


def test_one_engine_both_backends_and_the_serving_path(fp32_dir, reader, tokenizer, sample_records):
    """TorchPredictor and OnnxPredictor share featurize → batching → decode: the same answers
    batched, one at a time (`answer_each`) and per `answer` call; `load_predictor` picks the backend."""
    torch_p = TorchPredictor(reader[1], tokenizer, reader_cfg())
    onnx_p = load_predictor(fp32_dir, reader_cfg(), threads=1)
    assert isinstance(onnx_p, OnnxPredictor) and isinstance(load_predictor(reader[0], reader_cfg()), TorchPredictor)
    ref = torch_p.predict(sample_records, batch_size=3)
    assert_same(torch_p.answer_each(sample_records), ref)
    assert_same(onnx_p.answer_each(sample_records), ref)
    assert_same([onnx_p.answer(r.question, r.context, r.id) for r in sample_records[:3]], ref[:3])


def test_the_serving_path_never_batches_across_questions(fp32_dir, sample_records):
    """`answer_each` runs the graph once per question, on that question's windows only."""
    predictor = OnnxPredictor(fp32_dir, threads=1, reader=reader_cfg())
    features = predictor.featurize(sample_records)
    seen, run = [], predictor.run
    predictor.run = lambda batch: seen.append(batch["input_ids"].shape[0]) or run(batch)
    predictor.logits_each(features)
    per_question = np.bincount(features.example_index)
    assert seen == per_question.tolist()  # one run per question, of exactly its windows


def test_dynamic_int8_reads_a_question_alone_as_in_the_serving_path(reader, sample_records, tmp_path):
    """Dynamic int8 quantises activations per run, so batch-mates can move a question's logits;
    the serving path (alone) is what the gate scores and the bench times."""
    from omegaconf import OmegaConf

    from metaqa.config import CONF_DIR
    from metaqa.export.convert import build_variant

    spec = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "export" / "int8_dynamic.yaml"))
    int8 = OnnxPredictor(build_variant(reader[0], spec, tmp_path / "int8"), threads=1, reader=reader_cfg())
    alone = [int8.answer(r.question, r.context, r.id) for r in sample_records]
    assert_same(int8.answer_each(sample_records), alone)
