"""Long documents: keep only the sentences that matter, read those, map the answer back.

A small reader sees 384 tokens at a time; a 3,000-word review is ten or more windows, each a
forward pass. Instead: split the document into sentences, score windows of `window`
consecutive sentences against the question (BM25 by default, any retriever spec works), take
the best windows until the question + kept text fill one reader window, and read that text
only. `FilteredContext` keeps the kept spans' offsets, so an answer found in the filtered text
maps back to exact character offsets in the original document.

Sentences are split with a regular expression, not spaCy: spaCy's sentencizer takes ~20 ms on a
3,000-word review on this machine, which is the whole latency budget; the rule below (end
punctuation followed by a space or a capital, or a line break) takes well under a millisecond.
"""
from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np

from metaqa.evaluation.postprocess import SpanPrediction
from metaqa.inference.engine import make_record
from metaqa.retrieval.dense import SentenceEncoder
from metaqa.retrieval.index import CorpusIndex, check_retriever_spec

# A sentence ends at . ! ? (with closing quotes/brackets) before whitespace or a glued capital
# ("water in it.Overall"), or at a line break.
_BOUNDARY = re.compile(r"(?P<end>[.!?]+[\"')\]]*)(?:\s+|(?=[A-Z][a-z]))|\n\s*")
_WORD = re.compile(r"\S+")
BM25_SPEC = {"name": "bm25", "k1": 1.5, "b": 0.75, "method": "lucene", "stem": True}


def sentence_spans(text: str, max_words: int = 60) -> list[tuple[int, int]]:
    """(start, end) character spans of the sentences of `text`, whitespace trimmed.

    A "sentence" longer than `max_words` words (reviews without punctuation) is cut into pieces
    of at most `max_words` words, so one run-on sentence cannot hide the whole document.
    """
    spans: list[tuple[int, int]] = []
    start = 0
    for m in _BOUNDARY.finditer(text):
        end = m.end("end") if m.group("end") else m.start()
        if end > start:
            spans.append((start, end))
        start = m.end()
    if start < len(text):
        spans.append((start, len(text)))
    trimmed = []
    for s, e in spans:
        piece = text[s:e]
        s += len(piece) - len(piece.lstrip())
        e -= len(piece) - len(piece.rstrip())
        if e > s:
            trimmed.extend(_cap_words(text, s, e, max_words))
    return trimmed


def _cap_words(text: str, start: int, end: int, max_words: int) -> list[tuple[int, int]]:
    words = [(m.start(), m.end()) for m in _WORD.finditer(text, start, end)]
    if len(words) <= max_words:
        return [(start, end)]
    return [(words[i][0], words[min(i + max_words, len(words)) - 1][1]) for i in range(0, len(words), max_words)]


@dataclass(frozen=True)
class FilteredContext:
    """The kept parts of `document`, joined by `separator`, with exact offset mapping back."""

    document: str
    runs: tuple[tuple[int, int], ...]  # kept (start, end) spans of the document, sorted, disjoint
    separator: str = " "
    text: str = field(init=False)
    starts: tuple[int, ...] = field(init=False)  # where each run begins in `text`

    def __post_init__(self) -> None:
        starts, pos = [], 0
        for s, e in self.runs:
            starts.append(pos)
            pos += (e - s) + len(self.separator)
        object.__setattr__(self, "starts", tuple(starts))
        object.__setattr__(self, "text", self.separator.join(self.document[s:e] for s, e in self.runs))

    @classmethod
    def from_spans(cls, document: str, spans: Sequence[tuple[int, int]], separator: str = " ") -> "FilteredContext":
        """Merge overlapping spans, and spans separated only by whitespace (kept verbatim)."""
        runs: list[list[int]] = []
        for s, e in sorted(spans):
            if runs and (s <= runs[-1][1] or not document[runs[-1][1] : s].strip()):
                runs[-1][1] = max(runs[-1][1], e)
            else:
                runs.append([s, e])
        return cls(document, tuple((s, e) for s, e in runs), separator)

    @classmethod
    def whole(cls, document: str) -> "FilteredContext":
        return cls(document, ((0, len(document)),))

    @property
    def is_whole(self) -> bool:
        return self.runs == ((0, len(self.document)),)

    def to_document(self, start: int, end: int) -> tuple[int, int]:
        """Map a [start, end) span of `text` to the document. A span that begins in a separator
        starts at the next run; one that runs past its run's end is cut there (the text between
        two runs was never read)."""
        if not self.runs:
            raise ValueError("empty FilteredContext: nothing to map")
        if not 0 <= start < end <= len(self.text):
            raise ValueError(f"span [{start}, {end}) is outside the filtered text (length {len(self.text)})")
        i = bisect.bisect_right(self.starts, start) - 1
        run_start, run_end = self.runs[i]
        offset = start - self.starts[i]
        if offset >= run_end - run_start:  # inside the separator after run i
            i += 1
            run_start, run_end = self.runs[i]
            offset = 0
        doc_start = run_start + offset
        doc_end = min(run_start + (end - self.starts[i]), run_end)
        return doc_start, max(doc_end, doc_start + 1)


