"""The translation task: parallel data, the encoder-decoder, BLEU validation, test-set BLEU/chrF."""

import json
import logging
import math
import time
from pathlib import Path
from typing import Optional

import torch

from nlp_rnn import devices, distributed, embeddings
from nlp_rnn.bundle import Bundle
from nlp_rnn.data import (
    TokenBatcher,
    make_batch,
    ordered_batches,
    read_hub,
    read_lines,
    read_parallel,
    read_table,
    tokenize_parallel,
)
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.nn import exported
from nlp_rnn.nn.seq2seq import Seq2Seq
from nlp_rnn.search import SearchOptions
from nlp_rnn.tasks import base as tasks
from nlp_rnn.tasks.evaluation import hyps_file, model_info, table
from nlp_rnn.tasks.metrics import bleu, chrf
from nlp_rnn.tasks.predict import search_ids
from nlp_rnn.tasks.translation.cli import distill, endpoint, shortlist, train_options, translate
from nlp_rnn.tasks.translation.config import NAME, TranslationConfig
from nlp_rnn.tasks.translation.interface import Translator
from nlp_rnn.tasks.translation.shortlists import parallel_source, write_shortlist

log = logging.getLogger(__name__)


def teacher_forcing_ratio(cfg: TranslationConfig, step: int) -> float:
    t = cfg.train
    if t.teacher_forcing_decay_steps <= 0:
        return t.teacher_forcing
    progress = min(step / t.teacher_forcing_decay_steps, 1.0)
    return t.teacher_forcing + (t.teacher_forcing_min - t.teacher_forcing) * progress


