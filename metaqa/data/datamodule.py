"""Lightning DataModule: records from a shard dir or a data file → tokenised windows → batches."""
from __future__ import annotations

import logging

import pytorch_lightning as pl
from torch.utils.data import DataLoader

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
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.train_source, self.val_source = train_source, val_source
        self.max_seq_length, self.doc_stride = max_seq_length, doc_stride
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers = num_workers
        self.limit_train, self.limit_val = limit_train, limit_val
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

    def _loader(self, features: Features, batch_size: int, shuffle: bool) -> DataLoader:
        dataset = FeatureDataset(features, self.tokenizer.pad_token_id)
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=dataset.collate,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_features, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        if self.val_features is None:
            return []
        return self._loader(self.val_features, self.eval_batch_size, shuffle=False)
