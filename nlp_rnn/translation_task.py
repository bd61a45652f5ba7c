"""Training a translation model: data and tokenizer set-up, loss with scheduled sampling, validation.

Wires the parts to the task-agnostic `Trainer`; everything model-specific lives in seq2seq.py.
"""

import logging
import math
from dataclasses import replace
from pathlib import Path
from typing import Optional

import torch

from nlp_rnn import bundle as bundles
from nlp_rnn.bundle import Bundle
from nlp_rnn.config import DataConfig, TranslationConfig
from nlp_rnn.data import ParallelSource, TokenBatcher, make_batch, ordered_batches, read_parallel, tokenize_parallel
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.info import count_parameters
from nlp_rnn.metrics import bleu
from nlp_rnn.predict import search_ids
from nlp_rnn.search import SearchOptions
from nlp_rnn.seq2seq import Seq2Seq
from nlp_rnn.tokenizer import Tokenizer
from nlp_rnn.train import Trainer

log = logging.getLogger(__name__)


def parallel_source(data: DataConfig, split: str) -> ParallelSource:
    """The train or valid split as configured: files, a table, or a Hub dataset."""
    files = (data.train_src, data.train_tgt) if split == "train" else (data.valid_src, data.valid_tgt)
    table = data.train if split == "train" else data.valid
    common = dict(src_lang=data.src_lang, tgt_lang=data.tgt_lang)
    if any(files):
        return ParallelSource(src_file=files[0], tgt_file=files[1], **common)
    if table:
        return ParallelSource(table=table, **common)
    if data.dataset:
        hub_split = data.train_split if split == "train" else data.valid_split
        return ParallelSource(dataset=data.dataset, dataset_config=data.dataset_config, split=hub_split, **common)
    raise NlpRnnError(f"no {split} data: give --{split}-src/--{split}-tgt, --{split} TABLE, or --dataset NAME")


def teacher_forcing_ratio(cfg: TranslationConfig, step: int) -> float:
    t = cfg.train
    if t.teacher_forcing_decay_steps <= 0:
        return t.teacher_forcing
    progress = min(step / t.teacher_forcing_decay_steps, 1.0)
    return t.teacher_forcing + (t.teacher_forcing_min - t.teacher_forcing) * progress


def train_translation(
    cfg: TranslationConfig,
    out_dir: str | Path,
    resume: bool = False,
    tokenizer_dir: Optional[str | Path] = None,
    progress_bar: bool = True,
) -> dict:
    out_dir = Path(out_dir)
    train_src_spec, valid_src_spec = parallel_source(cfg.data, "train"), parallel_source(cfg.data, "valid")
    train_src, train_tgt = read_parallel(train_src_spec)
    valid_src, valid_tgt = read_parallel(valid_src_spec)
    log.info("data: %d training pairs (%s), %d validation pairs", len(train_src), train_src_spec.describe(), len(valid_src))

    if resume and (out_dir / "last" / bundles.META).is_file():
        tokenizer = Tokenizer.load(out_dir / "last")
    elif tokenizer_dir is not None:
        tokenizer = Tokenizer.load(tokenizer_dir)
    else:
        log.info("training a %s sentencepiece model (%d pieces, %s)", cfg.tokenizer.model_type, cfg.tokenizer.vocab_size,
                 "joint" if cfg.tokenizer.joint else "separate")
        tokenizer = Tokenizer.train(cfg.tokenizer, train_src, train_tgt)
    limits = (cfg.data.max_src_len, cfg.data.max_tgt_len)
    src_ids, tgt_ids = tokenize_parallel(train_src, train_tgt, tokenizer, *limits, out_dir / "cache", "training data")
    val_src_ids, val_tgt_ids = tokenize_parallel(valid_src, valid_tgt, tokenizer, *limits, out_dir / "cache", "validation data")

    torch.manual_seed(cfg.train.seed)
    model = Seq2Seq(cfg.model, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size)
    meta = {
        "src_lang": cfg.data.src_lang,
        "tgt_lang": cfg.data.tgt_lang,
        "data": {"train": train_src_spec.describe(), "valid": valid_src_spec.describe(), "train_pairs": len(train_src)},
        "parameters": count_parameters(model),
    }
    bundle = Bundle("translation", cfg, model, tokenizer, meta)
    log.info("model: %s parameters", f"{meta['parameters']:,}")

    batcher = TokenBatcher([len(s) + len(t) + 1 for s, t in zip(src_ids, tgt_ids)], cfg.train.batch_tokens,
                           cfg.train.max_batch_sentences, cfg.train.seed)

    def collate(index: list[int]):
        return make_batch([src_ids[i] for i in index], [tgt_ids[i] for i in index])

    def loss_fn(batch, step: int):
        return model(batch, teacher_forcing_ratio(cfg, step), cfg.train.label_smoothing)

    search_opts = SearchOptions(beam_size=1, max_len_a=cfg.decode.max_len_a, max_len_b=cfg.decode.max_len_b)

    def validate() -> dict:
        total, count = 0.0, 0
        for index in ordered_batches([len(s) for s in val_src_ids], 128):
            loss, n = model(make_batch([val_src_ids[i] for i in index], [val_tgt_ids[i] for i in index]))
            total, count = total + float(loss), count + n
        hyps = search_ids(model, val_src_ids, search_opts, cfg.decode.batch_size)
        texts = tokenizer.decode_tgt([h[0].tokens for h in hyps])
        val_loss = total / count
        return {"val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 50)), "val_bleu": bleu(texts, valid_tgt)[0].score}

    trainer = Trainer(cfg.train, bundle, batcher, collate, loss_fn, validate, "val_bleu", out_dir, progress_bar)
    return trainer.run(resume)


def with_data_overrides(cfg: TranslationConfig, **overrides) -> TranslationConfig:
    """CLI options override config fields when given."""
    given = {k: v for k, v in overrides.items() if v is not None}
    return replace(cfg, data=replace(cfg.data, **given)) if given else cfg