def test_sets(
    request: tasks.EvalRequest, src_col: str, tgt_col: str
) -> list[tuple[str, list[str], list[str]]]:
    """(name, sources, references) for every test set named on the command line."""
    if len(request.src) != len(request.ref):
        raise NlpRnnError(
            f"give one --ref per --src (got {len(request.src)} --src and {len(request.ref)} --ref)"
        )
    sets = []
    for s, r in zip(request.src, request.ref):
        sources, refs = read_lines(s), read_lines(r)
        if len(sources) != len(refs):
            raise NlpRnnError(
                f"{s} has {len(sources)} lines but {r} has {len(refs)}: source and reference must be line-aligned"
            )
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
    name = NAME
    config_cls = TranslationConfig
    default_bundle = "multi30k-de-en"
    train_command = tasks.TrainCommand("translation", train_options, example_config="configs/")

    def commands(self) -> list:
        return [translate, shortlist, distill]

    def endpoint(self, limits) -> tasks.Endpoint:
        return endpoint(limits)

    def build_model(self, cfg: TranslationConfig, tokenizer, meta: dict) -> Seq2Seq:
        return Seq2Seq(cfg.model, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size)

    def prepare(
        self, cfg: TranslationConfig, out_dir: Path, tokenizer: tasks.TokenizerChoice
    ) -> tasks.TrainingSetup:
        train_spec, valid_spec = parallel_source(cfg.data, "train"), parallel_source(cfg.data, "valid")
        train_src, train_tgt = read_parallel(train_spec)
        valid_src, valid_tgt = read_parallel(valid_spec)
        log.info(
            "data: %d training pairs (%s), %d validation pairs",
            len(train_src),
            train_spec.describe(),
            len(valid_src),
        )
        tok = tokenizer.get(cfg.tokenizer, train_src, train_tgt)
        limits = (cfg.data.max_src_len, cfg.data.max_tgt_len)
        src_ids, tgt_ids = tokenize_parallel(
            train_src, train_tgt, tok, *limits, out_dir / "cache", "training data"
        )
        val_src_ids, val_tgt_ids = tokenize_parallel(
            valid_src, valid_tgt, tok, *limits, out_dir / "cache", "validation data"
        )
        meta = {
            "src_lang": cfg.data.src_lang,
            "tgt_lang": cfg.data.tgt_lang,
            "data": {
                "train": train_spec.describe(),
                "valid": valid_spec.describe(),
                "train_pairs": len(train_src),
            },
        }
        bundle = tasks.new_bundle(self, cfg, tok, meta)
        embeddings.apply(
            cfg.model,
            bundle.model,
            tok,
            bundle.meta,
            tokenizer.resume,
            [
                ("pretrained_src_embeddings", ["src_embed"], "src"),
                ("pretrained_tgt_embeddings", ["decoder.embed"], "tgt"),
            ],
        )
        model = bundle.model
        batcher = TokenBatcher(
            [len(s) + len(t) + 1 for s, t in zip(src_ids, tgt_ids)],
            cfg.train.batch_tokens,
            cfg.train.max_batch_sentences,
            cfg.train.seed,
        )
        search_opts = SearchOptions(
            beam_size=1, max_len_a=cfg.decode.max_len_a, max_len_b=cfg.decode.max_len_b
        )

        def validate() -> dict:
            total, count = 0.0, 0
            for index in ordered_batches([len(s) for s in val_src_ids], 128):
                batch = make_batch([val_src_ids[i] for i in index], [val_tgt_ids[i] for i in index])
                loss, n = model(devices.move(batch, devices.of(model)))
                total, count = total + float(loss), count + n
            hyps = search_ids(model, val_src_ids, search_opts, cfg.decode.batch_size)
            texts = tok.decode_tgt([h[0].tokens for h in hyps])
            val_loss = total / count
            return {
                "val_loss": val_loss,
                "val_ppl": math.exp(min(val_loss, 50)),
                "val_bleu": bleu(texts, valid_tgt)[0].score,
            }

        return tasks.TrainingSetup(
            bundle=bundle,
            batcher=batcher,
            collate=lambda index: make_batch([src_ids[i] for i in index], [tgt_ids[i] for i in index]),
            loss_fn=lambda batch, step: model(
                batch, teacher_forcing_ratio(cfg, step), cfg.train.label_smoothing
            ),
            validate=validate,
            score_key="val_bleu",
        )

    def fit(self, cfg, out_dir, tokenizer, resume, progress_bar, device) -> dict:
        """Training, then the vocabulary shortlist of the best bundle (from the cached training ids)."""
        result = super().fit(cfg, out_dir, tokenizer, resume, progress_bar, device)
        if distributed.is_main() and cfg.decode.shortlist_per_source and (out_dir / "best").is_dir():
            best = tasks.load(out_dir / "best", NAME)
            result["shortlist"] = write_shortlist(best, cfg, out_dir / "cache")
        return result

    def wrap(self, bundle: Bundle, precision: str = "fp32") -> Translator:
        return Translator(bundle, precision)

    def export_onnx(self, model: torch.nn.Module, folder: Path) -> dict:
        return exported.export_seq2seq(model, folder)

    def onnx_model(self, folder: Path, manifest: dict) -> torch.nn.Module:
        return exported.OrtSeq2Seq(folder, manifest)

    def evaluate(self, bundle: Bundle, request: tasks.EvalRequest) -> dict:
        translator = Translator(bundle, request.precision)
        opts = translator.options(beam_size=request.beam_size, length_penalty=request.length_penalty)
        batch_size = request.batch_size or translator.batch_size(opts.beam_size)
        sets = test_sets(
            request,
            request.src_lang or bundle.meta.get("src_lang", "src"),
            request.tgt_lang or bundle.meta.get("tgt_lang", "tgt"),
        )
        results = []
        for name, sources, refs in sets:
            started = time.perf_counter()
            outputs = translator.translate(sources, opts, batch_size)
            seconds = time.perf_counter() - started
            texts = [o[0].text if o else "" for o in outputs]
            if request.hyps is not None:
                hyps_file(Path(request.hyps), name, len(sets) > 1).write_text(
                    "".join(t + "\n" for t in texts), encoding="utf-8"
                )
            bleu_score, bleu_sig = bleu(texts, refs)
            chrf_score, chrf_sig = chrf(texts, refs)
            results.append(
                {
                    "name": name,
                    "sentences": len(sources),
                    "bleu": round(bleu_score.score, 2),
                    "chrf": round(chrf_score.score, 2),
                    "bleu_detail": str(bleu_score),
                    "seconds": round(seconds, 2),
                    "sentences_per_s": round(len(sources) / seconds, 1),
                }
            )
        return {
            "task": self.name,
            "model": model_info(bundle),
            "sets": results,
            "bleu_signature": bleu_sig,
            "chrf_signature": chrf_sig,
            "decoding": {
                "beam_size": opts.beam_size,
                "length_penalty": opts.length_penalty,
                "length_norm": opts.length_norm,
                "max_len_a": opts.max_len_a,
                "max_len_b": opts.max_len_b,
                "batch_size": batch_size,
                "precision": translator.precision,
            },
        }

    def report(self, result: dict) -> list[str]:
        lines = table(
            ["test set", "sentences", "BLEU", "chrF", "sent/s", "seconds"],
            [
                [s["name"], s["sentences"], s["bleu"], s["chrf"], s["sentences_per_s"], s["seconds"]]
                for s in result["sets"]
            ],
        )
        return lines + [
            f"BLEU signature: {result['bleu_signature']}",
            f"chrF signature: {result['chrf_signature']}",
            f"decoding: {json.dumps(result['decoding'])}",
        ]

    def describe(self, bundle: Bundle) -> dict:
        return {
            "languages": f"{bundle.meta.get('src_lang')} -> {bundle.meta.get('tgt_lang')}",
            "tokenizer": {"target_pieces": bundle.tokenizer.tgt_vocab_size},
        }


TASK = tasks.register(TranslationTask())


def train_translation(
    cfg: TranslationConfig,
    out_dir: str | Path,
    resume: bool = False,
    tokenizer_dir: Optional[str | Path] = None,
    progress_bar: bool = True,
) -> dict:
    return tasks.train(TASK.name, cfg, out_dir, resume, tokenizer_dir, progress_bar)
