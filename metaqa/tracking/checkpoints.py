"""Crash-safe training: `last.ckpt` every N optimiser steps and/or every M minutes, whatever
validation does, with the RNG states, so a killed run resumes (`ckpt_path=last`) to the weights
an uninterrupted run reaches.

Lightning's ModelCheckpoint(every_n_train_steps=..., train_time_interval=..., save_top_k=0,
save_last=True) does not serve every stage: under manual optimisation (meta-training) it ignores
`train_time_interval`, at the end of fit it leaves `last.ckpt` at the last periodic step, and no
Lightning checkpoint holds the torch/numpy/python RNG states (dropout masks after a resume).
"""
from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.callbacks import Checkpoint


def rng_states() -> dict:
    """The global RNG states as types Lightning's weights-only checkpoint loading accepts."""
    name, keys, *rest = np.random.get_state()
    states = {"torch": torch.get_rng_state(), "numpy": (name, keys.tolist(), *rest), "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class PeriodicCheckpoint(Checkpoint):
    """Write `<dirpath>/<filename>` after every `every_n_train_steps`-th optimiser step, after the
    first step `every_n_minutes` after the previous save, and at the end of fit (either trigger
    may be null). Saves are atomic (Lightning writes a temp file and renames it), so a kill
    mid-save leaves the previous checkpoint."""

    def __init__(self, dirpath: str, every_n_train_steps: int | None = 200,
                 every_n_minutes: float | None = 10.0, filename: str = "last.ckpt") -> None:
        self.path = Path(dirpath) / filename
        self.every_n_train_steps, self.every_n_minutes = every_n_train_steps, every_n_minutes
        self._seen_step, self._saved_step, self._saved_at = -1, -1, 0.0
        self._rng_to_restore: list[dict] | None = None  # one per rank

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._seen_step = self._saved_step = trainer.global_step  # (a resumed run's is saved)
        self._saved_at = time.monotonic()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._rng_to_restore is not None:  # resumed: the RNG as it was after the saved step
            set_rng_states(self._rng_to_restore[trainer.global_rank % len(self._rng_to_restore)])
            self._rng_to_restore = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == self._seen_step:  # no optimiser step in this batch (gradient accumulation)
            return
        self._seen_step = step
        due = bool(self.every_n_train_steps) and step % self.every_n_train_steps == 0
        if self.every_n_minutes:  # ranks must agree: saving is collective
            late = time.monotonic() - self._saved_at >= 60 * self.every_n_minutes
            due = trainer.strategy.broadcast(due or late)
        if due:
            self._save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step != self._saved_step:
            self._save(trainer)

    def _save(self, trainer: pl.Trainer) -> None:
        trainer.save_checkpoint(self.path)
        self._saved_step, self._saved_at = trainer.global_step, time.monotonic()

    def state_dict(self) -> dict:
        states = [rng_states()]
        if dist.is_available() and dist.is_initialized():  # every rank's (each draws its own dropout)
            states = [None] * dist.get_world_size()
            dist.all_gather_object(states, rng_states())
        return {"rng": states}

    def load_state_dict(self, state_dict: dict) -> None:
        self._rng_to_restore = state_dict.get("rng")
