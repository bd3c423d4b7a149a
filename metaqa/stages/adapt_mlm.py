"""`metaqa adapt-mlm`: domain-adaptive masked-LM pretraining of a reader's encoder on a target
domain's unlabelled text (metaqa.models.mlm), then the reader, QA head unchanged, to <run>/reader.

Reports the masked-LM loss on a held-out share of the texts before and after (same masks), so a
run says whether it adapted; the k-shot step (`metaqa finetune model_dir=<run>/reader`) follows.
"""
from __future__ import annotations

import logging
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig

from metaqa.config import CONF_DIR, check_input_file, check_reader_dir
from metaqa.data.unlabelled import MaskedLMDataModule, read_texts
from metaqa.inference import TorchPredictor
from metaqa.models.mlm import MaskedLMModule, masked_lm_around, mean_masked_lm_loss
from metaqa.models.training import build_trainer
from metaqa.stages.train import resolve_ckpt
from metaqa.tracking.callbacks import save_reader
from metaqa.tracking.run import instantiate_list, log_hyperparams, run_stage

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    model_dir = check_reader_dir(cfg.model_dir, cfg.get("allow_pickle", False))
    source = check_input_file(cfg, "text_source")
    resolve_ckpt(cfg)  # a missing checkpoint stops before any work
    pl.seed_everything(cfg.seed, workers=True)
    out = Path(cfg.paths.output_dir)
    predictor = TorchPredictor.from_dir(model_dir)
    reader, tokenizer = predictor.net.train(), predictor.tokenizer
    texts = read_texts(source, cfg.theme)[: cfg.limit_texts]
    data = MaskedLMDataModule(tokenizer, texts, cfg.max_seq_length, cfg.batch_size, cfg.mlm_probability,
                              cfg.whole_word_mask, cfg.heldout_fraction, cfg.seed)
    mlm = masked_lm_around(reader)
    heldout = data.heldout_batches()
    before = mean_masked_lm_loss(mlm, heldout)
    log.info("%d texts → %d training windows, %d held out; held-out MLM loss before %.3f",
             len(texts), len(data.train_windows), len(data.heldout_windows), before)
    module = MaskedLMModule(mlm, cfg.lr, cfg.weight_decay, cfg.warmup_ratio, cfg.head_warmup_steps)
    loggers = instantiate_list(cfg.get("logger"))
    trainer, settings = build_trainer(cfg.trainer, logger=loggers or False, max_steps=cfg.steps,
                                      callbacks=instantiate_list(cfg.get("callbacks")))
    log_hyperparams(loggers, cfg)
    trainer.fit(module, datamodule=data, ckpt_path=resolve_ckpt(cfg))
    after = mean_masked_lm_loss(mlm, heldout)
    log.info("held-out MLM loss %.3f → %.3f", before, after)
    for p in reader.parameters():
        p.requires_grad_(True)  # the warm-up's freeze is not part of the saved reader
    save_reader(reader.eval(), tokenizer, out / "reader")
    return {"texts": len(texts), "train_windows": len(data.train_windows), "heldout_windows": len(data.heldout_windows),
            "steps": int(trainer.global_step), "heldout_mlm_loss_before": before, "heldout_mlm_loss_after": after,
            "precision": settings["precision"]}


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="adapt_mlm")
def main(cfg: DictConfig) -> float | None:
    return run_stage("adapt_mlm", run, cfg)
