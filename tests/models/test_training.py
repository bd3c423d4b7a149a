"""Training at the hardware's pace: precision chosen from the CPU flags, token-budget batches,
a real bf16-mixed training step, and the choices logged into the run's metrics."""
from __future__ import annotations

import hydra
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from metaqa.data.datamodule import TokenBudgetBatchSampler
from metaqa.models.training import build_trainer, resolve_precision
from metaqa.stages import prep, train

NO_BF16 = {"avx2": True, "avx512f": True, "avx512_vnni": True, "avx512_bf16": False, "amx_bf16": False}


@pytest.mark.parametrize("flags, expected", [
    ({**NO_BF16, "avx512_bf16": True}, "bf16-mixed"),  # AMD EPYC Zen 4 / Intel Cooper Lake
    ({**NO_BF16, "amx_bf16": True}, "bf16-mixed"),     # Intel Sapphire Rapids and later
    (NO_BF16, "32-true"),                              # AVX-512 without bf16: emulated, slower
    ({"avx2": True}, "32-true"),
])
def test_auto_precision_follows_the_cpu_flags(flags, expected):
    precision, why = resolve_precision("auto", "cpu", flags)
    assert precision == expected
    assert ("bf16" in why or "AMX" in why) if expected == "bf16-mixed" else "emulated" in why


def test_a_precision_set_in_the_config_is_kept():
    assert resolve_precision("32-true", "cpu", {**NO_BF16, "avx512_bf16": True}) == ("32-true", "set in the config")
    assert resolve_precision("bf16-mixed", "cpu", NO_BF16)[0] == "bf16-mixed"


def test_build_trainer_resolves_auto_and_takes_out_the_threads_key(tmp_path):
    before = torch.get_num_threads()
    cfg = OmegaConf.create({"_target_": "pytorch_lightning.Trainer", "accelerator": "cpu", "devices": 1,
                            "precision": "auto", "threads": 1, "default_root_dir": str(tmp_path),
                            "logger": False, "enable_checkpointing": False})
    try:
        trainer, settings_ = build_trainer(cfg)
        assert settings_["torch_threads"] == torch.get_num_threads() == 1
        assert settings_["precision"] == resolve_precision("auto", "cpu")[0]
        assert ("bf16" in str(trainer.precision)) == (settings_["precision"] == "bf16-mixed")
    finally:
        torch.set_num_threads(before)


def test_a_real_bf16_mixed_training_step_on_this_cpu(stage_cfg, tmp_path):
    prep.run(stage_cfg("prep", [f"data.prep_dir={tmp_path / 'data'}"]))
    cfg = stage_cfg("train", [f"data.prep_dir={tmp_path / 'data'}", "model=tiny", "trainer.precision=bf16-mixed",
                              "trainer.max_steps=3", "datamodule.limit_train=12", "datamodule.limit_val=6",
                              "datamodule.batch_size=4", "reader.max_seq_length=128", "reader.doc_stride=32",
                              "trainer.enable_progress_bar=false"])
    metrics = train.run(cfg)
    assert metrics["precision"] == "bf16-mixed" and metrics["global_step"] == 3
    assert np.isfinite(metrics["train/loss"]) and 0.0 <= metrics["val/f1"] <= 100.0
    assert metrics["peak_rss_mb"] > 0
    saved = torch.load(tmp_path / "train" / "checkpoints" / "last.ckpt", weights_only=False) \
        if (tmp_path / "train" / "checkpoints" / "last.ckpt").exists() else None
    if saved is not None:  # the weights stay fp32 master weights under mixed precision
        assert all(t.dtype == torch.float32 for t in saved["state_dict"].values() if t.is_floating_point())


lengths_strategy = st.lists(st.integers(1, 384), min_size=1, max_size=400)


@settings(max_examples=60, deadline=None)
@given(lengths=lengths_strategy, budget=st.integers(384, 6000), seed=st.integers(0, 2**16), epoch=st.integers(0, 5))
def test_token_budget_batches_fit_the_budget_and_cover_every_window_once(lengths, budget, seed, epoch):
    sampler = TokenBudgetBatchSampler(lengths, budget, seed)
    sampler.set_epoch(epoch)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # once each, none lost
    assert all(len(b) * max(lengths[i] for i in b) <= budget for b in batches)  # padded tokens


