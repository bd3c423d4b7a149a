"""`metaqa train`: fine-tune a reader with Lightning on prepared shards (or any data file)."""
from __future__ import annotations

import logging
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig

from metaqa.config import CONF_DIR, ConfigError, check_windows
from metaqa.fileio import write_json
from metaqa.models.factory import build_qa_model, load_tokenizer
from metaqa.models.training import build_trainer, peak_rss_mb
from metaqa.tracking.callbacks import Throughput
from metaqa.tracking.run import instantiate_list, log_hyperparams, run_stage
from metaqa.tracking.tables import metrics_table

log = logging.getLogger(__name__)


def resolve_ckpt(cfg: DictConfig) -> str | None:
    """`ckpt_path=last` resumes from <run dir>/checkpoints/last.ckpt (pass hydra.run.dir=<old run>)."""
    if cfg.ckpt_path in (None, ""):
        return None
    path = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt" if cfg.ckpt_path == "last" else Path(cfg.ckpt_path)
    if not path.exists():
        raise ConfigError("ckpt_path", f"{path} does not exist",
                          "pass a Lightning .ckpt, or `ckpt_path=last hydra.run.dir=<the run to resume>`")
    return str(path)


def run(cfg: DictConfig) -> dict:
    check_windows(cfg.reader.max_seq_length, cfg.reader.doc_stride, "reader")
    ckpt_path = resolve_ckpt(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    trainer_cfg = {}
    if cfg.trainer.get("max_steps", -1) > 0:  # steps win over epochs; validate at the last step
        trainer_cfg["max_epochs"] = -1
        if cfg.trainer.get("val_check_interval") is None:
            trainer_cfg.update(val_check_interval=cfg.trainer.max_steps, check_val_every_n_epoch=None)
    tokenizer = load_tokenizer(cfg.model)
    net = build_qa_model(cfg.model, vocab_size=len(tokenizer))
    datamodule = hydra.utils.instantiate(cfg.datamodule, tokenizer=tokenizer)
    module = hydra.utils.instantiate(cfg.module, net=net, _convert_="all")  # plain hparams in ckpts
    loggers = instantiate_list(cfg.get("logger"))
    callbacks = instantiate_list(cfg.get("callbacks"))
    trainer, settings = build_trainer(cfg.trainer, logger=loggers or False, callbacks=callbacks, **trainer_cfg)
    log_hyperparams(loggers, cfg)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    if datamodule.val_features is not None and module.validated_at_step != trainer.global_step:
        trainer.validate(module, datamodule=datamodule, verbose=False)  # score the final weights

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    metrics.update(precision=settings["precision"], torch_threads=settings["torch_threads"],
                   peak_rss_mb=peak_rss_mb())
    if datamodule.train_records:  # under ddp_spawn the children hold the data
        metrics["global_step"] = trainer.global_step
        metrics["train_questions"] = len(datamodule.train_records)
    if datamodule.train_features is not None:  # (meta-training tokenises drawn questions only)
        metrics["train_windows"] = len(datamodule.train_features)
    for cb in callbacks:
        if isinstance(cb, Throughput) and cb.seconds:  # (spawned ranks keep their own copy)
            metrics["train/examples_per_s"] = cb.examples_per_s
            metrics["train/wall_s"] = round(cb.wall_seconds, 1)  # the whole fit, resumes included
    if module.val_per_theme:
        write_json(Path(cfg.paths.output_dir) / "val_per_theme.json", module.val_per_theme)
        overall = {k.removeprefix("val/"): v for k, v in metrics.items() if k.startswith("val/")}
        print(metrics_table(overall, module.val_per_theme))
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    return run_stage("train", run, cfg)
