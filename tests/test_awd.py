"""AWD-LSTM's regularisation in the language model: DropConnect on the recurrent weights (fused kernels
kept), locked dropout, embedding dropout of whole words, AR/TAR, per-layer sizes with tied embeddings."""

import pytest
import torch
import torch.nn.functional as F
from helpers import windows_and_one_pass
from torch import nn

from nlp_rnn.errors import NlpRnnError
from nlp_rnn.nn.language_model import LanguageModel, LMModelConfig
from nlp_rnn.nn.regularise import LockedDropout, embedding_rows_dropped
from nlp_rnn.tasks.language_model import StreamBatcher

QUIET = dict(dropout=0.0, embedding_dropout=0.0)  # no other dropout: only the switch under test draws masks


def lm(vocab: int = 20, **changes) -> LanguageModel:
    base = dict(cell="lstm", embedding_dim=8, hidden_size=16, num_layers=2, **QUIET)
    return LanguageModel(LMModelConfig(**{**base, **changes}), vocab)


def test_dropconnect_draws_one_mask_per_batch_and_keeps_the_fused_kernel() -> None:
    torch.manual_seed(0)
    model = lm(weight_dropout=0.5).train()
    tokens = torch.randint(4, 20, (1, 12)).expand(3, 12)  # three identical rows
    state = model.initial_state(3)
    torch.manual_seed(7)
    out, _ = model.hidden(tokens, state)
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])  # one mask for every row
    again, _ = model.hidden(tokens, state)
    assert not torch.allclose(out, again)  # the next batch draws another mask
    # The same output from a plain LSTM whose weight_hh were masked once: one mask for every step.
    torch.manual_seed(7)
    masks = [F.dropout(getattr(model.rnn, f"weight_hh_l{k}"), 0.5, True) for k in range(2)]
    plain = nn.LSTM(8, 16, num_layers=2, batch_first=True)
    plain.load_state_dict({**model.rnn.state_dict(), "weight_hh_l0": masks[0], "weight_hh_l1": masks[1]})
    expected, _ = plain(model.embed(tokens), state.as_hx())
    torch.testing.assert_close(out, expected)
    assert (
        torch.equal(model.rnn.weight_hh_l0, plain.weight_hh_l0) is False
    )  # the parameter itself is untouched
    with torch.profiler.profile() as prof:
        model.loss(tokens, tokens, state)[0].backward()
    names = {e.name for e in prof.events()}
    assert "aten::lstm" in names and not any("lstm_cell" in n for n in names)
    model.eval()
    torch.testing.assert_close(model.hidden(tokens, state)[0], model.hidden(tokens, state)[0])


@pytest.mark.parametrize("cell", ["gru", "rnn_tanh"])
def test_dropconnect_covers_every_fused_cell(cell: str) -> None:
    torch.manual_seed(0)
    model = lm(cell=cell, weight_dropout=0.3, locked_dropout=True, last_layer_size=8, tie_output=True).train()
    loss, count, _ = model.loss(
        torch.randint(4, 20, (2, 9)), torch.randint(4, 20, (2, 9)), model.initial_state(2)
    )
    loss.backward()
    assert count == 18 and all(layer.weight_hh_l0.grad is not None for layer in model.rnn.layers)


def test_locked_dropout_uses_one_mask_along_time() -> None:
    torch.manual_seed(0)
    drop = LockedDropout(0.5).train()
    out = drop(torch.ones(4, 30, 16))
    assert torch.equal(out, out[:, :1].expand_as(out))  # every step of a sequence shares its mask
    assert set(out.unique().tolist()) == {0.0, 2.0}  # kept values rescaled by 1 / (1 - p)
    assert not torch.equal(out[0, 0], out[1, 0])  # sequences draw their own masks
    assert torch.equal(drop.eval()(torch.ones(4, 30, 16)), torch.ones(4, 30, 16))


def test_embedding_dropout_removes_whole_words_and_rescales() -> None:
    torch.manual_seed(0)
    embed = nn.Embedding(10, 6)
    tokens = torch.tensor([[1, 2, 3, 1, 2, 3, 4, 5, 6, 7, 8, 9] * 3])
    out = embedding_rows_dropped(embed, tokens, 0.5, training=True)[0]  # (T, E)
    for word in range(1, 10):
        rows = out[tokens[0] == word]
        dropped = bool((rows == 0).all())
        assert dropped or torch.allclose(
            rows, (embed.weight[word] * 2).expand_as(rows)
        )  # whole rows, rescaled
    assert 0 < sum(bool((out[tokens[0] == w] == 0).all()) for w in range(1, 10)) < 9
    assert torch.equal(embedding_rows_dropped(embed, tokens, 0.5, training=False), embed(tokens))


