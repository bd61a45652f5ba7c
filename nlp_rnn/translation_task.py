"""The translation task: parallel data, the encoder-decoder, BLEU validation, `Translator`, test-set BLEU/chrF.

Everything model-specific lives in seq2seq.py; this file wires data, tokenizer and model to the
shared `Trainer` and gives a loaded bundle its raw-text interface.
"""

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import torch

from nlp_rnn import devices, embeddings
from nlp_rnn import task as tasks
from nlp_rnn.bundle import Bundle
from nlp_rnn.config import DataConfig, TranslationConfig
from nlp_rnn.data import (ParallelSource, TokenBatcher, encode_sources, make_batch, ordered_batches, read_hub, read_lines,
                          read_parallel, read_table, tokenize_parallel)
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.evaluation import hyps_file, model_info, table
from nlp_rnn.metrics import bleu, chrf
from nlp_rnn.predict import chunked, precision_for, search_ids, with_precision
from nlp_rnn.search import SearchOptions
from nlp_rnn.seq2seq import Seq2Seq

log = logging.getLogger(__name__)


def parallel_source(data: DataConfig, split: str) -> ParallelSource:
    """The train or valid split as configured: files, a table, or a Hub dataset."""
    files = (data.train_src, data.train_tgt) if split == "train" else (data.valid_src, data.valid_tgt)
    common = dict(src_lang=data.src_lang, tgt_lang=data.tgt_lang)
    if any(files):
        return ParallelSource(src_file=files[0], tgt_file=files[1], **common)
    where = tasks.hub_or_table(data, split)
    if not where:
        raise NlpRnnError(f"no {split} data: give --{split}-src/--{split}-tgt, --{split} TABLE, or --dataset NAME")
    return ParallelSource(**where, **common)


def teacher_forcing_ratio(cfg: TranslationConfig, step: int) -> float:
    t = cfg.train
    if t.teacher_forcing_decay_steps <= 0:
        return t.teacher_forcing
    progress = min(step / t.teacher_forcing_decay_steps, 1.0)
    return t.teacher_forcing + (t.teacher_forcing_min - t.teacher_forcing) * progress


# ----------------------------------------------------------------------------- raw text in, raw text out


@dataclass
class Translation:
    text: str
    score: float
    log_prob: float
    pieces: list[str]
    src_pieces: list[str]
    attention: Optional[torch.Tensor] = None  # (len(pieces), len(src_pieces))


class Translator:
    """Raw text in, raw text out. `precision` bf16 runs the model in bfloat16 (about 2x faster on
    CPUs with native bf16, BLEU within a few tenths); fp32 is exact and bit-stable across batches."""

    def __init__(self, bundle: Bundle, precision: str = "fp32") -> None:
        if bundle.task != "translation":
            raise NlpRnnError(f"{bundle.path}: this is a {bundle.task} model; translate needs a translation model")
        self.precision = precision_for(bundle.model, precision)
        self.bundle, self.model, self.tokenizer = bundle, bundle.model, bundle.tokenizer
        self.model = with_precision(bundle.model, self.precision)
        self.max_src_len = bundle.config.data.max_src_len

    def options(self, **overrides) -> SearchOptions:
        d = self.bundle.config.decode
        base = dict(beam_size=d.beam_size, max_len_a=d.max_len_a, max_len_b=d.max_len_b)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return SearchOptions(**base)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return encode_sources(self.tokenizer, texts, self.max_src_len)

    def translate(self, texts: Sequence[str], opts: Optional[SearchOptions] = None, batch_size: int = 64) -> list[list[Translation]]:
        """n-best translations per text (an empty list for an empty text)."""
        opts = opts or self.options()
        clean = [t.strip() for t in texts]
        todo = [i for i, t in enumerate(clean) if t]
        out: list[list[Translation]] = [[] for _ in texts]
        if not todo:
            return out
        src_ids = self.encode([clean[i] for i in todo])
        for i, ids, hyps in zip(todo, src_ids, search_ids(self.model, src_ids, opts, batch_size)):
            src_pieces = self.tokenizer.src_pieces(ids)
            out[i] = [
                Translation(text=self.tokenizer.decode_tgt([h.tokens])[0], score=h.score, log_prob=h.log_prob,
                            pieces=self.tokenizer.tgt_pieces(h.tokens), src_pieces=src_pieces, attention=h.attention)
                for h in hyps
            ]
        return out

    def stream(self, lines: Iterable[str], opts: Optional[SearchOptions] = None, batch_size: int = 64
               ) -> Iterator[tuple[str, list[Translation]]]:
        """Translates an endless iterable in chunks; yields (line, n-best list) in input order."""
        for chunk in chunked(lines, batch_size * 8):
            yield from zip(chunk, self.translate(chunk, opts, batch_size))


