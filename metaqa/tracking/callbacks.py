"""Lightning callbacks: the final reader as a save_pretrained dir, and training throughput."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytorch_lightning as pl

from metaqa.fileio import replace_dir


def save_reader(net, tokenizer, dirpath: str | Path) -> Path:
    """net + tokenizer as a save_pretrained dir, swapped in whole (never half-written)."""
    dirpath = Path(dirpath)
    tmp = dirpath.with_name(dirpath.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    net.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    return replace_dir(tmp, dirpath)


class SavePretrained(pl.Callback):
    """At the end of fit, write net + tokenizer so that `transformers.pipeline` loads the dir."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            save_reader(pl_module.net, trainer.datamodule.tokenizer, self.dirpath)


class Throughput(pl.Callback):
    """Training windows per second over the whole fit, excluding validation time."""

    def __init__(self) -> None:
        self.examples = 0
        self.seconds = 0.0
        self._t0 = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seconds += time.perf_counter() - self._t0
        if isinstance(batch, list):  # a meta-learning episode: every rank gets the whole episode
            self.examples += sum(task.n_windows for task in batch)
        else:
            self.examples += len(batch["input_ids"]) * trainer.world_size

    @property
    def examples_per_s(self) -> float:
        return self.examples / self.seconds if self.seconds else 0.0

    def on_train_end(self, trainer, pl_module) -> None:
        for logger in trainer.loggers:
            logger.log_metrics({"train/examples_per_s": self.examples_per_s}, step=trainer.global_step)
