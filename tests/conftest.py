"""Shared fixtures: paths to the real corpora and tiny synthetic tasks that prove learning."""

import random
from pathlib import Path
from typing import Callable, Optional

import pytest
import torch

from nlp_rnn.nn.seq2seq_config import Seq2SeqModelConfig
from nlp_rnn.data import make_batch
from nlp_rnn.nn.seq2seq import Seq2Seq
from nlp_rnn.tokenizer import EOS

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
MULTI30K = SHARED / "multi30k"
SST2 = SHARED / "sst" / "sst2"

torch.set_num_threads(1)  # tiny models: one thread is faster and keeps runs deterministic


@pytest.fixture(scope="session")
def multi30k() -> Path:
    if not (MULTI30K / "train.de").is_file():
        pytest.skip(f"{MULTI30K} not found")
    return MULTI30K


@pytest.fixture(scope="session")
def sst2() -> Path:
    if not (SST2 / "train.tsv").is_file():
        pytest.skip(f"{SST2} not found")
    return SST2


SYMBOLS = 10  # copy-task symbols use ids 4 .. 4+SYMBOLS-1


def copy_examples(n: int, seed: int, reverse: bool = False, min_len: int = 2, max_len: int = 6) -> tuple[list, list]:
    rng = random.Random(seed)
    src, tgt = [], []
    for _ in range(n):
        seq = [rng.randrange(4, 4 + SYMBOLS) for _ in range(rng.randint(min_len, max_len))]
        src.append(seq + [EOS])
        tgt.append(seq[::-1] if reverse else list(seq))
    return src, tgt


def small_config(**changes) -> Seq2SeqModelConfig:
    base = dict(embedding_dim=32, encoder_hidden=64, decoder_hidden=64, attention_dim=64, dropout=0.0)
    base.update(changes)
    return Seq2SeqModelConfig(**base)


def train_copy_model(
    cfg: Seq2SeqModelConfig, steps: int = 300, reverse: bool = False, seed: int = 0, lr: float = 0.005, batch: int = 256,
    max_len: int = 6, until: Optional[Callable[[Seq2Seq], bool]] = None, check_every: int = 50,
) -> Seq2Seq:
    """A real tiny training run on the copy (or reverse) task: `steps` updates, or fewer when `until(model)`
    holds at one of the checks every `check_every` steps (the model is in eval mode while checked)."""
    torch.manual_seed(seed)
    model = Seq2Seq(cfg, 4 + SYMBOLS, 4 + SYMBOLS)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for step in range(steps):
        src, tgt = copy_examples(batch, seed * 100_000 + step, reverse, max_len=max_len)
        loss, count = model(make_batch(src, tgt))
        optimizer.zero_grad()
        (loss / count).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        if until is not None and (step + 1) % check_every == 0:
            done = until(model.eval())
            model.train()
            if done:
                break
    return model.eval()


@pytest.fixture(scope="session")
def copy_model() -> Seq2Seq:
    """One trained bidirectional GRU + Bahdanau model shared by the search and batching tests."""
    return train_copy_model(small_config(), steps=300)
