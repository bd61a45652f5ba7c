"""The `nlp-rnn` command (typer); the only place that configures logging and prints.

Every user error leaves as one line `error: ...` on stderr with exit status 2.
"""

import json
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Iterator, List, Optional

import typer

from nlp_rnn.errors import NlpRnnError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Recurrent networks for translation, classification and language modelling.")
train_app = typer.Typer(no_args_is_help=True, help="Train a translation model, a classifier or a language model.")
tokenizer_app = typer.Typer(no_args_is_help=True, help="Train a sentencepiece tokenizer on its own.")
app.add_typer(train_app, name="train")
app.add_typer(tokenizer_app, name="tokenizer")
demo_app = typer.Typer(no_args_is_help=True, help="Small experiments that show how recurrent networks behave.")
app.add_typer(demo_app, name="demo")
log = logging.getLogger("nlp_rnn")


# Options every `train` command shares (typer reads an option's settings from its default value).
TOKENIZER_OPT = typer.Option(None, "--tokenizer", help="Use this trained tokenizer folder instead of training one.")
PRETRAINED_OPT = typer.Option(None, "--pretrained-embeddings", help="Word vectors (word2vec/GloVe/fastText text format, .txt/.vec, "
                              ".gz too) for the embeddings; pair with a word tokenizer (tokenizer.model_type: word).")
FREEZE_OPT = typer.Option(None, "--freeze-embeddings/--no-freeze-embeddings", help="Keep the embeddings fixed during training.")
MAX_STEPS_OPT = typer.Option(None, "--max-steps", help="Stop (validate and save) after this many steps in all.")
MAX_MINUTES_OPT = typer.Option(None, "--max-minutes", help="Stop (validate and save) after this much training time.")
SEED_OPT = typer.Option(None, "--seed", help="Random seed (default: the config's).")
RESUME_OPT = typer.Option(False, "--resume", help="Continue from OUTPUT/last/ exactly where it stopped.")
QUIET_OPT = typer.Option(False, "--quiet", help="No progress bar.")
DEVICE_OPT = typer.Option("auto", "--device", help="auto (a CUDA GPU when there is one), cpu, cuda or cuda:N.")
ENGINE_OPT = typer.Option("torch", "--engine", help="torch, or onnxruntime with --model an exported folder (nlp-rnn export).")
OUTPUT_OPT = typer.Option(..., "--output", help="Training folder: best/, last/, metrics.jsonl.")
DATASET_OPT = typer.Option(None, "--dataset", help="Hugging Face Hub dataset (or a local dataset folder).")
TRAIN_SPLIT_OPT = typer.Option(None, "--train-split", help="Hub training split.")
VALID_SPLIT_OPT = typer.Option(None, "--valid-split", help="Hub validation split.")


def _err(message: str) -> None:
    typer.echo(message, err=True)


def read_input_lines(path: Optional[Path]) -> Iterator[str]:
    """Lines of a file or of standard input, streamed; invalid UTF-8 is an error naming the line."""
    name = str(path) if path else "stdin"
    if path is not None and not path.is_file():
        raise NlpRnnError(f"{path}: file not found")
    handle = open(path, "rb") if path else sys.stdin.buffer
    try:
        for number, raw in enumerate(handle, 1):
            try:
                yield raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                raise NlpRnnError(f"{name}:{number}: not valid UTF-8") from None
    finally:
        if path:
            handle.close()


def _count_lines(path: Optional[Path]) -> Optional[int]:
    if path is None or not path.is_file():
        return None
    with open(path, "rb") as handle:
        return sum(1 for _ in handle)


# ----------------------------------------------------------------------------- train


@train_app.command("translation")
def train_translation_cmd(
    config: Path = typer.Option(..., "--config", help="YAML config (see configs/)."),
    output: Path = OUTPUT_OPT,
    train_src: Optional[str] = typer.Option(None, help="Training source file (one sentence per line)."),
    train_tgt: Optional[str] = typer.Option(None, help="Training target file, line-aligned with --train-src."),
    valid_src: Optional[str] = typer.Option(None, help="Validation source file."),
    valid_tgt: Optional[str] = typer.Option(None, help="Validation target file."),
    train: Optional[str] = typer.Option(None, "--train", help="Training TSV/CSV/JSONL with columns --src-lang/--tgt-lang."),
    valid: Optional[str] = typer.Option(None, "--valid", help="Validation TSV/CSV/JSONL."),
    dataset: Optional[str] = typer.Option(None, help="Hugging Face Hub dataset, e.g. bentrevett/multi30k."),
    src_lang: Optional[str] = typer.Option(None, help="Source language / column name."),
    tgt_lang: Optional[str] = typer.Option(None, help="Target language / column name."),
    pretrained_src_embeddings: Optional[str] = typer.Option(None, help="Word vectors (word2vec/GloVe/fastText text, .gz too) "
                                                             "for the source embeddings."),
    pretrained_tgt_embeddings: Optional[str] = typer.Option(None, help="Word vectors for the target embeddings."),
    freeze_embeddings: Optional[bool] = FREEZE_OPT,
    tokenizer: Optional[Path] = TOKENIZER_OPT,
    max_steps: Optional[int] = MAX_STEPS_OPT,
    max_minutes: Optional[float] = MAX_MINUTES_OPT,
    seed: Optional[int] = SEED_OPT,
    resume: bool = RESUME_OPT,
    quiet: bool = QUIET_OPT,
    device: str = DEVICE_OPT,
) -> None:
    """Train an encoder-decoder translation model from raw parallel text."""
    from nlp_rnn.config import TranslationConfig
    from nlp_rnn.task import with_overrides

    cfg = with_overrides(_config(config, TranslationConfig), "data", train_src=train_src, train_tgt=train_tgt, valid_src=valid_src,
                         valid_tgt=valid_tgt, train=train, valid=valid, dataset=dataset, src_lang=src_lang, tgt_lang=tgt_lang)
    cfg = with_overrides(cfg, "model", pretrained_src_embeddings=pretrained_src_embeddings,
                         pretrained_tgt_embeddings=pretrained_tgt_embeddings, freeze_embeddings=freeze_embeddings)
    _train("translation", cfg, output, resume, tokenizer, quiet, device, max_steps=max_steps, max_minutes=max_minutes, seed=seed)


