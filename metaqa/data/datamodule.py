"""Lightning DataModule: records from a shard dir or a data file → tokenised windows → batches."""
from __future__ import annotations

import logging

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Sampler
from transformers.trainer_pt_utils import get_length_grouped_indices

from metaqa.data.features import FeatureDataset, Features, featurize
from metaqa.data.records import QARecord
from metaqa.data.shards import load_source

log = logging.getLogger(__name__)


class EpochSampler(Sampler[int]):
    """Training order as a pure function of (seed, epoch), so a resumed run sees the epoch it was
    killed in again: random mega-batches sorted by length (HF Trainer's group_by_length), or a plain
    permutation. Lightning calls `set_epoch` before each epoch (through its DDP wrapper too)."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int, group_by_length: bool = True) -> None:
        self.lengths, self.batch_size, self.seed = lengths, batch_size, seed
        self.group_by_length = group_by_length
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        seed = int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0])
        generator = torch.Generator().manual_seed(seed)
        if self.group_by_length:
            yield from get_length_grouped_indices(self.lengths, self.batch_size, generator=generator)
        else:
            yield from torch.randperm(len(self.lengths), generator=generator).tolist()


class TokenBudgetBatchSampler(Sampler[list[int]]):
    """Batches of up to `max_tokens` padded tokens (windows x the longest window in the batch),
    windows of similar length together, every window once per epoch (fairseq's `max_tokens`).

    Windows are sorted by length with seeded random tie-breaks, then packed greedily; the batch
    boundaries depend only on the sorted lengths, so every epoch has the same number of batches
    (Lightning's step count and LR schedule stay exact) while which equal-length windows share a
    batch, and the order of the batches, change with (seed, epoch). A resumed run replays it.
    """

    def __init__(self, lengths: list[int], max_tokens: int, seed: int) -> None:
        if max_tokens < max(lengths, default=0):
            raise ValueError(f"max_tokens={max_tokens} is below the longest window ({max(lengths)} tokens): "
                             "raise datamodule.max_tokens to at least reader.max_seq_length")
        self.lengths, self.max_tokens, self.seed = np.asarray(lengths), int(max_tokens), seed
        self.epoch = 0
        self._sizes = self._batch_sizes(np.sort(self.lengths))

    def _batch_sizes(self, sorted_lengths: np.ndarray) -> list[int]:
        sizes, count = [], 0
        for length in sorted_lengths:  # ascending: the newest window is the batch's longest
            if count and (count + 1) * length > self.max_tokens:
                sizes.append(count)
                count = 0
            count += 1
        return sizes + [count] if count else sizes

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self._sizes)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        order = np.lexsort((rng.random(len(self.lengths)), self.lengths))  # by length, ties at random
        batches = np.split(order, np.cumsum(self._sizes)[:-1])
        for b in rng.permutation(len(batches)):
            yield batches[b].tolist()


class ResumableLoader(DataLoader):
    """A DataLoader that Lightning resumes mid-epoch (its `_Stateful` protocol): the checkpoint holds
    the epoch and how many of its batches were consumed; after `load_state_dict` the next pass
    replays that epoch's order and skips them. Without it Lightning restarts the epoch's data
    from the first batch (and warns "your dataloader is not resumable"). Batches are counted
    where they are consumed, so worker prefetching does not shift the count."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._epoch, self._consumed, self._resume_at = 0, 0, None

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch, "batches": self._consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume_at = state

    def __iter__(self):
        order = self.batch_sampler if hasattr(self.batch_sampler, "epoch") else self.sampler
        self._epoch = getattr(order, "epoch", 0)  # read lazily: Lightning sets it after iter()
        resume, self._resume_at = self._resume_at, None
        skip = resume["batches"] if resume and resume["epoch"] == self._epoch else 0
        batches = super().__iter__()
        for _ in range(skip):
            next(batches)
        self._consumed = skip
        for batch in batches:
            self._consumed += 1
            yield batch


class QADataModule(pl.LightningDataModule):
    def __init__(
        self,
        tokenizer,
        train_source: str | None,
        val_source: str | None,
        max_seq_length: int = 384,
        doc_stride: int = 128,
        batch_size: int = 16,
        eval_batch_size: int = 64,
        num_workers: int = 0,
        limit_train: int | None = None,
        limit_val: int | None = None,
        group_by_length: bool = True,
        max_tokens: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.train_source, self.val_source = train_source, val_source
        self.max_seq_length, self.doc_stride = max_seq_length, doc_stride
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers = num_workers
        self.limit_train, self.limit_val = limit_train, limit_val
        self.group_by_length, self.max_tokens, self.seed = group_by_length, max_tokens, seed
        self.train_records: list[QARecord] = []
        self.val_records: list[QARecord] = []
        self.train_features: Features | None = None
        self.val_features: Features | None = None

    def _load(self, source: str, limit: int | None, with_labels: bool) -> tuple[list[QARecord], Features]:
        records = load_source(source)[:limit]  # the first N questions, as in the benchmarks
        features = featurize(self.tokenizer, records, self.max_seq_length, self.doc_stride, with_labels)
        log.info("%s: %d questions → %d windows", source, len(records), len(features))
        return records, features

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_features is None and self.train_source:
            self.train_records, self.train_features = self._load(self.train_source, self.limit_train, True)
        if self.val_features is None and self.val_source:
            self.val_records, self.val_features = self._load(self.val_source, self.limit_val, False)

    def _loader(self, features: Features, batch_size: int | None, sampler, loader=DataLoader) -> DataLoader:
        dataset = FeatureDataset(features, self.tokenizer.pad_token_id)
        batching = {"batch_sampler": sampler} if batch_size is None else {"batch_size": batch_size, "sampler": sampler}
        # its own generator: a new iterator draws its base seed from it, not from the global RNG,
        # whose state (dropout masks) a resumed run restores
        return loader(dataset, **batching, collate_fn=dataset.collate,
                      num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                      generator=torch.Generator().manual_seed(self.seed))

    def train_dataloader(self) -> DataLoader:
        # Batches are padded to their longest window: drawing windows of similar length together
        # (group_by_length) halves the padding on SQuAD-like data, and CPU time is proportional
        # to padded tokens.
        lengths = [len(ids) for ids in self.train_features.encodings["input_ids"]]
        if self.max_tokens:
            trainer = getattr(self, "trainer", None)
            if trainer is not None and trainer.world_size > 1:
                raise ValueError("datamodule.max_tokens batches one process's data; under DDP use "
                                 "datamodule.max_tokens=null (fixed-size batches, sharded by Lightning)")
            batches = TokenBudgetBatchSampler(lengths, self.max_tokens, self.seed)
            return self._loader(self.train_features, None, batches, ResumableLoader)
        sampler = EpochSampler(lengths, self.batch_size, self.seed, self.group_by_length)
        return self._loader(self.train_features, self.batch_size, sampler, ResumableLoader)

    def val_dataloader(self) -> DataLoader:
        if self.val_features is None:
            return []
        lengths = [len(ids) for ids in self.val_features.encodings["input_ids"]]
        by_length = sorted(range(len(lengths)), key=lengths.__getitem__)  # order is free: ids travel along
        return self._loader(self.val_features, self.eval_batch_size, by_length)
