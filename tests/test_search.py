"""Greedy and beam search on a model trained in the test: properties, not hard-coded outputs."""

import random

import pytest
import torch
from helpers import SYMBOLS, copy_examples, small_config

from nlp_rnn.data import make_batch
from nlp_rnn.nn import attention as attention_module
from nlp_rnn.nn.decoder import Memory
from nlp_rnn.nn.seq2seq import Seq2Seq
from nlp_rnn.search import SearchOptions, beam_search, greedy, max_lengths
from nlp_rnn.tokenizer import EOS

PLAIN = dict(length_norm="none", max_len_a=1.0, max_len_b=3)


def test_beam_size_one_equals_greedy(copy_model) -> None:
    src, _ = copy_examples(
        50, seed=11, min_len=1, max_len=9
    )  # beyond the trained lengths, so not all are right
    batch = make_batch(src)
    greedy_hyps = greedy(copy_model, batch, SearchOptions(beam_size=1, **PLAIN))
    beam_hyps = beam_search(copy_model, batch, SearchOptions(beam_size=1, **PLAIN))
    for g, b in zip(greedy_hyps, beam_hyps):
        assert b[0].tokens == g.tokens
        assert abs(b[0].log_prob - g.log_prob) < 1e-4


def test_best_hypothesis_is_independent_of_the_batch(copy_model) -> None:
    rng = random.Random(0)
    src, _ = copy_examples(64, seed=12, min_len=1, max_len=10)
    probe = src[7]
    for opts in (SearchOptions(beam_size=1, **PLAIN), SearchOptions(beam_size=4, max_len_a=1.0, max_len_b=3)):
        search = (
            (lambda b, opts=opts: [[h] for h in greedy(copy_model, b, opts)])
            if opts.beam_size == 1
            else (lambda b, opts=opts: beam_search(copy_model, b, opts))
        )
        alone = search(make_batch([probe]))[0][0]
        others = list(src)
        rng.shuffle(others)
        crowd = search(make_batch(others + [probe]))[-1][0]
        padded = search(make_batch([probe, [5] * 25 + [EOS]]))[0][0]  # far more padding than the probe needs
        assert crowd.tokens == alone.tokens == padded.tokens
        assert abs(crowd.score - alone.score) < 1e-4 and abs(padded.score - alone.score) < 1e-4


def test_beam_hypotheses_are_sorted_finished_and_never_worse_than_greedy(copy_model) -> None:
    src, _ = copy_examples(40, seed=13, min_len=1, max_len=10)
    batch = make_batch(src)
    opts = SearchOptions(beam_size=5, n_best=5, **PLAIN)
    limits = max_lengths(batch.src_len, opts)
    greedy_hyps = greedy(copy_model, batch, SearchOptions(beam_size=1, **PLAIN))
    for i, (hyps, g) in enumerate(zip(beam_search(copy_model, batch, opts), greedy_hyps)):
        assert len(hyps) == 5
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        assert all(h.tokens[-1] == EOS or len(h.tokens) == int(limits[i]) for h in hyps)
        assert len({tuple(h.tokens) for h in hyps}) == 5  # n-best are distinct
        assert hyps[0].log_prob >= g.log_prob - 1e-4


@pytest.mark.parametrize("kind", ["bahdanau", "luong"])
@pytest.mark.parametrize("chunk", [attention_module.CHUNK, 512])  # 512: the additive scores in pieces
def test_beams_sharing_their_sentence_memory_equal_a_copy_per_beam(
    copy_model, kind, chunk, monkeypatch
) -> None:
    if kind == "bahdanau":
        model = copy_model
    else:
        torch.manual_seed(3)
        model = Seq2Seq(
            small_config(attention=kind), 4 + SYMBOLS, 4 + SYMBOLS
        ).eval()  # untrained: any weights
    monkeypatch.setattr(attention_module, "CHUNK", chunk)
    batch = make_batch(copy_examples(30, seed=15, min_len=1, max_len=9)[0])
    opts = SearchOptions(beam_size=4, n_best=4, attention=True, max_len_a=1.0, max_len_b=3)
    grouped = []
    original = type(model.decoder.attention).grouped_scores
    monkeypatch.setattr(
        type(model.decoder.attention),
        "grouped_scores",
        lambda self, q, k, group: grouped.append(group) or original(self, q, k, group),
    )
    shared = beam_search(model, batch, opts)
    assert grouped and set(grouped) == {4}  # the beams read one copy of their sentence's keys
    monkeypatch.setattr(Memory, "for_beams", lambda self, beams: None)  # a copy per beam, as before
    copied = beam_search(model, batch, opts)
    for mine, theirs in zip(shared, copied):
        assert [h.tokens for h in mine] == [h.tokens for h in theirs]
        for a, b in zip(mine, theirs):
            assert abs(a.score - b.score) < 1e-5
            torch.testing.assert_close(a.attention, b.attention)


