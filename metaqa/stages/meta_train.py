"""`metaqa meta-train`: meta-learn a reader across themes. The fit loop is the train stage's; the
episode datamodule and the manual-optimisation MetaQAModule come from conf/meta_train.yaml."""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from metaqa.config import CONF_DIR
from metaqa.stages import train
from metaqa.tracking.run import run_stage


def run(cfg: DictConfig) -> dict:
    return train.run(cfg)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="meta_train")
def main(cfg: DictConfig) -> float | None:
    return run_stage("meta_train", run, cfg)
