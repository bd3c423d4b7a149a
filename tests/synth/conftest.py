"""Shared for the synth tests: the real spaCy pipeline (loaded once), a tiny random reader saved
like `metaqa train` saves one, and its fp32 ONNX export."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from metaqa.config import CONF_DIR
from metaqa.models.factory import build_qa_model

# Every entity type the wh-word rules care about, in three sentences spaCy's small model labels
# reliably (checked in test_candidates).
PARAGRAPH = ("Barack Obama visited Paris in March 1998 with three advisers from the United Nations. "
             "The trip cost the French government $5 million, about 12 percent of the annual budget. "
             "He later wrote about the visit in a memoir published by Random House.")


@pytest.fixture(scope="session")
def nlp():
    from metaqa.synth.candidates import load_spacy

    return load_spacy()


@pytest.fixture(scope="session")
def reader_dir(tmp_path_factory, tokenizer):
    """A tiny random BERT reader in a save_pretrained dir (answers are arbitrary but real)."""
    path = tmp_path_factory.mktemp("reader")
    torch.manual_seed(0)
    net = build_qa_model(OmegaConf.load(CONF_DIR / "model" / "tiny.yaml"), vocab_size=len(tokenizer)).eval()
    net.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def onnx_dir(reader_dir, tmp_path_factory):
    from metaqa.export.convert import build_variant

    return build_variant(reader_dir, {"name": "fp32"}, tmp_path_factory.mktemp("onnx"))