def _config(path: Optional[Path], cls: type):
    from nlp_rnn.config import load_config

    return cls() if path is None else load_config(path, cls)


def _train(task: str, cfg, output: Path, resume: bool, tokenizer: Optional[Path], quiet: bool, device: str,
           **train_overrides) -> None:
    """Runs any task's training with the common options and prints the one-line summary (process 0 only under torchrun)."""
    from nlp_rnn.task import train, with_overrides

    summary = train(task, with_overrides(cfg, "train", **train_overrides), output, resume=resume, tokenizer_dir=tokenizer,
                    progress_bar=not quiet, device=device)
    if summary.get("rank", 0) != 0:
        return
    best, key = summary["best"] or {}, summary["score_key"]
    typer.echo(f"stopped ({summary['stopped']}) at step {summary['step']}; best {key} {best.get(key, float('nan')):.4g} "
               f"at step {best.get('step')}; model: {output / 'best'}")


@train_app.command("classifier")
def train_classifier_cmd(
    config: Path = typer.Option(..., "--config", help="YAML config (see configs/sst2.yaml)."),
    output: Path = OUTPUT_OPT,
    train: Optional[str] = typer.Option(None, "--train", help="Training TSV/CSV/JSONL."),
    valid: Optional[str] = typer.Option(None, "--valid", help="Validation TSV/CSV/JSONL."),
    dataset: Optional[str] = typer.Option(None, help="Hugging Face Hub dataset, e.g. stanfordnlp/sst2."),
    train_split: Optional[str] = TRAIN_SPLIT_OPT,
    valid_split: Optional[str] = VALID_SPLIT_OPT,
    text_column: Optional[str] = typer.Option(None, help="Text column (default: the config's, 'sentence')."),
    label_column: Optional[str] = typer.Option(None, help="Label column (default: the config's, 'label')."),
    label_names: Optional[str] = typer.Option(None, "--label-names", help="Names the labels are shown as, e.g. "
                                              "'0=negative,1=positive' (config: data.label_names)."),
    pretrained_embeddings: Optional[str] = PRETRAINED_OPT,
    freeze_embeddings: Optional[bool] = FREEZE_OPT,
    tokenizer: Optional[Path] = TOKENIZER_OPT,
    max_steps: Optional[int] = MAX_STEPS_OPT,
    max_minutes: Optional[float] = MAX_MINUTES_OPT,
    seed: Optional[int] = SEED_OPT,
    resume: bool = RESUME_OPT,
    quiet: bool = QUIET_OPT,
    device: str = DEVICE_OPT,
) -> None:
    """Train a sentence classifier (e.g. sentiment) from labelled text."""
    from nlp_rnn.config import ClassifierConfig
    from nlp_rnn.task import with_overrides

    cfg = with_overrides(_config(config, ClassifierConfig), "data", train=train, valid=valid, dataset=dataset, train_split=train_split,
                         valid_split=valid_split, text_column=text_column, label_column=label_column,
                         label_names=_mapping(label_names, "--label-names"))
    cfg = with_overrides(cfg, "model", pretrained_embeddings=pretrained_embeddings, freeze_embeddings=freeze_embeddings)
    _train("classification", cfg, output, resume, tokenizer, quiet, device, max_steps=max_steps, max_minutes=max_minutes, seed=seed)


def _mapping(text: Optional[str], option: str) -> Optional[dict[str, str]]:
    """'0=negative,1=positive' -> {'0': 'negative', '1': 'positive'}."""
    if text is None:
        return None
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    if not pairs or any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in pairs):
        raise NlpRnnError(f"{option} must look like 0=negative,1=positive, got {text!r}")
    return {k.strip(): v.strip() for k, v in pairs}


