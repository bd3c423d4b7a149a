"""`metaqa eval`: score a save_pretrained reader dir on a shard dir or a data file."""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from metaqa.config import CONF_DIR, check_reader_dir
from metaqa.data.shards import load_source
from metaqa.evaluation.scoring import score
from metaqa.fileio import write_json
from metaqa.inference import ReaderConfig, TorchPredictor
from metaqa.tracking.run import run_stage
from metaqa.tracking.tables import metrics_table

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    model_dir = check_reader_dir(cfg.model_dir, cfg.get("allow_pickle", False))
    reader = ReaderConfig.from_cfg(cfg.reader)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    predictor = TorchPredictor.from_dir(model_dir, reader)
    records = load_source(cfg.source, cfg.format, cfg.data.duplicate_ids)[: cfg.limit]
    started = time.perf_counter()
    predictions = predictor.predict(records, cfg.batch_size, progress=True)
    seconds = time.perf_counter() - started
    overall, per_theme = score(records, predictions, reader.decode.version_2)
    out = Path(cfg.paths.output_dir)
    write_json(out / "metrics.json", {"overall": overall, "per_theme": per_theme})
    write_json(out / "predictions.json", {p.id: p.text for p in predictions})
    # The official script's na_prob file: null − best (null where the reader found no span).
    write_json(out / "na_probs.json", {p.id: p.score_diff if math.isfinite(p.score_diff) else None
                                       for p in predictions})
    # With the best span of every question beside it, any other threshold scores without a rerun
    # (`metaqa.evaluation.scoring.texts_at_threshold`).
    write_json(out / "spans.json", {p.id: p.span_text for p in predictions})
    print(metrics_table(overall, per_theme))
    return {**overall, "questions_per_s": len(records) / seconds}


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
def main(cfg: DictConfig) -> float | None:
    return run_stage("eval", run, cfg)
