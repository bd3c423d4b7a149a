"""MetaQAModule: the reader meta-trained across domain tasks (Lightning, manual optimisation).

Validation, decoding, optimiser groups and the schedule are the reader's (`ReaderModule`); only
the training step differs: each DDP rank adapts its share of the episode's tasks
(`episode[rank::world]`), the meta-gradients are summed across ranks with one all-reduce, and
every rank takes the same outer step — so all ranks hold identical parameters, equal to a
single-process run over the same episode.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist

from metaqa.data.tasks import Task
from metaqa.fileio import write_json
from metaqa.meta.algorithms import ALGORITHMS, accumulate_task_gradient
from metaqa.models.reader import ReaderModule


class MetaQAModule(ReaderModule):
    def __init__(
        self,
        net: torch.nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        algorithm: str = "fomaml",
        first_order: bool = False,
        inner_lr: float = 1e-3,
        inner_steps: int = 1,
        gradient_clip_val: float | None = 1.0,
        warmup_ratio: float = 0.1,
        weight_decay: float = 0.01,
        decode: dict[str, Any] | None = None,
    ) -> None:
        if algorithm == "maml" and first_order:
            algorithm = "fomaml"
        if algorithm not in ALGORITHMS:
            raise ValueError(f"meta.algorithm must be one of {ALGORITHMS}, got '{algorithm}'")
        if inner_steps < 1 and algorithm != "none":
            raise ValueError(f"meta.inner_steps must be >= 1 for {algorithm}, got {inner_steps}")
        super().__init__(net, optimizer, warmup_ratio, weight_decay, decode)
        self.save_hyperparameters(ignore=["net", "optimizer"], logger=False)
        self.hparams.algorithm = algorithm
        self.automatic_optimization = False

    def on_train_start(self) -> None:
        # Gradients are all-reduced here, once per episode, not by DDP's reducer, which would
        # sync on every backward (and expects exactly one per forward).
        ddp = self.trainer.strategy.model
        if isinstance(ddp, torch.nn.parallel.DistributedDataParallel):
            ddp.require_backward_grad_sync = False

    def training_step(self, episode: list[Task], batch_idx: int) -> None:
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        optimizer.zero_grad(set_to_none=False)
        hp = self.hparams
        losses = [accumulate_task_gradient(self.net, task, hp.algorithm, hp.inner_lr, hp.inner_steps, len(episode))
                  for task in episode[self.global_rank :: self.trainer.world_size]]
        self._sum_gradients_across_ranks()
        if hp.gradient_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val=hp.gradient_clip_val, gradient_clip_algorithm="norm")
        optimizer.step()
        scheduler.step()
        if losses:  # a rank with no task this step (world > tasks) logs nothing
            for key in losses[0]:
                value = sum(loss[key] for loss in losses) / len(losses)
                self.log(f"train/{key}", value, prog_bar=key == "query_loss", batch_size=len(losses))

    def on_train_end(self) -> None:
        """Write a digest of every rank's parameters: after all-reduced steps they must agree."""
        digest = hashlib.sha256()
        for p in self.net.parameters():
            digest.update(p.detach().cpu().numpy().tobytes())
        digests = [digest.hexdigest()]
        if dist.is_available() and dist.is_initialized():
            digests = [None] * dist.get_world_size()
            dist.all_gather_object(digests, digest.hexdigest())
        if self.trainer.is_global_zero:
            write_json(Path(self.trainer.default_root_dir) / "rank_digests.json",
                       {"digests": digests, "in_sync": len(set(digests)) == 1})

    def _sum_gradients_across_ranks(self) -> None:
        params = [p for p in self.net.parameters() if p.requires_grad]
        for p in params:
            if p.grad is None:  # a rank without tasks still takes part in the all-reduce
                p.grad = torch.zeros_like(p)
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        dist.all_reduce(flat)  # each task's share was already divided by the episode size
        offset = 0
        for p in params:
            p.grad.copy_(flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()
