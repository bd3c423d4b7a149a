"""Every config in conf/ composes and resolves; the model configs build the architectures they name."""
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from metaqa.config import CONF_DIR
from metaqa.models.factory import build_qa_model
from metaqa.tracking.run import resolved_config

BASES = sorted(p.stem for p in CONF_DIR.glob("*.yaml"))
GROUPS = {g: sorted(p.stem for p in (CONF_DIR / g).glob("*.yaml"))
          for g in ("data", "model", "trainer", "logger", "callbacks", "debug")}


@pytest.mark.parametrize("base", BASES)
def test_base_configs_compose_and_resolve(stage_cfg, base):
    needs_model_dir = ("bench", "eval", "export", "finetune", "pipeline", "pipeline_eval", "predict", "serve")
    overrides = ["model_dir=/tmp/x"] if base in needs_model_dir else []
    overrides += ["dir=/tmp/x"] if base == "report" else []
    overrides += ["teacher_dir=/tmp/x"] if base == "compress" else []
    overrides += ["model_dir=/tmp/x", "text_source=/tmp/x.txt"] if base == "adapt_mlm" else []
    cfg = stage_cfg(base, overrides)
    assert resolved_config(cfg)


@pytest.mark.parametrize("group,option", [(g, o) for g, opts in GROUPS.items() for o in opts])
def test_every_group_option_composes_into_train(stage_cfg, group, option):
    cfg = stage_cfg("train", [f"{group}={option}"])
    resolved = resolved_config(cfg)
    assert resolved["trainer"]["_target_"] == "pytorch_lightning.Trainer"


@pytest.mark.parametrize("search", sorted(p.stem for p in (CONF_DIR / "hparams_search").glob("*.yaml")))
def test_hparams_search_configs_compose_into_train(stage_cfg, search):
    cfg = stage_cfg("train", [f"+hparams_search={search}"])
    sweeper = cfg.hydra.sweeper
    assert cfg.hydra.mode.name == "MULTIRUN" and sweeper._target_.endswith("OptunaSweeper")
    assert sweeper.storage is None and sweeper.params  # optuna 2.x: in-memory study
    metrics = [cfg.optimized_metric] if isinstance(cfg.optimized_metric, str) else list(cfg.optimized_metric)
    directions = [sweeper.direction] if isinstance(sweeper.direction, str) else list(sweeper.direction)
    assert len(metrics) == len(directions)  # one direction per objective
    if "val/latency_p50_ms" in metrics:  # measured by the latency callback
        assert cfg.callbacks.latency._target_ == "metaqa.tracking.callbacks.ReaderLatency"
    assert resolved_config(cfg)


@pytest.mark.parametrize("name,hidden,layers,embedding", [
    ("tiny", 32, 2, 32), ("bert_mini", 256, 4, 256), ("electra_small", 256, 12, 128)])
def test_architecture_configs_build_what_they_name(name, hidden, layers, embedding):
    cfg = OmegaConf.load(CONF_DIR / "model" / f"{name}.yaml")
    net = build_qa_model(cfg, vocab_size=30522)
    assert net.config.hidden_size == hidden and net.config.num_hidden_layers == layers
    assert net.get_input_embeddings().weight.shape == (30522, embedding)
    assert net.qa_outputs.out_features == 2


def test_package_data_ships_the_sample():
    assert (Path(OmegaConf.create({"x": "${metaqa_package:}"}).x) / "data/sample/sample_qa.csv").exists()
