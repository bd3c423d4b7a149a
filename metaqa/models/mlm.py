"""Domain-adaptive masked-LM pretraining of a reader's encoder (Gururangan et al. 2020, "Don't Stop
Pretraining"; the seed's self-supervised domain adaptation), with whole-word masking.

The masked-LM model is built around the reader's own encoder module (shared, not copied): training
it changes the encoder in place and never touches the QA head, so the reader saves and loads as
before. The MLM head is new (the packaged MiniLM ships without one: sentence-transformers dropped
it), so its first `head_warmup_steps` train the head alone: gradients from a random head would
otherwise push noise into the encoder before the head means anything. The decoder is tied to the
word embeddings (BERT's layout), so those stay frozen during the warm-up too.
"""
from __future__ import annotations

import pytorch_lightning as pl
import torch
from transformers import AutoModelForMaskedLM, PreTrainedModel, get_linear_schedule_with_warmup


def masked_lm_around(reader: PreTrainedModel) -> PreTrainedModel:
    """A `*ForMaskedLM` of the reader's architecture whose encoder *is* the reader's encoder."""
    mlm = AutoModelForMaskedLM.from_config(reader.config)
    prefix = reader.base_model_prefix
    if not hasattr(mlm, prefix):
        raise ValueError(f"{type(mlm).__name__} has no `{prefix}` encoder to share with {type(reader).__name__}")
    setattr(mlm, prefix, reader.base_model)
    mlm.tie_weights()  # the decoder tied to the shared word embeddings
    return mlm


def masked_lm_loss(mlm: PreTrainedModel, batch: dict) -> torch.Tensor:
    """The masked-LM loss, with the vocabulary head applied to the masked positions only: on
    MiniLM at 256 tokens the head over every position (what `mlm(**batch)` does) costs about as
    much as the encoder, for the 15% of positions that have a label. The head is the model's one
    child beside the encoder (`cls` in BERT, `lm_head` in RoBERTa); architectures with several
    (DistilBERT's vocab_transform / _layer_norm / _projector) take the plain path. A batch with
    nothing masked (short texts can draw none) has loss 0, not the NaN of an empty mean."""
    heads = [m for name, m in mlm.named_children() if name != mlm.base_model_prefix]
    if len(heads) != 1:
        return mlm(**batch).loss
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    hidden = mlm.base_model(**inputs).last_hidden_state
    chosen = labels != -100
    if not chosen.any():
        return hidden.sum() * 0.0  # zero, still attached to the graph
    logits = heads[0](hidden[chosen])
    return torch.nn.functional.cross_entropy(logits.float(), labels[chosen])


class MaskedLMModule(pl.LightningModule):
    """AdamW with linear warm-up/decay on the masked-LM loss; the encoder (and the tied decoder)
    frozen for the first `head_warmup_steps`."""

    def __init__(self, mlm: PreTrainedModel, lr: float = 5e-5, weight_decay: float = 0.01,
                 warmup_ratio: float = 0.1, head_warmup_steps: int = 0) -> None:
        super().__init__()
        self.mlm = mlm
        self.lr, self.weight_decay, self.warmup_ratio = lr, weight_decay, warmup_ratio
        self.head_warmup_steps = head_warmup_steps

    def on_train_batch_start(self, batch, batch_idx) -> None:
        trainable = self.global_step >= self.head_warmup_steps
        for p in self.mlm.base_model.parameters():
            p.requires_grad_(trainable)  # AdamW skips parameters without a gradient

    def training_step(self, batch, batch_idx):
        loss = masked_lm_loss(self.mlm, batch)
        self.log("train/mlm_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        # as ReaderModule: no weight decay on biases and LayerNorm weights
        params = list(self.mlm.parameters())
        optimizer = torch.optim.AdamW([{"params": [p for p in params if p.ndim >= 2], "weight_decay": self.weight_decay},
                                       {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}], lr=self.lr)
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = get_linear_schedule_with_warmup(optimizer, int(self.warmup_ratio * total), total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


@torch.no_grad()
def mean_masked_lm_loss(mlm: PreTrainedModel, batches) -> float:
    """Mean masked-LM loss over fixed (seeded) masked batches, weighted by masked tokens."""
    was_training = mlm.training
    mlm.eval()
    total, tokens = 0.0, 0
    for batch in batches:
        n = int((batch["labels"] != -100).sum())
        if n:
            total += float(masked_lm_loss(mlm, batch)) * n
            tokens += n
    mlm.train(was_training)
    return total / max(1, tokens)
