"""Padding never changes a result: alone or in a padded batch, with any values at padded positions."""

import pytest
import torch
from helpers import copy_examples, small_config

from nlp_rnn.data import TokenBatcher, make_batch, ordered_batches
from nlp_rnn.nn.seq2seq import Seq2Seq
from nlp_rnn.tokenizer import EOS


@pytest.fixture(params=["gru", "lstm", "rnn_tanh"])
def model(request) -> Seq2Seq:
    torch.manual_seed(0)
    return Seq2Seq(
        small_config(cell=request.param, bidirectional=True, encoder_layers=2, decoder_layers=2), 20, 20
    ).eval()


def test_sentence_alone_equals_sentence_in_padded_batch(model: Seq2Seq) -> None:
    src, tgt = copy_examples(9, seed=1, min_len=2, max_len=9)
    short = min(range(len(src)), key=lambda i: len(src[i]) + len(tgt[i]))  # the most padded sentence
    batch = make_batch(src, tgt)
    alone = make_batch([src[short]], [tgt[short]])
    with torch.no_grad():
        enc_b = model.encode(batch.src, batch.src_len, batch.src_mask)
        enc_a = model.encode(alone.src, alone.src_len, alone.src_mask)
        n = len(src[short])
        torch.testing.assert_close(enc_b.states[short, :n], enc_a.states[0, :n], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(enc_b.final[short], enc_a.final[0], atol=1e-5, rtol=1e-5)
        out_b = model.decoder(batch.tgt_in, model.decoder.memory(enc_b), model.decoder.init_state(enc_b))
        out_a = model.decoder(alone.tgt_in, model.decoder.memory(enc_a), model.decoder.init_state(enc_a))
        m = len(tgt[short]) + 1
        torch.testing.assert_close(out_b[short, :m], out_a[0, :m], atol=1e-5, rtol=1e-5)


def test_padded_values_do_not_change_the_loss(model: Seq2Seq) -> None:
    src, tgt = copy_examples(8, seed=2, min_len=2, max_len=9)
    batch = make_batch(src, tgt)
    with torch.no_grad():
        loss, count = model(batch)
        noisy = make_batch(src, tgt)
        for field, mask in (("src", noisy.src_mask), ("tgt_in", noisy.tgt_mask), ("tgt_out", noisy.tgt_mask)):
            values = getattr(noisy, field)
            values[~mask] = torch.randint(4, 20, values.shape)[~mask]
        noisy_loss, noisy_count = model(noisy)
    assert count == noisy_count == sum(len(t) + 1 for t in tgt)
    torch.testing.assert_close(loss, noisy_loss)


@pytest.mark.parametrize("attention", ["bahdanau", "luong", "luong_dot"])
def test_attention_is_zero_on_padding_and_sums_to_one(attention: str) -> None:
    torch.manual_seed(0)
    cfg = small_config(attention=attention, decoder_hidden=128)  # luong_dot: decoder size == 2 * encoder size
    model = Seq2Seq(cfg, 20, 20).eval()
    src, _ = copy_examples(6, seed=3, min_len=2, max_len=9)
    batch = make_batch(src)
    with torch.no_grad():
        enc = model.encode(batch.src, batch.src_len, batch.src_mask)
        memory, state = model.decoder.memory(enc), model.decoder.init_state(enc)
        _, _, weights = model.decoder.step(torch.full((len(src),), 2), memory, state)
    assert torch.all(weights[~batch.src_mask] == 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(len(src)))


def test_token_batcher_respects_the_budget_and_covers_every_example_once() -> None:
    lengths = [((i * 37) % 50) + 2 for i in range(1000)]
    batcher = TokenBatcher(lengths, batch_tokens=400, max_sentences=64, seed=5)
    for epoch in range(2):
        batches = batcher.epoch(epoch)
        assert sorted(i for b in batches for i in b) == list(range(1000))
        assert all(max(lengths[i] for i in b) * len(b) <= 400 or len(b) == 1 for b in batches)
        assert all(len(b) <= 64 for b in batches)
    assert batcher.epoch(0) == TokenBatcher(lengths, 400, 64, seed=5).epoch(
        0
    )  # a pure function of (seed, epoch)
    assert batcher.epoch(0) != batcher.epoch(1)


def test_batch_masks_and_shifted_targets() -> None:
    batch = make_batch([[5, 6, EOS], [7, EOS]], [[8, 9], [10]])
    assert batch.src_mask.tolist() == [[True, True, True], [True, True, False]]
    assert batch.tgt_in.tolist() == [[2, 8, 9], [2, 10, 0]]
    assert batch.tgt_out.tolist() == [[8, 9, EOS], [10, EOS, 0]]
    assert batch.target_tokens == 5
    assert sorted(i for b in ordered_batches([3, 1, 2, 5], 3) for i in b) == [0, 1, 2, 3]
