"""`metaqa finetune`: k-shot adaptation of a reader to one target domain; F1 before and after.

The k examples are drawn with a seeded generator from `train_source` (questions of `theme`
when given) and written to the run dir, so every run says what it trained on. When the
evaluation source is the same data, those k questions are left out of what is scored.

`draw=stratified` (default) keeps the pool's share of unanswerable questions in the k; with
`threshold.folds=F` (≥ 2) the null threshold of the adapted reader is chosen by F-fold
cross-validation on the k examples alone (F extra fits on the other folds, each scored on its
held fold; the median of their oracle thresholds), never on the evaluation set. `early_stopping=true`
(with folds) also stops early on those held folds: every fold's fit scores its held fold after each
epoch, and the final fit on all k trains the share of its schedule at which the folds' mean
held-fold (oracle-threshold) F1 peaked, with that epoch's thresholds: the number of epochs chosen
by cross-validation, then a refit on all k examples, as usual when the held-apart data is this small.
With k = 0 there is nothing to hold apart: synthetic data alone trains the full schedule.
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


class HeldFoldScores(pl.Callback):
    """A cross-validation fit's held fold, scored after every epoch (`every_epoch`) or at the end:
    (optimiser step, oracle-threshold F1, that threshold) per check."""

    def __init__(self, held: list[QARecord], tokenizer, reader: ReaderConfig, batch_size: int, every_epoch: bool):
        self.held, self.tokenizer, self.reader, self.batch_size = held, tokenizer, reader, batch_size
        self.every_epoch = every_epoch
        self.checks: list[tuple[int, float, float]] = []
        self.total_steps = 0

    def check(self, trainer, module) -> None:
        if self.checks and self.checks[-1][0] == trainer.global_step:
            return  # the last epoch ended at max_steps: already scored
        predictions = TorchPredictor(module.net, self.tokenizer, self.reader).predict(self.held, self.batch_size)
        metrics = score(self.held, predictions, True)[0]
        self.checks.append((trainer.global_step, float(metrics["best_f1"]), float(metrics["best_f1_thresh"])))

    def on_train_epoch_end(self, trainer, module) -> None:
        if self.every_epoch:
            self.check(trainer, module)

    def on_train_end(self, trainer, module) -> None:
        self.total_steps = trainer.max_steps
        self.check(trainer, module)


def cross_validate(net, tokenizer, shots: list[QARecord], cfg: DictConfig, out: Path) -> dict:
    """F-fold cross-validation on the k examples alone: every fold's reader adapted from `net`
    (untouched) on the other folds and scored on its held fold. The null threshold is the median
    over folds of the held folds' oracle thresholds, at the epoch with the best mean held-fold F1
    (`early_stopping`; the latest of equal ones, the full schedule when the folds cannot tell) or
    at the end; `schedule_share` is that epoch's share of the fold fits' steps."""
    folds = []
    for f, held in enumerate(folds_of(shots, int(cfg.threshold.folds))):
        rest = [r for r in shots if r not in held]
        scores = HeldFoldScores(held, tokenizer, ReaderConfig.from_cfg(cfg.reader), cfg.eval_batch_size,
                                every_epoch=bool(cfg.early_stopping))
        fit(copy.deepcopy(net), tokenizer, rest, cfg, out / "threshold_cv" / str(f), final=False, callbacks=[scores])
        folds.append(scores)
    checks = min(len(s.checks) for s in folds)  # folds of unequal size can run a different number of epochs
    mean_f1 = [float(np.mean([s.checks[e][1] for s in folds])) for e in range(checks)]
    best = max(e for e in range(checks) if mean_f1[e] == max(mean_f1))  # one check without early stopping
    thresholds = [s.checks[best][2] for s in folds]
    share = float(np.mean([s.checks[best][0] / s.total_steps for s in folds]))
    return {"null_threshold": float(np.median(thresholds)), "null_threshold_folds": thresholds,
            **({"held_f1_by_epoch": mean_f1, "chosen_epoch": best + 1, "schedule_share": share}
               if cfg.early_stopping else {})}


def evaluate(predictor: TorchPredictor, records, cfg: DictConfig) -> tuple[dict, dict, dict]:
    """(overall, per theme, per question id → (F1, EM)) of the predictor's answers."""
    predictions = predictor.predict(records, cfg.eval_batch_size)
    version_2 = predictor.reader.decode.version_2
    return (*score(records, predictions, version_2), per_question(records, predictions, version_2))


def run(cfg: DictConfig) -> dict:
    model_dir = check_reader_dir(cfg.model_dir, cfg.get("allow_pickle", False))
    resolve_ckpt(cfg)  # a missing checkpoint stops before the "before" scores
    if cfg.early_stopping and cfg.k and not (cfg.threshold.folds and 2 <= cfg.threshold.folds <= cfg.k):
        raise ConfigError("early_stopping", "stops on held folds of the k examples, and there are none",
                          f"set threshold.folds to between 2 and k (k={cfg.k})")
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
        threshold = cross_validate(net, tokenizer, shots, cfg, out)
        log.info("null threshold %.3f (median of %s over the folds of the k examples)%s", threshold["null_threshold"],
                 threshold["null_threshold_folds"], f"; early stop at epoch {threshold['chosen_epoch']} "
                 f"({threshold['schedule_share']:.0%} of the schedule)" if "chosen_epoch" in threshold else "")
    if train_records:
        predictor.net = net = fit(net, tokenizer, train_records, cfg, out,
                                  schedule_share=threshold.get("schedule_share", 1.0))
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
            **({"after/schedule_share": threshold["schedule_share"]} if "schedule_share" in threshold else {}),
            **{f"before/{k}": float(v) for k, v in before.items()},
            **{f"after/{k}": float(v) for k, v in after.items()},
            "f1_gain": float(after["f1"] - before["f1"])}


def fit(net, tokenizer, records: list[QARecord], cfg: DictConfig, out: Path, final: bool = True,
        callbacks: list | None = None, schedule_share: float = 1.0):
    """Adapt `net` on `records` for `schedule_share` of `epochs` (in steps, at least `min_steps` in
    full); `final=False` (a cross-validation fit): no loggers, checkpoints or resume."""
    train_file = out / "finetune_train.json"  # what this run trained on, as SQuAD v2 JSON
    write_squad_json(records, train_file)
    datamodule = QADataModule(tokenizer, str(train_file), None, cfg.reader.max_seq_length, cfg.reader.doc_stride,
                              cfg.batch_size, cfg.eval_batch_size, seed=cfg.seed)
    datamodule.setup("fit")
    full = max(cfg.epochs * math.ceil(len(datamodule.train_features) / cfg.batch_size), cfg.min_steps)
    steps = max(1, round(schedule_share * full))
    module = hydra.utils.instantiate(cfg.module, net=net, _convert_="all")
    loggers = instantiate_list(cfg.get("logger")) if final else []
    extra = {} if final else {"enable_checkpointing": False, "default_root_dir": str(out)}
    trainer, _ = build_trainer(cfg.trainer, logger=loggers or False, max_steps=steps,
                               callbacks=[*(instantiate_list(cfg.get("callbacks")) if final else []), *(callbacks or [])],
                               **extra)
    log_hyperparams(loggers, cfg)
    trainer.fit(module, datamodule=datamodule, ckpt_path=resolve_ckpt(cfg) if final else None)
    return module.net.eval()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="finetune")
def main(cfg: DictConfig) -> float | None:
    return run_stage("finetune", run, cfg)
