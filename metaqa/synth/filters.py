"""Filters for synthetic questions: the roundtrip check and unanswerable negatives.

Roundtrip (Alberti et al. 2019): a reader answers each generated question on its paragraph; the
question is kept when the reader's span overlaps the generated answer and its confidence is at
least `threshold`. Confidence is the span's margin over "no answer" (start + end logit of the
span minus that of CLS: > 0 means the reader would answer) or the raw span score.

Negatives: a question generated for another paragraph of the same theme, asked of this one, is
unanswerable here when (a) its answer text does not occur in the paragraph and (b) the reader's
margin is below `reader_max_margin` (the reader would say "no answer"), or, without a reader,
the TF-IDF cosine similarity of question and paragraph is below `tfidf_max_similarity`.
Every dropped item gets a reason.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from metaqa.config import ConfigError, check_reader_dir
from metaqa.data.records import QARecord
from metaqa.evaluation.postprocess import SpanPrediction
from metaqa.inference import DecodeConfig, ReaderConfig, load_predictor

# The roundtrip wants the reader's best span even where it would rather say "no answer":
# version_2=False decoding always returns a span; the margin carries the no-answer evidence.
SPAN_DECODE = DecodeConfig(version_2=False)
SCORES = ("margin", "span")


class QAReader:
    """A reader for the filters: an exported ONNX dir (onnxruntime) or a save_pretrained dir (PyTorch)."""

    def __init__(self, model_dir: str | Path, batch_size: int = 64, max_seq_length: int = 384,
                 doc_stride: int = 128, threads: int | None = None) -> None:
        path = Path(model_dir).expanduser()
        if not path.is_dir():
            raise ConfigError("reader_dir", f"{path} is not a directory",
                              "pass reader_dir=<train run>/reader (save_pretrained) or reader_dir=<export run>/onnx, "
                              "or reader_dir=null to skip the roundtrip filter")
        if not any(path.glob("*.onnx")):
            check_reader_dir(path, field="reader_dir")  # a trained QA head, safetensors weights
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.path, self.batch_size = path, batch_size
        self.predictor = load_predictor(path, ReaderConfig(max_seq_length, doc_stride, SPAN_DECODE), threads)
        self.kind = "pytorch" if self.predictor.backend == "torch" else "onnx"

    def predict(self, records: Sequence[QARecord]) -> list[SpanPrediction]:
        return self.predictor.predict(records, self.batch_size)


def confidence(prediction: SpanPrediction, score: str = "margin") -> float:
    """The reader's confidence in its span: margin over no-answer, or the raw span score."""
    return prediction.score - prediction.null_score if score == "margin" else prediction.score


def spans_overlap(a_start: int, a_end: int, b_start: int, b_end: int) -> bool:
    """Half-open character spans share at least one character."""
    return a_start < b_end and b_start < a_end


@dataclass
class Verdict:
    kept: bool
    reason: str | None  # why it was dropped (None when kept)
    reader_answer: str = ""
    score: float = float("nan")


class RoundtripFilter:
    """Keep a generated (question, answer) when the reader finds an overlapping span confidently."""

    def __init__(self, reader: QAReader, threshold: float = 0.0, score: str = "margin") -> None:
        if score not in SCORES:
            raise ConfigError("roundtrip.score", f"{score!r} is not one of {SCORES}", "roundtrip.score=margin")
        if math.isnan(threshold):
            raise ConfigError("roundtrip.threshold", "is NaN", "a number, e.g. roundtrip.threshold=0.0")
        self.reader, self.threshold, self.score = reader, float(threshold), score

    def check(self, records: Sequence[QARecord]) -> list[Verdict]:
        """One verdict per (answerable) record, in order."""
        verdicts = []
        for record, p in zip(records, self.reader.predict(records)):
            gold = record.answers[0]
            value = confidence(p, self.score)
            if p.start < 0 or not spans_overlap(p.start, p.end, gold.start, gold.start + len(gold.text)):
                verdicts.append(Verdict(False, "roundtrip_no_overlap", p.text, value))
            elif not value >= self.threshold:
                verdicts.append(Verdict(False, "roundtrip_low_score", p.text, value))
            else:
                verdicts.append(Verdict(True, None, p.text, value))
        return verdicts


