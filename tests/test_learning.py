"""Real tiny training runs: every cell, direction and attention learns the copy task."""

import pytest
from helpers import exact_match, small_config, train_copy_model

# Every pair of the three settings, not every triple: each cell with each attention, each of them in both
# directions (9 runs instead of 18; the whole grid took 192 s of the suite on a 2-core Zen 1, 2026-12-03).
CELLS, ATTENTIONS = ("gru", "lstm", "rnn_tanh"), ("none", "bahdanau", "luong")
SETTINGS = [
    (cell, (i + j) % 2 == 1, attention)
    for i, cell in enumerate(CELLS)
    for j, attention in enumerate(ATTENTIONS)
]
FAST = ("rnn_tanh", False, "luong")  # the one setting of the fast tier


@pytest.mark.parametrize(
    "cell,bidirectional,attention",
    [
        pytest.param(*s, id="-".join(map(str, s)), marks=() if s == FAST else pytest.mark.slow)
        for s in SETTINGS
    ],
)
def test_copy_task_is_learned(cell: str, bidirectional: bool, attention: str) -> None:
    """Attention models learn to copy; the textbook fixed-context model learns to reverse (the easier
    task for it, Sutskever et al. 2014) with more updates."""
    cfg = small_config(cell=cell, bidirectional=bidirectional, attention=attention)
    if attention == "none":
        learned = lambda m: exact_match(m, reverse=True, max_len=5, examples=100) >= 0.97  # noqa: E731
        model = train_copy_model(cfg, steps=800, reverse=True, lr=0.003, max_len=5, until=learned)
        assert exact_match(model, reverse=True, max_len=5) >= 0.95
    else:
        model = train_copy_model(cfg, steps=300, until=lambda m: exact_match(m, examples=100) >= 0.97)
        assert exact_match(model) >= 0.95


@pytest.mark.slow
def test_reverse_task_is_learned_with_luong_dot_and_two_layers() -> None:
    cfg = small_config(attention="luong_dot", bidirectional=False, encoder_layers=2, decoder_layers=2)
    model = train_copy_model(
        cfg, steps=300, reverse=True, until=lambda m: exact_match(m, reverse=True, examples=100) >= 0.97
    )
    assert exact_match(model, reverse=True) >= 0.95
