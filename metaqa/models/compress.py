"""Smaller readers from a trained one: layer truncation, structured pruning, the distillation loss.

Every function returns a normal `*ForQuestionAnswering` model whose `save_pretrained` dir loads
with `from_pretrained` (and `transformers.pipeline`) unchanged: truncation rewrites
`num_hidden_layers`, head pruning uses transformers' own `prune_heads` (recorded in
`config.pruned_heads`, re-applied on load) and FFN pruning slices the same number of neurons from
every layer (so `config.intermediate_size` still describes every layer). Matrices get smaller for
real; nothing is masked.

- `truncate(net, layers)`: keep these encoder layers (embeddings and QA head kept).
- `project_embeddings(teacher, student)`: a student of another width starts from the teacher's
  embeddings projected onto their top principal directions.
- `probe_layers(net, k, batches)`: which k layers to keep, chosen on labelled batches (greedy
  backward elimination: drop, one at a time, the layer whose removal raises the loss least).
- `head_importance` / `ffn_importance`: gradient × activation on calibration batches (Michel et
  al. 2019 for heads: |∂L/∂mask| with a head mask of ones; for FFN neurons |a · ∂L/∂a| summed).
- `prune(net, batches, heads=0.25, ffn=0.5)`: remove that share of heads (globally ranked, at
  least one kept per layer) and of each layer's FFN neurons.
- `distill_loss`: α·T²·KL(teacher_T ‖ student_T) + (1 − α)·CE(gold), start and end averaged.
- `attention_relation_loss`: MiniLMv2's self-attention relation transfer (Q-Q, K-K, V-V).
"""
from __future__ import annotations

import copy
import math
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F

from metaqa.data.features import model_inputs


def encoder_layers(net) -> torch.nn.ModuleList:
    return net.base_model.encoder.layer


def choose_layers(n: int, k: int, how: str | Sequence[int] = "every_other") -> list[int]:
    """Which k of n layers to keep: `every_other` (evenly spaced, the last one kept: 6 → 3 is
    [1, 3, 5]), `first` (0 … k-1), or an explicit list."""
    if not isinstance(how, str):
        layers = sorted(int(i) for i in how)
        if len(set(layers)) != len(layers) or not layers or layers[0] < 0 or layers[-1] >= n:
            raise ValueError(f"layers {list(how)}: pick distinct indices in 0..{n - 1}")
        return layers
    if not 1 <= k <= n:
        raise ValueError(f"keep 1..{n} layers, not {k}")
    if how == "first":
        return list(range(k))
    if how == "every_other":
        step = n / k
        return sorted({min(n - 1, round(n - 1 - i * step)) for i in range(k)})
    raise ValueError(f"layer choice {how!r}: pass every_other, first or a list of indices")


def truncate(net, layers: Sequence[int]):
    """A copy of `net` with only these encoder layers, in their order."""
    student = copy.deepcopy(net)
    kept = torch.nn.ModuleList(encoder_layers(student)[i] for i in layers)
    student.base_model.encoder.layer = kept
    student.config.num_hidden_layers = len(kept)
    if student.config.pruned_heads:  # re-index the teacher's pruned heads to the kept layers
        student.config.pruned_heads = {new: student.config.pruned_heads[old]
                                       for new, old in enumerate(layers) if old in student.config.pruned_heads}
    return student


def probe_layers(net, k: int, batches: Sequence[dict]) -> tuple[list[int], list[dict]]:
    """The k layers to keep, by a validation probe: from all n, repeatedly drop the layer whose
    removal gives the lowest QA loss on `batches` (the truncated teacher, untrained), until k
    remain. n(n+1)/2 − k(k+1)/2 forward sweeps over the batches. Returns the kept layers and each
    round's {dropped, loss}."""
    keep = list(range(net.config.num_hidden_layers))
    if not 1 <= k <= len(keep):
        raise ValueError(f"keep 1..{len(keep)} layers, not {k}")
    if not batches:
        raise ValueError("the layer probe needs labelled batches")
    rounds = []
    while len(keep) > k:
        losses = {i: mean_loss(truncate(net, [j for j in keep if j != i]), batches) for i in keep}
        dropped = min(losses, key=losses.get)
        keep.remove(dropped)
        rounds.append({"dropped": dropped, "loss": losses[dropped]})
    return keep, rounds


def mean_loss(net, batches: Sequence[dict]) -> float:
    """The QA loss (start + end cross-entropy / 2) averaged over `batches`, eval mode, no grad."""
    net.eval()
    with torch.no_grad():
        return float(sum(_loss(net, batch).item() for batch in batches) / len(batches))


