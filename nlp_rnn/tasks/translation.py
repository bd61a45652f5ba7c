"""The translation task: parallel data, the encoder-decoder, BLEU validation, `Translator`, test-set BLEU/chrF.

Everything model-specific lives in seq2seq.py; this file wires data, tokenizer and model to the
shared `Trainer` and gives a loaded bundle its raw-text interface.
"""

import json
import logging
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

import torch
import typer

from nlp_rnn import devices, embeddings, options, textio
from nlp_rnn.bundle import Bundle
from nlp_rnn.config import DataConfig, TokenizerConfig, TrainConfig, _positive
from nlp_rnn.data import (
    ParallelSource,
    TokenBatcher,
    encode_sources,
    make_batch,
    ordered_batches,
    read_hub,
    read_lines,
    read_parallel,
    read_table,
    tokenize_parallel,
)
from nlp_rnn.errors import InvalidRequest, NlpRnnError
from nlp_rnn.nn import exported
from nlp_rnn.nn.seq2seq import Seq2Seq
from nlp_rnn.nn.seq2seq_config import Seq2SeqModelConfig
from nlp_rnn.search import SearchOptions
from nlp_rnn.tasks import base as tasks
from nlp_rnn.tasks.defaults import default_model
from nlp_rnn.tasks.engines import load_for
from nlp_rnn.tasks.evaluation import hyps_file, model_info, table
from nlp_rnn.tasks.metrics import bleu, chrf
from nlp_rnn.tasks.predict import chunked, precision_for, search_ids, with_precision

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecodeConfig:
    beam_size: int = 1
    max_len_a: float = 1.5  # maximum output length = a * source length + b
    max_len_b: int = 10
    batch_size: int = 128

    def __post_init__(self) -> None:
        _positive("decode.beam_size", self.beam_size)
        _positive("decode.batch_size", self.batch_size)


@dataclass(frozen=True)
class TranslationConfig:
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: Seq2SeqModelConfig = field(default_factory=Seq2SeqModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)


def parallel_source(data: DataConfig, split: str) -> ParallelSource:
    """The train or valid split as configured: files, a table, or a Hub dataset."""
    files = (data.train_src, data.train_tgt) if split == "train" else (data.valid_src, data.valid_tgt)
    common = dict(src_lang=data.src_lang, tgt_lang=data.tgt_lang)
    if any(files):
        return ParallelSource(src_file=files[0], tgt_file=files[1], **common)
    where = tasks.hub_or_table(data, split)
    if not where:
        raise NlpRnnError(
            f"no {split} data: give --{split}-src/--{split}-tgt, --{split} TABLE, or --dataset NAME"
        )
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
            raise NlpRnnError(
                f"{bundle.path}: this is a {bundle.task} model; translate needs a translation model"
            )
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

    def translate(
        self, texts: Sequence[str], opts: Optional[SearchOptions] = None, batch_size: int = 64
    ) -> list[list[Translation]]:
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
                Translation(
                    text=self.tokenizer.decode_tgt([h.tokens])[0],
                    score=h.score,
                    log_prob=h.log_prob,
                    pieces=self.tokenizer.tgt_pieces(h.tokens),
                    src_pieces=src_pieces,
                    attention=h.attention,
                )
                for h in hyps
            ]
        return out

    def stream(
        self, lines: Iterable[str], opts: Optional[SearchOptions] = None, batch_size: int = 64
    ) -> Iterator[tuple[str, list[Translation]]]:
        """Translates an endless iterable in chunks; yields (line, n-best list) in input order."""
        for chunk in chunked(lines, batch_size * 8):
            yield from zip(chunk, self.translate(chunk, opts, batch_size))


# ----------------------------------------------------------------------------- the task


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


# ----------------------------------------------------------------------------- command line


