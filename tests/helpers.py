"""What several test files share: where the real data is, tiny synthetic tasks, slices of real corpora,
a live server. Fixtures live in conftest.py; the data they need is checked there once, at start."""

import contextlib
import json
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Optional

import torch

from nlp_rnn.config import DataConfig, TokenizerConfig, TrainConfig
from nlp_rnn.data import make_batch
from nlp_rnn.nn.seq2seq import Seq2Seq
from nlp_rnn.nn.seq2seq_config import Seq2SeqModelConfig
from nlp_rnn.search import SearchOptions, greedy
from nlp_rnn.tasks.translation import TranslationConfig
from nlp_rnn.tokenizer import EOS

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINTS = ROOT / "checkpoints"
# NLP_RNN_TEST_DATA names another folder of the same layout (bench/gpu.sh: the subsets it packs for a GPU machine).
SHARED = Path(os.environ.get("NLP_RNN_TEST_DATA") or ROOT.parent / "shared" / "data")
MULTI30K = SHARED / "multi30k"
SST2 = SHARED / "sst" / "sst2"
NYSE = SHARED / "nyse" / "NYSE.csv"
SHAKESPEARE = SHARED / "text" / "tinyshakespeare.txt"
WIKITEXT2 = SHARED / "text" / "wikitext-2"
IMDB_TEST = SHARED / "imdb" / "test.csv"
# Every file of ../shared/data the tests read: checked once when the session starts (conftest.py).
NEEDED = [
    MULTI30K / f"{split}.{lang}" for split in ("train", "val", "test_2016_flickr") for lang in ("de", "en")
] + [
    SST2 / "train.tsv",
    SST2 / "dev.tsv",
    SST2 / "test.tsv",
    NYSE,
    SHAKESPEARE,
    IMDB_TEST,
]


# ----------------------------------------------------------------------------- the copy task


SYMBOLS = 10  # copy-task symbols use ids 4 .. 4+SYMBOLS-1


def copy_examples(
    n: int, seed: int, reverse: bool = False, min_len: int = 2, max_len: int = 6
) -> tuple[list, list]:
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
    cfg: Seq2SeqModelConfig,
    steps: int = 300,
    reverse: bool = False,
    seed: int = 0,
    lr: float = 0.005,
    batch: int = 256,
    max_len: int = 6,
    until: Optional[Callable[[Seq2Seq], bool]] = None,
    check_every: int = 50,
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


def exact_match(model, reverse: bool = False, max_len: int = 6, examples: int = 200) -> float:
    """Greedy exact match on held-out examples (the first 100 of the 200 also serve the early checks)."""
    src, tgt = copy_examples(200, seed=999_999, reverse=reverse, max_len=max_len)
    src, tgt = src[:examples], tgt[:examples]
    hyps = greedy(model, make_batch(src), SearchOptions(beam_size=1, max_len_a=1.0, max_len_b=3))
    return sum(h.tokens == t + [3] for h, t in zip(hyps, tgt)) / len(tgt)


# ----------------------------------------------------------------------------- slices of real corpora


def write_slice(multi30k: Path, folder: Path, n: int = 400) -> DataConfig:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, lines in (("train", slice(0, n)), ("val", slice(0, 40))):
        for lang in ("de", "en"):
            text = (multi30k / f"{split}.{lang}").read_text(encoding="utf-8").splitlines()[lines]
            paths[f"{split}.{lang}"] = folder / f"{split}.{lang}"
            paths[f"{split}.{lang}"].write_text("\n".join(text) + "\n", encoding="utf-8")
    return DataConfig(
        train_src=str(paths["train.de"]),
        train_tgt=str(paths["train.en"]),
        valid_src=str(paths["val.de"]),
        valid_tgt=str(paths["val.en"]),
        src_lang="de",
        tgt_lang="en",
    )


def tiny_config(data: DataConfig, **train) -> TranslationConfig:
    base = dict(batch_tokens=600, validate_every=4, log_every=1, lr=3e-3, max_steps=8)
    base.update(train)
    return TranslationConfig(
        data=data,
        tokenizer=TokenizerConfig(vocab_size=400, model_type="unigram"),
        model=small_config(dropout=0.2),
        train=TrainConfig(**base),
    )


def losses(folder: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["train_loss"] for r in records if "train_loss" in r}


def write_dataset(folder: Path, rows: dict[str, list[dict]]) -> Path:
    """A dataset folder as `datasets.load_dataset(folder)` reads it: one JSONL file per split."""
    folder.mkdir(parents=True)
    for split, items in rows.items():
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items), encoding="utf-8")
    return folder


# ----------------------------------------------------------------------------- a live server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(app) -> Iterator[str]:
    """Serves the ASGI `app` with uvicorn on a free localhost port in a thread; its base URL."""
    import uvicorn

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=15)
    assert not thread.is_alive(), "server did not shut down"


def call(base: str, path: str, body=None, raw: bytes = None) -> tuple[int, dict]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(
        base + path,
        data=data,
        headers={"Content-Type": "application/json"},
        method="GET" if data is None else "POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


# ----------------------------------------------------------------------------- language models


def windows_and_one_pass(model, batcher, epoch: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A stream batcher's windows read one after another with the state carried, and the same columns
    read in one pass from a fresh state: the top-layer outputs of both (rows, T, H)."""
    windows = [batcher.window(w) for w in batcher.epoch(epoch)]
    rows = windows[0].inputs.size(0)
    inputs = torch.cat([w.inputs for w in windows], dim=1)
    with torch.no_grad():
        whole, _ = model.hidden(inputs, model.initial_state(rows))
        state, parts = model.initial_state(rows), []
        for w in windows:
            out, state = model.hidden(w.inputs, state)
            parts.append(out)
    return torch.cat(parts, dim=1), whole


# ----------------------------------------------------------------------------- a tiny classifier, trained for real


def train_tiny_classifier(
    folder: Path,
    steps: int = 2,
    train: str = "batch_tokens: 60, validate_every: 2",
    model: str = "embedding_dim: 8, hidden_size: 8",
) -> Path:
    """`nlp-rnn train classifier` on a 3-sentence sentiment table (label names, unigram tokenizer, LSTM 8) for
    `steps` steps; the run folder. `train` and `model` are the config's sections (YAML flow mapping bodies)."""
    from nlp_rnn.cli import main

    folder.mkdir(parents=True, exist_ok=True)
    table = folder / "rows.tsv"
    table.write_text("sentence\tlabel\n" + "a fine film\t1\ndull and bad\t0\ngreat cast\t1\n" * 10)
    cfg = folder / "cfg.yaml"
    cfg.write_text(
        "data: {label_names: {0: negative, 1: positive}}\ntokenizer: {model_type: unigram, vocab_size: 300}\n"
        f"model: {{{model}}}\ntrain: {{{train}}}\n"
    )
    run = folder / "run"
    args = [
        "--config",
        str(cfg),
        "--train",
        str(table),
        "--valid",
        str(table),
        "--max-steps",
        str(steps),
        "--quiet",
    ]
    assert main(["train", "classifier", "--output", str(run), *args]) == 0
    return run
