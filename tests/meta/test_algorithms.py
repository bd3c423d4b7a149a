"""Meta-gradients against independent references, on a tiny BERT in float64 with dropout off."""
import copy

import pytest
import torch

from metaqa.config import CONF_DIR
from metaqa.data.features import model_inputs
from metaqa.data.formats import read_devrev_csv
from metaqa.data.tasks import TaskPool
from metaqa.meta.algorithms import accumulate_task_gradient
from metaqa.models.factory import build_qa_model

SAMPLE = CONF_DIR.parent / "metaqa" / "data" / "sample" / "sample_qa.csv"
ALPHA = 0.05


@pytest.fixture(scope="module")
def pool(tokenizer):
    records = read_devrev_csv(SAMPLE).records
    return TaskPool(records, tokenizer, n_support=2, n_query=2, tasks_per_step=3, seed=7,
                    max_seq_length=64, doc_stride=16)


@pytest.fixture
def net(tokenizer):
    torch.manual_seed(0)
    model = build_qa_model({"architecture": {"model_type": "bert", "hidden_size": 16, "num_hidden_layers": 1,
                                             "num_attention_heads": 2, "intermediate_size": 32,
                                             "attn_implementation": "eager"}}, vocab_size=len(tokenizer))
    return model.double().eval()  # eval: dropout off, so references need no matching masks


def loss_of(model, batch):
    return model(**model_inputs(batch), start_positions=batch["start_positions"],
                 end_positions=batch["end_positions"]).loss


def grads_of(model, batch, create_graph=False):
    params = [p for p in model.parameters()]
    return torch.autograd.grad(loss_of(model, batch), params, create_graph=create_graph, allow_unused=True)


def sgd_step(model, batch, lr):
    """A copy of `model` after one plain SGD step on `batch` (the textbook inner update)."""
    adapted = copy.deepcopy(model)
    opt = torch.optim.SGD(adapted.parameters(), lr=lr)
    loss_of(adapted, batch).backward()
    opt.step()
    return adapted


def meta_grads(net, task, algorithm, inner_steps=1, n_tasks=1):
    net.zero_grad(set_to_none=True)
    accumulate_task_gradient(net, task, algorithm, ALPHA, inner_steps, n_tasks)
    return [p.grad.clone() for p in net.parameters()]


def assert_all_close(actual, expected, **tol):
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, torch.zeros_like(a) if e is None else e, **tol)


def test_episodes_are_deterministic_disjoint_and_single_theme(pool, tokenizer):
    first, again, other = pool.episode(3), pool.episode(3), pool.episode(4)
    assert [t.theme for t in first] == [t.theme for t in again]
    assert all(torch.equal(a.support["input_ids"], b.support["input_ids"]) for a, b in zip(first, again))
    assert [t.theme for t in first] != [t.theme for t in other] or not torch.equal(
        first[0].support["input_ids"], other[0].support["input_ids"])
    assert len({t.theme for t in first}) == 3  # tasks of one episode are different themes
    ids = {t.theme: {tokenizer.decode(row, skip_special_tokens=True) for row in t.support["input_ids"]} for t in first}
    for task in first:  # support and query questions differ (disjoint question sets)
        query = {tokenizer.decode(row, skip_special_tokens=True) for row in task.query["input_ids"]}
        assert not ids[task.theme] & query


def test_second_order_maml_equals_the_hessian_vector_formula(net, pool):
    task = pool.episode(0)[0]
    got = meta_grads(net, task, "maml")
    # reference: d/dθ L_q(θ − α∇L_s(θ)) = (I − α H_s) ∇L_q(θ'), with H_s·v by double backward
    adapted = sgd_step(net, task.support, ALPHA)
    v = [g if g is not None else torch.zeros_like(p) for g, p in zip(grads_of(adapted, task.query), net.parameters())]
    g_s = grads_of(net, task.support, create_graph=True)
    dot = sum((g * vi).sum() for g, vi in zip(g_s, v) if g is not None)
    hv = torch.autograd.grad(dot, list(net.parameters()), allow_unused=True)
    expected = [vi - ALPHA * (h if h is not None else 0) for vi, h in zip(v, hv)]
    assert_all_close(got, expected, rtol=1e-7, atol=1e-10)
    fomaml = meta_grads(net, task, "fomaml")  # and it is not the first-order gradient
    assert max((a - b).abs().max().item() for a, b in zip(got, fomaml)) > 1e-8