def project_embeddings(teacher, student) -> None:
    """Set the student's word, position and token-type embeddings to the teacher's, centred and
    projected onto the top `student width` principal directions of the teacher's word embeddings
    (one projection for all three: BERT sums them). A student as wide as the teacher gets a pure
    rotation (every distance kept); a narrower one the closest linear fit of that width."""
    t, s = teacher.base_model.embeddings, student.base_model.embeddings
    words = t.word_embeddings.weight.detach().float()
    width = s.word_embeddings.weight.shape[1]
    if width > words.shape[1]:
        raise ValueError(f"student width {width} is above the teacher's {words.shape[1]}: nothing to project onto")
    if s.word_embeddings.weight.shape[0] != words.shape[0]:
        raise ValueError("teacher and student vocabularies differ: the student must use the teacher's tokenizer")
    mean = words.mean(0, keepdim=True)
    _, _, vh = torch.linalg.svd(words - mean, full_matrices=False)
    basis = vh[:width].T  # (teacher width, student width)
    with torch.no_grad():
        for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
            src, dst = getattr(t, name).weight.float(), getattr(s, name).weight
            n = min(len(src), len(dst))
            dst[:n] = ((src[:n] - mean) @ basis).to(dst.dtype)


def _loss(net, batch, **extra) -> torch.Tensor:
    out = net(**model_inputs(batch), start_positions=batch["start_positions"], end_positions=batch["end_positions"],
              **extra)
    return out.loss


def head_importance(net, batches: Iterable[dict]) -> torch.Tensor:
    """(layers, heads): |∂loss/∂head_mask| summed over the batches, L2-normalised per layer."""
    cfg = net.config
    mask = torch.ones(cfg.num_hidden_layers, cfg.num_attention_heads, requires_grad=True)
    total = torch.zeros_like(mask)
    net.eval()
    for batch in batches:
        loss = _loss(net, batch, head_mask=mask)
        (grad,) = torch.autograd.grad(loss, mask)
        total += grad.abs()
    norm = total.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return total / norm


def ffn_importance(net, batches: Iterable[dict]) -> list[torch.Tensor]:
    """Per layer, (intermediate_size,): |activation × gradient| summed over tokens and batches."""
    layers = encoder_layers(net)
    acts: list[torch.Tensor | None] = [None] * len(layers)
    scores = [torch.zeros(layer.intermediate.dense.out_features) for layer in layers]

    def keep(i):
        def hook(_module, _inputs, output):
            output.retain_grad()
            acts[i] = output
        return hook

    handles = [layer.intermediate.register_forward_hook(keep(i)) for i, layer in enumerate(layers)]
    net.eval()
    try:
        for batch in batches:
            net.zero_grad(set_to_none=True)
            _loss(net, batch).backward()
            for i, a in enumerate(acts):
                scores[i] += (a * a.grad).abs().sum(dim=(0, 1)).detach()
    finally:
        for h in handles:
            h.remove()
        net.zero_grad(set_to_none=True)
    return scores


def heads_to_prune(importance: torch.Tensor, fraction: float) -> dict[int, list[int]]:
    """The least important `fraction` of all heads, never a layer's last one."""
    n_layers, n_heads = importance.shape
    budget = int(round(fraction * n_layers * n_heads))
    left = {layer: n_heads for layer in range(n_layers)}
    chosen: dict[int, list[int]] = {}
    for flat in importance.flatten().argsort().tolist():
        if budget == 0:
            break
        layer, head = divmod(flat, n_heads)
        if left[layer] > 1:
            chosen.setdefault(layer, []).append(head)
            left[layer] -= 1
            budget -= 1
    return {layer: sorted(heads) for layer, heads in sorted(chosen.items())}


def prune_ffn(net, scores: Sequence[torch.Tensor], fraction: float) -> None:
    """Keep the same number of most important neurons in every layer's FFN (in place)."""
    size = net.config.intermediate_size
    keep_n = max(1, int(round(size * (1 - fraction))))
    for layer, score in zip(encoder_layers(net), scores):
        keep = score.argsort(descending=True)[:keep_n].sort().values
        layer.intermediate.dense = _slice_linear(layer.intermediate.dense, keep, dim=0)
        layer.output.dense = _slice_linear(layer.output.dense, keep, dim=1)
    net.config.intermediate_size = keep_n


def _slice_linear(linear: torch.nn.Linear, index: torch.Tensor, dim: int) -> torch.nn.Linear:
    weight = linear.weight.detach().index_select(dim, index).clone()
    bias = linear.bias.detach().clone() if linear.bias is not None else None
    if dim == 0 and bias is not None:
        bias = bias.index_select(0, index).clone()
    new = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    new.weight.data.copy_(weight)
    if bias is not None:
        new.bias.data.copy_(bias)
    return new


def prune(net, batches: Sequence[dict], heads: float = 0.0, ffn: float = 0.0):
    """A copy of `net` with `heads` of its attention heads and `ffn` of each FFN's neurons removed,
    ranked by importance on `batches` (labelled training windows)."""
    if not (0 <= heads < 1 and 0 <= ffn < 1):
        raise ValueError(f"prune fractions must be in [0, 1): heads={heads}, ffn={ffn}")
    student = copy.deepcopy(net)
    if heads:
        student.prune_heads(heads_to_prune(head_importance(student, batches), heads))
    if ffn:
        prune_ffn(student, ffn_importance(student, batches), ffn)
    return student