@dataclass(frozen=True)
class Borrowed:
    """A question (with its answer text) generated for one paragraph, to be asked of another."""

    question: str
    answer: str
    source: str  # id of the paragraph it was generated for


class NegativeSampler:
    """Unanswerable questions for a paragraph, borrowed from other paragraphs of its theme.

    Each theme keeps the last `pool_size` questions generated for it (bounded memory however
    long the input); `propose` draws `per_paragraph` of them from other paragraphs with the
    paragraph's own generator, `judge` decides which are really unanswerable there.
    """

    def __init__(self, per_paragraph: int = 1, pool_size: int = 256, judge: str = "auto",
                 reader: QAReader | None = None, reader_max_margin: float = 0.0,
                 tfidf_max_similarity: float = 0.1, max_themes: int = 10_000) -> None:
        if judge == "auto":
            judge = "reader" if reader is not None else "tfidf"
        if judge not in ("reader", "tfidf"):
            raise ConfigError("negatives.judge", f"{judge!r} is not auto, reader or tfidf", "negatives.judge=auto")
        if judge == "reader" and reader is None:
            raise ConfigError("negatives.judge", "is reader but no reader is given",
                              "pass reader=<reader dir>, or negatives.judge=tfidf")
        if per_paragraph < 0 or pool_size < 1:
            raise ConfigError("negatives", f"per_paragraph={per_paragraph}, pool_size={pool_size}",
                              "negatives.per_paragraph >= 0 and negatives.pool_size >= 1")
        self.per_paragraph, self.pool_size, self.judge_by = per_paragraph, pool_size, judge
        self.reader, self.reader_max_margin = reader, reader_max_margin
        self.tfidf_max_similarity, self.max_themes = tfidf_max_similarity, max_themes
        self.pools: dict[str, deque[Borrowed]] = {}

    def remember(self, theme: str, items: Sequence[Borrowed]) -> None:
        if theme not in self.pools:
            if len(self.pools) >= self.max_themes:  # bounded: forget the oldest theme's pool
                self.pools.pop(next(iter(self.pools)))
            self.pools[theme] = deque(maxlen=self.pool_size)
        self.pools[theme].extend(items)

    def propose(self, theme: str, paragraph_id: str, rng: np.random.Generator) -> list[Borrowed]:
        pool = [b for b in self.pools.get(theme, ()) if b.source != paragraph_id]
        if not pool or self.per_paragraph == 0:
            return []
        picked = rng.choice(len(pool), size=min(self.per_paragraph, len(pool)), replace=False)
        return [pool[int(i)] for i in sorted(picked)]

    def judge(self, items: Sequence[tuple[Borrowed, QARecord]]) -> list[Verdict]:
        """items: (borrowed question, the unanswerable record to keep) → verdicts, in order."""
        verdicts: list[Verdict | None] = [None] * len(items)
        open_idx = []
        for i, (b, record) in enumerate(items):
            if b.answer.lower() in record.context.lower():
                verdicts[i] = Verdict(False, "negative_answer_in_paragraph")
            else:
                open_idx.append(i)
        records = [items[i][1] for i in open_idx]
        if self.judge_by == "reader":
            for i, p in zip(open_idx, self.reader.predict(records)):
                margin = confidence(p, "margin")
                ok = margin < self.reader_max_margin
                verdicts[i] = Verdict(ok, None if ok else "negative_reader_answers", p.text, margin)
        else:
            for i, sim in zip(open_idx, tfidf_similarity([r.question for r in records],
                                                         [r.context for r in records])):
                ok = sim < self.tfidf_max_similarity
                verdicts[i] = Verdict(ok, None if ok else "negative_tfidf_similar", "", float(sim))
        return verdicts


def tfidf_similarity(questions: Sequence[str], contexts: Sequence[str]) -> np.ndarray:
    """Cosine similarity of each question with its context, TF-IDF fitted on these texts."""
    if not questions:
        return np.zeros(0)
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(stop_words="english", sublinear_tf=True)
    try:
        vectorizer.fit(list(dict.fromkeys(contexts)) + list(questions))
    except ValueError:  # nothing but stop words: no shared vocabulary, nothing similar
        return np.zeros(len(questions))
    q, c = vectorizer.transform(questions), vectorizer.transform(contexts)  # rows are L2-normalised
    return np.asarray(q.multiply(c).sum(axis=1)).ravel()
