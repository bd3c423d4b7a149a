"""Domain tasks for meta-learning: one theme = one task; an episode = a meta-batch of tasks.

A task draws disjoint support and query *questions* of its theme and takes all of their windows;
questions are tokenised when first drawn (a few hundred per run, not all 87k of SQuAD). The episode of meta-step `s` is a pure
function of (seed, s), so a resumed run draws exactly the episodes it would have drawn, and every
DDP rank draws the same episode (each then adapts on its own share of the tasks).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from metaqa.data.datamodule import QADataModule
from metaqa.data.features import FeatureDataset, featurize
from metaqa.data.records import QARecord
from metaqa.data.shards import load_source

log = logging.getLogger(__name__)

TASK_SAMPLING = ("uniform", "proportional")


@dataclass
class Task:
    theme: str
    seed: int  # seeds dropout for this task: the same masks whichever rank adapts it
    support: dict[str, torch.Tensor]
    query: dict[str, torch.Tensor]

    @property
    def n_windows(self) -> int:
        return len(self.support["input_ids"]) + len(self.query["input_ids"])


class TaskPool:
    """Questions grouped by theme; draws episodes deterministically, tokenising on demand."""

    def __init__(self, records: Sequence[QARecord], tokenizer, n_support: int, n_query: int,
                 tasks_per_step: int, sampling: str = "uniform", seed: int = 0,
                 max_seq_length: int = 384, doc_stride: int = 128) -> None:
        if sampling not in TASK_SAMPLING:
            raise ValueError(f"meta.task_sampling must be one of {TASK_SAMPLING}, got '{sampling}'")
        self.records, self.tokenizer = records, tokenizer
        self.max_seq_length, self.doc_stride = max_seq_length, doc_stride
        self.n_support, self.n_query = n_support, n_query
        self.tasks_per_step, self.sampling, self.seed = tasks_per_step, sampling, seed
        self._windows: dict[int, list[dict]] = {}  # question index → its tokenised windows
        by_theme: dict[str, list[int]] = {}
        for i, record in enumerate(records):
            by_theme.setdefault(record.theme, []).append(i)
        need = n_support + n_query
        self.themes = sorted(t for t, qs in by_theme.items() if len(qs) >= need)
        skipped = sorted(set(by_theme) - set(self.themes))
        if skipped:
            log.warning("%d themes have fewer than %d questions (support + query) and are never "
                        "drawn: %s", len(skipped), need, ", ".join(skipped[:10]))
        if not self.themes:
            raise ValueError(f"no theme has {need} questions (meta.n_support + meta.n_query); "
                             f"lower them or add data (largest theme: "
                             f"{max((len(q) for q in by_theme.values()), default=0)} questions)")
        self.questions = {t: np.asarray(by_theme[t]) for t in self.themes}
        sizes = np.array([len(self.questions[t]) for t in self.themes], dtype=np.float64)
        self.theme_p = sizes / sizes.sum() if sampling == "proportional" else None

    def episode(self, step: int) -> list[Task]:
        rng = np.random.default_rng([self.seed, step])
        n = min(self.tasks_per_step, len(self.themes))
        picked = rng.choice(len(self.themes), size=n, replace=False, p=self.theme_p)
        tasks = []
        for t in picked:
            theme = self.themes[t]
            chosen = rng.choice(self.questions[theme], size=self.n_support + self.n_query, replace=False)
            tasks.append(Task(theme=theme, seed=int(rng.integers(2**31)),
                              support=self._batch(chosen[: self.n_support]),
                              query=self._batch(chosen[self.n_support:])))
        return tasks

    def _batch(self, questions: np.ndarray) -> dict[str, torch.Tensor]:
        order = sorted(questions.tolist())
        new = [q for q in order if q not in self._windows]
        if new:
            features = featurize(self.tokenizer, [self.records[q] for q in new], self.max_seq_length,
                                 self.doc_stride, with_labels=True)
            dataset = FeatureDataset(features, self.tokenizer.pad_token_id)
            for window, question in enumerate(features.example_index):
                self._windows.setdefault(new[question], []).append(dataset[window])
        items = [w for q in order for w in self._windows[q]]
        return FeatureDataset.collate_items(items, self.tokenizer.pad_token_id)


class EpisodeStream(torch.utils.data.IterableDataset):
    """Episodes `start, start + 1, …, stop - 1` of a pool: one epoch of `stop` episodes, of which a
    resumed run (start = its restored step) yields the rest; the trainer stops at max_steps."""

    def __init__(self, pool: TaskPool, start: int, stop: int) -> None:
        self.pool, self.start, self.stop = pool, start, stop

    def __iter__(self) -> Iterator[list[Task]]:
        for step in range(self.start, self.stop):
            yield self.pool.episode(step)

    def __len__(self) -> int:
        # the whole epoch: Lightning counts the restored batches of a resumed epoch as consumed, and
        # with the remainder as the length it would start a second pass over episodes start, … at
        # step `stop - start`
        return self.stop


class MetaDataModule(QADataModule):
    """QADataModule whose training data is a stream of episodes over the training themes."""

    def __init__(self, tokenizer, train_source: str | None, val_source: str | None,
                 n_support: int = 8, n_query: int = 8, tasks_per_step: int = 4,
                 task_sampling: str = "uniform", meta_steps: int = 100, **kwargs) -> None:
        super().__init__(tokenizer, train_source, val_source, **kwargs)
        self.n_support, self.n_query = n_support, n_query
        self.tasks_per_step, self.task_sampling = tasks_per_step, task_sampling
        self.meta_steps = meta_steps
        self.pool: TaskPool | None = None

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.pool is None and self.train_source:
            self.train_records = load_source(self.train_source)[: self.limit_train]
            self.pool = TaskPool(self.train_records, self.tokenizer, self.n_support, self.n_query,
                                 self.tasks_per_step, self.task_sampling, self.seed,
                                 self.max_seq_length, self.doc_stride)
            log.info("%s: %d questions in %d themes with enough questions for a task",
                     self.train_source, len(self.train_records), len(self.pool.themes))
        if self.val_features is None and self.val_source:
            self.val_records, self.val_features = self._load(self.val_source, self.limit_val, False)

    def train_dataloader(self):
        # Start at the restored global step: a resumed run continues the same episode sequence
        # (Lightning restores the step before it asks for the dataloader).
        start = self.trainer.global_step if self.trainer is not None else 0
        return torch.utils.data.DataLoader(EpisodeStream(self.pool, start, self.meta_steps),
                                           batch_size=None, num_workers=0)