def test_greedy_moving_the_last_rows_into_finished_places_equals_copying_the_rows_that_stay(
    copy_model, monkeypatch
) -> None:
    # sources of many lengths, shuffled, so that rows finish at different steps and in no order
    src = copy_examples(40, seed=16, min_len=1, max_len=10)[0]
    random.Random(1).shuffle(src)
    batch = make_batch(src)
    opts = SearchOptions(beam_size=1, attention=True, **PLAIN)
    moves = []
    original = Memory.keep_first
    monkeypatch.setattr(
        Memory,
        "keep_first",
        lambda self, keep, holes, fillers: moves.append(len(holes)) or original(self, keep, holes, fillers),
    )
    moved = greedy(copy_model, batch, opts)
    assert len(moves) > 3 and any(moves) and sum(moves) < len(src)  # few rows moved, none copied whole
    monkeypatch.setattr(
        Memory, "keep_first", None
    )  # every row that stays copied in order (`select`), as before
    copied = greedy(copy_model, batch, opts)
    for i, (a, b) in enumerate(zip(moved, copied)):
        # the same rows in other places of the batch: equal to float rounding (as between batch sizes)
        assert a.tokens == b.tokens and abs(a.score - b.score) < 1e-5
        torch.testing.assert_close(a.attention, b.attention, atol=1e-6, rtol=1e-5)
        if i % 8 == 0:  # and as the sentence decodes alone
            alone = greedy(copy_model, make_batch([src[i]]), opts)[0]
            assert alone.tokens == a.tokens and abs(alone.score - a.score) < 1e-4


def test_length_normalised_scores_and_attention_weights(copy_model) -> None:
    src, _ = copy_examples(10, seed=14, min_len=2, max_len=6)
    batch = make_batch(src)
    hyps = beam_search(
        copy_model, batch, SearchOptions(beam_size=3, n_best=3, attention=True, length_penalty=1.0)
    )
    for sentence, nbest in zip(src, hyps):
        for h in nbest:
            expected = h.log_prob / ((5 + len(h.tokens)) / 6)
            assert abs(h.score - expected) < 1e-4
            assert h.attention.shape == (len(h.tokens), len(sentence))
            torch.testing.assert_close(h.attention.sum(-1), torch.ones(len(h.tokens)))


def test_min_length_and_no_repeat_ngram(copy_model) -> None:
    src = [[5, 5, 5, 5, 5, 5, EOS], [6, 7, 6, 7, 6, 7, EOS]]
    batch = make_batch(src)
    for hyps in beam_search(
        copy_model, batch, SearchOptions(beam_size=3, no_repeat_ngram=2, max_len_a=2.0, max_len_b=2)
    ):
        bigrams = [tuple(hyps[0].tokens[i : i + 2]) for i in range(len(hyps[0].tokens) - 1)]
        assert len(bigrams) == len(set(bigrams))
    for h in greedy(copy_model, make_batch([[5, EOS]]), SearchOptions(beam_size=1, min_length=4)):
        assert len(h.tokens) >= 5 or h.tokens[-1] != EOS


def test_additive_attention_through_a_sigmoid_scores_bahdanaus_tanh_formula() -> None:
    """The scores are v . tanh(W_k value + W_q query), computed with a sigmoid, in both paths."""
    from nlp_rnn.nn.attention import AdditiveAttention

    torch.manual_seed(0)
    attention = AdditiveAttention(value_size=24, query_size=16, attention_size=64)
    values, query = torch.randn(5, 7, 24) * 3, torch.randn(5, 16) * 3  # tanh's arguments well past +-1
    expected = attention.energy(
        torch.tanh(attention.key_layer(values) + attention.query_layer(query).unsqueeze(1))
    ).squeeze(-1)
    torch.testing.assert_close(attention.scores(query, attention.keys(values)), expected, rtol=0, atol=1e-5)


