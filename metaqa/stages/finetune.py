"""`metaqa finetune`: k-shot adaptation of a reader to one target domain; F1 before and after.

The k examples are drawn with a seeded generator from `train_source` (questions of `theme`
when given) and written to the run dir, so every run says what it trained on. When the
evaluation source is the same data, those k questions are left out of what is scored.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import hydra
import numpy as np
import pytorch_lightning as pl
from omegaconf import DictConfig

from metaqa.config import CONF_DIR, ConfigError, check_reader_dir
from metaqa.data.datamodule import QADataModule
from metaqa.data.formats import write_squad_json
from metaqa.data.records import QARecord
from metaqa.data.shards import load_source
from metaqa.evaluation.scoring import score
from metaqa.fileio import write_json
from metaqa.inference import ReaderConfig, TorchPredictor
from metaqa.models.training import build_trainer
from metaqa.stages.train import resolve_ckpt
from metaqa.tracking.callbacks import save_reader
from metaqa.tracking.run import instantiate_list, log_hyperparams, run_stage
from metaqa.tracking.tables import markdown_table

log = logging.getLogger(__name__)


def of_theme(records: list[QARecord], theme: str | None, source: str) -> list[QARecord]:
    if theme is None:
        return records
    kept = [r for r in records if r.theme == theme]
    if not kept:
        themes = sorted({r.theme for r in records})
        raise ConfigError("theme", f"no question of theme '{theme}' in {source}",
                          f"pick one of: {', '.join(themes[:20])}")
    return kept


def draw_k(records: list[QARecord], k: int, seed: int) -> list[QARecord]:
    if k > len(records):
        raise ConfigError("k", f"asks {k} examples but the source has {len(records)} questions",
                          f"use k <= {len(records)}")
    picked = np.random.default_rng(seed).choice(len(records), size=k, replace=False)
    return [records[i] for i in sorted(picked)]


def evaluate(predictor: TorchPredictor, records, cfg: DictConfig) -> tuple[dict, dict]:
    predictions = predictor.predict(records, cfg.eval_batch_size)
    return score(records, predictions, predictor.reader.decode.version_2)


def run(cfg: DictConfig) -> dict:
    model_dir = check_reader_dir(cfg.model_dir, cfg.get("allow_pickle", False))
    resolve_ckpt(cfg)  # a missing checkpoint stops before the "before" scores
    pl.seed_everything(cfg.seed, workers=True)
    out = Path(cfg.paths.output_dir)
    predictor = TorchPredictor.from_dir(model_dir, ReaderConfig.from_cfg(cfg.reader))
    net, tokenizer = predictor.net, predictor.tokenizer

    pool = of_theme(load_source(cfg.train_source, duplicate_ids=cfg.data.duplicate_ids), cfg.theme, cfg.train_source)
    shots = draw_k(pool, cfg.k, cfg.seed)
    evaluation = of_theme(load_source(cfg.eval_source, duplicate_ids=cfg.data.duplicate_ids), cfg.theme, cfg.eval_source)
    if Path(cfg.eval_source).resolve() == Path(cfg.train_source).resolve():
        used = {r.id for r in shots}
        evaluation = [r for r in evaluation if r.id not in used]
    evaluation = evaluation[: cfg.limit_eval]
    synthetic = (load_source(cfg.synthetic_source)[: cfg.limit_synthetic]
                 if cfg.synthetic_source else [])
    train_records = shots + synthetic

    before, before_theme = evaluate(predictor, evaluation, cfg)
    log.info("before: F1 %.2f on %d questions", before["f1"], len(evaluation))
    if train_records:
        predictor.net = net = fit(net, tokenizer, train_records, cfg, out)
        after, after_theme = evaluate(predictor, evaluation, cfg)
    else:
        after, after_theme = before, before_theme  # k = 0 and no synthetic data: nothing to adapt
    save_reader(net, tokenizer, out / "reader")
    write_json(out / "per_theme.json", {"before": before_theme, "after": after_theme})

    keys = ("f1", "exact", "HasAns_f1", "NoAns_f1")
    print(markdown_table([{"": name, **{k: m.get(k) for k in keys}} for name, m in
                          (("before", before), ("after", after))], ["", *keys]))
    return {"k": cfg.k, "synthetic": len(synthetic), "eval_questions": len(evaluation),
            **{f"before/{k}": float(v) for k, v in before.items()},
            **{f"after/{k}": float(v) for k, v in after.items()},
            "f1_gain": float(after["f1"] - before["f1"])}


def fit(net, tokenizer, records: list[QARecord], cfg: DictConfig, out: Path):
    train_file = out / "finetune_train.json"  # what this run trained on, as SQuAD v2 JSON
    write_squad_json(records, train_file)
    datamodule = QADataModule(tokenizer, str(train_file), None, cfg.reader.max_seq_length, cfg.reader.doc_stride,
                              cfg.batch_size, cfg.eval_batch_size, seed=cfg.seed)
    datamodule.setup("fit")
    steps = max(cfg.epochs * math.ceil(len(datamodule.train_features) / cfg.batch_size), cfg.min_steps)
    module = hydra.utils.instantiate(cfg.module, net=net, _convert_="all")
    loggers = instantiate_list(cfg.get("logger"))
    trainer, _ = build_trainer(cfg.trainer, logger=loggers or False, max_steps=steps,
                               callbacks=instantiate_list(cfg.get("callbacks")))
    log_hyperparams(loggers, cfg)
    trainer.fit(module, datamodule=datamodule, ckpt_path=resolve_ckpt(cfg))
    return module.net.eval()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="finetune")
def main(cfg: DictConfig) -> float | None:
    return run_stage("finetune", run, cfg)
