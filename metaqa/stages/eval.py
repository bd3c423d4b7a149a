"""`metaqa eval`: score a save_pretrained reader dir on a shard dir or a data file."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from transformers import AutoModelForQuestionAnswering, AutoTokenizer

from metaqa.config import CONF_DIR, check_reader_dir, check_windows
from metaqa.data.shards import load_source
from metaqa.fileio import write_json
from metaqa.models.inference import DecodeConfig, predict_records, score
from metaqa.tracking.run import run_stage
from metaqa.tracking.tables import metrics_table

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    model_dir = check_reader_dir(cfg.model_dir, cfg.get("allow_pickle", False))
    check_windows(cfg.max_seq_length, cfg.doc_stride, "eval")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    net = AutoModelForQuestionAnswering.from_pretrained(model_dir, local_files_only=True)
    records = load_source(cfg.source, cfg.format)[: cfg.limit]
    started = time.perf_counter()
    predictions = predict_records(net, tokenizer, records, cfg.max_seq_length, cfg.doc_stride,
                                  cfg.batch_size, DecodeConfig(**cfg.decode), progress=True)
    seconds = time.perf_counter() - started
    overall, per_theme = score(records, predictions)
    out = Path(cfg.paths.output_dir)
    write_json(out / "metrics.json", {"overall": overall, "per_theme": per_theme})
    write_json(out / "predictions.json", {p.id: p.text for p in predictions})
    write_json(out / "na_probs.json", {p.id: p.score_diff for p in predictions})
    print(metrics_table(overall, per_theme))
    return {**overall, "questions_per_s": len(records) / seconds}


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
def main(cfg: DictConfig) -> float | None:
    return run_stage("eval", run, cfg)
