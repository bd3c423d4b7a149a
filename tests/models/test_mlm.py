"""Domain-adaptive masked-LM pretraining: whole-word masks, the encoder adapted in place, the QA
head untouched, and the reader still loads."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoModelForQuestionAnswering

from metaqa.config import CONF_DIR, PACKAGE_DIR, check_reader_dir
from metaqa.data.unlabelled import MaskedLMDataModule, read_texts
from metaqa.models.factory import build_qa_model
from metaqa.models.mlm import masked_lm_around, masked_lm_loss
from metaqa.stages import adapt_mlm

SAMPLE = PACKAGE_DIR / "data" / "sample" / "sample_qa.csv"


@pytest.fixture
def reader(tmp_path, tokenizer):
    path = tmp_path / "reader"
    torch.manual_seed(0)
    build_qa_model(OmegaConf.load(CONF_DIR / "model" / "tiny.yaml"), vocab_size=len(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def weights(path) -> dict[str, torch.Tensor]:
    return AutoModelForQuestionAnswering.from_pretrained(path).state_dict()


def test_whole_words_are_masked_together_and_held_out_masks_repeat(tokenizer):
    texts = [f"Unbelievably, tokenisation number {i} splits several uncommon words." for i in range(60)]
    data = MaskedLMDataModule(tokenizer, texts, max_seq_length=64, batch_size=8, heldout_fraction=0.25, seed=3)
    assert len(data.heldout_texts) == 15 and not set(data.heldout_texts) & set(data.train_texts)
    masked = total = 0
    for batch in data.train_dataloader():
        for ids, labels in zip(batch["input_ids"], batch["labels"]):
            pieces = tokenizer.convert_ids_to_tokens(labels[labels != -100].tolist())
            masked += len(pieces)
            total += int((ids != tokenizer.pad_token_id).sum()) - 2
            # a masked word piece ("##…") never stands alone: the piece before it is masked too
            for j in (labels != -100).nonzero().flatten().tolist():
                if tokenizer.convert_ids_to_tokens(int(labels[j])).startswith("##"):
                    assert labels[j - 1] != -100
            assert (ids[labels != -100] == tokenizer.mask_token_id).all()
    assert 0.05 < masked / total < 0.3
    first, again = data.heldout_batches(), data.heldout_batches()
    assert all(torch.equal(a["labels"], b["labels"]) for a, b in zip(first, again))


def test_a_long_text_gives_several_windows_and_nothing_is_cut(tokenizer):
    text = " ".join(f"word{i}" for i in range(300))
    data = MaskedLMDataModule(tokenizer, [text], max_seq_length=64, heldout_fraction=0.0)
    assert len(data.train_windows) > 1 and all(len(w["input_ids"]) <= 64 for w in data.train_windows)
    pieces = sum(len(w["input_ids"]) - 2 for w in data.train_windows)
    assert pieces == len(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_the_mlm_model_shares_the_readers_encoder(reader):
    net = AutoModelForQuestionAnswering.from_pretrained(reader)
    mlm = masked_lm_around(net)
    assert mlm.base_model is net.base_model
    assert mlm.get_output_embeddings().weight is net.base_model.embeddings.word_embeddings.weight


def test_the_loss_on_masked_positions_only_is_the_full_models_loss(reader, tokenizer):
    mlm = masked_lm_around(AutoModelForQuestionAnswering.from_pretrained(reader))
    torch.nn.init.normal_(mlm.cls.predictions.transform.dense.weight)  # a head that is not the identity
    data = MaskedLMDataModule(tokenizer, read_texts(SAMPLE)[:12], max_seq_length=64, batch_size=6)
    batch = next(iter(data.train_dataloader()))
    assert torch.allclose(masked_lm_loss(mlm, batch), mlm(**batch).loss, atol=1e-5)
    batch["labels"][:] = -100  # nothing masked: zero, not NaN
    nothing = masked_lm_loss(mlm, batch)
    assert nothing.item() == 0.0 and nothing.requires_grad


def test_adapt_mlm_changes_only_the_encoder_and_the_reader_still_loads(stage_cfg, reader, tmp_path):
    common = [f"model_dir={reader}", f"text_source={SAMPLE}", "max_seq_length=64", "batch_size=8", "lr=1e-3",
              "logger=none", "heldout_fraction=0.2"]
    metrics = adapt_mlm.run(stage_cfg("adapt_mlm", [*common, "steps=12", "head_warmup_steps=3"], out=tmp_path / "a"))
    adapted, before = weights(tmp_path / "a" / "reader"), weights(reader)
    assert metrics["steps"] == 12 and metrics["texts"] == len(read_texts(SAMPLE))
    assert metrics["heldout_mlm_loss_after"] < metrics["heldout_mlm_loss_before"]
    assert set(adapted) == set(before)
    head = [k for k in before if k.startswith("qa_outputs.")]
    assert head and all(torch.equal(adapted[k], before[k]) for k in head)
    assert any(not torch.equal(adapted[k], before[k]) for k in before if k not in head)
    check_reader_dir(tmp_path / "a" / "reader")  # a reader dir finetune, export and eval accept

    # during the head's warm-up the encoder does not move: only warm-up steps → the same reader
    adapt_mlm.run(stage_cfg("adapt_mlm", [*common, "steps=3", "head_warmup_steps=3"], out=tmp_path / "b"))
    assert all(torch.equal(v, before[k]) for k, v in weights(tmp_path / "b" / "reader").items())