def test_ar_and_tar_add_exactly_their_terms_to_the_loss() -> None:
    torch.manual_seed(0)
    plain = lm().train()
    regular = lm(activation_reg=2.0, temporal_activation_reg=1.0).train()
    regular.load_state_dict(plain.state_dict())
    x, y = torch.randint(4, 20, (3, 10)), torch.randint(4, 20, (3, 10))
    base, count, _ = plain.loss(x, y, plain.initial_state(3))
    total, _, _ = regular.loss(x, y, regular.initial_state(3))
    top, _ = plain.hidden(x, plain.initial_state(3))  # no dropout: raw and dropped outputs are equal
    ar = 2.0 * top.pow(2).mean()
    tar = 1.0 * (top[:, 1:] - top[:, :-1]).pow(2).mean()
    torch.testing.assert_close(total - base, (ar + tar) * count)
    assert torch.equal(
        regular.eval().loss(x, y, regular.initial_state(3))[0],
        plain.eval().loss(x, y, plain.initial_state(3))[0],
    )


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_per_layer_stack_carries_its_state_like_one_pass(cell: str) -> None:
    """Per-layer sizes (the top layer the size of the tied embeddings): windows equal one pass."""
    torch.manual_seed(0)
    model = lm(
        cell=cell, num_layers=3, hidden_size=24, last_layer_size=8, tie_output=True, locked_dropout=True
    ).eval()
    assert model.output.weight is model.embed.weight and model.initial_state(2).h.shape == (3, 2, 24)
    ids = torch.randint(4, 20, (2 * 60 + 1,))
    batcher = StreamBatcher(ids, rows=2, bptt=7, seed=0)
    carried, whole = windows_and_one_pass(model, batcher)
    assert whole.shape[-1] == 8
    torch.testing.assert_close(carried, whole, atol=1e-5, rtol=1e-5)


def test_bad_regularisation_settings_are_one_line_naming_the_field() -> None:
    with pytest.raises(NlpRnnError, match="model.weight_dropout must be in"):
        LMModelConfig(weight_dropout=1.0)
    with pytest.raises(NlpRnnError, match="model.activation_reg must be at least 0"):
        LMModelConfig(activation_reg=-1)
    with pytest.raises(NlpRnnError, match="tie_output needs embedding_dim .* model.last_layer_size"):
        LMModelConfig(embedding_dim=400, hidden_size=1150, tie_output=True)
    LMModelConfig(
        embedding_dim=400, hidden_size=1150, last_layer_size=400, tie_output=True
    )  # AWD-LSTM's shape


def test_a_per_layer_model_runs_in_int8_close_to_fp32() -> None:
    from nlp_rnn.nn.int8 import quantize

    torch.manual_seed(0)
    model = lm(num_layers=2, hidden_size=24, last_layer_size=8, tie_output=True, locked_dropout=True).eval()
    tokens = torch.randint(4, 20, (2, 15))
    fp32, _ = model.hidden(tokens, model.initial_state(2))
    int8, _ = quantize(model).hidden(tokens, model.initial_state(2))
    assert (int8 - fp32).abs().max() < 0.05 and not torch.equal(int8, fp32)


# ----------------------------------------------------------------------------- weight averaging


