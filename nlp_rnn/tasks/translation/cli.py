"""Translation's commands: `nlp-rnn train translation` options, `nlp-rnn translate`, POST /translate."""

import json
from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer

from nlp_rnn import options, textio
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.tasks import base as tasks
from nlp_rnn.tasks.defaults import default_model
from nlp_rnn.tasks.engines import load_for
from nlp_rnn.tasks.translation.config import NAME
from nlp_rnn.tasks.translation.interface import SHORTLIST_CHOICES, Translation, Translator
from nlp_rnn.tasks.translation.shortlists import write_shortlist

SHORTLIST = typer.Option(
    "auto",
    "--shortlist",
    help=f"{'|'.join(SHORTLIST_CHOICES)}: score only the vocabulary shortlist the bundle holds (nlp-rnn shortlist);"
    " auto: when it holds one, on a CPU (off on a GPU, where decoding is bound by kernel launches).",
)


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
    model: Optional[list[Path]] = options.models(
        "checkpoints/multi30k-de-en, the shipped German->English Multi30k model"
    ),
    input: Optional[Path] = options.input_file("File with one sentence per line."),
    output: Optional[Path] = options.output("Write translations here instead of standard output."),
    beam_size: Optional[int] = typer.Option(None, "--beam-size", help="1: greedy (default: the model's)."),
    n_best: int = typer.Option(
        1, "--n-best", help="Hypotheses per sentence, with scores (at most --beam-size)."
    ),
    batch_size: int = typer.Option(0, "--batch-size", help="Sentences per batch (0: 256)."),
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
    shortlist: str = SHORTLIST,
) -> None:
    """Translate raw text: output line N belongs to input line N."""
    textio.check_format(fmt)
    textio.check_at_least(1, beam_size=beam_size, n_best=n_best, max_length=max_length)
    textio.check_at_least(0, batch_size=batch_size)
    translator = Translator(load_for(engine, model or default_model(NAME), device), precision, shortlist)
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
    lines = textio.texts_or_input(texts, input)
    total = len(texts) if texts else textio.count_lines(input)
    with textio.output_file(output) as sink, textio.progress(total, shown=output is not None) as bar:
        for number, (source, hyps) in enumerate(translator.stream(lines, opts, batch_size), 1):
            if number == 1 and attention_plot is not None and hyps:
                plot_attention(hyps[0], attention_plot)
            sink.write(format_translation(number, source, hyps, n_best, fmt) + "\n")
            bar.update(1)


def shortlist(
    model: Path = typer.Argument(
        ..., help="The translation bundle (or training folder) to add a shortlist to."
    ),
    train_src: Optional[str] = typer.Option(None, help="Training source file (default: the model's config)."),
    train_tgt: Optional[str] = typer.Option(None, help="Training target file."),
    train: Optional[str] = typer.Option(
        None, "--train", help="Training TSV/CSV/JSONL (src_lang, tgt_lang columns)."
    ),
    per_source: Optional[int] = typer.Option(
        None, "--per-source", help="Target pieces kept per source piece (default: the config's, 50)."
    ),
    frequent: Optional[int] = typer.Option(
        None, "--frequent", help="Most frequent target pieces always kept (default: the config's, 300)."
    ),
) -> None:
    """Build a vocabulary shortlist for decoding and store it in the bundle (`translate --shortlist`)."""
    textio.check_at_least(1, per_source=per_source)
    textio.check_at_least(0, frequent=frequent)
    bundle = tasks.load(model, NAME)
    cfg = bundle.config
    if train_src or train_tgt or train:
        if train and (train_src or train_tgt):
            raise NlpRnnError("give either --train TABLE or --train-src/--train-tgt, not both")
        if not train and not (train_src and train_tgt):
            raise NlpRnnError("--train-src and --train-tgt go together")
        data = replace(cfg.data, train_src=train_src, train_tgt=train_tgt, train=train, dataset=None)
        cfg = replace(cfg, data=data)
    info = write_shortlist(bundle, cfg, None, per_source, frequent)
    typer.echo(
        f"{bundle.path / 'shortlist.safetensors'}: {info['per_source']} per source piece + {info['frequent']} "
        f"frequent; covers {100 * info['coverage']:.2f}% of the training target tokens"
    )


def distill(
    teacher: Path = typer.Argument(..., help="The teacher: a translation bundle or training folder."),
    config: Path = typer.Option(
        ..., "--config", help="The student's YAML config (its data: the training sources)."
    ),
    output: Path = typer.Option(
        ..., "--output", help="The student's training folder (distilled/ holds the corpus)."
    ),
    beam_size: int = typer.Option(5, "--beam-size", help="The teacher's beam."),
    precision: str = options.PRECISION_AUTO,
    batch_size: int = typer.Option(64, "--batch-size", help="Sentences per batch for the teacher."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="The student's training budget."),
    resume: bool = typer.Option(False, "--resume", help="Continue the student's training from OUTPUT/last/."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    device: str = options.DEVICE,
) -> None:
    """Sequence-level knowledge distillation: the teacher translates the training sources, a student trains on them."""
    from nlp_rnn.config import load_config
    from nlp_rnn.tasks.translation.config import TranslationConfig
    from nlp_rnn.tasks.translation.distill import distill as run_distill

    textio.check_at_least(1, beam_size=beam_size, batch_size=batch_size)
    summary = run_distill(
        teacher,
        load_config(config, TranslationConfig),
        output,
        beam_size,
        precision,
        batch_size,
        resume,
        not quiet,
        device,
        max_minutes,
    )
    best = summary["best"] or {}
    info = summary["distilled"]
    typer.echo(
        f"distilled {info['pairs']} pairs (beam {info['beam_size']}); student stopped ({summary['stopped']}) at "
        f"step {summary['step']}; best {summary['score_key']} {best.get(summary['score_key'], float('nan')):.4g}; "
        f"model: {output / 'best'}"
    )


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

    def run(translator: Translator, texts: list[str], req) -> list:
        beam = max(req.beam_size or translator.options().beam_size, req.n_best)  # n_best widens the beam
        opts = translator.options(beam_size=beam, n_best=req.n_best, attention=req.attention)
        return translator.translate(texts, opts, limits.max_batch)

    def answer(results: list, req) -> dict:
        out = []
        for hyps in results:
            best = {"text": hyps[0].text, "score": hyps[0].score} if hyps else {"text": "", "score": 0.0}
            if req.n_best > 1:
                best["n_best"] = [{"text": h.text, "score": h.score} for h in hyps[: req.n_best]]
            if req.attention and hyps and hyps[0].attention is not None:
                weights = hyps[0].attention.float()
                best["attention"] = {
                    "source": hyps[0].src_pieces,
                    "target": hyps[0].pieces,
                    "weights": [[round(float(w), 4) for w in row] for row in weights],
                }
            out.append(best)
        return {"translations": out}

    fields = {
        "beam_size": (
            Optional[int],
            Field(None, ge=1, le=limits.max_beam, description="1: greedy (default: the model's)."),
        ),
        "n_best": (
            int,
            Field(
                1,
                ge=1,
                le=limits.max_beam,
                description="Hypotheses per text; the beam is at least this wide.",
            ),
        ),
        "attention": (
            bool,
            Field(
                False, description="Also the best hypothesis's attention: source and target pieces, weights."
            ),
        ),
    }
    return tasks.Endpoint(
        "translate",
        "Translate texts; `n_best` > 1 also returns the other hypotheses with their scores.",
        fields,
        run,
        answer,
        batch_key=lambda req: (req.beam_size, req.n_best, req.attention),
    )
