"""Lightning DataModule: records from a shard dir or a data file → tokenised windows → batches."""
from __future__ import annotations

import logging

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader
from transformers.trainer_pt_utils import LengthGroupedSampler

from metaqa.data.features import FeatureDataset, Features, featurize
from metaqa.data.records import QARecord
from metaqa.data.shards import load_source

log = logging.getLogger(__name__)


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
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.train_source, self.val_source = train_source, val_source
        self.max_seq_length, self.doc_stride = max_seq_length, doc_stride
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers = num_workers
        self.limit_train, self.limit_val = limit_train, limit_val
        self.group_by_length, self.seed = group_by_length, seed
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

    def _loader(self, features: Features, batch_size: int, sampler) -> DataLoader:
        dataset = FeatureDataset(features, self.tokenizer.pad_token_id)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=dataset.collate,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        # Batches are padded to their longest window: drawing windows of similar length together
        # (random mega-batches sorted by length, as HF Trainer's group_by_length) halves the
        # padding on SQuAD-like data, and CPU time is proportional to padded tokens.
        lengths = [len(ids) for ids in self.train_features.encodings["input_ids"]]
        generator = torch.Generator().manual_seed(self.seed)
        sampler = (LengthGroupedSampler(self.batch_size, lengths=lengths, generator=generator)
                   if self.group_by_length
                   else torch.utils.data.RandomSampler(lengths, generator=generator))
        return self._loader(self.train_features, self.batch_size, sampler)

    def val_dataloader(self) -> DataLoader:
        if self.val_features is None:
            return []
        lengths = [len(ids) for ids in self.val_features.encodings["input_ids"]]
        by_length = sorted(range(len(lengths)), key=lengths.__getitem__)  # order is free: ids travel along
        return self._loader(self.val_features, self.eval_batch_size, by_length)
