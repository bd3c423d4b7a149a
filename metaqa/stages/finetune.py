"""`metaqa finetune`: k-shot adaptation of a reader to one target domain; F1 before and after.

The k examples are drawn with a seeded generator from `train_source` (questions of `theme`
when given) and written to the run dir, so every run says what it trained on. When the
evaluation source is the same data, those k questions are left out of what is scored.

`draw=stratified` (default) keeps the pool's share of unanswerable questions in the k; with
`threshold.folds=F` (≥ 2) the null threshold of the adapted reader is chosen by F-fold
cross-validation on the k examples alone (F extra fits on the other folds, each scored on its
held fold; the median of their oracle thresholds), never on the evaluation set.
"""
from __future__ import annotations

import copy
import dataclasses
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
from metaqa.evaluation.scoring import per_question, score
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


def draw_k(records: list[QARecord], k: int, seed: int, stratified: bool = True) -> list[QARecord]:
    """k questions, seeded; `stratified`: round(k × the pool's unanswerable share) of them unanswerable."""
    if k > len(records):
        raise ConfigError("k", f"asks {k} examples but the source has {len(records)} questions",
                          f"use k <= {len(records)}")
    rng = np.random.default_rng(seed)
    if not stratified:
        return [records[i] for i in sorted(rng.choice(len(records), size=k, replace=False))]
    unanswerable = [i for i, r in enumerate(records) if r.is_impossible]
    answerable = [i for i, r in enumerate(records) if not r.is_impossible]
    n_un = min(len(unanswerable), round(k * len(unanswerable) / len(records)))
    n_un = max(n_un, k - len(answerable))  # too few answerable: the rest must be unanswerable
    picked = [*rng.choice(unanswerable, size=n_un, replace=False), *rng.choice(answerable, size=k - n_un, replace=False)]
    return [records[i] for i in sorted(int(i) for i in picked)]


def folds_of(shots: list[QARecord], folds: int) -> list[list[QARecord]]:
    """`folds` parts of the k examples, unanswerable ones spread over them (round robin)."""
    ordered = sorted(shots, key=lambda r: not r.is_impossible)
    return [ordered[f::folds] for f in range(folds)]


def cv_threshold(net, tokenizer, shots: list[QARecord], cfg: DictConfig, out: Path) -> tuple[float, list[float]]:
    """The median over folds of the oracle null threshold on each held fold, every fold's reader
    adapted from `net` (untouched) on the other folds. Reads only the k examples."""
    reader = ReaderConfig.from_cfg(cfg.reader)
    thresholds = []
    for f, held in enumerate(folds_of(shots, int(cfg.threshold.folds))):
        rest = [r for r in shots if r not in held]
        adapted = fit(copy.deepcopy(net), tokenizer, rest, cfg, out / "threshold_cv" / str(f), final=False)
        predictions = TorchPredictor(adapted, tokenizer, reader).predict(held, cfg.eval_batch_size)
        thresholds.append(float(score(held, predictions, True)[0]["best_f1_thresh"]))
    return float(np.median(thresholds)), thresholds


def evaluate(predictor: TorchPredictor, records, cfg: DictConfig) -> tuple[dict, dict, dict]:
    """(overall, per theme, per question id → (F1, EM)) of the predictor's answers."""
    predictions = predictor.predict(records, cfg.eval_batch_size)
    version_2 = predictor.reader.decode.version_2
    return (*score(records, predictions, version_2), per_question(records, predictions, version_2))


