"""Answer candidates from real spaCy: offsets, limits, length filters; entity type → wh-word."""
import pytest

from metaqa.synth.candidates import (
    NOUN_CHUNK,
    AnswerFilter,
    CandidateOptions,
    CandidateStats,
    ParagraphFilter,
    SentenceFilter,
    load_spacy,
    paragraph_candidates,
)
from metaqa.synth.questions import identity_question, wh_word
from tests.synth.conftest import PARAGRAPH


def candidates(nlp, text, **options):
    stats = CandidateStats()
    return list(paragraph_candidates(nlp(text), CandidateOptions(**options), stats)), stats


@pytest.mark.parametrize("label,wh", [
    ("PERSON", "Who"), ("NORP", "Who"), ("ORG", "Who"), ("GPE", "Where"), ("LOC", "Where"), ("FAC", "Where"),
    ("DATE", "When"), ("TIME", "When"), ("MONEY", "How much"), ("PERCENT", "How much"),
    ("QUANTITY", "How much"), ("CARDINAL", "How many"), ("ORDINAL", "How many"),
    ("PRODUCT", "What"), ("EVENT", "What"), ("WORK_OF_ART", "What"), ("LAW", "What"), (NOUN_CHUNK, "What")])
def test_wh_word_by_entity_type(label, wh):
    assert wh_word(label) == wh


def test_spacy_entities_become_questions_with_their_wh_word(nlp):
    found, stats = candidates(nlp, PARAGRAPH, ner_limit=None)
    by_text = {c.text: c for c in found}
    expected = {"Barack Obama": "Who", "Paris": "Where", "March 1998": "When", "three": "How many",
                "the United Nations": "Who", "French": "Who", "$5 million": "How much",
                "about 12 percent": "How much", "Random House": "Who"}
    for text, wh in expected.items():
        c = by_text[text]
        question = identity_question(c)
        # the wh-word stands exactly where the answer stood in its sentence
        assert question.startswith(c.sentence[: c.start_in_sentence] + wh), question
        assert question.endswith("?") and c.text not in question
    assert stats.entity_types["ORG"] == 2 and stats.sentences == stats.sentences_kept == 3


def test_offsets_point_at_the_answer_in_the_paragraph(nlp):
    from metaqa.config import PACKAGE_DIR
    from metaqa.data.formats import read_records

    contexts = {r.context for r in read_records(PACKAGE_DIR / "data/sample/sample_qa.csv").records}
    total = 0
    for context in contexts:
        found, _ = candidates(nlp, context, ner_limit=None, noun_chunks=False)
        for c in found:
            assert context[c.start : c.end] == c.text
            assert context[c.sentence_start : c.sentence_start + len(c.sentence)] == c.sentence
            assert c.sentence[c.start_in_sentence :].startswith(c.text)
            total += 1
    assert total > 100


def test_ner_limit_counts_per_sentence(nlp):
    one, _ = candidates(nlp, PARAGRAPH, ner_limit=1)
    two, _ = candidates(nlp, PARAGRAPH, ner_limit=2)
    none, _ = candidates(nlp, PARAGRAPH, ner_limit=0)
    assert [c.text for c in one] == ["Barack Obama", "French", "Random House"]
    assert [c.text for c in two] == ["Barack Obama", "Paris", "French", "$5 million", "Random House"]
    assert none == []


def test_length_filters_drop_short_sentences_and_long_answers(nlp):
    text = "Obama won. " + PARAGRAPH  # a 2-word sentence: no cloze
    found, stats = candidates(nlp, text, ner_limit=None, answer=AnswerFilter(max_chars=8))
    assert stats.dropped["sentence_words"] == 1 and stats.sentences_kept == 3
    assert all(len(c.text) <= 8 for c in found) and "Barack Obama" not in {c.text for c in found}
    assert stats.dropped["answer_chars"] >= 4  # Barack Obama, the United Nations, $5 million, ...
    assert SentenceFilter().reason("See https://example.org for the full list of all the rules.") == "sentence_link"
    assert SentenceFilter().reason("A sentence with a supercalifragilisticexpialidocious word in it.") \
        == "sentence_long_word"
    assert ParagraphFilter(max_chars=10).reason(PARAGRAPH) == "paragraph_chars"


def test_repeated_answer_in_a_sentence_is_not_asked(nlp):
    found, stats = candidates(nlp, "Paris is big, and Paris is old, said the mayor of Paris in 1990.", ner_limit=None)
    assert "Paris" not in {c.text for c in found} and stats.dropped["answer_repeated"] >= 1


def test_noun_chunks_skip_pronouns_and_entities(nlp):
    with pytest.raises(ValueError, match="noun_chunks=True"):
        candidates(nlp, PARAGRAPH, noun_chunks=True)  # the fast pipeline has no parser
    nlp = load_spacy(noun_chunks=True)
    found, _ = candidates(nlp, PARAGRAPH, ner_limit=0, noun_chunks=True, noun_chunk_limit=3)
    chunks = [c.text for c in found]
    assert all(c.label == NOUN_CHUNK for c in found) and "He" not in chunks
    assert "the visit" in chunks
    with_ents, _ = candidates(nlp, PARAGRAPH, ner_limit=None, noun_chunks=True, noun_chunk_limit=3)
    ents = [(c.start, c.end) for c in with_ents if c.label != NOUN_CHUNK]
    for c in with_ents:
        if c.label == NOUN_CHUNK:
            assert not any(c.start < e and s < c.end for s, e in ents)


def test_spacy_is_loaded_once_per_need():
    assert load_spacy() is load_spacy()
    assert "parser" not in load_spacy().pipe_names and "senter" in load_spacy().pipe_names
