"""The reader as a LightningModule: a `*ForQuestionAnswering` net trained on start/end labels and
validated by the scoring contract (`metaqa.evaluation.scoring.score`: official v1.1 or v2.0) after
HF-style postprocessing."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from transformers import get_linear_schedule_with_warmup

from metaqa.data.features import model_inputs
from metaqa.evaluation.postprocess import DecodeConfig, postprocess
from metaqa.evaluation.scoring import score

LOGGED_METRICS = ("exact", "f1", "HasAns_f1", "NoAns_f1", "best_f1", "best_f1_thresh")


def scatter_logits(chunks, n_windows: int) -> tuple[np.ndarray, np.ndarray]:
    """(feature_index, start, end) batches of any widths → two (n_windows, max_width) arrays."""
    chunks = list(chunks)
    width = max(s.shape[1] for _, s, _ in chunks)
    start = np.zeros((n_windows, width), dtype=np.float32)
    end = np.zeros((n_windows, width), dtype=np.float32)
    for index, s, e in chunks:
        start[index.cpu().numpy(), : s.shape[1]] = s.float().cpu().numpy()
        end[index.cpu().numpy(), : e.shape[1]] = e.float().cpu().numpy()
    return start, end


class ReaderModule(pl.LightningModule):
    def __init__(
        self,
        net: torch.nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        warmup_ratio: float = 0.1,
        weight_decay: float = 0.01,
        decode: dict[str, Any] | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer"], logger=False)
        self.net = net.train()  # from_pretrained returns eval mode (dropout off); Lightning keeps it
        self.optimizer_factory = optimizer
        self.decode = DecodeConfig(**(decode or {}))
        self.val_per_theme: dict[str, dict[str, float]] = {}
        self.validated_at_step = -1  # global step of the last full validation
        self._val_chunks: list = []

    def configure_model(self) -> None:
        # the forward only, so state-dict keys, checkpoints and save_pretrained stay those of the
        # plain net; dynamic shapes: batches are padded to their own longest window
        if self.hparams.compile and not hasattr(self.net.forward, "_torchdynamo_orig_callable"):
            self.net.forward = torch.compile(self.net.forward, dynamic=True)

    def forward(self, batch: dict[str, torch.Tensor]):
        return self.net(**model_inputs(batch))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self.net(
            **model_inputs(batch),
            start_positions=batch["start_positions"],
            end_positions=batch["end_positions"],
        )
        self.log("train/loss", out.loss, prog_bar=True, batch_size=len(batch["input_ids"]))
        return out.loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # scored in fp32 whatever the training precision: that is what export and serving run,
        # and bf16 logits (8 bits of mantissa) tie n-best candidates
        with torch.autocast(self.device.type, enabled=False):
            out = self(batch)
        self._val_chunks.append(
            (batch["feature_index"].cpu(), out.start_logits.detach().cpu(), out.end_logits.detach().cpu())
        )

    def on_validation_epoch_end(self) -> None:
        chunks, self._val_chunks = self._val_chunks, []
        if dist.is_available() and dist.is_initialized():  # every rank scored a shard of windows
            gathered: list = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, chunks)
            chunks = [c for rank_chunks in gathered for c in rank_chunks]
        if not chunks:
            return
        dm = self.trainer.datamodule
        start, end = scatter_logits(chunks, len(dm.val_features))
        predictions = postprocess(dm.val_records, dm.val_features, start, end, **self.decode.as_kwargs())
        overall, self.val_per_theme = score(dm.val_records, predictions, self.decode.version_2)
        self.validated_at_step = self.global_step
        self.log_dict({f"val/{k}": float(overall[k]) for k in LOGGED_METRICS if k in overall})

    def configure_optimizers(self):
        # No weight decay on biases and LayerNorm weights, as in HF run_qa.py.
        decay, no_decay = [], []
        for name, p in self.net.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim < 2 else decay).append(p)
        optimizer = self.optimizer_factory(
            params=[
                {"params": decay, "weight_decay": self.hparams.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ]
        )
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = get_linear_schedule_with_warmup(
            optimizer, int(self.hparams.warmup_ratio * total), total
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
