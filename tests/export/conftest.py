"""Shared for the export tests: a tiny random reader saved like `metaqa train` saves one, its fp32
ONNX export, a few sample records, and a dev file whose gold answers are the PyTorch model's own
answers (so PyTorch scores F1 100 there and any change in the answers shows as an F1 drop)."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from metaqa.config import CONF_DIR, PACKAGE_DIR
from metaqa.data.formats import read_records, write_squad_json
from metaqa.data.records import Answer, QARecord
from metaqa.inference import DecodeConfig, ReaderConfig, TorchPredictor
from metaqa.models.factory import build_qa_model

WINDOW = {"max_seq_length": 128, "doc_stride": 32}  # small windows: fast, and long contexts split


def reader_cfg(**decode) -> ReaderConfig:
    """The tests' small windows with the given decode settings."""
    return ReaderConfig(**WINDOW, decode=DecodeConfig(**decode))


def torch_answers(net, tokenizer, records, **decode):
    """The PyTorch reader's batched answers (the reference the ONNX path is held to)."""
    return TorchPredictor(net, tokenizer, reader_cfg(**decode)).predict(records)


def tiny_reader(path, tokenizer, seed: int = 0):
    torch.manual_seed(seed)
    net = build_qa_model(OmegaConf.load(CONF_DIR / "model" / "tiny.yaml"), vocab_size=len(tokenizer)).eval()
    net.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return net


@pytest.fixture(scope="session")
def reader(tmp_path_factory, tokenizer):
    """(dir, net): a tiny random BERT reader in a save_pretrained dir."""
    path = tmp_path_factory.mktemp("reader")
    return path, tiny_reader(path, tokenizer)


@pytest.fixture(scope="session")
def sample_records():
    return read_records(PACKAGE_DIR / "data" / "sample" / "sample_qa.csv").records[:12]


@pytest.fixture(scope="session")
def fp32_dir(reader, tmp_path_factory):
    from metaqa.export.convert import build_variant

    return build_variant(reader[0], {"name": "fp32"}, tmp_path_factory.mktemp("fp32"))


@pytest.fixture(scope="session")
def self_gold(reader, tokenizer, sample_records, tmp_path_factory):
    """A SQuAD v2 file of the sample questions with the tiny model's answers as gold."""
    preds = torch_answers(reader[1], tokenizer, sample_records)
    records = [
        QARecord(r.id, r.theme, r.context, r.question, (Answer(p.text, p.start),) if p.text else (), not p.text)
        for r, p in zip(sample_records, preds)
    ]
    path = tmp_path_factory.mktemp("gold") / "self_gold.json"
    write_squad_json(records, path)
    return path