@train_app.command("lm")
def train_lm_cmd(
    config: Optional[Path] = typer.Option(None, "--config", help="YAML config (see configs/shakespeare_char.yaml); default: built-in."),
    output: Path = OUTPUT_OPT,
    train: List[str] = typer.Option([], "--train", help="Training text file(s), or TSV/CSV/JSONL tables with --text-column."),
    valid: List[str] = typer.Option([], "--valid", help="Validation file(s)."),
    valid_fraction: Optional[float] = typer.Option(None, help="No --valid: hold out this last fraction of the training text (e.g. 0.1)."),
    dataset: Optional[str] = DATASET_OPT,
    train_split: Optional[str] = TRAIN_SPLIT_OPT,
    valid_split: Optional[str] = VALID_SPLIT_OPT,
    text_column: Optional[str] = typer.Option(None, help="Text column of tables and Hub datasets (default: text)."),
    condition_column: Optional[str] = typer.Option(None, help="Label column to condition generation on (sentence mode)."),
    mode: Optional[str] = typer.Option(None, help="stream (one token stream per file, truncated BPTT) or sentence (one row = one sequence)."),
    bptt: Optional[int] = typer.Option(None, help="Stream mode: window length of truncated backpropagation through time."),
    streams: Optional[int] = typer.Option(None, help="Stream mode: batch rows (contiguous parts of the corpus)."),
    tokenizer: Optional[Path] = TOKENIZER_OPT,
    max_steps: Optional[int] = MAX_STEPS_OPT,
    max_minutes: Optional[float] = MAX_MINUTES_OPT,
    seed: Optional[int] = SEED_OPT,
    resume: bool = RESUME_OPT,
    quiet: bool = QUIET_OPT,
    device: str = DEVICE_OPT,
) -> None:
    """Train a recurrent language model on raw text (character or subword level)."""
    from nlp_rnn.lm_task import LMConfig
    from nlp_rnn.task import with_overrides

    cfg = _config(config, LMConfig)
    if condition_column and mode is None:
        mode = "sentence"
    cfg = with_overrides(cfg, "data", train=tuple(train) or None, valid=tuple(valid) or None, valid_fraction=valid_fraction,
                         dataset=dataset, train_split=train_split, valid_split=valid_split, text_column=text_column,
                         condition_column=condition_column, mode=mode, bptt=bptt, streams=streams)
    _train("language_model", cfg, output, resume, tokenizer, quiet, device, max_steps=max_steps, max_minutes=max_minutes, seed=seed)


@tokenizer_app.command("train")
def tokenizer_train_cmd(
    output: Path = typer.Option(..., "--output", help="Folder for the sentencepiece model(s)."),
    src: List[Path] = typer.Option(..., "--src", help="Source-side text file(s), one sentence per line."),
    tgt: List[Path] = typer.Option([], "--tgt", help="Target-side text file(s); omit for a one-sided tokenizer."),
    vocab_size: int = typer.Option(8000, help="Number of pieces."),
    model_type: str = typer.Option("bpe", help="bpe, unigram, word (one piece per word) or char."),
    joint: bool = typer.Option(True, "--joint/--separate", help="One model for both sides, or one per side."),
) -> None:
    """Train a sentencepiece tokenizer (byte fallback, fixed pad/unk/bos/eos ids)."""
    from nlp_rnn.config import TokenizerConfig
    from nlp_rnn.data import read_lines
    from nlp_rnn.tokenizer import Tokenizer

    cfg = TokenizerConfig(model_type=model_type, vocab_size=vocab_size, joint=joint)
    src_text = [line for f in src for line in read_lines(f) if line.strip()]
    tgt_text = [line for f in tgt for line in read_lines(f) if line.strip()] if tgt else None
    tok = Tokenizer.train(cfg, src_text, tgt_text)
    for path in tok.save(output):
        typer.echo(str(path))


# ----------------------------------------------------------------------------- translate


def _plot_attention(translation, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise NlpRnnError("--attention-plot needs matplotlib: pip install 'nlp-rnn[plot]'") from None
    if translation.attention is None:
        raise NlpRnnError("--attention-plot: this model has no attention (attention: none)")
    weights = translation.attention.numpy()
    fig, ax = plt.subplots(figsize=(max(4, 0.45 * weights.shape[1] + 2), max(3, 0.4 * weights.shape[0] + 1.5)))
    ax.imshow(weights, cmap="viridis", aspect="auto", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(translation.src_pieces)), translation.src_pieces, rotation=90)
    ax.set_yticks(range(len(translation.pieces)), translation.pieces)
    ax.set_xlabel("source pieces")
    ax.set_ylabel("target pieces")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _resolve_model(model: Optional[Path], task: str) -> Path:
    from nlp_rnn.defaults import default_model

    return model if model is not None else default_model(task)


