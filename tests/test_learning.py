"""Real tiny training runs: every cell, direction and attention learns the copy task."""

import pytest
from helpers import copy_examples, small_config, train_copy_model

from nlp_rnn.data import make_batch
from nlp_rnn.search import SearchOptions, greedy


def exact_match(model, reverse: bool = False, max_len: int = 6, examples: int = 200) -> float:
    """Greedy exact match on held-out examples (the first 100 of the 200 also serve the early checks)."""
    src, tgt = copy_examples(200, seed=999_999, reverse=reverse, max_len=max_len)
    src, tgt = src[:examples], tgt[:examples]
    hyps = greedy(model, make_batch(src), SearchOptions(beam_size=1, max_len_a=1.0, max_len_b=3))
    return sum(h.tokens == t + [3] for h, t in zip(hyps, tgt)) / len(tgt)


SETTINGS = [
    (cell, bidirectional, attention)
    for cell in ("gru", "lstm", "rnn_tanh")
    for bidirectional in (False, True)
    for attention in ("none", "bahdanau", "luong")
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