# ----------------------------------------------------------------------------- the task


def test_sets(request: tasks.EvalRequest, src_col: str, tgt_col: str) -> list[tuple[str, list[str], list[str]]]:
    """(name, sources, references) for every test set named on the command line."""
    if len(request.src) != len(request.ref):
        raise NlpRnnError(f"give one --ref per --src (got {len(request.src)} --src and {len(request.ref)} --ref)")
    sets = []
    for s, r in zip(request.src, request.ref):
        sources, refs = read_lines(s), read_lines(r)
        if len(sources) != len(refs):
            raise NlpRnnError(f"{s} has {len(sources)} lines but {r} has {len(refs)}: source and reference must be line-aligned")
        sets.append((Path(s).stem, sources, refs))
    for path in request.data:
        cols = read_table(path, [src_col, tgt_col])
        sets.append((Path(path).stem, [str(x) for x in cols[src_col]], [str(x) for x in cols[tgt_col]]))
    if request.dataset:
        for split in request.splits or ["test"]:
            cols = read_hub(request.dataset, split, [src_col, tgt_col])
            sets.append((f"{request.dataset}:{split}", cols[src_col], cols[tgt_col]))
    if not sets:
        raise NlpRnnError("no test set: give --src F --ref F, --data TABLE, or --dataset NAME")
    return sets


