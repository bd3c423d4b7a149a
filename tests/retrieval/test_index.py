"""ThemeIndex: paragraphs per theme, build / save / load, reuse only when nothing changed."""
import json

import numpy as np
import pytest

from metaqa.config import ConfigError
from metaqa.data.records import Answer, QARecord
from metaqa.retrieval.index import ThemeIndex, check_retriever_spec, paragraphs_by_theme
from tests.retrieval.conftest import BM25, OFF_TOPIC, QUESTIONS, THEMES


def hybrid(encoder_dir):
    return {"name": "hybrid", "rrf_k": 60, "weights": [1.0, 1.0], "min_score": None, "bm25": BM25,
            "dense": {"name": "dense", "encoder": str(encoder_dir), "max_length": 64, "batch_size": 4}}


def test_paragraphs_by_theme_are_unique_contexts_in_first_seen_order():
    def rec(i, theme, context):
        return QARecord(f"q{i}", theme, context, "q?", (Answer(context[:3], 0),))

    records = [rec(0, "A", "p1"), rec(1, "B", "p9"), rec(2, "A", "p2"), rec(3, "A", "p1")]
    assert paragraphs_by_theme(records) == {"A": ["p1", "p2"], "B": ["p9"]}


def test_bm25_theme_index_searches_within_the_theme(tmp_path):
    index = ThemeIndex.build(THEMES, BM25)
    for question, right in QUESTIONS:
        hits = index.search(question, "Mixed", 3)
        assert hits[0].paragraph == right and hits[0].rank == 0
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert index.search(OFF_TOPIC, "Mixed", 3) == []  # min_score 0: nothing shares a word with it
    with pytest.raises(KeyError, match="'Mixed'"):
        index.search("Which bees?", "Beekeeping", 3)


def test_save_load_round_trip_and_reuse(tmp_path, tiny_encoder_dir):
    spec = hybrid(tiny_encoder_dir)
    built, fresh = ThemeIndex.build_or_load(tmp_path / "idx", THEMES, spec)
    assert fresh and json.loads((tmp_path / "idx" / "index.json").read_text())["themes"] == ["Mixed", "Other"]
    loaded, fresh = ThemeIndex.build_or_load(tmp_path / "idx", THEMES, spec)
    assert not fresh and loaded.paragraphs == built.paragraphs and loaded.kind == "hybrid"
    for question, right in QUESTIONS:
        np.testing.assert_allclose(loaded.scores(question, "Mixed"), built.scores(question, "Mixed"))
    changed = {**THEMES, "Other": THEMES["Other"] + ["Snow is frozen rain."]}
    _, fresh = ThemeIndex.build_or_load(tmp_path / "idx", changed, spec)
    assert fresh  # other paragraphs: rebuilt, never a stale index
    _, fresh = ThemeIndex.build_or_load(tmp_path / "idx", changed, {**spec, "min_score": 0.01})
    assert not fresh  # a search-time setting does not invalidate the saved index
    assert not list(tmp_path.glob("idx.tmp-*"))


def test_spec_errors_name_the_field():
    with pytest.raises(ConfigError, match="retriever.name"):
        check_retriever_spec({"name": "tfidf"})
    with pytest.raises(ConfigError, match="retriever.dense"):
        check_retriever_spec({"name": "hybrid", "bm25": BM25})
    with pytest.raises(ConfigError, match="retriever.weights"):
        check_retriever_spec({"name": "hybrid", "bm25": BM25, "dense": {}, "weights": [1.0]})


def test_onnx_encoder_is_exported_into_the_index_and_matches_torch(tmp_path, tiny_encoder_dir):
    torch_spec = {"name": "dense", "encoder": str(tiny_encoder_dir), "max_length": 64, "batch_size": 4}
    onnx_spec = {**torch_spec, "backend": "onnx"}
    reference = ThemeIndex.build(THEMES, torch_spec)
    index, fresh = ThemeIndex.build_or_load(tmp_path / "idx", THEMES, onnx_spec, threads=1)
    assert fresh and (tmp_path / "idx" / "encoder" / "model.onnx").exists()
    loaded, fresh = ThemeIndex.build_or_load(tmp_path / "idx", THEMES, onnx_spec, threads=1)
    assert not fresh
    for question, _ in QUESTIONS:
        expected = reference.scores(question, "Mixed")
        np.testing.assert_allclose(index.scores(question, "Mixed"), expected, atol=1e-4)
        np.testing.assert_allclose(loaded.scores(question, "Mixed"), expected, atol=1e-4)
    assert not list(tmp_path.glob("idx.tmp-*"))