def run(cfg: DictConfig) -> dict:
    model_dir = check_reader_dir(cfg.model_dir, cfg.get("allow_pickle", False))
    resolve_ckpt(cfg)  # a missing checkpoint stops before the "before" scores
    pl.seed_everything(cfg.seed, workers=True)
    out = Path(cfg.paths.output_dir)
    predictor = TorchPredictor.from_dir(model_dir, ReaderConfig.from_cfg(cfg.reader))
    net, tokenizer = predictor.net, predictor.tokenizer

    pool = of_theme(load_source(cfg.train_source, duplicate_ids=cfg.data.duplicate_ids), cfg.theme, cfg.train_source)
    shots = draw_k(pool, cfg.k, cfg.seed, stratified=cfg.draw == "stratified")
    evaluation = of_theme(load_source(cfg.eval_source, duplicate_ids=cfg.data.duplicate_ids), cfg.theme, cfg.eval_source)
    if Path(cfg.eval_source).resolve() == Path(cfg.train_source).resolve():
        used = {r.id for r in shots}
        evaluation = [r for r in evaluation if r.id not in used]
    evaluation = evaluation[: cfg.limit_eval]
    synthetic = (load_source(cfg.synthetic_source)[: cfg.limit_synthetic]
                 if cfg.synthetic_source else [])
    train_records = shots + synthetic

    before, before_theme, before_q = evaluate(predictor, evaluation, cfg)
    log.info("before: F1 %.2f on %d questions", before["f1"], len(evaluation))
    threshold = {}
    if cfg.threshold.folds and cfg.threshold.folds >= 2 and len(shots) >= cfg.threshold.folds:
        chosen, per_fold = cv_threshold(net, tokenizer, shots, cfg, out)
        threshold = {"null_threshold": chosen, "null_threshold_folds": per_fold}
        log.info("null threshold %.3f (median of %s over %d folds of the k examples)", chosen, per_fold, len(per_fold))
    if train_records:
        predictor.net = net = fit(net, tokenizer, train_records, cfg, out)
        if threshold:
            predictor.reader.decode = dataclasses.replace(predictor.reader.decode,
                                                          null_threshold=threshold["null_threshold"])
        after, after_theme, after_q = evaluate(predictor, evaluation, cfg)
    else:
        after, after_theme, after_q = before, before_theme, before_q  # k = 0, no synthetic data: nothing to adapt
    save_reader(net, tokenizer, out / "reader")
    write_json(out / "per_theme.json", {"before": before_theme, "after": after_theme})
    # per question (id → [F1, EM]), for intervals over questions × seeds (metaqa.evaluation.stats)
    write_json(out / "per_question.json", {"before": before_q, "after": after_q})
    if threshold:
        write_json(out / "threshold.json", threshold)

    keys = ("f1", "exact", "HasAns_f1", "NoAns_f1")
    print(markdown_table([{"": name, **{k: m.get(k) for k in keys}} for name, m in
                          (("before", before), ("after", after))], ["", *keys]))
    return {"k": cfg.k, "synthetic": len(synthetic), "eval_questions": len(evaluation),
            "k_unanswerable": sum(r.is_impossible for r in shots),
            **({"after/null_threshold": threshold["null_threshold"]} if threshold else {}),
            **{f"before/{k}": float(v) for k, v in before.items()},
            **{f"after/{k}": float(v) for k, v in after.items()},
            "f1_gain": float(after["f1"] - before["f1"])}


def fit(net, tokenizer, records: list[QARecord], cfg: DictConfig, out: Path, final: bool = True):
    """Adapt `net` on `records`; `final=False` (a cross-validation fit): no loggers, checkpoints or resume."""
    train_file = out / "finetune_train.json"  # what this run trained on, as SQuAD v2 JSON
    write_squad_json(records, train_file)
    datamodule = QADataModule(tokenizer, str(train_file), None, cfg.reader.max_seq_length, cfg.reader.doc_stride,
                              cfg.batch_size, cfg.eval_batch_size, seed=cfg.seed)
    datamodule.setup("fit")
    steps = max(cfg.epochs * math.ceil(len(datamodule.train_features) / cfg.batch_size), cfg.min_steps)
    module = hydra.utils.instantiate(cfg.module, net=net, _convert_="all")
    loggers = instantiate_list(cfg.get("logger")) if final else []
    extra = {} if final else {"enable_checkpointing": False, "default_root_dir": str(out)}
    trainer, _ = build_trainer(cfg.trainer, logger=loggers or False, max_steps=steps,
                               callbacks=instantiate_list(cfg.get("callbacks")) if final else [], **extra)
    log_hyperparams(loggers, cfg)
    trainer.fit(module, datamodule=datamodule, ckpt_path=resolve_ckpt(cfg) if final else None)
    return module.net.eval()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="finetune")
def main(cfg: DictConfig) -> float | None:
    return run_stage("finetune", run, cfg)