@app.command()
def translate(
    texts: Optional[List[str]] = typer.Argument(None, help="Sentences to translate; none: read --input or standard input."),
    model: Optional[Path] = typer.Option(None, "--model", help="Bundle or training folder (default: checkpoints/multi30k-de-en, the shipped German->English Multi30k model)."),
    input: Optional[Path] = typer.Option(None, "--input", help="File with one sentence per line."),
    output: Optional[Path] = typer.Option(None, "--output", help="Write translations here instead of standard output."),
    beam_size: Optional[int] = typer.Option(None, "--beam-size", help="1: greedy (default: the model's)."),
    n_best: int = typer.Option(1, "--n-best", help="Hypotheses per sentence, with scores (at most --beam-size)."),
    batch_size: int = typer.Option(0, "--batch-size", help="Sentences per batch (0: 256 greedy, 64 beam)."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 where the CPU has it), fp32 (exact), bf16 or int8 (CPU)."),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="Hard cap on output pieces."),
    length_penalty: Optional[float] = typer.Option(None, "--length-penalty", help="GNMT alpha for beam search (0: none)."),
    no_repeat_ngram: Optional[int] = typer.Option(None, "--no-repeat-ngram", help="Forbid repeating n-grams of this size."),
    fmt: str = typer.Option("text", "--format", help="text or jsonl."),
    attention_plot: Optional[Path] = typer.Option(None, "--attention-plot", help="PNG heatmap of the first sentence's attention."),
    device: str = DEVICE_OPT,
    engine: str = ENGINE_OPT,
) -> None:
    """Translate raw text: output line N belongs to input line N."""
    from nlp_rnn.export import load_for
    from nlp_rnn.translation_task import Translator

    if fmt not in ("text", "jsonl"):
        raise NlpRnnError(f"--format must be text or jsonl, got {fmt!r}")
    for name, value in (("--beam-size", beam_size), ("--n-best", n_best), ("--max-length", max_length)):
        if value is not None and value < 1:
            raise NlpRnnError(f"{name} must be at least 1, got {value}")
    if batch_size < 0:
        raise NlpRnnError(f"--batch-size must be positive (or 0 for automatic), got {batch_size}")
    translator = Translator(load_for(engine, _resolve_model(model, "translation"), device), precision)
    opts = translator.options(beam_size=beam_size, max_length=max_length, length_penalty=length_penalty,
                              no_repeat_ngram=no_repeat_ngram, attention=attention_plot is not None)
    if n_best > opts.beam_size:
        raise NlpRnnError(f"--n-best {n_best} needs --beam-size of at least {n_best}")
    opts = replace(opts, n_best=n_best)
    batch_size = batch_size or (256 if opts.beam_size == 1 else 64)
    lines = iter(texts) if texts else read_input_lines(input)
    total = len(texts) if texts else _count_lines(input)
    sink = open(output, "w", encoding="utf-8") if output else sys.stdout
    progress = None
    if output is not None:  # a bar on the terminal only when the translations go to a file
        from tqdm import tqdm

        progress = tqdm(total=total, unit="line", file=sys.stderr, mininterval=1.0)
    try:
        for number, (source, hyps) in enumerate(translator.stream(lines, opts, batch_size), 1):
            if number == 1 and attention_plot is not None and hyps:
                _plot_attention(hyps[0], attention_plot)
            sink.write(_format_translation(number, source, hyps, n_best, fmt) + "\n")
            if progress is not None:
                progress.update(1)
    finally:
        if progress is not None:
            progress.close()
        if output:
            sink.close()


def _format_translation(number: int, source: str, hyps: list, n_best: int, fmt: str) -> str:
    if fmt == "jsonl":
        return json.dumps({"line": number, "source": source,
                           "translations": [{"text": h.text, "score": round(h.score, 4), "log_prob": round(h.log_prob, 4)} for h in hyps]},
                          ensure_ascii=False)
    if n_best == 1:
        return hyps[0].text if hyps else ""
    return "\t".join(f"{h.text}\t{h.score:.4f}" for h in hyps)


