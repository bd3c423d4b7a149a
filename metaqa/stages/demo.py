"""`metaqa demo`: the main job on the embedded sample — prep → train → eval on held-out themes.

Every stage runs with its own base config (composed here) and passes artifacts by path inside
this run's directory, exactly as separate `metaqa <stage>` calls would.
"""
from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from metaqa.config import CONF_DIR
from metaqa.stages import eval as eval_stage
from metaqa.stages import prep, train
from metaqa.tracking.run import run_stage

log = logging.getLogger(__name__)


def stage_config(name: str, out: Path, overrides: list[str]) -> DictConfig:
    return compose(config_name=name, overrides=[f"paths.output_dir={out / name}", *overrides])


def run(cfg: DictConfig) -> dict:
    out = Path(cfg.paths.output_dir)
    choices = HydraConfig.get().runtime.choices  # the config names picked for this run
    data = [f"data={choices['data']}", f"data.prep_dir={out / 'data'}"]
    log.info("1/3 prep")
    prep.run(stage_config("prep", out, data + list(cfg.prep_overrides)))
    log.info("2/3 train (%s)", choices["model"])
    train.run(stage_config("train", out, data + [f"model={choices['model']}", *cfg.train_overrides]))
    log.info("3/3 eval on held-out themes")
    metrics = eval_stage.run(stage_config(
        "eval", out, data + [f"model_dir={out / 'train' / 'reader'}", *cfg.eval_overrides]))
    log.info("demo artifacts in %s", out)
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="demo")
def main(cfg: DictConfig) -> float | None:
    return run_stage("demo", run, cfg)
