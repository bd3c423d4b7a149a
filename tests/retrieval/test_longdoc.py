"""Long documents: sentence spans, the filtered context and its exact offset mapping back."""
import pytest

from metaqa.data.records import Answer, QARecord
from metaqa.inference import OnnxPredictor
from metaqa.retrieval.longdoc import BudgetedReader, FilteredContext, SentenceFilter, read_filtered, sentence_spans
from tests.export.conftest import reader_cfg
from tests.retrieval.conftest import WINDOW

FILLER = [f"Station {i} of the northern line opened in {1900 + i} with {i % 4 + 1} platforms." for i in range(80)]
NEEDLE = "The treasure lies buried under the old oak tree behind the mill."
DOCUMENT = "  " + " ".join(FILLER[:50]) + "\n" + NEEDLE + "  " + " ".join(FILLER[50:]) + " "


def test_sentence_spans_are_trimmed_and_cover_every_word():
    text = 'I bought it.  It works!Great value.The end\nNew line "quoted." U.S. prices are 3.5 dollars'
    spans = sentence_spans(text)
    assert [text[s:e] for s, e in spans] == [
        "I bought it.", "It works!", "Great value.", "The end", 'New line "quoted."', "U.S.",
        "prices are 3.5 dollars"]
    assert "".join(text[s:e] for s, e in spans).replace(" ", "") == "".join(text.split())


def test_run_on_sentences_are_cut_into_pieces():
    text = " ".join(f"w{i}" for i in range(130))
    spans = sentence_spans(text, max_words=60)
    assert [len(text[s:e].split()) for s, e in spans] == [60, 60, 10]


def test_offset_mapping_back_to_the_document_is_exact():
    doc = "Alpha beta. Gamma delta.  Epsilon zeta. Eta theta. Iota kappa."
    spans = sentence_spans(doc)
    kept = FilteredContext.from_spans(doc, [spans[4], spans[1], spans[2]])  # out of order on purpose
    iota = doc.index("Iota")  # spans 1 and 2 merged (only whitespace between them), span 4 alone
    assert kept.runs == ((doc.index("Gamma"), doc.index("zeta.") + 5), (iota, iota + len("Iota kappa.")))
    assert kept.text == "Gamma delta.  Epsilon zeta. Iota kappa."
    for i, ch in enumerate(kept.text):
        if any(start <= i < start + (e - s) for start, (s, e) in zip(kept.starts, kept.runs)):
            s, e = kept.to_document(i, i + 1)
            assert (e - s, doc[s]) == (1, ch)
    for word in ("delta", "Epsilon zeta", "Iota kappa", "Gamma delta.  Epsilon"):
        start = kept.text.index(word)
        s, e = kept.to_document(start, start + len(word))
        assert doc[s:e] == word
    # a span running over the gap between two runs is cut at the end of its run
    start = kept.text.index("zeta")
    s, e = kept.to_document(start, kept.text.index("kappa"))
    assert doc[s:e] == "zeta."
    with pytest.raises(ValueError, match="outside"):
        kept.to_document(0, len(kept.text) + 1)


def test_filter_keeps_the_relevant_sentence_within_one_window(tokenizer):
    sentence_filter = SentenceFilter(tokenizer, max_seq_length=128)
    question = "Where does the treasure lie buried?"
    kept = sentence_filter.filter(question, DOCUMENT)
    assert NEEDLE in kept.text and len(kept.text) < len(DOCUMENT) / 4
    n_tokens = len(tokenizer(kept.text, add_special_tokens=False)["input_ids"])
    assert n_tokens <= sentence_filter.budget(question)
    start = kept.text.index("old oak tree")
    s, e = kept.to_document(start, start + len("old oak tree"))
    assert (s, DOCUMENT[s:e]) == (DOCUMENT.index("old oak tree"), "old oak tree")
    short = "Ada wrote it. Bob read it."
    assert sentence_filter.filter("Who wrote it?", short).is_whole  # fits already: untouched


def test_read_filtered_answers_in_document_offsets(tokenizer, tiny_onnx_dir):
    predictor = OnnxPredictor(tiny_onnx_dir, threads=1, reader=reader_cfg(version_2=False))
    sentence_filter = SentenceFilter(predictor.tokenizer, max_seq_length=WINDOW["max_seq_length"])
    pred, kept = read_filtered(predictor, sentence_filter, "Where does the treasure lie buried?", DOCUMENT, "x")
    assert not kept.is_whole and pred.id == "x"
    assert pred.text and DOCUMENT[pred.start : pred.end] == pred.text  # a real span, in document offsets
    first, last = kept.runs[0][0], kept.runs[-1][1]
    assert first <= pred.start < pred.end <= last


def test_budgeted_reader_reads_at_most_its_budget_and_answers_in_document_offsets(tokenizer, tiny_onnx_dir):
    predictor = OnnxPredictor(tiny_onnx_dir, threads=1, reader=reader_cfg(version_2=False))
    widths = []
    run = predictor.run
    predictor.run = lambda batch: (widths.append(batch["input_ids"].shape), run(batch))[1]
    budgeted = BudgetedReader(predictor, max_tokens=48)
    short = "Ada wrote it. Bob read it."
    records = [QARecord("long", "t", DOCUMENT, "Where does the treasure lie buried?", (Answer("the old oak tree",
                        DOCUMENT.index("the old oak tree")),)),
               QARecord("short", "t", short, "Who wrote it?", (Answer("Ada", 0),))]
    for pred, r in zip(budgeted.predict(records, batch_size=2), records):
        assert pred.id == r.id and pred.text and r.context[pred.start : pred.end] == pred.text
    assert widths and all(width <= 48 for _, width in widths)  # one short window each, never the reader's 128
    widths.clear()
    one = budgeted.answer(records[0].question, DOCUMENT, "long")
    assert widths == [(1, widths[0][1])] and widths[0][1] <= 48 and DOCUMENT[one.start : one.end] == one.text
    assert budgeted.answer("Who wrote it?", short) == predictor.answer("Who wrote it?", short)  # fits: untouched
    budgeted.filter.filter = lambda *a: pytest.fail("a context that fits is read as it is, never filtered")
    calls = []
    featurize = predictor.featurize
    predictor.featurize = lambda records: (calls.append(len(records)), featurize(records))[1]
    assert budgeted.answer("Who wrote it?", short, "s").text == predictor.answer("Who wrote it?", short).text
    assert calls == [1, 1]  # tokenised once by the budgeted reader (the second call is the plain answer above)
    del budgeted.filter.filter  # the real filter again
    calls.clear()
    assert len(DOCUMENT.split()) > 48  # more words than the budget: it cannot fit
    budgeted.answer(records[0].question, DOCUMENT, "long")
    assert calls == [1]  # no trial tokenisation of the whole document: only the filtered text's
    with pytest.raises(ValueError, match="above the reader's window"):
        BudgetedReader(predictor, max_tokens=WINDOW["max_seq_length"] + 1)