@app.command()
def classify(
    texts: Optional[List[str]] = typer.Argument(None, help="Texts to classify; none: read --input or standard input."),
    model: Optional[Path] = typer.Option(None, "--model", help="Bundle or training folder (default: checkpoints/sst2, the shipped SST-2 sentiment model)."),
    input: Optional[Path] = typer.Option(None, "--input", help="File with one text per line."),
    output: Optional[Path] = typer.Option(None, "--output", help="Write results here instead of standard output."),
    batch_size: int = typer.Option(128, "--batch-size", help="Texts per batch."),
    fmt: str = typer.Option("text", "--format", help="text (label name<TAB>probability) or jsonl (label name, label_id and every class's probability)."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, bf16, int8 (CPU, faster) or auto."),
    device: str = DEVICE_OPT,
    engine: str = ENGINE_OPT,
) -> None:
    """Classify raw text (e.g. sentiment): output line N belongs to input line N."""
    from nlp_rnn.classification_task import Predictor
    from nlp_rnn.export import load_for

    if fmt not in ("text", "jsonl"):
        raise NlpRnnError(f"--format must be text or jsonl, got {fmt!r}")
    if batch_size < 1:
        raise NlpRnnError(f"--batch-size must be at least 1, got {batch_size}")
    predictor = Predictor(load_for(engine, _resolve_model(model, "classification"), device), precision)
    lines = iter(texts) if texts else read_input_lines(input)
    sink = open(output, "w", encoding="utf-8") if output else sys.stdout
    try:
        for number, (text, p) in enumerate(predictor.stream(lines, batch_size), 1):
            if fmt == "jsonl":
                row = {"line": number, "text": text, "label": p.label, "label_id": p.label_id, "probability": round(p.probability, 6),
                       "probabilities": {k: round(v, 6) for k, v in p.probabilities.items()}}
                sink.write(json.dumps(row, ensure_ascii=False) + "\n")
            else:
                sink.write(f"{p.label}\t{p.probability:.4f}\n")
    finally:
        if output:
            sink.close()


# ----------------------------------------------------------------------------- forecasting, generation, demos


@demo_app.command("adding")
def demo_adding(
    cell: List[str] = typer.Option(["rnn_tanh", "gru", "lstm"], "--cell", help="Cells to compare (repeat the option)."),
    length: List[int] = typer.Option([50, 100, 200], "--length", help="Sequence lengths T (repeat the option)."),
    lr: List[float] = typer.Option([0.001, 0.003, 0.01], "--lr", help="Learning-rate grid, the same for every cell."),
    seeds: int = typer.Option(3, "--seeds", help="Seeds per setting."),
    steps: int = typer.Option(1500, "--steps", help="Training steps per run (batches of 64)."),
    hidden: int = typer.Option(32, "--hidden", help="Hidden units, the same for every cell."),
    gradients: Optional[Path] = typer.Option(None, "--gradients", help="PNG of ||dL/dh_t|| against t, at initialisation and "
                                                                       "after training, for the longest T."),
    report: Optional[Path] = typer.Option(None, "--report", help="Every run's MSE as JSON."),
) -> None:
    """The adding problem: which cells learn a sum of two marked values as T grows (MSE; a constant gives 1/6)."""
    import torch
    from tqdm import tqdm

    from nlp_rnn import adding
    from nlp_rnn.config import CELLS

    for name in cell:
        if name not in CELLS:
            raise NlpRnnError(f"--cell must be one of {', '.join(CELLS)}, got {name!r}")
    for name, values in (("--length", length), ("--lr", lr)):
        if any(v <= 0 for v in values):
            raise NlpRnnError(f"{name} values must be positive")
    if min(length) < 2 or seeds < 1 or steps < 1 or hidden < 1:
        raise NlpRnnError("--length must be at least 2; --seeds, --steps and --hidden at least 1")
    if gradients is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise NlpRnnError("--gradients needs matplotlib: pip install 'nlp-rnn[plot]'") from None
    results, trained = [], {}
    bar = tqdm(total=len(cell) * len(length) * len(lr) * seeds, unit="run", file=sys.stderr)
    for name in cell:
        for t in length:
            for rate in lr:
                runs = []
                for seed in range(1, seeds + 1):
                    runs.append(adding.train_adding(name, t, rate, steps, seed, hidden))
                    bar.update(1)
                results.append(adding.AddingResult(name, t, rate, [mse for _, mse in runs]))
                trained[(name, t, rate)] = [(model, seed) for (model, _), seed in zip(runs, range(1, seeds + 1))]
    bar.close()
    for line in adding.describe_lengths(results):
        typer.echo(line)
    if gradients is not None:
        longest = max(length)
        x, y = adding.adding_batch(64, longest, torch.Generator().manual_seed(12345))
        norms = {}
        chosen = {(r.cell, r.length): r for r in adding.best_per_setting(results)}
        for name in cell:
            best = chosen[(name, longest)]  # the learning rate of the best mean, its best seed
            model, seed = min(zip(trained[(name, longest, best.lr)], best.mses), key=lambda pair: pair[1])[0]
            torch.manual_seed(seed)
            fresh = adding.AddingModel(name, hidden).double()  # float64: tiny gradients stay visible
            model = model.double()
            norms[name] = (adding.gradient_norms(fresh.rnn, name, x.double(), adding.mse_loss_of_last(fresh, y.double())),
                           adding.gradient_norms(model.rnn, name, x.double(), adding.mse_loss_of_last(model, y.double())))
        adding.plot_gradients(norms, longest, gradients)
        typer.echo(f"gradients: {gradients}")
    if report is not None:
        rows = [{"cell": r.cell, "length": r.length, "lr": r.lr, "mse": r.mses, "mean": r.mean, "sd": r.sd, "solved": r.solved}
                for r in results]
        report.write_text(json.dumps({"steps": steps, "hidden": hidden, "seeds": seeds, "runs": rows}, indent=2) + "\n")
        typer.echo(f"report: {report}")


@train_app.command("forecaster")
def train_forecaster_cmd(
    config: Optional[Path] = typer.Option(None, "--config", help="YAML config (see configs/nyse.yaml); default: built-in."),
    output: Path = OUTPUT_OPT,
    data: Optional[str] = typer.Option(None, "--data", help="CSV/TSV/JSONL/Parquet, one row per time step, in time order."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Hugging Face Hub dataset holding the series."),
    target: Optional[str] = typer.Option(None, "--target", help="Column to forecast."),
    features: Optional[str] = typer.Option(None, "--features", help="Comma-separated input columns (default: the target)."),
    categorical: Optional[str] = typer.Option(None, "--categorical", help="Comma-separated columns of the predicted row (one-hot)."),
    lags: Optional[int] = typer.Option(None, "--lags", help="Window length L: rows t-L .. t-1 predict row t."),
    split_column: Optional[str] = typer.Option(None, "--split-column", help="TRUE/FALSE column: the training period."),
    date_column: Optional[str] = typer.Option(None, "--date-column", help="ISO date column (with --test-from)."),
    test_from: Optional[str] = typer.Option(None, "--test-from", help="First date of the test period."),
    valid_fraction: Optional[float] = typer.Option(None, "--valid-fraction", help="Last part of the training period that validates."),
    refit: Optional[bool] = typer.Option(None, "--refit/--no-refit", help="After early stopping, train again on the whole "
                                         "training period for the epochs and learning rates chosen (first run kept in selection/)."),
    max_steps: Optional[int] = MAX_STEPS_OPT,
    max_minutes: Optional[float] = MAX_MINUTES_OPT,
    seed: Optional[int] = SEED_OPT,
    resume: bool = RESUME_OPT,
    quiet: bool = QUIET_OPT,
    device: str = DEVICE_OPT,
) -> None:
    """Train a recurrent forecaster on numeric columns (e.g. NYSE trading volume)."""
    from nlp_rnn.forecast_task import ForecastConfig
    from nlp_rnn.task import with_overrides

    split = lambda text: tuple(c.strip() for c in text.split(",") if c.strip()) if text is not None else None  # noqa: E731
    cfg = with_overrides(_config(config, ForecastConfig), "data", data=data, dataset=dataset, target=target, features=split(features),
                         categorical=split(categorical), lags=lags, split_column=split_column, date_column=date_column,
                         test_from=test_from, valid_fraction=valid_fraction, refit=refit)
    _train("forecasting", cfg, output, resume, None, quiet, device, max_steps=max_steps, max_minutes=max_minutes, seed=seed)


@app.command()
def forecast(
    model: Path = typer.Option(..., "--model", help="Forecaster bundle or training folder."),
    data: Path = typer.Option(..., "--data", help="The series: the bundle's columns, one row per time step."),
    output: Optional[Path] = typer.Option(None, "--output", help="Write the CSV here instead of standard output."),
    device: str = DEVICE_OPT,
) -> None:
    """Forecast every row of a series from its previous rows, and the step after the last row (CSV out)."""
    import csv

    from nlp_rnn.bundle import load
    from nlp_rnn.forecast_task import Predictor

    predictor = Predictor(load(model, device=device))
    series = predictor.read(str(data))
    predicted, next_value = predictor.predict(series)
    lags, target = predictor.cfg.data.lags, predictor.cfg.data.target
    log.info("the first %d rows have no %d earlier rows: their forecast is empty", lags, lags)
    sink = open(output, "w", encoding="utf-8", newline="") if output else sys.stdout
    try:
        writer = csv.writer(sink)
        writer.writerow(["row"] + (["date"] if series.dates else []) + [target, "forecast"])
        for i in range(series.rows):
            value = "" if i < lags else f"{float(predicted[i]):.6g}"
            writer.writerow([i + 1] + ([series.dates[i]] if series.dates else []) + [f"{float(series.numbers[target][i]):.6g}", value])
        writer.writerow(["next"] + ([""] if series.dates else []) + ["", f"{next_value:.6g}"])
    finally:
        if output:
            sink.close()


@app.command()
def generate(
    prompts: Optional[List[str]] = typer.Argument(None, help="Prompts to continue; none: --input, standard input (one per line), or an empty prompt."),
    model: Optional[Path] = typer.Option(None, "--model", help="Language model bundle or training folder (default: checkpoints/shakespeare-char)."),
    input: Optional[Path] = typer.Option(None, "--input", help="File with one prompt per line."),
    output: Optional[Path] = typer.Option(None, "--output", help="Write samples here instead of standard output."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="Sampling temperature; 0 is greedy (default: the model's, 1.0)."),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="Sample only from the k most probable tokens (0: off)."),
    top_p: Optional[float] = typer.Option(None, "--top-p", help="Sample only from the smallest set with probability >= p, in (0, 1]."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed: the same seed gives the same samples."),
    num_samples: int = typer.Option(1, "--num-samples", help="Samples per prompt."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Stop after this many tokens (default: 256)."),
    stop: Optional[str] = typer.Option(None, "--stop", help="Stop when this string appears (it is not printed)."),
    greedy: bool = typer.Option(False, "--greedy", help="The most probable token at every step."),
    beam_size: int = typer.Option(1, "--beam-size", help="Beam search with this many beams (the best sequence)."),
    condition: Optional[str] = typer.Option(None, "--condition", help="Conditional models: the label to generate for."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, bf16, int8 (CPU) or auto."),
    fmt: str = typer.Option("text", "--format", help="text (prompt and continuation) or jsonl."),
    device: str = DEVICE_OPT,
) -> None:
    """Continue prompts with a language model: sampling, greedy or beam search. Streams to a terminal."""
    from nlp_rnn.bundle import load
    from nlp_rnn.lm_task import Generator

    if fmt not in ("text", "jsonl"):
        raise NlpRnnError(f"--format must be text or jsonl, got {fmt!r}")
    generator = Generator(load(_resolve_model(model, "language_model"), device=device), precision)
    generator.condition_id(condition)  # an unknown label is refused before any input is read
    if prompts:
        lines = list(prompts)
    elif input is not None or (sys.stdin is not None and not sys.stdin.isatty()):
        lines = list(read_input_lines(input))
    else:
        lines = []
    lines = lines or [""]  # nothing given: continue the empty prompt
    sink = open(output, "w", encoding="utf-8") if output else sys.stdout
    live = output is None and fmt == "text" and sys.stdout.isatty()
    options = dict(num_samples=num_samples, temperature=temperature, top_k=top_k, top_p=top_p, max_tokens=max_tokens,
                   stop=stop, beam_size=beam_size, greedy_search=greedy, condition=condition)
    generator.check(**options)  # bad options fail before anything is printed
    try:
        for number, prompt in enumerate(lines, 1):
            step_seed = None if seed is None else seed + 1_000_003 * (number - 1)
            show = None
            if live:  # the first sample is printed as it grows, the others when they are done
                sink.write(prompt)
                sink.flush()
                show = lambda text: (sink.write(text), sink.flush())  # noqa: E731
            samples = generator.generate([prompt], **options, seed=step_seed, on_text=show)[0]
            for j, s in enumerate(samples):
                last = number == len(lines) and j + 1 == len(samples)
                if fmt == "jsonl":
                    sink.write(json.dumps({"line": number, "sample": j + 1, "prompt": prompt, "text": s.text,
                                           "log_prob": round(s.log_prob, 4), "tokens": len(s.tokens),
                                           "condition": s.condition}, ensure_ascii=False) + "\n")
                elif live and j == 0:
                    sink.write("\n" if last else "\n\n")
                else:
                    sink.write(prompt + s.text + ("\n" if last else "\n\n"))
    finally:
        if output:
            sink.close()


# ----------------------------------------------------------------------------- evaluate


@app.command()
def evaluate(
    model: Optional[Path] = typer.Option(None, "--model", help="Bundle or training folder."),
    src: List[Path] = typer.Option([], "--src", help="Source file (translation); repeat with --ref for several test sets."),
    ref: List[Path] = typer.Option([], "--ref", help="Reference file, line-aligned with the --src of the same position."),
    data: List[Path] = typer.Option([], "--data", help="Test set file(s): TSV/CSV/JSONL tables (translation: the language columns, "
                                                        "classification: --text-column/--label-column), or text files (language models)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Hugging Face Hub dataset name."),
    split: List[str] = typer.Option([], "--split", help="Hub split(s) to evaluate (default: test)."),
    src_lang: Optional[str] = typer.Option(None, help="Source column (default: the model's source language)."),
    tgt_lang: Optional[str] = typer.Option(None, help="Target column (default: the model's target language)."),
    text_column: Optional[str] = typer.Option(None, help="Text column (default: the model's)."),
    label_column: Optional[str] = typer.Option(None, help="Label (or condition) column (default: the model's)."),
    beam_size: Optional[int] = typer.Option(None, "--beam-size", help="1: greedy (default: the model's)."),
    length_penalty: Optional[float] = typer.Option(None, "--length-penalty", help="GNMT alpha for beam search."),
    batch_size: int = typer.Option(0, "--batch-size", help="Sentences per batch (0: 256 greedy, 64 beam)."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 where the CPU has it), fp32 (exact), bf16 or int8 (CPU)."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write all scores and settings as JSON."),
    hyps: Optional[Path] = typer.Option(None, "--hyps", help="Write hypotheses (several test sets: NAME.SET.EXT)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Forecasters: PNG of forecast and actual over the test period."),
    device: str = DEVICE_OPT,
    engine: str = ENGINE_OPT,
) -> None:
    """Score a model on whole test sets: BLEU/chrF, accuracy/F1, perplexity or R², as its task says."""
    from nlp_rnn import task as tasks
    from nlp_rnn.export import load_for

    if beam_size is not None and beam_size < 1:
        raise NlpRnnError(f"--beam-size must be at least 1, got {beam_size}")
    bundle = load_for(engine, _resolve_model(model, "translation" if src else "classification"), device)
    task = tasks.of(bundle)
    request = tasks.EvalRequest(src=src, ref=ref, data=data, dataset=dataset, splits=split, src_lang=src_lang, tgt_lang=tgt_lang,
                                text_column=text_column, label_column=label_column, beam_size=beam_size,
                                length_penalty=length_penalty, batch_size=batch_size, precision=precision, hyps=hyps,
                                plot=plot)
    result = task.evaluate(bundle, request)
    for line in task.report(result):
        typer.echo(line)
    if report is not None:
        report.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        typer.echo(f"report: {report}")


@app.command()
def export(
    model: Path = typer.Argument(..., help="Bundle or training folder (translation model or classifier)."),
    fmt: str = typer.Option("onnx", "--format", help="onnx (the only format)."),
    output: Path = typer.Option(..., "--output", help="Folder for the graphs, tokenizer, config and manifest."),
) -> None:
    """Export a model to ONNX: encoder and one decoder step (or the classifier), dynamic batch and length axes."""
    from nlp_rnn.bundle import load
    from nlp_rnn.export import export as export_model

    if fmt != "onnx":
        raise NlpRnnError(f"--format must be onnx, got {fmt!r}")
    folder = export_model(load(model, device="cpu"), output)
    typer.echo(f"exported {model} to {folder} ({', '.join(sorted(p.name for p in folder.glob('*.onnx')))}); "
               f"run it with --engine onnxruntime --model {folder}")


@app.command()
def serve(
    model: List[str] = typer.Option([], "--model", help="NAME=PATH of a model to serve (repeat; default: the shipped "
                                    "translation, sentiment and language models)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8080, "--port", help="TCP port."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 where the CPU has it), fp32 (exact), bf16 or int8 (CPU)."),
    max_batch: int = typer.Option(64, "--max-batch", help="Most texts in one forward pass (requests waiting while the "
                                  "model is busy run together next, up to 4 times this, sorted by length)."),
    max_wait_ms: float = typer.Option(0.0, "--max-wait-ms", help="How long an idle server waits for more requests to batch with."),
    max_texts: int = typer.Option(64, "--max-texts", help="Most texts in one request."),
    max_chars: int = typer.Option(2000, "--max-chars", help="Most characters in one text."),
    device: str = DEVICE_OPT,
) -> None:
    """Serve models over HTTP: POST /translate, /classify, /generate with {"texts": [...]}; GET /health, /models, /docs."""
    from nlp_rnn.defaults import default_model
    from nlp_rnn.serve import Limits
    from nlp_rnn.serve import serve as run_server

    specs = []
    for item in model:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise NlpRnnError(f"--model must be NAME=PATH, got {item!r}")
        specs.append((name.strip(), Path(path.strip())))
    if not specs:
        for task in ("translation", "classification", "language_model"):
            path = default_model(task)
            specs.append((path.name, path))
    for name, value in (("--port", port), ("--max-batch", max_batch), ("--max-texts", max_texts), ("--max-chars", max_chars)):
        if value < (0 if name == "--port" else 1):
            raise NlpRnnError(f"{name} must be at least 1, got {value}")
    run_server(specs, host, port, device, precision, max_batch, max_wait_ms, Limits(max_texts=max_texts, max_chars=max_chars))


@app.command()
def info(
    model: Optional[Path] = typer.Argument(None, help="Bundle or training folder (default: the shipped translation model)."),
    as_json: bool = typer.Option(False, "--json", help="Print everything as JSON."),
) -> None:
    """Show a model: task, architecture, languages/labels, tokenizer, data, scores, parameters per component."""
    from nlp_rnn.bundle import load
    from nlp_rnn.info import describe

    details = describe(load(_resolve_model(model, "translation")))
    if as_json:
        typer.echo(json.dumps(details, indent=2, ensure_ascii=False))
        return
    shown = {"path", "task", "architecture", "tokenizer", "training_data", "best_validation", "parameters"}
    typer.echo(f"model:        {details['path']}")
    typer.echo(f"task:         {details['task']}")
    for key, value in details.items():  # the task's own lines: languages, labels, mode, ...
        if key not in shown and key not in ("step", "library_version", "format_version") and value is not None:
            typer.echo(f"{key + ':':<13} {', '.join(map(str, value)) if isinstance(value, list) else value}")
    typer.echo("architecture: " + ", ".join(f"{k}={v}" for k, v in details["architecture"].items()))
    if "tokenizer" in details:
        typer.echo("tokenizer:    " + ", ".join(f"{k}={v}" for k, v in details["tokenizer"].items()))
    typer.echo(f"data:         {json.dumps(details['training_data'], ensure_ascii=False)}")
    typer.echo(f"best:         {json.dumps(details['best_validation'])}")
    typer.echo("parameters:")
    for name, count in details["parameters"].items():
        typer.echo(f"  {name:<17}{count:>12,}")


# ----------------------------------------------------------------------------- entry point


def main(argv: Optional[list[str]] = None) -> int:
    rank = int(os.environ.get("RANK", "0"))  # under torchrun only process 0 reports progress; errors name their process
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="%(message)s" if rank == 0 else f"[process {rank}] %(message)s", stream=sys.stderr)
    logging.getLogger("datasets").setLevel(logging.WARNING)
    try:
        app(args=argv, standalone_mode=False, prog_name="nlp-rnn")
    except NlpRnnError as err:
        _err(f"error: {err}")
        return 2
    except (KeyboardInterrupt, BrokenPipeError) as err:
        return 130 if isinstance(err, KeyboardInterrupt) else 0
    except Exception as err:
        # typer may vendor its own click, so its exceptions are recognised by class name.
        kinds = {cls.__name__ for cls in type(err).__mro__}
        if "ClickException" in kinds:  # usage errors: click's own one-line message
            err.show()
            return err.exit_code
        if "Exit" in kinds:
            return err.exit_code
        if "Abort" in kinds:
            _err("interrupted")
            return 130
        if os.environ.get("NLP_RNN_DEBUG"):  # a bug of ours: still one line for users
            raise
        _err(f"error: internal error ({type(err).__name__}: {err}); rerun with NLP_RNN_DEBUG=1 and report it")
        return 1
    return 0


def entry() -> None:
    sys.exit(main())
