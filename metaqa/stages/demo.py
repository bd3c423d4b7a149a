"""`metaqa demo` (make demo): the whole chain on the embedded sample — prep → synth → meta-train →
finetune on the held-out themes → export int8 → bench → report. It is `metaqa run
experiment=chain` under its own name; see metaqa/stages/run.py."""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from metaqa.config import CONF_DIR
from metaqa.stages import run as chain
from metaqa.tracking.run import run_stage


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="demo")
def main(cfg: DictConfig) -> float | None:
    return run_stage("demo", chain.run, cfg)