def test_additive_attention_scored_in_pieces_when_decoding_equals_one_pass() -> None:
    """Decoding a large batch scores the additive attention a few rows at a time (to stay in cache); the
    scores and the context are those of the one-pass (training) path."""
    from nlp_rnn.nn.attention import CHUNK, AdditiveAttention

    torch.manual_seed(0)
    attention = AdditiveAttention(value_size=24, query_size=16, attention_size=64)
    rows = CHUNK // (40 * 64)  # rows per piece at S = 40
    values, query = torch.randn(3 * rows + 5, 40, 24), torch.randn(3 * rows + 5, 16)
    mask = torch.arange(40).unsqueeze(0) < torch.randint(1, 41, (values.size(0), 1))
    keys = attention.keys(values)
    whole = attention(query, keys, values, mask)  # gradients on: one pass
    with torch.no_grad():
        pieces = attention(query, keys, values, mask)
    for a, b in zip(whole, pieces):
        torch.testing.assert_close(a.detach(), b, rtol=0, atol=1e-6)


def test_additive_attention_scores_a_large_batch_in_one_pass_off_the_cpu() -> None:
    """The pieces are for a CPU's cache; on another device (a GPU: launch-bound) a large batch is scored in
    one pass. Counted on the meta device, which runs no arithmetic: one sigmoid there, one per piece here."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from nlp_rnn.nn.attention import CHUNK, AdditiveAttention

    class Sigmoids(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.count += func.__name__.startswith("sigmoid")
            return func(*args, **(kwargs or {}))

    rows = CHUNK // (40 * 64)
    counts = {}
    for device in ("cpu", "meta"):
        attention = AdditiveAttention(value_size=24, query_size=16, attention_size=64).to(device)
        values, query = (
            torch.randn(3 * rows + 5, 40, 24, device=device),
            torch.randn(3 * rows + 5, 16, device=device),
        )
        with torch.no_grad(), Sigmoids() as mode:
            scores = attention.scores(query, attention.keys(values))
        assert scores.shape == (3 * rows + 5, 40)
        counts[device] = mode.count
    assert counts == {"cpu": 4, "meta": 1}


def test_a_bf16_model_decodes_with_float32_keys_and_scores_to_float32_rounding() -> None:
    """Decoding a bf16 model on a CPU, the additive attention's keys are kept in float32 and its element-wise pass
    runs there (twice as fast as bf16's); the scores equal a float64 reference from the same bf16 products to
    float32 rounding (a bf16 pass is off by about 1e-2), and the context still comes out in bf16."""
    from nlp_rnn.nn.attention import AdditiveAttention

    torch.manual_seed(0)
    attention = AdditiveAttention(value_size=24, query_size=16, attention_size=64).to(torch.bfloat16)
    values, query = torch.randn(6, 9, 24).bfloat16(), torch.randn(6, 16).bfloat16()
    mask = torch.ones(6, 9, dtype=torch.bool)
    with torch.no_grad():
        keys = attention.keys(values)
        assert keys.dtype == torch.float32
        scores = attention.scores(query, keys)
        context, weights = attention(query, keys, values, mask)
        projected = attention.query_layer(query).double()  # the bf16 products, then float64
        reference = attention.energy.weight.double() @ torch.tanh(
            (attention.key_layer(values).double() + projected.unsqueeze(1)).unsqueeze(-1)
        ).squeeze(-1).transpose(1, 2)
    torch.testing.assert_close(scores.double(), reference.squeeze(1).squeeze(-1), rtol=0, atol=2e-5)
    assert context.dtype == torch.bfloat16 and weights.dtype == torch.float32
    with torch.enable_grad():
        assert attention.keys(values).dtype == torch.bfloat16  # training keeps its dtype


def test_tanh_through_a_sigmoid_when_decoding_equals_torchs_tanh() -> None:
    """`fast.tanh` (2 sigmoid(2x) - 1 without gradients, the plain tanh with them) equals torch.tanh to
    float32 rounding (bf16: to its own rounding)."""
    from nlp_rnn.nn import fast

    x = torch.linspace(-30, 30, 20001)
    with torch.no_grad():
        torch.testing.assert_close(fast.tanh(x), torch.tanh(x), rtol=0, atol=3e-7)
        torch.testing.assert_close(fast.tanh(x.bfloat16()), torch.tanh(x.bfloat16()), rtol=0, atol=8e-3)
    y = x.clone().requires_grad_()
    assert fast.tanh(y).grad_fn.name().startswith("Tanh")  # training keeps torch's tanh and its backward
    with torch.no_grad():  # the in-place form: the same numbers, in the given tensor
        own = x.clone()
        assert fast.tanh_(own) is own and torch.equal(own, fast.tanh(x))
    own = x.clone()
    assert torch.equal(fast.tanh_(own), torch.tanh(x))  # with gradients on: torch's tanh, in place
