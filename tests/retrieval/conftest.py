"""Shared for the retrieval tests: a hand-made theme of five unrelated paragraphs with questions
whose right paragraph is known, a tiny random encoder dir, and a tiny random ONNX reader."""
from __future__ import annotations

import pytest

PARAGRAPHS = [
    "Honey bees live in colonies ruled by a single queen. Worker bees collect nectar from flowers "
    "and turn it into honey, which they store in wax combs inside the hive.",
    "A volcano erupts when magma rises through the crust. The 1980 eruption of Mount St. Helens "
    "blew away the north face of the mountain and spread ash over eleven states.",
    "In chess, the Sicilian Defence answers the king's pawn opening with a pawn to c5. It leads to "
    "sharp, unbalanced positions and is the most popular reply at master level.",
    "Bread rises because yeast ferments the sugars in the dough, releasing carbon dioxide. Kneading "
    "develops gluten, which traps the gas and gives the loaf its structure.",
    "The Stockton and Darlington Railway opened in 1825 as the first public railway to use steam "
    "locomotives. George Stephenson built its engine, Locomotion No. 1.",
]
QUESTIONS = [  # (question, index of the paragraph that answers it)
    ("What do worker bees turn nectar into?", 0),
    ("Which mountain lost its north face in the 1980 eruption?", 1),
    ("How does the Sicilian Defence answer the king's pawn opening?", 2),
    ("What gas does yeast release in bread dough?", 3),
    ("Who built the engine of the Stockton and Darlington Railway?", 4),
]
THEMES = {"Mixed": PARAGRAPHS, "Other": ["Penguins cannot fly but swim very well.", "Rain falls from clouds."]}
OFF_TOPIC = "What is the capital city of Mongolia?"
BM25 = {"name": "bm25", "k1": 1.5, "b": 0.75, "method": "lucene", "stem": True, "min_score": 0.0}
WINDOW = {"max_seq_length": 128, "doc_stride": 32}


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory, tokenizer):
    """A tiny random BERT saved with the packaged tokenizer: loads as a SentenceEncoder."""
    from tests.export.conftest import tiny_reader

    path = tmp_path_factory.mktemp("tiny_encoder")
    tiny_reader(path, tokenizer)
    return path


@pytest.fixture(scope="session")
def tiny_onnx_dir(tmp_path_factory, tokenizer):
    """A tiny random reader exported to fp32 ONNX (what `metaqa export` writes)."""
    from metaqa.export.convert import build_variant
    from tests.export.conftest import tiny_reader

    reader_dir = tmp_path_factory.mktemp("tiny_reader")
    tiny_reader(reader_dir, tokenizer)
    return build_variant(reader_dir, {"name": "fp32"}, tmp_path_factory.mktemp("tiny_onnx"))