def train_options(
    train_src: Optional[str] = typer.Option(None, help="Training source file (one sentence per line)."),
    train_tgt: Optional[str] = typer.Option(
        None, help="Training target file, line-aligned with --train-src."
    ),
    valid_src: Optional[str] = typer.Option(None, help="Validation source file."),
    valid_tgt: Optional[str] = typer.Option(None, help="Validation target file."),
    train: Optional[str] = typer.Option(
        None, "--train", help="Training TSV/CSV/JSONL with columns --src-lang/--tgt-lang."
    ),
    valid: Optional[str] = typer.Option(None, "--valid", help="Validation TSV/CSV/JSONL."),
    dataset: Optional[str] = typer.Option(None, help="Hugging Face Hub dataset, e.g. bentrevett/multi30k."),
    src_lang: Optional[str] = typer.Option(None, help="Source language / column name."),
    tgt_lang: Optional[str] = typer.Option(None, help="Target language / column name."),
    pretrained_src_embeddings: Optional[str] = typer.Option(
        None, help="Word vectors (word2vec/GloVe/fastText text, .gz too) for the source embeddings."
    ),
    pretrained_tgt_embeddings: Optional[str] = typer.Option(
        None, help="Word vectors for the target embeddings."
    ),
    freeze_embeddings: Optional[bool] = options.FREEZE,
) -> dict:
    """Train an encoder-decoder translation model from raw parallel text."""
    return {
        "data": dict(
            train_src=train_src,
            train_tgt=train_tgt,
            valid_src=valid_src,
            valid_tgt=valid_tgt,
            train=train,
            valid=valid,
            dataset=dataset,
            src_lang=src_lang,
            tgt_lang=tgt_lang,
        ),
        "model": dict(
            pretrained_src_embeddings=pretrained_src_embeddings,
            pretrained_tgt_embeddings=pretrained_tgt_embeddings,
            freeze_embeddings=freeze_embeddings,
        ),
    }


def translate(
    texts: Optional[list[str]] = typer.Argument(
        None, help="Sentences to translate; none: read --input or standard input."
    ),
    model: Optional[Path] = options.model(
        "checkpoints/multi30k-de-en, the shipped German->English Multi30k model"
    ),
    input: Optional[Path] = options.input_file("File with one sentence per line."),
    output: Optional[Path] = options.output("Write translations here instead of standard output."),
    beam_size: Optional[int] = typer.Option(None, "--beam-size", help="1: greedy (default: the model's)."),
    n_best: int = typer.Option(
        1, "--n-best", help="Hypotheses per sentence, with scores (at most --beam-size)."
    ),
    batch_size: int = typer.Option(0, "--batch-size", help="Sentences per batch (0: 256 greedy, 64 beam)."),
    precision: str = options.PRECISION_AUTO,
    max_length: Optional[int] = typer.Option(None, "--max-length", help="Hard cap on output pieces."),
    length_penalty: Optional[float] = typer.Option(
        None, "--length-penalty", help="GNMT alpha for beam search (0: none)."
    ),
    no_repeat_ngram: Optional[int] = typer.Option(
        None, "--no-repeat-ngram", help="Forbid repeating n-grams of this size."
    ),
    fmt: str = typer.Option("text", "--format", help="text or jsonl."),
    attention_plot: Optional[Path] = typer.Option(
        None, "--attention-plot", help="PNG heatmap of the first sentence's attention."
    ),
    device: str = options.DEVICE,
    engine: str = options.ENGINE,
) -> None:
    """Translate raw text: output line N belongs to input line N."""
    textio.check_format(fmt)
    textio.check_at_least(1, beam_size=beam_size, n_best=n_best, max_length=max_length)
    textio.check_at_least(0, batch_size=batch_size)
    translator = Translator(load_for(engine, model or default_model(TranslationTask.name), device), precision)
    opts = translator.options(
        beam_size=beam_size,
        max_length=max_length,
        length_penalty=length_penalty,
        no_repeat_ngram=no_repeat_ngram,
        attention=attention_plot is not None,
    )
    if n_best > opts.beam_size:
        raise NlpRnnError(f"--n-best {n_best} needs --beam-size of at least {n_best}")
    opts = replace(opts, n_best=n_best)
    batch_size = batch_size or (256 if opts.beam_size == 1 else 64)
    lines = textio.texts_or_input(texts, input)
    total = len(texts) if texts else textio.count_lines(input)
    with textio.output_file(output) as sink, textio.progress(total, shown=output is not None) as bar:
        for number, (source, hyps) in enumerate(translator.stream(lines, opts, batch_size), 1):
            if number == 1 and attention_plot is not None and hyps:
                plot_attention(hyps[0], attention_plot)
            sink.write(format_translation(number, source, hyps, n_best, fmt) + "\n")
            bar.update(1)


