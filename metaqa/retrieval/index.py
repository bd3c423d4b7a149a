"""Per-theme paragraph indexes: build once, save, load; search a question within its theme.

A *theme* (a DevRev theme, a SQuAD article, a SubjQA domain) owns a set of candidate paragraphs:
the unique contexts of that theme in the source file, in first-seen order. Each theme gets its
own `CorpusIndex` — BM25, dense (MiniLM unit vectors) or hybrid (both, fused by reciprocal rank).

The retriever spec is the `retriever` config node (conf/retriever/*.yaml):
  bm25:   {name: bm25, k1, b, method, stem, min_score}
  dense:  {name: dense, encoder, max_length, batch_size, backend (torch | onnx), min_score}
  hybrid: {name: hybrid, rrf_k, weights: [bm25, dense], bm25: {...}, dense: {...}, min_score}
`min_score`: paragraphs scoring at or below it are never candidates (BM25: 0 = no word in common
with the question, so an off-topic question reads nothing and gets "no paragraph").

On disk (`ThemeIndex.save`): `index.json` (spec, themes in order, a fingerprint of the
paragraphs + spec), `paragraphs.json` (theme → paragraphs) and `themes/<i>/{bm25,dense}/` per
theme. `ThemeIndex.build_or_load` reuses a saved index only when its fingerprint matches.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from metaqa.config import ConfigError
from metaqa.data.records import QARecord
from metaqa.fileio import guard_output_dir, replace_dir, write_json
from metaqa.retrieval.bm25 import BM25Index
from metaqa.retrieval.dense import ONNX_FILE, DenseIndex, OnnxSentenceEncoder, SentenceEncoder, export_encoder
from metaqa.retrieval.fusion import RRF_K, reciprocal_rank_fusion

log = logging.getLogger(__name__)

RETRIEVERS = ("bm25", "dense", "hybrid")
INDEX_FILE = "index.json"
PARAGRAPHS_FILE = "paragraphs.json"
ENCODER_DIR = "encoder"  # the exported ONNX sentence encoder (dense / hybrid with backend onnx)
FORMAT_VERSION = 1
INDEX_STAGE = "index"  # what the output marker of an index dir names (built by pipeline and pipeline-eval)


@dataclass(frozen=True)
class Hit:
    paragraph: int  # index into the theme's paragraphs
    score: float  # the retriever's score (RRF score for hybrid)
    rank: int  # 0 = best


# --------------------------------------------------------------------------- corpus + spec
def paragraphs_by_theme(records: Iterable[QARecord]) -> dict[str, list[str]]:
    """Theme → its unique contexts, in first-seen order (the candidate paragraphs)."""
    seen: dict[str, dict[str, None]] = {}
    for r in records:
        seen.setdefault(r.theme, {}).setdefault(r.context, None)
    return {theme: list(contexts) for theme, contexts in seen.items()}


def check_retriever_spec(spec: Mapping[str, Any]) -> dict:
    """Validate a `retriever` node early; errors name the field and the fix."""
    spec = dict(spec)
    name = spec.get("name")
    if name not in RETRIEVERS:
        raise ConfigError("retriever.name", f"{name!r} is not one of {list(RETRIEVERS)}",
                          "pick retriever=bm25, retriever=dense or retriever=hybrid")
    if name == "hybrid":
        for part in ("bm25", "dense"):
            if not isinstance(spec.get(part), Mapping):
                raise ConfigError(f"retriever.{part}", "missing in the hybrid retriever",
                                  "use retriever=hybrid (conf/retriever/hybrid.yaml holds both parts)")
        weights = spec.get("weights") or [1.0, 1.0]
        if len(weights) != 2 or min(weights) < 0:
            raise ConfigError("retriever.weights", f"{weights} is not two non-negative numbers",
                              "retriever.weights=[1.0,1.0] (bm25, dense)")
        if int(spec.get("rrf_k", RRF_K)) < 0:
            raise ConfigError("retriever.rrf_k", f"{spec.get('rrf_k')} is negative", f"retriever.rrf_k={RRF_K}")
    return spec


def _part(spec: Mapping[str, Any], part: str) -> Mapping[str, Any] | None:
    """The bm25 / dense parameters of a spec, or None when that part is not used."""
    if spec["name"] == part:
        return spec
    if spec["name"] == "hybrid":
        return spec[part]
    return None


Encoder = SentenceEncoder | OnnxSentenceEncoder


def load_encoder(spec: Mapping[str, Any], directory: str | Path | None = None, threads: int = 0) -> Encoder | None:
    """The spec's sentence encoder (None for BM25). The onnx backend runs the export saved in
    `<directory>/encoder` (`ThemeIndex.build_or_load` writes it)."""
    dense = _part(spec, "dense")
    if dense is None:
        return None
    backend, max_length = dense.get("backend", "torch"), int(dense.get("max_length", 256))
    if backend == "torch":
        return SentenceEncoder(dense.get("encoder", "packaged"), max_length)
    if backend != "onnx":
        raise ConfigError("retriever.backend", f"{backend!r} is not torch or onnx", "retriever.backend=onnx")
    if directory is None or not (Path(directory) / ENCODER_DIR / ONNX_FILE).exists():
        raise FileNotFoundError(f"no exported encoder in {directory}/{ENCODER_DIR}: build the index with "
                                "ThemeIndex.build_or_load(dir, ...), or pass an encoder")
    return OnnxSentenceEncoder(Path(directory) / ENCODER_DIR, max_length, threads)


def fingerprint(paragraphs: Mapping[str, Sequence[str]], spec: Mapping[str, Any]) -> str:
    """What the saved index depends on: the paragraphs and the spec (search-time `min_score` aside)."""
    spec = {k: v for k, v in spec.items() if k != "min_score"}
    digest = hashlib.sha256(json.dumps([FORMAT_VERSION, spec, paragraphs], sort_keys=True,
                                       ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------- one corpus
class CorpusIndex:
    """Scores of a question against every text of one corpus, by the spec's retriever."""

    def __init__(self, spec: Mapping[str, Any], size: int, bm25: BM25Index | None = None,
                 dense: DenseIndex | None = None) -> None:
        self.spec, self.size, self.bm25, self.dense = spec, size, bm25, dense

    @classmethod
    def build(cls, texts: Sequence[str], spec: Mapping[str, Any],
              encoder: SentenceEncoder | None = None) -> "CorpusIndex":
        bm25_spec, dense_spec = _part(spec, "bm25"), _part(spec, "dense")
        bm25 = dense = None
        if bm25_spec is not None:
            bm25 = BM25Index.build(texts, float(bm25_spec.get("k1", 1.5)), float(bm25_spec.get("b", 0.75)),
                                   str(bm25_spec.get("method", "lucene")), bool(bm25_spec.get("stem", True)))
        if dense_spec is not None:
            if encoder is None:
                raise ValueError("a dense or hybrid index needs a SentenceEncoder")
            dense = DenseIndex.build(texts, encoder, int(dense_spec.get("batch_size", 32)))
        return cls(spec, len(texts), bm25, dense)

    def scores(self, question: str, query_vector: np.ndarray | None = None) -> np.ndarray:
        """(size,) scores; `query_vector` is the encoded question (needed by dense / hybrid)."""
        sparse = self.bm25.scores(question) if self.bm25 is not None else None
        if self.dense is None:
            return sparse
        if query_vector is None:
            raise ValueError("dense scores need the encoded question (query_vector)")
        cosine = self.dense.scores(query_vector)
        if sparse is None:
            return cosine
        return reciprocal_rank_fusion([sparse, cosine], int(self.spec.get("rrf_k", RRF_K)),
                                      self.spec.get("weights") or None)

    def save(self, directory: Path) -> None:
        if self.bm25 is not None:
            self.bm25.save(directory / "bm25")
        if self.dense is not None:
            self.dense.save(directory / "dense")

    @classmethod
    def load(cls, directory: Path, spec: Mapping[str, Any], size: int) -> "CorpusIndex":
        bm25 = BM25Index.load(directory / "bm25") if _part(spec, "bm25") is not None else None
        dense = DenseIndex.load(directory / "dense") if _part(spec, "dense") is not None else None
        return cls(spec, size, bm25, dense)