def test_token_budget_epochs_differ_but_replay_exactly():
    lengths = list(np.random.default_rng(0).integers(60, 384, size=500))
    sampler = TokenBudgetBatchSampler(lengths, 3000, seed=7)
    epoch0 = list(sampler)
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert len(epoch0) == len(epoch1) and epoch0 != epoch1  # same step count, new order
    again = TokenBudgetBatchSampler(lengths, 3000, seed=7)
    assert list(again) == epoch0  # a pure function of (seed, epoch): a resumed run replays it
    widths = [max(lengths[i] for i in b) for b in epoch0]
    padding = sum(len(b) * w - sum(lengths[i] for i in b) for b, w in zip(epoch0, widths))
    assert padding / sum(lengths) < 0.05  # similar lengths together


def test_a_budget_below_the_longest_window_is_refused():
    with pytest.raises(ValueError, match="max_tokens=100 is below the longest window"):
        TokenBudgetBatchSampler([50, 120], 100, seed=0)


def test_train_with_a_token_budget_trains_every_window_within_budget(stage_cfg, tmp_path, tokenizer):
    prep.run(stage_cfg("prep", [f"data.prep_dir={tmp_path / 'data'}"]))
    cfg = stage_cfg("train", [f"data.prep_dir={tmp_path / 'data'}", "model=tiny", "datamodule.max_tokens=512",
                              "datamodule.limit_train=16", "datamodule.limit_val=6", "reader.max_seq_length=128",
                              "reader.doc_stride=32", "trainer.enable_progress_bar=false"])
    datamodule = hydra.utils.instantiate(cfg.datamodule, tokenizer=tokenizer)
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    batches = list(loader)
    assert all(b["input_ids"].numel() <= 512 for b in batches)  # padded tokens within the budget
    seen = sorted(i for b in batches for i in b["feature_index"].tolist())
    assert seen == list(range(len(datamodule.train_features)))
    metrics = train.run(cfg)
    assert metrics["global_step"] == len(loader) == len(batches)


def test_learning_curve_and_throughput_survive_a_resume(stage_cfg, tmp_path):
    """A run stopped at step 4 and resumed to step 8 logs the same curve as one that ran straight,
    and its windows/s and wall time cover the whole fit, not the resumed piece only."""
    import json

    prep.run(stage_cfg("prep", [f"data.prep_dir={tmp_path / 'data'}"]))
    common = [f"data.prep_dir={tmp_path / 'data'}", "model=tiny", "datamodule.limit_train=16", "datamodule.limit_val=6",
              "datamodule.batch_size=4", "reader.max_seq_length=128", "reader.doc_stride=32",
              "trainer.val_check_interval=2", "trainer.check_val_every_n_epoch=null", "trainer.enable_progress_bar=false",
              "callbacks.periodic_checkpoint.every_n_train_steps=4"]
    straight = train.run(stage_cfg("train", [*common, "trainer.max_steps=8"], out=tmp_path / "straight"))
    train.run(stage_cfg("train", [*common, "trainer.max_steps=4"], out=tmp_path / "split"))
    resumed = train.run(stage_cfg("train", [*common, "trainer.max_steps=8", "ckpt_path=last"], out=tmp_path / "split"))
    curve = json.loads((tmp_path / "split" / "learning_curve.json").read_text())
    assert [p["step"] for p in curve] == [2, 4, 6, 8]
    assert [p["step"] for p in json.loads((tmp_path / "straight" / "learning_curve.json").read_text())] == [2, 4, 6, 8]
    assert (tmp_path / "split" / "learning_curve.png").stat().st_size > 0
    assert resumed["global_step"] == straight["global_step"] == 8
    ckpt = torch.load(tmp_path / "split" / "checkpoints" / "last.ckpt", weights_only=False)
    state = next(v for k, v in ckpt["callbacks"].items() if k.startswith("Throughput"))
    assert state["examples"] == 8 * 4 and state["wall"] >= resumed["train/wall_s"] * 0.5 > 0