def format_translation(number: int, source: str, hyps: list, n_best: int, fmt: str) -> str:
    if fmt == "jsonl":
        return json.dumps(
            {
                "line": number,
                "source": source,
                "translations": [
                    {"text": h.text, "score": round(h.score, 4), "log_prob": round(h.log_prob, 4)}
                    for h in hyps
                ],
            },
            ensure_ascii=False,
        )
    if n_best == 1:
        return hyps[0].text if hyps else ""
    return "\t".join(f"{h.text}\t{h.score:.4f}" for h in hyps)


def plot_attention(translation: Translation, path: Path) -> None:
    """A heatmap of one translation's attention weights (target pieces by source pieces)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise NlpRnnError("--attention-plot needs matplotlib: pip install 'nlp-rnn[plot]'") from None
    if translation.attention is None:
        raise NlpRnnError("--attention-plot: this model has no attention (attention: none)")
    weights = translation.attention.numpy()
    fig, ax = plt.subplots(
        figsize=(max(4, 0.45 * weights.shape[1] + 2), max(3, 0.4 * weights.shape[0] + 1.5))
    )
    ax.imshow(weights, cmap="viridis", aspect="auto", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(translation.src_pieces)), translation.src_pieces, rotation=90)
    ax.set_yticks(range(len(translation.pieces)), translation.pieces)
    ax.set_xlabel("source pieces")
    ax.set_ylabel("target pieces")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def endpoint(limits) -> tasks.Endpoint:
    """POST /translate: {"texts": [...], "beam_size": K, "n_best": N}."""
    from pydantic import Field

    def check(translator: Translator, req) -> None:
        beam = req.beam_size or translator.options().beam_size
        if req.n_best > beam:
            raise InvalidRequest(
                f"n_best: {req.n_best} needs beam_size of at least {req.n_best} (got {beam})"
            )

    def run(translator: Translator, texts: list[str], req) -> list:
        opts = translator.options(
            beam_size=req.beam_size or translator.options().beam_size, n_best=req.n_best
        )
        return translator.translate(texts, opts, limits.max_batch)

    def answer(results: list, req) -> dict:
        out = []
        for hyps in results:
            best = {"text": hyps[0].text, "score": hyps[0].score} if hyps else {"text": "", "score": 0.0}
            if req.n_best > 1:
                best["n_best"] = [{"text": h.text, "score": h.score} for h in hyps[: req.n_best]]
            out.append(best)
        return {"translations": out}

    fields = {
        "beam_size": (
            Optional[int],
            Field(None, ge=1, le=limits.max_beam, description="1: greedy (default: the model's)."),
        ),
        "n_best": (
            int,
            Field(1, ge=1, le=limits.max_beam, description="Hypotheses per text (at most beam_size)."),
        ),
    }
    return tasks.Endpoint(
        "translate",
        "Translate texts; `n_best` > 1 also returns the other hypotheses with their scores.",
        fields,
        run,
        answer,
        check,
        batch_key=lambda req: (req.beam_size, req.n_best),
    )


class TranslationTask(tasks.Task):
    name = "translation"
    config_cls = TranslationConfig
    default_bundle = "multi30k-de-en"
    train_command = tasks.TrainCommand("translation", train_options, example_config="configs/")

    def commands(self) -> list:
        return [translate]

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
        bundle = tasks.new_bundle(self, cfg, tok, meta, cfg.train.seed)
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

    def wrap(self, bundle: Bundle, precision: str = "fp32") -> Translator:
        return Translator(bundle, precision)

    def export_onnx(self, model: torch.nn.Module, folder: Path) -> dict:
        return exported.export_seq2seq(model, folder)

    def onnx_model(self, folder: Path, manifest: dict) -> torch.nn.Module:
        return exported.OrtSeq2Seq(folder, manifest)

    def evaluate(self, bundle: Bundle, request: tasks.EvalRequest) -> dict:
        translator = Translator(bundle, request.precision)
        opts = translator.options(beam_size=request.beam_size, length_penalty=request.length_penalty)
        batch_size = request.batch_size or (256 if opts.beam_size == 1 else 64)
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