class SentenceFilter:
    """Question + long document → the `FilteredContext` that fills one reader window.

    `tokenizer`: the reader's (token counts decide what fits). `spec`: a retriever spec (see
    `metaqa.retrieval.index`), BM25 by default; dense / hybrid need `encoder`.
    """

    def __init__(self, tokenizer, max_seq_length: int = 384, window: int = 2, stride: int = 1,
                 spec: Mapping[str, Any] | None = None, encoder: SentenceEncoder | None = None,
                 max_sentence_words: int = 60) -> None:
        if window < 1 or stride < 1:
            raise ValueError(f"window={window}, stride={stride}: both must be >= 1")
        self.tokenizer, self.max_seq_length = tokenizer, max_seq_length
        self.window, self.stride, self.max_sentence_words = window, stride, max_sentence_words
        self.spec = check_retriever_spec(spec or BM25_SPEC)
        self.encoder = encoder
        if self.spec["name"] != "bm25" and encoder is None:
            raise ValueError(f"a {self.spec['name']} sentence filter needs a SentenceEncoder")

    def budget(self, question: str) -> int:
        """Context tokens that fit in one window beside the question ([CLS] q [SEP] c [SEP])."""
        q = len(self.tokenizer(question.lstrip(), add_special_tokens=False)["input_ids"])
        return self.max_seq_length - q - 3

    def filter(self, question: str, document: str) -> FilteredContext:
        budget = self.budget(question)
        spans = sentence_spans(document, self.max_sentence_words)
        if not spans:
            return FilteredContext.whole(document)
        sentences = [document[s:e] for s, e in spans]
        tokens = np.array([len(ids) for ids in self.tokenizer(sentences, add_special_tokens=False)["input_ids"]])
        if tokens.sum() <= budget:
            return FilteredContext.whole(document)  # fits already: nothing to gain
        n = len(spans)
        windows = [(a, min(a + self.window, n)) for a in range(0, max(n - self.window, 0) + 1, self.stride)]
        texts = [document[spans[a][0] : spans[b - 1][1]] for a, b in windows]
        query_vector = self.encoder.encode([question])[0] if self.encoder is not None else None
        scores = CorpusIndex.build(texts, self.spec, self.encoder).scores(question, query_vector)
        kept: set[int] = set()
        used = 0
        for w in np.argsort(-scores, kind="stable"):
            new = [s for s in range(*windows[w]) if s not in kept]
            cost = int(tokens[new].sum()) if new else 0
            if used + cost <= budget:
                kept.update(new)
                used += cost
            elif not kept:  # the best window alone is too long: keep its best-fitting prefix
                for s in new:
                    if used + tokens[s] > budget:
                        break
                    kept.add(s)
                    used += int(tokens[s])
            if used >= budget:
                break
        if not kept:  # every sentence is longer than the budget: the reader's windows handle it
            kept = set(range(*windows[int(np.argmax(scores))]))
        return FilteredContext.from_spans(document, [spans[s] for s in sorted(kept)])


def read_filtered(predictor, sentence_filter: SentenceFilter, question: str, document: str,
                  id: str = "q0") -> tuple[SpanPrediction, FilteredContext]:
    """Answer `question` from the filtered document; offsets in the prediction are the document's."""
    filtered = sentence_filter.filter(question, document)
    return to_document(predictor.answer(question, filtered.text, id), filtered), filtered


def to_document(pred: SpanPrediction, filtered: FilteredContext) -> SpanPrediction:
    """A prediction on `filtered.text` with its span moved to the original document's offsets."""
    if pred.start < 0 or filtered.is_whole:
        return pred
    start, end = filtered.to_document(pred.start, pred.end)
    document = filtered.document
    return SpanPrediction(pred.id, document[start:end] if pred.text else "", document[start:end], start, end,
                          pred.score, pred.null_score)


class BudgetedReader:
    """A predictor that reads at most `max_tokens` tokens per question (question + context + 3
    special tokens): a longer context keeps only its question-relevant sentences (`SentenceFilter`,
    BM25), so the reader runs one short window instead of one or more full ones. Less work per
    question, at the risk of cutting the answer's sentence; answers carry the original offsets.
    Same `answer` / `predict` as the wrapped predictor."""

    def __init__(self, predictor, max_tokens: int, window: int = 2, stride: int = 1) -> None:
        if max_tokens > predictor.reader.max_seq_length:
            raise ValueError(f"max_tokens={max_tokens} is above the reader's window "
                             f"({predictor.reader.max_seq_length}): nothing to save")
        self.predictor = predictor
        self.filter = SentenceFilter(predictor.tokenizer, max_tokens, window, stride)
        self.backend, self.reader, self.tokenizer = predictor.backend, predictor.reader, predictor.tokenizer
        self.runtime = getattr(predictor, "runtime", None)  # an ONNX dir's runtime (onnxruntime / OpenVINO)

    def answer(self, question: str, context: str, id: str = "q0") -> SpanPrediction:
        # a context that fits is read from its one tokenisation; only a longer one is filtered
        # (and tokenised again): on SQuAD most contexts fit a 192-token budget. Every word is at
        # least one token, so one with more words than the budget skips the trial tokenisation.
        if len(question.split()) + len(context.split()) + 3 <= self.filter.max_seq_length:
            record = make_record(question, context, id)
            features = self.predictor.featurize([record])
            if len(features) == 1 and len(features.encodings["input_ids"][0]) <= self.filter.max_seq_length:
                start, end = self.predictor.run(self.predictor.pad(features, np.arange(1)))
                return self.predictor.decode([record], features, start, end)[0]
        return read_filtered(self.predictor, self.filter, question, context, id)[0]

    def predict(self, records, batch_size: int = 32, progress: bool = False) -> list[SpanPrediction]:
        filtered = [self.filter.filter(r.question, r.context) for r in records]
        preds = self.predictor.predict([replace(r, context=f.text) for r, f in zip(records, filtered)],
                                       batch_size, progress)
        return [to_document(p, f) for p, f in zip(preds, filtered)]
