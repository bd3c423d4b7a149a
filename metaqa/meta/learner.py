"""learn2learn's `clone() → adapt(loss) → forward` on `torch.func.functional_call`.

learn2learn itself cannot be installed on Python >= 3.11, so the fast weights live in a plain
dict of tensors and the network is called functionally with them. `adapt` takes one SGD step:

- second order (MAML): the step stays in the autograd graph (`create_graph=True`), so a query
  loss differentiates through the inner updates back to the meta-parameters;
- first order (FOMAML): the inner gradient is a constant, so d(query loss)/d(meta-params) is the
  query gradient at the adapted weights;
- detached (Reptile): the adapted weights are cut from the meta-parameters altogether.

Buffers (BERT's position ids, ...) are passed through unchanged; dropout follows the module's
train/eval mode and the global RNG, which the caller seeds per task.
"""
from __future__ import annotations

import torch
from torch.func import functional_call

from metaqa.data.features import model_inputs


class FunctionalLearner:
    def __init__(self, net: torch.nn.Module, params: dict[str, torch.Tensor], lr: float,
                 first_order: bool = False, detached: bool = False) -> None:
        self.net, self.params, self.lr = net, params, lr
        self.first_order, self.detached = first_order or detached, detached
        self.buffers = dict(net.named_buffers())

    @classmethod
    def clone(cls, net: torch.nn.Module, lr: float, first_order: bool = False,
              detached: bool = False) -> "FunctionalLearner":
        """Fast weights that start at the net's parameters (connected to them unless detached)."""
        params = {n: (p.detach().requires_grad_() if detached else p)
                  for n, p in net.named_parameters() if p.requires_grad}
        return cls(net, params, lr, first_order, detached)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The QA loss (mean of start and end cross-entropies) at the fast weights."""
        out = functional_call(self.net, (self.params, self.buffers), args=(), kwargs={
            **model_inputs(batch),
            "start_positions": batch["start_positions"], "end_positions": batch["end_positions"]})
        return out.loss

    def adapt(self, loss: torch.Tensor) -> None:
        """One inner SGD step on `loss`, in place."""
        names = list(self.params)
        grads = torch.autograd.grad(loss, [self.params[n] for n in names],
                                    create_graph=not self.first_order, allow_unused=True)
        updated = {}
        for name, grad in zip(names, grads):
            p = self.params[name]
            new = p if grad is None else p - self.lr * grad
            updated[name] = new.detach().requires_grad_() if self.detached else new
        self.params = updated
