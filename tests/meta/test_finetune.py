"""`metaqa finetune`: k-shot adaptation with F1 before/after, on a tiny random reader."""
import json

import pytest
import torch
from safetensors.torch import load_file

from metaqa.config import ConfigError
from metaqa.data.shards import load_source
from metaqa.models.factory import build_qa_model
from metaqa.stages import finetune, prep
from metaqa.tracking.callbacks import save_reader

FAST = ["reader.max_seq_length=128", "reader.doc_stride=32", "logger=none"]


@pytest.fixture
def setup(stage_cfg, tmp_path, tokenizer):
    prep.run(stage_cfg("prep", [f"data.prep_dir={tmp_path / 'data'}"]))
    torch.manual_seed(0)
    net = build_qa_model({"architecture": {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2,
                                           "num_attention_heads": 2, "intermediate_size": 64}},
                         vocab_size=len(tokenizer))
    reader = save_reader(net, tokenizer, tmp_path / "reader")
    return [f"data.prep_dir={tmp_path / 'data'}", f"model_dir={reader}", *FAST], reader


def test_k_shot_trains_on_k_drawn_questions_and_scores_the_rest(setup, stage_cfg, tmp_path):
    overrides, reader = setup
    out = tmp_path / "ft"
    metrics = finetune.run(stage_cfg("finetune", [*overrides, "k=6", "module.optimizer.lr=1e-3"], out=out))
    trained = load_source(out / "finetune_train.json")
    assert len(trained) == 6 and {r.theme for r in trained} <= {"Jazz", "Beekeeping"}
    assert metrics["eval_questions"] == 60 - 6  # the k questions are not scored
    assert {"before/f1", "after/f1", "f1_gain"} <= set(metrics)
    before, after = load_file(str(reader / "model.safetensors")), load_file(str(out / "reader" / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it did adapt
    per_theme = json.loads((out / "per_theme.json").read_text())
    assert set(per_theme["before"]) == set(per_theme["after"]) == {"Jazz", "Beekeeping"}
    again = finetune.run(stage_cfg("finetune", [*overrides, "k=6", "module.optimizer.lr=1e-3"], out=tmp_path / "ft2"))
    assert load_source(tmp_path / "ft2" / "finetune_train.json") == trained  # seeded draw
    assert again["after/f1"] == pytest.approx(metrics["after/f1"])


def test_zero_shot_scores_only_and_keeps_the_weights(setup, stage_cfg, tmp_path):
    overrides, reader = setup
    out = tmp_path / "ft"
    metrics = finetune.run(stage_cfg("finetune", [*overrides, "k=0", "theme=Jazz"], out=out))
    assert metrics["eval_questions"] == 30 and metrics["before/f1"] == metrics["after/f1"]
    assert not (out / "finetune_train.json").exists()
    before, after = load_file(str(reader / "model.safetensors")), load_file(str(out / "reader" / "model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_bad_k_and_theme_are_config_errors(setup, stage_cfg):
    overrides, _ = setup
    with pytest.raises(ConfigError, match="`k`.*60 questions"):
        finetune.run(stage_cfg("finetune", [*overrides, "k=500"]))
    with pytest.raises(ConfigError, match="`theme`.*Beekeeping"):
        finetune.run(stage_cfg("finetune", [*overrides, "theme=Opera"]))
