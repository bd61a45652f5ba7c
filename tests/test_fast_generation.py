"""Generation on preallocated buffers (`nn.cell_kernel`): the same steps as torch's cells, the same text
for a seed as the step-by-step sampler, batched, streaming and stopping as before."""

import pytest
import torch
from helpers import CHECKPOINTS

from nlp_rnn.data import make_batch
from nlp_rnn.nn.cell_kernel import CellKernel
from nlp_rnn.nn.language_model import LanguageModel, LMModelConfig
from nlp_rnn.search import SampleOptions, sample, sample_in_place
from nlp_rnn.tasks.base import load
from nlp_rnn.tasks.language_model import Generator
from nlp_rnn.tokenizer import BOS


@pytest.mark.parametrize("via_sigmoid", [False, True])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
@torch.no_grad()
def test_the_kernel_steps_like_the_model(cell: str, via_sigmoid: bool, monkeypatch) -> None:
    """Both forms of tanh (torch's, and 2 sigmoid(2x) - 1 for large float32 batches) step like torch's cells."""
    monkeypatch.setattr(CellKernel, "TANH_VIA_SIGMOID_MIN", 0 if via_sigmoid else 10**9)
    torch.manual_seed(0)
    cfg = LMModelConfig(cell=cell, embedding_dim=8, hidden_size=16, num_layers=2, dropout=0.0)
    model = LanguageModel(cfg, 20).eval()
    batch = make_batch([[BOS, 5, 6], [BOS], [BOS, 7, 8, 9]])
    memory, state, prev = model.start(batch)
    kernel = model.cell_kernel()
    kernel.buffers(3)
    assert kernel.via_sigmoid == via_sigmoid
    h = state.h.clone()
    c = None if state.c is None else state.c.clone()
    for token in ([4, 5, 6], [7, 7, 7], [9, 3, 8]):
        logits, state, _ = model.step(prev, memory, state)
        assert torch.allclose(kernel.step(prev, h, c), logits, atol=1e-5)
        assert torch.allclose(h, state.h, atol=1e-5)
        prev = torch.tensor(token)


@pytest.mark.parametrize("via_sigmoid", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_a_seed_gives_the_same_text_as_the_step_by_step_sampler(via_sigmoid: bool, monkeypatch) -> None:
    monkeypatch.setattr(CellKernel, "TANH_VIA_SIGMOID_MIN", 0 if via_sigmoid else 10**9)
    generator = Generator(load(CHECKPOINTS / "shakespeare-char"), "fp32")
    for seed in (1, 2, 3):
        generator.fast = False
        before = generator.generate(["ROMEO:"], max_tokens=120, seed=seed)[0][0]
        generator.fast = True
        after = generator.generate(["ROMEO:"], max_tokens=120, seed=seed)[0][0]
        assert after.text == before.text and after.log_prob == pytest.approx(before.log_prob, abs=1e-3)
    # several rows in one batch, none ending early: the same draws as well
    generator.fast = False
    before = [s.text for s in generator.generate(["A", "ROMEO:"], num_samples=3, max_tokens=60, seed=7)[1]]
    generator.fast = True
    after = [s.text for s in generator.generate(["A", "ROMEO:"], num_samples=3, max_tokens=60, seed=7)[1]]
    assert after == before
    # rows that a stop string ends at different steps: each row's draws are still the step-by-step sampler's
    for seed in (0, 1):
        texts = {}
        for fast in (False, True):
            generator.fast = fast
            found = generator.generate(["ROMEO:"], num_samples=4, max_tokens=200, seed=seed, stop="\n\n")[0]
            texts[fast] = [s.text for s in found]
        assert texts[True] == texts[False] and len({len(t) for t in texts[True]}) > 1


def test_rows_that_end_stop_and_their_later_tokens_are_dropped() -> None:
    torch.manual_seed(0)
    cfg = LMModelConfig(cell="lstm", embedding_dim=8, hidden_size=16, num_layers=1, dropout=0.0)
    model = LanguageModel(cfg, 6).eval()
    with torch.no_grad():
        model.output.bias[3] = 0.5  # EOS (3) is likely: rows end at different steps
    batch = make_batch([[BOS]] * 8)
    found = sample_in_place(
        model, model.cell_kernel(), batch, SampleOptions(max_tokens=40), torch.Generator().manual_seed(0)
    )
    assert all(h.tokens[-1] == 3 and 3 not in h.tokens[:-1] for h in found if len(h.tokens) < 40)
    assert len({len(h.tokens) for h in found}) > 1
    # the step-by-step sampler, whose batch loses each row that ends, draws the same for every row
    slow = sample(model, batch, SampleOptions(max_tokens=40), torch.Generator().manual_seed(0))
    assert [h.tokens for h in slow] == [h.tokens for h in found]
    assert [h.score for h in slow] == pytest.approx([h.score for h in found], abs=1e-5)
    # one row alone: the same as the step-by-step sampler, to its end
    one = make_batch([[BOS]])
    a = sample(model, one, SampleOptions(max_tokens=40), torch.Generator().manual_seed(3))[0]
    b = sample_in_place(
        model, model.cell_kernel(), one, SampleOptions(max_tokens=40), torch.Generator().manual_seed(3)
    )[0]
    assert a.tokens == b.tokens and a.score == pytest.approx(b.score, abs=1e-5)


def test_stop_strings_streaming_and_int8_take_the_fast_path() -> None:
    generator = Generator(load(CHECKPOINTS / "shakespeare-char"), "int8")
    assert generator.kernel() is not None and generator.kernel().int8 is not None
    pieces: list[str] = []
    out = generator.generate(["ROMEO:"], max_tokens=200, seed=1, stop="\n\n", on_text=pieces.append)[0][0]
    assert "\n\n" not in out.text and "".join(pieces) == out.text
