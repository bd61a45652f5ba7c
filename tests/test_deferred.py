"""Per-step products with the weight gradient computed once after the loop (nn.deferred): the same loss and
gradients as autograd's step-by-step products, in a recurrence and in the teacher-forced decoder."""

import pytest
import torch
import torch.nn.functional as F
from helpers import copy_examples, small_config

from nlp_rnn.data import make_batch
from nlp_rnn.nn import deferred
from nlp_rnn.nn.deferred import DeferredLinear
from nlp_rnn.nn.seq2seq import Seq2Seq


def recurrence(weight, bias, x0, steps: int, product) -> torch.Tensor:
    """x_{t+1} = tanh(x_t Wᵀ + b) (square W), each step's output also summed into the loss with a weight."""
    x, loss = x0, 0.0
    for t in range(steps):
        x = torch.tanh(product(x))
        loss = loss + (t + 1) * x.square().sum()
    return loss


def test_a_recurrence_has_the_same_gradients_as_step_by_step_products() -> None:
    torch.manual_seed(0)
    weight = torch.randn(6, 6, requires_grad=True)
    bias = torch.randn(6, requires_grad=True)
    x0 = torch.randn(4, 6, requires_grad=True)
    plain = recurrence(weight, bias, x0, 7, lambda x: F.linear(x, weight, bias))
    expected = torch.autograd.grad(plain, (weight, bias, x0))
    product = DeferredLinear(weight, bias)
    late = recurrence(weight, bias, x0, 7, product)
    got = torch.autograd.grad(late, (weight, bias, x0))
    assert torch.allclose(late, plain, rtol=1e-6)
    for g, e in zip(got, expected):
        assert torch.allclose(g, e, rtol=1e-5, atol=1e-6)
    assert not product.store.inputs and not product.store.grads  # nothing kept after the backward


def test_an_input_changed_in_place_after_its_step_is_refused() -> None:
    weight = torch.randn(3, 3, requires_grad=True)
    product = DeferredLinear(weight, None)
    x = torch.randn(2, 3)
    y = product(x)
    x.add_(1.0)  # the kept input is no longer the one multiplied
    with pytest.raises(RuntimeError, match="changed in place"):
        y.sum().backward()


def decoder_gradients(cfg, defer: bool, monkeypatch, autocast: bool = False) -> tuple[float, dict]:
    torch.manual_seed(3)
    model = Seq2Seq(cfg, 14, 14).train()
    src, tgt = copy_examples(16, seed=5)
    monkeypatch.setattr(deferred, "applies", lambda module: defer and module.training)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss, count = model(make_batch(src, tgt))
    (loss / count).backward()
    return float(loss.detach()), {
        n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
    }


@pytest.mark.parametrize(
    "changes",
    [
        dict(cell="gru", attention="bahdanau", input_feeding=True, decoder_layers=2),
        dict(cell="lstm", attention="luong", input_feeding=False, decoder_layers=1),
        dict(cell="rnn_tanh", attention="none", decoder_layers=2),
    ],
)
def test_the_decoder_trains_with_the_same_loss_and_gradients(changes: dict, monkeypatch) -> None:
    cfg = small_config(**changes)
    loss, expected = decoder_gradients(cfg, False, monkeypatch)
    late_loss, got = decoder_gradients(cfg, True, monkeypatch)
    assert late_loss == pytest.approx(loss, rel=1e-6)
    assert got.keys() == expected.keys()
    for name in expected:
        assert torch.allclose(got[name], expected[name], rtol=1e-4, atol=1e-6), name


def test_under_bf16_autocast_the_gradients_stay_within_bf16_precision(monkeypatch) -> None:
    cfg = small_config(cell="gru", attention="bahdanau", input_feeding=True, decoder_layers=2)
    _, exact = decoder_gradients(cfg, False, monkeypatch)
    loss, expected = decoder_gradients(cfg, False, monkeypatch, autocast=True)
    late_loss, got = decoder_gradients(cfg, True, monkeypatch, autocast=True)
    assert late_loss == pytest.approx(loss, rel=1e-2)
    for name in expected:
        # no further from fp32's gradient than autograd's bf16 products are (plus bf16 rounding)
        scale = exact[name].norm() + 1e-6
        assert (got[name] - exact[name]).norm() / scale < 2 * (
            expected[name] - exact[name]
        ).norm() / scale + 0.02
        assert got[name].dtype == torch.float32


