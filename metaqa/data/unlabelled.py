"""Unlabelled text of a domain for masked-LM adaptation: the distinct paragraphs of any QA source
metaqa reads (their questions and answers unused), or a .txt file with one text per line; cut into
windows of the reader's length and masked (whole words) by transformers' collator."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from transformers import DataCollatorForLanguageModeling

from metaqa.data.shards import load_source


def read_texts(source: str | Path, theme: str | None = None) -> list[str]:
    """Distinct paragraphs of a QA source (file or shard dir; `theme` keeps one theme), or the
    non-empty lines of a .txt file, in first-seen order."""
    path = Path(source)
    if path.suffix == ".txt":
        if theme is not None:
            raise ValueError(f"{path}: a .txt file has no themes; pass theme=null")
        texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    else:
        texts = [r.context for r in load_source(path) if theme is None or r.theme == theme]
    texts = list(dict.fromkeys(t for t in texts if t))
    if not texts:
        raise ValueError(f"{path}: no text{f' of theme {theme!r}' if theme else ''} to adapt on")
    return texts


class MaskedLMDataModule(pl.LightningDataModule):
    """Windows of ≤ `max_seq_length` tokens (a long paragraph gives several), a seeded
    `heldout_fraction` of the texts set apart for the before/after loss; training batches masked
    anew each epoch, held-out batches masked once (seeded) so before and after see the same masks."""

    def __init__(self, tokenizer, texts: list[str], max_seq_length: int = 256, batch_size: int = 16,
                 mlm_probability: float = 0.15, whole_word_mask: bool = True, heldout_fraction: float = 0.1,
                 seed: int = 0) -> None:
        super().__init__()
        if not tokenizer.is_fast and whole_word_mask:
            raise ValueError("whole-word masking needs a fast tokenizer (its offsets say where words start)")
        self.tokenizer, self.max_seq_length, self.batch_size, self.seed = tokenizer, max_seq_length, batch_size, seed
        order = np.random.default_rng(seed).permutation(len(texts))
        n_heldout = int(round(heldout_fraction * len(texts))) if len(texts) > 1 else 0
        self.heldout_texts = [texts[i] for i in sorted(order[:n_heldout])]
        self.train_texts = [texts[i] for i in sorted(order[n_heldout:])]
        self.train_windows = self.windows(self.train_texts)
        self.heldout_windows = self.windows(self.heldout_texts)
        self.options = {"tokenizer": tokenizer, "mlm_probability": mlm_probability, "whole_word_mask": whole_word_mask}
        if whole_word_mask:  # transformers' whole-word masking always uses [MASK] (and 4.57 fails warning so)
            self.options.update(mask_replace_prob=1.0, random_replace_prob=0.0)

    def windows(self, texts: list[str]) -> list[dict]:
        if not texts:
            return []
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_seq_length, return_overflowing_tokens=True,
                             return_offsets_mapping=True, return_special_tokens_mask=True)
        keys = ("input_ids", "attention_mask", "special_tokens_mask", "offset_mapping",
                *(["token_type_ids"] if "token_type_ids" in enc else []))
        return [{k: enc[k][i] for k in keys} for i in range(len(enc["input_ids"]))]

    def collate(self, seed: int | None = None):
        """Pad a batch (offsets too: the tokenizer's `pad` leaves them ragged), then mask it."""
        mask = DataCollatorForLanguageModeling(**self.options, seed=seed)  # seed None: torch's RNG
        fill = {"input_ids": self.tokenizer.pad_token_id, "attention_mask": 0, "special_tokens_mask": 1,
                "token_type_ids": 0, "offset_mapping": (0, 0)}

        def collate(windows: list[dict]) -> dict:
            width = max(len(w["input_ids"]) for w in windows)
            return mask([{k: list(v) + [fill[k]] * (width - len(v)) for k, v in w.items()} for w in windows])

        return collate

    def train_dataloader(self):
        generator = torch.Generator().manual_seed(self.seed)
        return torch.utils.data.DataLoader(self.train_windows, batch_size=self.batch_size, shuffle=True,
                                           collate_fn=self.collate(), generator=generator)

    def heldout_batches(self) -> list[dict]:
        collate = self.collate(seed=self.seed + 1)  # transformers' collator reads seed 0 as "no seed"
        return [collate(self.heldout_windows[i:i + self.batch_size])
                for i in range(0, len(self.heldout_windows), self.batch_size)]
