"""Sparse retrieval: BM25 (bm25s) over a list of texts.

Texts are analysed the same way at index and query time: lower-cased word tokens of two or more
characters (bm25s' default pattern), English stopwords (bm25s' 179-word list, which
also drops question words such as "what" and "which") dropped, and a light suffix
stemmer (plurals, -ing, -ed) so "invasions" finds "invasion". PyStemmer is not a dependency;
the stemmer below is deliberately small and only has to be consistent between the two sides.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

import bm25s
import numpy as np
from bm25s.stopwords import STOPWORDS_EN_PLUS

_WORD = re.compile(r"(?u)\b\w\w+\b")
_STOPWORDS = frozenset(STOPWORDS_EN_PLUS)  # 179 words, question words included
PARAMS = "metaqa_bm25.json"


def light_stem(word: str) -> str:
    """A small, deterministic English suffix stripper (S-stemmer plus -ing/-ed)."""
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "xes", "ches", "shes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    if word.endswith("ing") and len(word) > 5:
        return word[:-3]
    if word.endswith("ed") and len(word) > 4:
        return word[:-2]
    return word


def analyze(text: str, stem: bool = True) -> list[str]:
    """Text → index terms: lower-case words (2+ chars), no stopwords, optionally stemmed."""
    words = [w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS]
    return [light_stem(w) for w in words] if stem else words


class BM25Index:
    """BM25 scores of a query against every text of one corpus (e.g. one theme's paragraphs)."""

    def __init__(self, bm25: bm25s.BM25, size: int, stem: bool = True) -> None:
        self.bm25, self.size, self.stem = bm25, size, stem

    @classmethod
    def build(cls, texts: Sequence[str], k1: float = 1.5, b: float = 0.75, method: str = "lucene",
              stem: bool = True) -> "BM25Index":
        if not texts:
            raise ValueError("BM25Index.build: no texts to index")
        bm25 = bm25s.BM25(k1=k1, b=b, method=method)
        bm25.index([analyze(t, stem) for t in texts], show_progress=False)
        return cls(bm25, len(texts), stem)

    def scores(self, query: str) -> np.ndarray:
        """(len(texts),) BM25 scores; all zeros when no query term is in the corpus."""
        ids = self.bm25.get_tokens_ids(analyze(query, self.stem))
        if not ids:
            return np.zeros(self.size, dtype=np.float32)
        return np.asarray(self.bm25.get_scores_from_ids(ids), dtype=np.float32)

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        self.bm25.save(str(directory), show_progress=False)
        (directory / PARAMS).write_text(json.dumps({"size": self.size, "stem": self.stem}))

    @classmethod
    def load(cls, directory: str | Path) -> "BM25Index":
        directory = Path(directory)
        params = json.loads((directory / PARAMS).read_text())
        bm25 = bm25s.BM25.load(str(directory), show_progress=False)
        return cls(bm25, int(params["size"]), bool(params["stem"]))