def test_averaged_weights_equal_the_mean_of_the_stored_iterates() -> None:
    from nlp_rnn.averaging import WeightAverage

    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    average = WeightAverage(model, "mean")
    iterates = []
    for _ in range(5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        iterates.append([p.detach().clone() for p in model.parameters()])
        average.update()
    own = [p.detach().clone() for p in model.parameters()]
    with average.swapped():
        for p, *its in zip(model.parameters(), *iterates):
            torch.testing.assert_close(p.detach(), torch.stack(its).mean(0))
    assert all(torch.equal(p, o) for p, o in zip(model.parameters(), own))  # its own weights are back
    ema = WeightAverage(model, "ema", decay=0.5)
    ema.update()
    with torch.no_grad():
        model.weight.add_(2.0)
    ema.update()
    with ema.swapped():
        torch.testing.assert_close(model.weight.detach(), own[0] + 1.0)


def test_training_with_averaging_keeps_the_average_in_best_and_resumes_it(tmp_path) -> None:
    from test_tasks import MajorityConfig

    from nlp_rnn import bundle as bundles
    from nlp_rnn.config import TrainConfig
    from nlp_rnn.tasks import base as tasks

    cfg = MajorityConfig(
        train=TrainConfig(
            lr=0.05,
            validate_every=100,
            log_every=5,
            max_steps=12,
            average="mean",
            average_start=5,
            optimizer="sgd",
        )
    )
    tasks.train("majority", cfg, tmp_path / "run", progress_bar=False)
    state = bundles.load_trainer_state(tmp_path / "run" / "last")
    assert state["average"]["count"] == 8  # the updates of steps 5 .. 12
    best, last = tasks.load(tmp_path / "run" / "best"), tasks.load(tmp_path / "run" / "last")
    trained = [p for p in last.model.parameters()]
    for p, avg, own in zip(best.model.parameters(), state["average"]["average"], trained):
        torch.testing.assert_close(p.detach(), avg)  # best/ holds the average, last/ the iterate
        assert not torch.equal(p, own)


def test_nt_asgd_starts_averaging_when_validation_stops_improving() -> None:
    from nlp_rnn.averaging import non_monotone_trigger

    assert not non_monotone_trigger([1, 2, 3, 4, 5, 6], patience=2)  # still improving
    assert not non_monotone_trigger([1, 5, 4], patience=2)  # worse than 5, but 5 is one of the last 2
    assert non_monotone_trigger([1, 5, 4, 4.5], patience=2)  # worse than 5, from before the last 2
    assert not non_monotone_trigger([1, 5], patience=2)


def test_variable_length_windows_cover_the_stream_and_carry_the_state_like_one_pass() -> None:
    torch.manual_seed(0)
    model = lm(cell="gru").eval()
    ids = torch.randint(4, 20, (3 * 400 + 1,))
    batcher = StreamBatcher(ids, rows=3, bptt=20, seed=0, variable=True)
    described = batcher.epoch(0)
    lengths = [length for _, _, length in described]
    assert (
        len(set(lengths)) > 5 and min(lengths[:-1]) >= 5 and described == batcher.epoch(0)
    )  # seeded: resumable
    assert all(
        b[1] == a[1] + a[2] for a, b in zip(described, described[1:])
    )  # consecutive, no gap or overlap
    assert batcher.lr_scale(described[0]) == described[0][2] / 20 and described != batcher.epoch(1)
    carried, whole = windows_and_one_pass(model, batcher)
    torch.testing.assert_close(carried, whole, atol=1e-5, rtol=1e-5)


def test_an_adaptive_softmax_scores_with_its_full_normalised_distribution() -> None:
    from nlp_rnn.tasks.language_model import cache_nll, stream_nll

    torch.manual_seed(0)
    model = lm(vocab=300, adaptive_softmax=(20, 100)).eval()
    ids = torch.randint(4, 300, (200,))
    with torch.no_grad():
        out, _ = model.hidden(ids[:-1].unsqueeze(0), model.initial_state(1))
        full = model.log_probs(out[0])  # (T, V)
        nll, count, _ = model.loss(ids[:-1].unsqueeze(0), ids[1:].unsqueeze(0), model.initial_state(1))
    torch.testing.assert_close(full.exp().sum(1), torch.ones(199))  # a distribution over every word
    torch.testing.assert_close(nll, -full.gather(1, ids[1:].unsqueeze(1)).sum(), rtol=1e-5, atol=1e-4)
    assert stream_nll(model, ids, rows=1)[0] == pytest.approx(float(nll), rel=1e-5)
    assert cache_nll(model, ids, size=50, theta=0.3, lam=0.0)[0] == pytest.approx(float(nll), rel=1e-5)
    with pytest.raises(NlpRnnError, match="model.adaptive_softmax cut-offs must stay below the vocabulary"):
        lm(vocab=50, adaptive_softmax=(20, 100))
    with pytest.raises(NlpRnnError, match="model.adaptive_softmax must be increasing"):
        LMModelConfig(adaptive_softmax=(100, 20))


def test_an_adaptive_softmax_loss_equals_torchs_module_and_trains_under_bf16_autocast() -> None:
    """The language model's adaptive-softmax loss is torch's module's (loss and gradients, fp32); under bf16
    autocast (`precision: bf16`) its products run in bf16 and the loss stays fp32 and close to fp32's."""
    from nlp_rnn.nn.language_model import adaptive_nll_sum

    torch.manual_seed(0)
    asm = nn.AdaptiveLogSoftmaxWithLoss(16, 300, [20, 100], div_value=4.0, head_bias=True)
    out, gold = torch.randn(500, 16), torch.randint(0, 300, (500,))
    gold[:4] = torch.tensor([0, 19, 20, 299])  # the edges of the head and the clusters
    mine, ref = out.clone().requires_grad_(), out.clone().requires_grad_()
    a = adaptive_nll_sum(asm, mine, gold)
    a.backward()
    grads = [p.grad.clone() for p in asm.parameters()]
    asm.zero_grad()
    b = -asm(ref, gold).output.sum()
    b.backward()
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(mine.grad, ref.grad)
    for g, p in zip(grads, asm.parameters()):
        torch.testing.assert_close(g, p.grad)

    model = lm(vocab=300, adaptive_softmax=(20, 100), weight_dropout=0.0).train()
    ids = torch.randint(4, 300, (2, 30))
    nll, _, _ = model.loss(ids[:, :-1], ids[:, 1:], model.initial_state(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low, _, _ = model.loss(ids[:, :-1], ids[:, 1:], model.initial_state(2))
        logp = model.log_probs(torch.randn(5, 16))
    assert low.dtype == torch.float32 and logp.dtype == torch.float32
    assert low.item() == pytest.approx(nll.item(), rel=2e-2)
    low.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.output.parameters())
    half = model.eval().to(torch.bfloat16)  # `--precision bf16` inference: the whole model in bf16
    with torch.no_grad():
        out, _ = half.hidden(ids[:, :-1], half.initial_state(2))
        assert half.log_probs(out[0]).dtype == torch.float32
        assert half.loss(ids[:, :-1], ids[:, 1:], half.initial_state(2))[0].item() == pytest.approx(
            nll.item(), rel=3e-2
        )
