"""`metaqa serve`: an exported ONNX reader behind HTTP (FastAPI + uvicorn): `POST /answer`,
`GET /health`, `GET /stats`, and a page at `/` to try questions (metaqa.serving.app)."""
from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from metaqa.config import CONF_DIR, ConfigError
from metaqa.inference import OnnxPredictor, ReaderConfig
from metaqa.serving.app import Limits, create_app
from metaqa.tracking.run import run_stage

log = logging.getLogger(__name__)


def build_app(cfg: DictConfig):
    model_dir = Path(cfg.model_dir)
    if not model_dir.is_dir():
        raise ConfigError("model_dir", f"{model_dir} is not a directory",
                          "pass model_dir=<export run>/onnx (run `metaqa export model_dir=<reader dir>` first)")
    try:
        reader = OnnxPredictor(model_dir, threads=cfg.threads, reader=ReaderConfig.from_cfg(cfg.reader))
    except FileNotFoundError as err:
        raise ConfigError("model_dir", str(err), "pass model_dir=<export run>/onnx") from err
    pipeline = None
    if cfg.index_dir:
        if not Path(cfg.index_dir).is_dir():
            raise ConfigError("index_dir", f"{cfg.index_dir} is not a directory",
                              "pass a dir written by `metaqa pipeline` (its index_dir), or index_dir=null")
        from hydra import compose

        from metaqa.stages.pipeline import build_pipeline

        pipeline_cfg = compose("pipeline", overrides=[f"model_dir={model_dir}", f"index_dir={cfg.index_dir}",
                                                      "source=null", f"threads={cfg.threads}",
                                                      *cfg.pipeline_overrides])
        pipeline = build_pipeline(pipeline_cfg, calibration_file=pipeline_cfg.calibration)
    limits = Limits(**OmegaConf.to_container(cfg.limits, resolve=True))
    return create_app(reader, pipeline, limits, cfg.max_batch, cfg.max_wait_ms, name=f"metaqa reader: {model_dir}")


def run(cfg: DictConfig) -> dict:
    import uvicorn

    app = build_app(cfg)
    log.info("serving %s on http://%s:%d (POST /answer, GET /health, page at /)", cfg.model_dir, cfg.host, cfg.port)
    uvicorn.run(app, host=cfg.host, port=int(cfg.port), log_level=cfg.log_level)
    stats = app.state.batcher.stats
    return {"requests": stats.requests, "batches": stats.batches, "errors": stats.errors}


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="serve")
def main(cfg: DictConfig) -> float | None:
    return run_stage("serve", run, cfg)
