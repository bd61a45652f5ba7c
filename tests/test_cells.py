"""The decoder's own recurrent cells equal torch's cells in value and gradient (as the fused loss
equals F.cross_entropy)."""

import pytest
import torch
from torch import nn

from nlp_rnn.nn.decoder import Cell, cell_update


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