@pytest.mark.parametrize("kind", ["bahdanau", "luong", "dot"])
def test_a_deferred_attention_pass_gives_the_same_contexts_and_gradients_as_the_module(kind: str) -> None:
    """Five steps of attention over one set of keys and values (padding masked), the fourth step's context
    left out of the loss: with the pass's deferred products (the query's product, additive scores, the
    context) the contexts and weights equal the module's own, and so do the gradients of the queries, the
    values and every weight."""
    from nlp_rnn.nn.attention import build_attention

    torch.manual_seed(1)
    attention = build_attention(kind, 6, 6 if kind == "dot" else 5, 4)
    values = torch.randn(3, 7, 6, requires_grad=True)
    mask = torch.arange(7).unsqueeze(0) < torch.tensor([[7], [4], [1]])  # (3, 7)
    queries = [torch.randn(3, 6 if kind == "dot" else 5, requires_grad=True) for _ in range(5)]

    def run(defer: bool):
        keys = attention.keys(values)
        steps = attention.deferred_pass(keys, values, 5) if defer else None
        outputs = [attention(q, keys, values, mask, steps) for q in queries]
        loss = sum((t + 1) * c.sin().sum() for t, (c, _) in enumerate(outputs) if t != 3)
        loss = loss + outputs[3][1].square().sum()  # the fourth step's weights only, not its context
        inputs = (values, *attention.parameters())
        return outputs, torch.autograd.grad(loss, (*inputs, *queries))

    expected_outputs, expected = run(False)
    got_outputs, got = run(True)
    for (c, w), (ec, ew) in zip(got_outputs, expected_outputs):
        assert torch.allclose(c, ec, rtol=1e-5, atol=1e-6) and torch.allclose(w, ew, rtol=1e-5, atol=1e-6)
    assert len(got) == len(expected) >= 6
    for g, e in zip(got, expected):
        assert torch.allclose(g, e, rtol=1e-5, atol=1e-6)


def test_a_pass_refuses_more_steps_than_it_was_built_for() -> None:
    from nlp_rnn.nn.attention import build_attention

    attention = build_attention("bahdanau", 6, 5, 4)
    values, mask = torch.randn(2, 3, 6), torch.ones(2, 3, dtype=torch.bool)
    keys = attention.keys(values)
    steps = attention.deferred_pass(keys, values, 1)
    attention(torch.randn(2, 5), keys, values, mask, steps)
    with pytest.raises(RuntimeError, match="more steps than the pass was built for"):
        attention(torch.randn(2, 5), keys, values, mask, steps)


def test_passes_in_flight_together_keep_their_own_score_buffers_and_reuse_them_after() -> None:
    """Two additive passes forward before either's backward (e.g. two batches in one loss): each has its own
    scores' memory, so both give the module's gradients; after their backward the next pass writes into a
    block given back, not into new memory."""
    from nlp_rnn.nn.attention import build_attention

    torch.manual_seed(2)
    attention = build_attention("bahdanau", 6, 5, 4)
    batches = [(torch.randn(3, 7, 6), [torch.randn(3, 5) for _ in range(4)]) for _ in range(2)]
    mask = torch.ones(3, 7, dtype=torch.bool)

    def loss(defer: bool) -> torch.Tensor:
        total = 0.0
        for values, queries in batches:
            keys = attention.keys(values)
            steps = attention.deferred_pass(keys, values, len(queries)) if defer else None
            total = total + sum(
                (t + 1) * attention(q, keys, values, mask, steps)[0].sin().sum()
                for t, q in enumerate(queries)
            )
        return total

    expected = torch.autograd.grad(loss(False), list(attention.parameters()))
    got = torch.autograd.grad(loss(True), list(attention.parameters()))
    for g, e in zip(got, expected):
        assert torch.allclose(g, e, rtol=1e-5, atol=1e-6)
    kept = deferred.BLOCKS.free[(torch.device("cpu"), torch.float32)]
    keys = attention.keys(batches[0][0])
    assert attention.deferred_pass(keys, batches[0][0], 4).scores.store.block is kept