class TranslationTask(tasks.Task):
    name = "translation"
    config_cls = TranslationConfig
    default_bundle = "multi30k-de-en"

    def build_model(self, cfg: TranslationConfig, tokenizer, meta: dict) -> Seq2Seq:
        return Seq2Seq(cfg.model, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size)

    def prepare(self, cfg: TranslationConfig, out_dir: Path, tokenizer: tasks.TokenizerChoice) -> tasks.TrainingSetup:
        train_spec, valid_spec = parallel_source(cfg.data, "train"), parallel_source(cfg.data, "valid")
        train_src, train_tgt = read_parallel(train_spec)
        valid_src, valid_tgt = read_parallel(valid_spec)
        log.info("data: %d training pairs (%s), %d validation pairs", len(train_src), train_spec.describe(), len(valid_src))
        tok = tokenizer.get(cfg.tokenizer, train_src, train_tgt)
        limits = (cfg.data.max_src_len, cfg.data.max_tgt_len)
        src_ids, tgt_ids = tokenize_parallel(train_src, train_tgt, tok, *limits, out_dir / "cache", "training data")
        val_src_ids, val_tgt_ids = tokenize_parallel(valid_src, valid_tgt, tok, *limits, out_dir / "cache", "validation data")
        meta = {"src_lang": cfg.data.src_lang, "tgt_lang": cfg.data.tgt_lang,
                "data": {"train": train_spec.describe(), "valid": valid_spec.describe(), "train_pairs": len(train_src)}}
        bundle = tasks.new_bundle(self, cfg, tok, meta, cfg.train.seed)
        embeddings.apply(cfg.model, bundle.model, tok, bundle.meta, tokenizer.resume,
                         [("pretrained_src_embeddings", ["src_embed"], "src"), ("pretrained_tgt_embeddings", ["decoder.embed"], "tgt")])
        model = bundle.model
        batcher = TokenBatcher([len(s) + len(t) + 1 for s, t in zip(src_ids, tgt_ids)], cfg.train.batch_tokens,
                               cfg.train.max_batch_sentences, cfg.train.seed)
        search_opts = SearchOptions(beam_size=1, max_len_a=cfg.decode.max_len_a, max_len_b=cfg.decode.max_len_b)

        def validate() -> dict:
            total, count = 0.0, 0
            for index in ordered_batches([len(s) for s in val_src_ids], 128):
                batch = make_batch([val_src_ids[i] for i in index], [val_tgt_ids[i] for i in index])
                loss, n = model(devices.move(batch, devices.of(model)))
                total, count = total + float(loss), count + n
            hyps = search_ids(model, val_src_ids, search_opts, cfg.decode.batch_size)
            texts = tok.decode_tgt([h[0].tokens for h in hyps])
            val_loss = total / count
            return {"val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 50)), "val_bleu": bleu(texts, valid_tgt)[0].score}

        return tasks.TrainingSetup(
            bundle=bundle, batcher=batcher,
            collate=lambda index: make_batch([src_ids[i] for i in index], [tgt_ids[i] for i in index]),
            loss_fn=lambda batch, step: model(batch, teacher_forcing_ratio(cfg, step), cfg.train.label_smoothing),
            validate=validate, score_key="val_bleu")

    def wrap(self, bundle: Bundle, precision: str = "fp32", **_) -> Translator:
        return Translator(bundle, precision)

    def evaluate(self, bundle: Bundle, request: tasks.EvalRequest) -> dict:
        translator = Translator(bundle, request.precision)
        opts = translator.options(beam_size=request.beam_size, length_penalty=request.length_penalty)
        batch_size = request.batch_size or (256 if opts.beam_size == 1 else 64)
        sets = test_sets(request, request.src_lang or bundle.meta.get("src_lang", "src"), request.tgt_lang or bundle.meta.get("tgt_lang", "tgt"))
        results = []
        for name, sources, refs in sets:
            started = time.perf_counter()
            outputs = translator.translate(sources, opts, batch_size)
            seconds = time.perf_counter() - started
            texts = [o[0].text if o else "" for o in outputs]
            if request.hyps is not None:
                hyps_file(Path(request.hyps), name, len(sets) > 1).write_text("".join(t + "\n" for t in texts), encoding="utf-8")
            bleu_score, bleu_sig = bleu(texts, refs)
            chrf_score, chrf_sig = chrf(texts, refs)
            results.append({
                "name": name, "sentences": len(sources), "bleu": round(bleu_score.score, 2), "chrf": round(chrf_score.score, 2),
                "bleu_detail": str(bleu_score), "seconds": round(seconds, 2), "sentences_per_s": round(len(sources) / seconds, 1),
            })
        return {
            "task": self.name, "model": model_info(bundle), "sets": results,
            "bleu_signature": bleu_sig, "chrf_signature": chrf_sig,
            "decoding": {"beam_size": opts.beam_size, "length_penalty": opts.length_penalty, "length_norm": opts.length_norm,
                         "max_len_a": opts.max_len_a, "max_len_b": opts.max_len_b, "batch_size": batch_size,
                         "precision": translator.precision},
        }

    def report(self, result: dict) -> list[str]:
        import json

        lines = table(["test set", "sentences", "BLEU", "chrF", "sent/s", "seconds"],
                      [[s["name"], s["sentences"], s["bleu"], s["chrf"], s["sentences_per_s"], s["seconds"]] for s in result["sets"]])
        return lines + [f"BLEU signature: {result['bleu_signature']}", f"chrF signature: {result['chrf_signature']}",
                        f"decoding: {json.dumps(result['decoding'])}"]

    def describe(self, bundle: Bundle) -> dict:
        return {"languages": f"{bundle.meta.get('src_lang')} -> {bundle.meta.get('tgt_lang')}",
                "tokenizer": {"target_pieces": bundle.tokenizer.tgt_vocab_size}}


TASK = tasks.register(TranslationTask())


def train_translation(cfg: TranslationConfig, out_dir: str | Path, resume: bool = False,
                      tokenizer_dir: Optional[str | Path] = None, progress_bar: bool = True) -> dict:
    return tasks.train(TASK.name, cfg, out_dir, resume, tokenizer_dir, progress_bar)
