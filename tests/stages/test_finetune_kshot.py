"""k-shot adaptation that does not collapse: stratified draws keep the pool's unanswerable share,
and the cross-validated null threshold and early-stopping epoch are functions of the k examples alone."""
from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from metaqa.config import CONF_DIR, ConfigError
from metaqa.data.records import Answer, QARecord
from metaqa.models.factory import build_qa_model
from metaqa.stages import finetune, prep


def pool(n: int, unanswerable: int) -> list[QARecord]:
    return [QARecord(f"q{i}", "t", "Ada wrote it.", "Who?", () if i < unanswerable else (Answer("Ada", 0),),
                     i < unanswerable) for i in range(n)]


@pytest.mark.parametrize("k", [4, 10, 16, 40])
def test_stratified_draws_keep_the_unanswerable_share(k):
    records = pool(100, 30)
    for seed in range(5):
        shots = finetune.draw_k(records, k, seed)
        assert len(shots) == k == len({r.id for r in shots})
        assert sum(r.is_impossible for r in shots) == round(k * 0.3)
    assert finetune.draw_k(records, 16, 1) == finetune.draw_k(records, 16, 1)  # seeded
    assert sum(r.is_impossible for r in finetune.draw_k(pool(10, 8), 5, 0)) == 4  # round(4.0)
    assert sum(r.is_impossible for r in finetune.draw_k(pool(10, 9), 5, 0)) == 4  # 1 answerable left: the rest


def test_folds_spread_unanswerable_questions():
    folds = finetune.folds_of(pool(12, 4), 4)
    assert [sum(r.is_impossible for r in f) for f in folds] == [1, 1, 1, 1]
    assert sorted(r.id for f in folds for r in f) == sorted(r.id for r in pool(12, 4))


@pytest.fixture
def tiny_reader(tmp_path, tokenizer):
    reader = tmp_path / "reader"
    torch.manual_seed(0)
    build_qa_model(OmegaConf.load(CONF_DIR / "model" / "tiny.yaml"), vocab_size=len(tokenizer)).save_pretrained(reader)
    tokenizer.save_pretrained(reader)
    return reader


@pytest.mark.parametrize("early_stopping", [False, True])
def test_cv_threshold_never_reads_the_evaluation_set(stage_cfg, tmp_path, tiny_reader, early_stopping):
    prep.run(stage_cfg("prep", [f"data.prep_dir={tmp_path / 'data'}"]))
    common = [f"model_dir={tiny_reader}", f"data.prep_dir={tmp_path / 'data'}", "k=8", "threshold.folds=2",
              "min_steps=2", f"epochs={3 if early_stopping else 1}", f"early_stopping={early_stopping}",
              "reader.max_seq_length=128", "reader.doc_stride=32", "logger=none"]
    test_eval = finetune.run(stage_cfg("finetune", [*common], out=tmp_path / "a"))
    dev_eval = finetune.run(stage_cfg("finetune", [*common, f"eval_source={tmp_path / 'data' / 'dev'}"],
                                      out=tmp_path / "b"))
    assert test_eval["eval_questions"] != dev_eval["eval_questions"]  # other questions scored …
    assert test_eval["after/null_threshold"] == dev_eval["after/null_threshold"]  # … the same threshold
    per_q = json.loads((tmp_path / "a" / "per_question.json").read_text())["after"]
    assert len(per_q) == test_eval["eval_questions"]
    assert sum(f for f, _ in per_q.values()) / len(per_q) == pytest.approx(test_eval["after/f1"])
    saved = json.loads((tmp_path / "a" / "threshold.json").read_text())
    assert len(saved["null_threshold_folds"]) == 2 and saved["null_threshold"] == test_eval["after/null_threshold"]
    if early_stopping:  # the epoch chosen on the held folds, whatever is scored
        assert test_eval["after/schedule_share"] == dev_eval["after/schedule_share"]
        held = saved["held_f1_by_epoch"]
        assert len(held) == 3 and held[saved["chosen_epoch"] - 1] == max(held)
        assert all(f < max(held) for f in held[saved["chosen_epoch"]:])  # the latest of the best
        assert 0 < saved["schedule_share"] <= 1
    else:
        assert "chosen_epoch" not in saved and "after/schedule_share" not in test_eval


def test_early_stopping_needs_folds_of_the_k_examples(stage_cfg, tmp_path, tiny_reader):
    prep.run(stage_cfg("prep", [f"data.prep_dir={tmp_path / 'data'}"]))
    common = [f"model_dir={tiny_reader}", f"data.prep_dir={tmp_path / 'data'}", "early_stopping=true", "logger=none"]
    with pytest.raises(ConfigError, match="threshold.folds"):
        finetune.run(stage_cfg("finetune", [*common, "k=8"], out=tmp_path / "a"))
    assert finetune.run(stage_cfg("finetune", [*common, "k=0"], out=tmp_path / "b"))["f1_gain"] == 0  # nothing to stop
