"""BM25, dense and hybrid retrieval on a hand-made theme; reciprocal-rank fusion by hand."""
import numpy as np
import pytest

from metaqa.retrieval.bm25 import BM25Index, analyze, light_stem
from metaqa.retrieval.dense import DenseIndex, SentenceEncoder
from metaqa.retrieval.fusion import ranks, reciprocal_rank_fusion
from tests.retrieval.conftest import OFF_TOPIC, PARAGRAPHS, QUESTIONS


def test_analyzer_drops_stopwords_and_folds_simple_suffixes():
    assert analyze("The Bees were collecting nectar!") == ["bee", "collect", "nectar"]
    assert analyze("bees", stem=False) == ["bees"]
    assert [light_stem(w) for w in ("colonies", "boxes", "glass", "analysis", "locomotives")] == [
        "colony", "box", "glass", "analysis", "locomotive"]


@pytest.mark.parametrize("question,right", QUESTIONS)
def test_bm25_ranks_the_right_paragraph_first(question, right):
    scores = BM25Index.build(PARAGRAPHS).scores(question)
    assert scores.shape == (len(PARAGRAPHS),)
    assert int(np.argmax(scores)) == right
    assert scores[right] > np.sort(scores)[-2]  # strictly first, not a tie


def test_bm25_off_topic_question_scores_zero_everywhere():
    np.testing.assert_array_equal(BM25Index.build(PARAGRAPHS).scores(OFF_TOPIC), np.zeros(len(PARAGRAPHS)))


def test_bm25_save_and_load_give_the_same_scores(tmp_path):
    index = BM25Index.build(PARAGRAPHS, k1=1.2, b=0.5)
    index.save(tmp_path / "bm25")
    loaded = BM25Index.load(tmp_path / "bm25")
    for question, _ in QUESTIONS:
        np.testing.assert_allclose(loaded.scores(question), index.scores(question))


def test_rrf_matches_the_formula_by_hand():
    a = np.array([3.0, 1.0, 2.0])  # ranks 1, 3, 2
    b = np.array([0.1, 0.9, 0.5])  # ranks 3, 1, 2
    np.testing.assert_array_equal(ranks(a), [1, 3, 2])
    fused = reciprocal_rank_fusion([a, b], k=60)
    np.testing.assert_allclose(fused, [1 / 61 + 1 / 63, 1 / 63 + 1 / 61, 2 / 62])
    weighted = reciprocal_rank_fusion([a, b], k=0, weights=[2.0, 0.0])
    np.testing.assert_allclose(weighted, [2.0, 2 / 3, 1.0])
    np.testing.assert_array_equal(ranks(np.array([1.0, 1.0, 2.0])), [2, 3, 1])  # ties keep index order
    with pytest.raises(ValueError, match="different numbers"):
        reciprocal_rank_fusion([a, b[:2]])


def test_encoder_gives_unit_vectors_independent_of_batching(tiny_encoder_dir):
    encoder = SentenceEncoder(str(tiny_encoder_dir))
    together = encoder.encode(PARAGRAPHS, batch_size=8)
    alone = np.stack([encoder.encode([p])[0] for p in PARAGRAPHS])
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(together, alone, atol=1e-5)  # padding never changes the mean


def test_dense_index_scores_are_cosines_and_round_trip(tiny_encoder_dir, tmp_path):
    encoder = SentenceEncoder(str(tiny_encoder_dir))
    index = DenseIndex.build(PARAGRAPHS, encoder)
    query = encoder.encode([QUESTIONS[0][0]])[0]
    np.testing.assert_allclose(index.scores(query), index.embeddings @ query)
    index.save(tmp_path / "dense")
    np.testing.assert_array_equal(DenseIndex.load(tmp_path / "dense").scores(query), index.scores(query))


@pytest.mark.slow
def test_packaged_minilm_ranks_the_right_paragraph_first():
    encoder = SentenceEncoder("packaged")
    index = DenseIndex.build(PARAGRAPHS, encoder)
    for question, right in QUESTIONS:
        assert int(np.argmax(index.scores(encoder.encode([question])[0]))) == right, question
