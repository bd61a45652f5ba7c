"""The decoder's own recurrent cells, and the encoder run step by step, equal torch's cells and packed layers in
value and gradient (as the fused loss equals F.cross_entropy)."""

import pytest
import torch
from torch import nn

from nlp_rnn.nn.cells import _GRUStep, cell_update, cell_update_
from nlp_rnn.nn.decoder import Cell
from nlp_rnn.nn.encoder import Encoder, stepwise_training


@pytest.mark.parametrize(
    "cell, reference",
    [("gru", nn.GRUCell), ("lstm", nn.LSTMCell), ("rnn_tanh", nn.RNNCell), ("rnn_relu", nn.RNNCell)],
)
def test_decoder_cell_equals_torch_cell_outputs_and_gradients(cell: str, reference: type) -> None:
    torch.manual_seed(0)
    inputs, hidden, batch = 7, 5, 3
    ours = Cell(cell, {"x": inputs}, hidden).double()
    kwargs = {"nonlinearity": cell.removeprefix("rnn_")} if reference is nn.RNNCell else {}
    theirs = reference(inputs, hidden, **kwargs).double()
    with torch.no_grad():
        theirs.weight_ih.copy_(ours.weight_in["x"])
        theirs.weight_hh.copy_(ours.weight_hh)
        theirs.bias_ih.copy_(ours.bias_ih)
        if ours.bias_hh is not None:
            theirs.bias_hh.copy_(ours.bias_hh)
        else:
            theirs.bias_hh.zero_()  # the textbook vanilla cell has one bias
    x = torch.randn(batch, inputs, dtype=torch.double)
    h0 = torch.randn(batch, hidden, dtype=torch.double)
    c0 = torch.randn(batch, hidden, dtype=torch.double) if cell == "lstm" else None
    gi = torch.nn.functional.linear(x, ours.weight_in["x"], ours.bias_ih)
    gh = torch.nn.functional.linear(h0, ours.weight_hh, ours.bias_hh)
    h, c = cell_update(cell, gi, gh, h0, c0)
    expected = theirs(x, (h0, c0)) if cell == "lstm" else theirs(x, h0)
    exp_h, exp_c = expected if cell == "lstm" else (expected, None)
    torch.testing.assert_close(h, exp_h)
    if cell == "lstm":
        torch.testing.assert_close(c, exp_c)
    weights = torch.randn_like(h)
    loss = (h * weights).sum() + ((c * weights).sum() if c is not None else 0)
    exp_loss = (exp_h * weights).sum() + ((exp_c * weights).sum() if exp_c is not None else 0)
    ours_params = [ours.weight_in["x"], ours.weight_hh, ours.bias_ih] + (
        [ours.bias_hh] if ours.bias_hh is not None else []
    )
    theirs_params = [theirs.weight_ih, theirs.weight_hh, theirs.bias_ih] + (
        [theirs.bias_hh] if ours.bias_hh is not None else []
    )
    for a, b in zip(torch.autograd.grad(loss, ours_params), torch.autograd.grad(exp_loss, theirs_params)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn_tanh", "rnn_relu"])
def test_the_in_place_cell_update_equals_the_composed_one_and_leaves_the_state_alone(cell: str) -> None:
    """`cell_update_` (the int8 layers' step) against `cell_update` without gradients, on gate slices of a
    (B, S, G) tensor as the layers pass them, with grad mode on (no view it writes may come from a multi-output
    view such as `chunk`); the state it was given is not written."""
    torch.manual_seed(3)
    hidden, gates = 6, {"gru": 18, "lstm": 24}.get(cell, 6)
    gi_all = torch.randn(4, 5, gates, requires_grad=True) * 1  # as a product of a model's weights
    gh = torch.randn(4, gates)
    h, c = torch.randn(4, hidden), (torch.randn(4, hidden) if cell == "lstm" else None)
    h_before, c_before = h.clone(), (None if c is None else c.clone())
    with torch.no_grad():
        exp_h, exp_c = cell_update(cell, gi_all[:, 2].detach().clone(), gh.clone(), h, c)
    # grad mode on, as in a model called without no_grad
    got_h, got_c = cell_update_(cell, gi_all[:, 2], gh, h, c)
    torch.testing.assert_close(got_h.detach(), exp_h)
    assert got_h.is_contiguous()  # the next step's product reads it
    if cell == "lstm":
        torch.testing.assert_close(got_c.detach(), exp_c)
    assert torch.equal(h, h_before) and (c is None or torch.equal(c, c_before))


def test_the_gru_step_s_written_out_backward_equals_the_composed_operators_over_stacked_directions() -> None:
    """Training's GRU step (one autograd node, `_GRUStep`) against torch's gradient check in float64, over gates of
    two directions at once (D, B, 3H) as the step-by-step encoder uses them."""
    torch.manual_seed(1)
    gi, gh = (torch.randn(2, 3, 12, dtype=torch.double, requires_grad=True) for _ in range(2))
    h = torch.randn(2, 3, 4, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(_GRUStep.apply, (gi, gh, h))


def encoder_pass(
    encoder: Encoder, x: torch.Tensor, lengths: torch.Tensor, stepwise: bool
) -> list[torch.Tensor]:
    """The encoder's states and final state and the gradients of a weighted sum of them (x's and every weight's)."""
    encoder.stepwise = stepwise
    mask = torch.arange(x.size(1)).unsqueeze(0) < lengths.unsqueeze(1)
    out = encoder(x, lengths, mask)
    generator = torch.Generator().manual_seed(7)
    loss = (out.states * torch.randn(out.states.shape, generator=generator, dtype=x.dtype)).sum() + (
        out.final * torch.randn(out.final.shape, generator=generator, dtype=x.dtype)
    ).sum()
    grads = torch.autograd.grad(loss, [x, *encoder.parameters()])
    return [out.states.detach(), out.final.detach(), *grads]


@pytest.mark.parametrize(
    "cell, layers, bidirectional",
    [("gru", 1, True), ("gru", 2, True), ("gru", 2, False), ("rnn_tanh", 2, True)],
)
def test_the_step_by_step_encoder_equals_the_packed_one_in_values_and_gradients(
    cell: str, layers: int, bidirectional: bool
) -> None:
    """Padded sentences of different lengths (one of a single token): states, final states and the gradients of
    the input and every weight equal torch's packed layers', so padding reaches no real position either way."""
    torch.manual_seed(0)
    encoder = Encoder(cell, 6, 5, layers, bidirectional, 0.0).double().train()
    x = torch.randn(4, 7, 6, dtype=torch.double, requires_grad=True)
    lengths = torch.tensor([7, 3, 5, 1])
    packed = encoder_pass(encoder, x, lengths, stepwise=False)
    steps = encoder_pass(encoder, x, lengths, stepwise=True)
    for got, expected in zip(steps, packed, strict=True):
        torch.testing.assert_close(got, expected)


def test_a_gru_encoder_trains_step_by_step_under_cpu_bf16_autocast_only() -> None:
    """The rule (`stepwise_training`): a GRU in training under CPU bf16 autocast (torch's packed GRU would compute
    in float32 there); not in evaluation, not in float32, not an LSTM (torch has its bf16 kernel). Its bf16 states
    stay within bf16 rounding of the packed float32 ones."""
    torch.manual_seed(0)
    gru, lstm = (Encoder(cell, 8, 16, 1, True, 0.0) for cell in ("gru", "lstm"))
    x = torch.randn(3, 5, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert stepwise_training(gru.train(), x) and not stepwise_training(lstm.train(), x)
        assert not stepwise_training(gru.eval(), x)
        with torch.no_grad():
            assert not stepwise_training(gru.train(), x)
        lengths = torch.tensor([5, 2, 4])
        mask = torch.arange(5).unsqueeze(0) < lengths.unsqueeze(1)
        low = gru.train()(x, lengths, mask)
    assert not stepwise_training(gru, x)
    exact = gru(x, lengths, mask)
    assert low.states.dtype == torch.bfloat16
    torch.testing.assert_close(low.states.float(), exact.states, atol=0.03, rtol=0.02)
    torch.testing.assert_close(low.final.float(), exact.final, atol=0.03, rtol=0.02)