def test_second_order_maml_matches_finite_differences(net, pool):
    task = pool.episode(1)[0]
    got = meta_grads(net, task, "maml")
    torch.manual_seed(1)
    direction = [torch.randn_like(p) for p in net.parameters()]
    # nn.Embedding gives the padding row a zero gradient by definition, yet padded positions
    # still enter the QA loss, so the true derivative along that row differs: leave it out.
    embeddings = net.get_input_embeddings()
    row = [d for d, p in zip(direction, net.parameters()) if p is embeddings.weight][0]
    row[embeddings.padding_idx] = 0

    def f(eps):
        moved = copy.deepcopy(net)
        with torch.no_grad():
            for p, d in zip(moved.parameters(), direction):
                p.add_(eps * d)
        return loss_of(sgd_step(moved, task.support, ALPHA), task.query).item()

    eps = 1e-5
    numeric = (f(eps) - f(-eps)) / (2 * eps)
    analytic = sum((g * d).sum().item() for g, d in zip(got, direction))
    assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-9)


def test_fomaml_is_the_query_gradient_at_the_adapted_weights(net, pool):
    task = pool.episode(2)[1]
    got = meta_grads(net, task, "fomaml", n_tasks=2)
    expected = [None if g is None else g / 2 for g in grads_of(sgd_step(net, task.support, ALPHA), task.query)]
    assert_all_close(got, expected, rtol=1e-9, atol=1e-12)


def test_reptile_gradient_is_theta_minus_adapted_and_sgd_moves_toward_it(net, pool):
    task = pool.episode(5)[0]
    got = meta_grads(net, task, "reptile", inner_steps=2)
    adapted = sgd_step(sgd_step(sgd_step(net, task.support, ALPHA), task.support, ALPHA), task.query, ALPHA)
    expected = [p.detach() - a.detach() for p, a in zip(net.parameters(), adapted.parameters())]
    assert_all_close(got, expected, rtol=1e-9, atol=1e-12)
    before = [p.detach().clone() for p in net.parameters()]
    torch.optim.SGD(net.parameters(), lr=0.5).step()  # θ ← θ + ε(θ' − θ), ε = 0.5
    for p, b, a in zip(net.parameters(), before, adapted.parameters()):
        torch.testing.assert_close(p.detach(), b + 0.5 * (a.detach() - b))


def test_multitask_baseline_is_the_plain_gradient_on_the_same_examples(net, pool):
    task = pool.episode(6)[2]
    got = meta_grads(net, task, "none", n_tasks=3)
    s, q = grads_of(net, task.support), grads_of(net, task.query)
    expected = [None if a is None else (a + b) / 6 for a, b in zip(s, q)]
    assert_all_close(got, expected, rtol=1e-9, atol=1e-12)


def test_gradients_of_an_episode_are_the_mean_over_tasks(net, pool):
    episode = pool.episode(8)
    net.zero_grad(set_to_none=True)
    for task in episode:
        accumulate_task_gradient(net, task, "fomaml", ALPHA, 1, len(episode))
    summed = [p.grad.clone() for p in net.parameters()]
    each = [meta_grads(net, task, "fomaml") for task in episode]
    assert_all_close(summed, [sum(g[i] for g in each) / 3 for i in range(len(summed))], rtol=1e-9, atol=1e-12)


def test_unknown_algorithm_and_too_few_questions_are_clear_errors(net, pool, tokenizer):
    with pytest.raises(ValueError, match="meta.algorithm"):
        accumulate_task_gradient(net, pool.episode(0)[0], "mamll", ALPHA, 1, 1)
    with pytest.raises(ValueError, match="n_support"):
        TaskPool(read_devrev_csv(SAMPLE).records, tokenizer, n_support=40, n_query=40, tasks_per_step=2)


@pytest.mark.parametrize("precision", ["fp32", "bf16-autocast"])
def test_second_order_maml_runs_through_sdpa_attention(tokenizer, pool, precision):
    """Second-order MAML differentiates twice through attention: torch's fused CPU SDPA kernel has
    no double backward (MiniLM loads with attn_implementation=sdpa), so the task must run on the
    math kernel — and give the eager model's meta-gradient."""
    nets = {}
    for impl in ("eager", "sdpa"):
        torch.manual_seed(0)
        nets[impl] = build_qa_model({"architecture": {
            "model_type": "bert", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 32, "attn_implementation": impl}}, vocab_size=len(tokenizer)).eval()
    task = pool.episode(0)[0]
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision != "fp32")
    with autocast:
        grads = {impl: meta_grads(net, task, "maml") for impl, net in nets.items()}
    tol = {"atol": 1e-5, "rtol": 1e-4} if precision == "fp32" else {"atol": 5e-2, "rtol": 5e-2}
    assert_all_close(grads["sdpa"], grads["eager"], **tol)
