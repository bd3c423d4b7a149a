"""Knowledge distillation as a LightningModule: a student reader trained on a teacher's soft
start/end distributions and the gold spans (`metaqa.models.compress.distill_loss`).

The teacher's logits for every training window are computed once, when fitting starts (one
no-grad pass, batched, under bf16 autocast when the trainer trains in bf16-mixed, else fp32), and
kept as one float16 array per window; every epoch reads them
by the batch's `feature_index`. Teacher and student tokenise identically (the student is cut from
the teacher, or shares its tokenizer), so window i has the same positions for both.

With `hidden_weight > 0` the student also matches the teacher's hidden states layer by layer
(`hidden_state_loss`; `teacher_layers` maps a truncated student's layers to the teacher's); with
`relation_weight > 0`, the self-attention relations of its last layer's queries, keys and values
to the teacher's last layer's (`attention_relation_loss`, MiniLMv2; captured by forward hooks on
the two layers' Q/K/V projections). Those are too large to cache (windows × tokens × hidden ×
layers), so the teacher then runs beside the student on every batch (no grad) and its logits come
from that same pass, not the cache.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from metaqa.data.features import FeatureDataset, model_inputs
from metaqa.models.compress import attention_relation_loss, distill_loss, encoder_layers, hidden_state_loss
from metaqa.models.reader import ReaderModule


class TeacherCache:
    """Per-window teacher (start, end) logits, computed on first use; `passes` counts the
    teacher's batched forward calls (one sweep over the windows per fit, however many epochs)."""

    def __init__(self, teacher_dir: str | Path, batch_size: int = 64) -> None:
        self.teacher_dir = str(teacher_dir)
        self.batch_size = batch_size
        self.start: list[np.ndarray] = []
        self.end: list[np.ndarray] = []
        self.passes = 0
        self._key = None

    def ensure(self, features, pad_token_id: int, bf16: bool = False) -> None:
        """Fill the cache for `features` (once per feature set); `bf16`: the pass under CPU bf16
        autocast, as the student's own steps run (about twice as fast where the CPU has bf16 units)."""
        key = (id(features), len(features))
        if self._key == key:
            return
        from transformers import AutoModelForQuestionAnswering

        teacher = AutoModelForQuestionAnswering.from_pretrained(self.teacher_dir, local_files_only=True).eval()
        dataset = FeatureDataset(features, pad_token_id)
        self.start, self.end = [None] * len(features), [None] * len(features)
        order = np.argsort([len(ids) for ids in features.encodings["input_ids"]])  # similar lengths: less padding
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            for lo in tqdm(range(0, len(order), self.batch_size), desc="teacher logits", unit="batch"):
                idx = order[lo: lo + self.batch_size]
                batch = dataset.collate([dataset[int(i)] for i in idx])
                out = teacher(**model_inputs(batch))
                lengths = batch["attention_mask"].sum(1).tolist()
                for row, i in enumerate(idx):
                    n = lengths[row]
                    self.start[i] = out.start_logits[row, :n].float().numpy().astype(np.float16)
                    self.end[i] = out.end_logits[row, :n].float().numpy().astype(np.float16)
                self.passes += 1
        self._key = key

    def gather(self, feature_index: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = np.zeros((len(feature_index), width), dtype=np.float32)
        end = np.zeros_like(start)
        for row, i in enumerate(feature_index.tolist()):
            n = len(self.start[i])
            start[row, :n], end[row, :n] = self.start[i], self.end[i]
        return torch.from_numpy(start), torch.from_numpy(end)


class DistillModule(ReaderModule):
    """`ReaderModule` whose training loss is `distill_loss` against a teacher reader dir
    (`alpha=0`: gold spans only, i.e. plain fine-tuning of a compressed student), plus
    `hidden_weight` × `hidden_state_loss` when that is > 0."""

    def __init__(self, net, optimizer, teacher_dir: str, temperature: float = 2.0, alpha: float = 0.5,
                 teacher_batch_size: int = 64, hidden_weight: float = 0.0, teacher_layers: list[int] | None = None,
                 relation_weight: float = 0.0, relation_heads: int = 12, **kwargs) -> None:
        super().__init__(net, optimizer, **kwargs)
        self.save_hyperparameters(ignore=["net", "optimizer"], logger=False)
        self.teacher = TeacherCache(teacher_dir, teacher_batch_size)
        self._live: list = []  # the teacher run beside the student: a list, so it is no submodule (never saved)
        self._qkv: dict[str, list] = {"student": [None] * 3, "teacher": [None] * 3}  # last layer's Q, K, V outputs
        self._hooks: list = []

    @property
    def live_teacher(self) -> bool:
        return self.hparams.hidden_weight > 0 or self.hparams.relation_weight > 0

    def on_fit_start(self) -> None:
        if self.live_teacher:
            from transformers import AutoModelForQuestionAnswering

            live = AutoModelForQuestionAnswering.from_pretrained(self.hparams.teacher_dir, local_files_only=True)
            self._live = [live.eval().requires_grad_(False).to(self.device)]
            if self.hparams.relation_weight > 0:
                self._hooks = [self._capture_qkv("student", self.net), self._capture_qkv("teacher", live)]
        elif self.hparams.alpha > 0:
            dm = self.trainer.datamodule
            bf16 = str(self.trainer.precision).startswith("bf16") and self.device.type == "cpu"
            self.teacher.ensure(dm.train_features, dm.tokenizer.pad_token_id, bf16=bf16)

    def _capture_qkv(self, who: str, net) -> list:
        """Forward hooks keeping the last encoder layer's query, key and value projections' outputs."""
        attention = encoder_layers(net)[-1].attention.self
        store = self._qkv[who]

        def hook(i):
            def keep(module, args, output):
                store[i] = output
            return keep

        return [proj.register_forward_hook(hook(i)) for i, proj in enumerate((attention.query, attention.key, attention.value))]

    def on_fit_end(self) -> None:
        for handles in self._hooks:
            for handle in handles:
                handle.remove()
        self._hooks = []

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        inputs = model_inputs(batch)
        hidden = self.hparams.hidden_weight > 0
        out = self.net(**inputs, output_hidden_states=hidden)
        mask = batch["attention_mask"].bool()
        if self.live_teacher:
            with torch.no_grad():
                teacher = self._live[0](**inputs, output_hidden_states=hidden)
            t_start, t_end = teacher.start_logits, teacher.end_logits
        elif self.hparams.alpha > 0:
            t_start, t_end = self.teacher.gather(batch["feature_index"], mask.shape[1])
            t_start, t_end = t_start.to(out.start_logits), t_end.to(out.end_logits)
        else:
            t_start, t_end = out.start_logits.detach(), out.end_logits.detach()
        loss = distill_loss(out.start_logits, out.end_logits, t_start, t_end, batch["start_positions"],
                            batch["end_positions"], self.hparams.temperature, self.hparams.alpha, mask)
        if hidden:
            transfer = hidden_state_loss(out.hidden_states, teacher.hidden_states, self.hparams.teacher_layers, mask)
            self.log("train/hidden_loss", transfer, batch_size=len(batch["input_ids"]))
            loss = loss + self.hparams.hidden_weight * transfer
        if self.hparams.relation_weight > 0:
            relation = attention_relation_loss(self._qkv["student"], self._qkv["teacher"],
                                               self.hparams.relation_heads, mask)
            self.log("train/relation_loss", relation, batch_size=len(batch["input_ids"]))
            loss = loss + self.hparams.relation_weight * relation
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["input_ids"]))
        return loss