def distill_loss(student_start: torch.Tensor, student_end: torch.Tensor, teacher_start: torch.Tensor,
                 teacher_end: torch.Tensor, start_positions: torch.Tensor, end_positions: torch.Tensor,
                 temperature: float = 2.0, alpha: float = 0.5, mask: torch.Tensor | None = None) -> torch.Tensor:
    """α·T²·½[KL(p_t^s ‖ p_s^s) + KL(p_t^e ‖ p_s^e)] + (1 − α)·½[CE(s, gold_s) + CE(e, gold_e)].

    p = softmax(logits / T) over a window's positions; `mask` (batch, width) marks real tokens, so
    padding gets no probability. T² keeps the soft term's gradient scale independent of T (Hinton
    et al. 2015)."""
    if mask is not None:
        fill = -1e4  # finite: exp(fill / T) is 0, and fill / T never overflows to -inf
        student_start, student_end = student_start.masked_fill(~mask, fill), student_end.masked_fill(~mask, fill)
        teacher_start, teacher_end = teacher_start.masked_fill(~mask, fill), teacher_end.masked_fill(~mask, fill)
    loss = student_start.new_zeros(())
    if alpha > 0:
        soft = sum(F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1),
                            reduction="batchmean", log_target=True)
                   for s, t in ((student_start, teacher_start), (student_end, teacher_end))) / 2
        loss = loss + alpha * temperature ** 2 * soft
    if alpha < 1:
        gold = (F.cross_entropy(student_start, start_positions) + F.cross_entropy(student_end, end_positions)) / 2
        loss = loss + (1 - alpha) * gold
    return loss


def hidden_state_loss(student_hidden: Sequence[torch.Tensor], teacher_hidden: Sequence[torch.Tensor],
                      teacher_layers: Sequence[int] | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the student's layers j of the MSE between its output and that of teacher layer
    `teacher_layers[j]` (default: the same layer), over real tokens: the intermediate-layer transfer
    of TinyBERT / DistilBERT's cosine term, as MSE (pruning and truncation keep the hidden size).
    `*_hidden` are `output_hidden_states` tuples: index 0 is the embeddings, i + 1 layer i's output."""
    layers = range(len(student_hidden) - 1)
    mapped = list(teacher_layers) if teacher_layers is not None else list(layers)
    if len(mapped) != len(layers):
        raise ValueError(f"{len(layers)} student layers but a map of {len(mapped)} teacher layers")
    weight = mask.unsqueeze(-1).to(student_hidden[0].dtype) if mask is not None else None
    losses = []
    for j in layers:
        diff = (student_hidden[j + 1].float() - teacher_hidden[mapped[j] + 1].float()) ** 2
        losses.append(diff.mean() if weight is None else (diff * weight).sum() / (weight.sum() * diff.shape[-1]))
    return torch.stack(losses).mean()


def relation_log_probs(x: torch.Tensor, heads: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(batch, heads, n, n) log softmax(x_r x_rᵀ / √d_r) over keys, x (batch, n, d) split into `heads`
    relation heads of d / heads; padded keys get no probability."""
    b, n, d = x.shape
    if d % heads:
        raise ValueError(f"width {d} does not split into {heads} relation heads")
    xr = x.float().view(b, n, heads, d // heads).transpose(1, 2)
    with torch.autocast(x.device.type, enabled=False):  # fp32 even under bf16 training: n × n softmaxes of tiny differences
        scores = xr @ xr.transpose(-1, -2) / math.sqrt(d // heads)
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None, None, :], -1e4)
        return F.log_softmax(scores, -1)


def attention_relation_loss(student_qkv: Sequence[torch.Tensor], teacher_qkv: Sequence[torch.Tensor],
                            heads: int = 12, mask: torch.Tensor | None = None) -> torch.Tensor:
    """MiniLMv2 (Wang et al. 2021): for the queries, keys and values of one layer (each
    (batch, n, width)), KL(teacher relation ‖ student relation) of their scaled dot-product
    self-relations, per relation head and real query token, averaged, then over Q, K, V. The two
    widths may differ (a pruned student): relations are n × n whatever the width."""
    losses = []
    for s, t in zip(student_qkv, teacher_qkv, strict=True):
        log_s, log_t = relation_log_probs(s, heads, mask), relation_log_probs(t, heads, mask)
        kl = (log_t.exp() * (log_t - log_s)).sum(-1)  # (batch, heads, n)
        if mask is None:
            losses.append(kl.mean())
        else:
            weight = mask[:, None, :].to(kl.dtype)
            losses.append((kl * weight).sum() / (weight.sum() * heads))
    return torch.stack(losses).mean()


def parameter_count(net) -> int:
    return sum(p.numel() for p in net.parameters())