def top_hits(scores: np.ndarray, k: int) -> list[Hit]:
    """The k best items, best first; ties keep index order."""
    order = np.argsort(-scores, kind="stable")[: max(0, k)]
    return [Hit(int(i), float(scores[i]), rank) for rank, i in enumerate(order)]


# --------------------------------------------------------------------------- every theme
class ThemeIndex:
    """One `CorpusIndex` per theme over that theme's paragraphs, sharing one sentence encoder."""

    def __init__(self, spec: Mapping[str, Any], paragraphs: Mapping[str, list[str]],
                 corpora: Mapping[str, CorpusIndex], encoder: Encoder | None,
                 fingerprint: str) -> None:
        self.spec, self.paragraphs, self.corpora = dict(spec), dict(paragraphs), dict(corpora)
        self.encoder, self.fingerprint = encoder, fingerprint

    @property
    def kind(self) -> str:
        return self.spec["name"]

    @property
    def themes(self) -> list[str]:
        return list(self.paragraphs)

    # ---------------------------------------------------------------- build / save / load
    @classmethod
    def build(cls, paragraphs: Mapping[str, Sequence[str]], spec: Mapping[str, Any],
              encoder: Encoder | None = None, progress: bool = False) -> "ThemeIndex":
        spec = check_retriever_spec(spec)
        paragraphs = {theme: list(texts) for theme, texts in paragraphs.items() if texts}
        if not paragraphs:
            raise ValueError("ThemeIndex.build: no paragraphs (is the source file empty?)")
        encoder = encoder or load_encoder(spec)
        corpora = {theme: CorpusIndex.build(texts, spec, encoder)
                   for theme, texts in tqdm(paragraphs.items(), desc=f"indexing ({spec['name']})",
                                            disable=not progress, leave=False)}
        return cls(spec, paragraphs, corpora, encoder, fingerprint(paragraphs, spec))

    def save(self, directory: str | Path) -> Path:
        """Write into a temp dir beside `directory`, then swap it in (never half an index); a
        `directory` holding anything but a metaqa index is refused (`guard_output_dir`)."""
        final = Path(directory)
        guard_output_dir(final, field="index_dir", stage=INDEX_STAGE)
        work = final.with_name(f"{final.name}.tmp-{os.getpid()}")
        if not (isinstance(self.encoder, OnnxSentenceEncoder) and self.encoder.onnx_dir == work / ENCODER_DIR):
            shutil.rmtree(work, ignore_errors=True)  # (build_or_load exports the encoder there first)
        try:
            if isinstance(self.encoder, OnnxSentenceEncoder) and self.encoder.onnx_dir != work / ENCODER_DIR:
                shutil.copytree(self.encoder.onnx_dir, work / ENCODER_DIR)
            for i, theme in enumerate(self.themes):
                self.corpora[theme].save(work / "themes" / str(i))
            write_json(work / PARAGRAPHS_FILE, self.paragraphs)
            write_json(work / INDEX_FILE, {
                "format_version": FORMAT_VERSION, "retriever": self.spec, "fingerprint": self.fingerprint,
                "themes": self.themes, "paragraphs": sum(len(p) for p in self.paragraphs.values()),
            })
            replace_dir(work, final, stage=INDEX_STAGE)
            if isinstance(self.encoder, OnnxSentenceEncoder):
                self.encoder.onnx_dir = final / ENCODER_DIR  # the session is loaded; keep the path true
            return final
        finally:
            shutil.rmtree(work, ignore_errors=True)

    @classmethod
    def load(cls, directory: str | Path, encoder: Encoder | None = None, threads: int = 0) -> "ThemeIndex":
        directory = Path(directory)
        meta_path = directory / INDEX_FILE
        if not meta_path.exists():
            raise FileNotFoundError(f"{directory}: no {INDEX_FILE}; build the index first "
                                    "(`metaqa pipeline source=<data file>` builds and saves it)")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{meta_path}: index format {meta.get('format_version')} != {FORMAT_VERSION}; "
                             "delete the dir to rebuild it")
        spec = meta["retriever"]
        paragraphs = json.loads((directory / PARAGRAPHS_FILE).read_text(encoding="utf-8"))
        corpora = {theme: CorpusIndex.load(directory / "themes" / str(i), spec, len(paragraphs[theme]))
                   for i, theme in enumerate(meta["themes"])}
        encoder = encoder or load_encoder(spec, directory, threads)
        return cls(spec, {t: paragraphs[t] for t in meta["themes"]}, corpora, encoder, meta["fingerprint"])

    @classmethod
    def build_or_load(cls, directory: str | Path, paragraphs: Mapping[str, Sequence[str]],
                      spec: Mapping[str, Any], progress: bool = False, threads: int = 0) -> tuple["ThemeIndex", bool]:
        """(index, built): the saved index when it matches these paragraphs and spec, else a new one
        (with the ONNX encoder exported into it first when the dense backend is onnx)."""
        spec = check_retriever_spec(spec)
        clean = {theme: list(texts) for theme, texts in paragraphs.items() if texts}
        wanted = fingerprint(clean, spec)
        meta_path = Path(directory) / INDEX_FILE
        if meta_path.exists():
            saved = json.loads(meta_path.read_text(encoding="utf-8")).get("fingerprint")
            if saved == wanted:
                index = cls.load(directory, threads=threads)
                index.spec = spec  # search-time settings (min_score) as asked now
                return index, False
            log.info("%s holds an index of other paragraphs or settings (%s != %s); rebuilding",
                     directory, saved, wanted)
        guard_output_dir(directory, field="index_dir", stage=INDEX_STAGE)  # before the (long) build
        encoder = None
        dense = _part(spec, "dense")
        if dense is not None and dense.get("backend", "torch") == "onnx":
            final = Path(directory)
            work = final.with_name(f"{final.name}.tmp-{os.getpid()}")
            shutil.rmtree(work, ignore_errors=True)
            try:
                export_encoder(dense.get("encoder", "packaged"), work / ENCODER_DIR)
                encoder = load_encoder(spec, work, threads)
                index = cls.build(clean, spec, encoder, progress=progress)
            except BaseException:
                shutil.rmtree(work, ignore_errors=True)
                raise
        else:
            index = cls.build(clean, spec, progress=progress)
        index.save(directory)
        return index, True

    # ---------------------------------------------------------------- search
    def theme_paragraphs(self, theme: str) -> list[str]:
        if theme not in self.paragraphs:
            known = ", ".join(repr(t) for t in self.themes[:10]) + (" …" if len(self.themes) > 10 else "")
            raise KeyError(f"theme {theme!r} is not in the index ({len(self.themes)} themes: {known}); "
                           "pass one of these, or rebuild the index from a source that has it")
        return self.paragraphs[theme]

    def encode_question(self, question: str) -> np.ndarray | None:
        return self.encoder.encode([question])[0] if self.encoder is not None else None

    def scores(self, question: str, theme: str) -> np.ndarray:
        self.theme_paragraphs(theme)  # a clear error for an unknown theme
        return self.corpora[theme].scores(question, self.encode_question(question))

    def search(self, question: str, theme: str, k: int) -> list[Hit]:
        """The k best paragraphs whose score is above the spec's `min_score` (if set)."""
        hits = top_hits(self.scores(question, theme), k)
        min_score = self.spec.get("min_score")
        return hits if min_score is None else [h for h in hits if h.score > min_score]
