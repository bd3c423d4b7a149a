"""One task's contribution to the meta-gradient, accumulated into the meta-parameters' `.grad`.

Every algorithm sees the same examples of a task (its support and query windows), so the
multitask baseline and the meta-learners are compared at equal examples seen:

- `none` (multitask): a plain gradient of the support loss and of the query loss at θ.
- `maml` / `fomaml`: `inner_steps` SGD steps on the support set from θ to θ', then the query
  loss at θ'; its gradient w.r.t. θ goes through the inner steps (`maml`) or not (`fomaml`:
  the query gradient at θ').
- `reptile`: `inner_steps` SGD steps on the support set and one on the query set, from θ to
  θ'; the meta-gradient is θ − θ', so an outer SGD step with rate ε moves θ by ε(θ' − θ).

Each contribution is divided by the episode size: summing over tasks (and over DDP ranks,
which adapt disjoint tasks) gives the episode mean.
"""
from __future__ import annotations

import contextlib

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from metaqa.data.tasks import Task
from metaqa.meta.learner import FunctionalLearner

ALGORITHMS = ("none", "maml", "fomaml", "reptile")


def accumulate_task_gradient(net: torch.nn.Module, task: Task, algorithm: str, inner_lr: float,
                             inner_steps: int, n_tasks: int) -> dict[str, float]:
    """Add this task's share of the meta-gradient to `p.grad`; returns its losses."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"meta.algorithm must be one of {ALGORITHMS}, got '{algorithm}'")
    torch.manual_seed(task.seed)  # the same dropout masks on whichever rank runs this task
    params = [p for p in net.parameters() if p.requires_grad]

    if algorithm == "none":
        learner = FunctionalLearner.clone(net, inner_lr)
        support = learner.loss(task.support)
        query = learner.loss(task.query)
        _add_grads(params, torch.autograd.grad((support + query) / (2 * n_tasks), params))
        return {"support_loss": support.item(), "query_loss": query.item()}

    learner = FunctionalLearner.clone(net, inner_lr, first_order=algorithm == "fomaml",
                                      detached=algorithm == "reptile")
    # Second order differentiates twice through attention; torch's fused CPU SDPA kernels have no
    # double backward (models load with attn_implementation=sdpa), the math kernel has.
    with sdpa_kernel(SDPBackend.MATH) if algorithm == "maml" else contextlib.nullcontext():
        support_losses = []
        for _ in range(inner_steps):
            loss = learner.loss(task.support)
            support_losses.append(loss.item())
            learner.adapt(loss)
        query = learner.loss(task.query)
        if algorithm == "reptile":
            learner.adapt(query)
            adapted = [learner.params[n] for n, p in net.named_parameters() if p.requires_grad]
            _add_grads(params, [(p.detach() - a.detach()) / n_tasks for p, a in zip(params, adapted)])
        else:
            _add_grads(params, torch.autograd.grad(query / n_tasks, params, allow_unused=True))
    return {"support_loss": support_losses[0], "query_loss": query.item()}


def _add_grads(params: list[torch.Tensor], grads) -> None:
    with torch.no_grad():
        for p, g in zip(params, grads):
            if g is None:
                continue
            if p.grad is None:
                p.grad = g.detach().clone()
            else:
                p.grad.add_(g)
