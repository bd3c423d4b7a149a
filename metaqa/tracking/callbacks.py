"""Lightning callbacks: the final reader as a save_pretrained dir, training throughput, the
learning curve, reader latency."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytorch_lightning as pl

from metaqa.fileio import replace_dir, write_json


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
    """Training windows per second of training steps (validation and data loading left out), and
    the fit's wall time; both kept in checkpoints, so a run resumed across sessions reports its
    whole fit, not its last piece."""

    def __init__(self) -> None:
        self.examples = 0
        self.seconds = 0.0
        self.wall_before = 0.0  # wall seconds of the fit before this process resumed it
        self._t0 = self._fit_t0 = 0.0

    def on_fit_start(self, trainer, pl_module) -> None:
        self._fit_t0 = time.perf_counter()

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

    @property
    def wall_seconds(self) -> float:
        return self.wall_before + (time.perf_counter() - self._fit_t0 if self._fit_t0 else 0.0)

    def state_dict(self) -> dict:
        return {"examples": self.examples, "seconds": self.seconds, "wall": self.wall_seconds}

    def load_state_dict(self, state: dict) -> None:
        self.examples, self.seconds = int(state["examples"]), float(state["seconds"])
        self.wall_before = float(state.get("wall", 0.0))
        self._fit_t0 = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        for logger in trainer.loggers:
            logger.log_metrics({"train/examples_per_s": self.examples_per_s}, step=trainer.global_step)


class LearningCurve(pl.Callback):
    """After every validation: the step, windows trained on and the validation metrics appended
    to `<dirpath>/learning_curve.json`, and `learning_curve.png` redrawn. A resumed run drops the
    points its killed predecessor logged at or after the resume step (they are recomputed)."""

    METRICS = ("f1", "exact", "HasAns_f1", "NoAns_f1")

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)
        self._resumed_at: int | None = None

    @property
    def path(self) -> Path:
        return self.dirpath / "learning_curve.json"

    def on_train_start(self, trainer, pl_module) -> None:
        self._resumed_at = trainer.global_step

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or "val/f1" not in trainer.callback_metrics:
            return
        points = json.loads(self.path.read_text()) if self.path.is_file() else []
        if self._resumed_at is not None:  # first validation of this process: drop what it redoes
            points, self._resumed_at = [p for p in points if p["step"] <= self._resumed_at], None
        point = {"step": trainer.global_step, "epoch": trainer.current_epoch}
        for name in self.METRICS:
            value = trainer.callback_metrics.get(f"val/{name}")
            if value is not None:
                point[name] = round(float(value), 3)
        points = [p for p in points if p["step"] != point["step"]] + [point]
        write_json(self.path, points)
        if len(points) > 1:
            from metaqa.tracking.plots import learning_curve_plot

            learning_curve_plot({self.dirpath.name: points}, self.dirpath / "learning_curve.png")


class ReaderLatency(pl.Callback):
    """Latency per question (batch 1: tokenise + forward + postprocess, like `metaqa bench`) of
    the reader on its first `questions` validation questions, and its size, after each validation.

    Recorded as val/latency_p50_ms, val/latency_p95_ms, model_mb (fp32 parameters) and
    model_params_m in the loggers and in the run's metrics, so a sweep can trade F1 against speed
    (conf/hparams_search/train_optuna_f1_latency.yaml). Timed at `threads` torch threads so runs
    compare whatever else the machine does; for export variants use `metaqa bench`.
    """

    def __init__(self, questions: int = 32, warmup: int = 3, threads: int = 1) -> None:
        self.questions, self.warmup, self.threads = questions, warmup, threads

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        records = getattr(trainer.datamodule, "val_records", None)
        if trainer.sanity_checking or not trainer.is_global_zero or not records:
            return
        import torch

        from metaqa.evaluation.latency import latency_stats, time_calls, torch_threads
        from metaqa.inference import ReaderConfig, TorchPredictor

        dm, net = trainer.datamodule, pl_module.net
        predictor = TorchPredictor(net, dm.tokenizer, ReaderConfig(dm.max_seq_length, dm.doc_stride, pl_module.decode))
        with torch_threads(self.threads):
            times, _ = time_calls(lambda r: predictor.answer(r.question, r.context, r.id),
                                  records[: self.questions], self.warmup)
        stats = latency_stats(times)
        params = sum(p.numel() for p in net.parameters())
        metrics = {"val/latency_p50_ms": stats["p50_ms"], "val/latency_p95_ms": stats["p95_ms"],
                   "model_mb": sum(p.numel() * p.element_size() for p in net.parameters()) / 2**20,
                   "model_params_m": params / 1e6}
        for key, value in metrics.items():  # read back by the stage with the validation metrics
            trainer.callback_metrics[key] = torch.tensor(value)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
