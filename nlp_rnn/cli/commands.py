"""The commands every task shares: evaluate, export, serve, info, plot and `tokenizer train`. Each finds what
is particular to a model through its task in the registry."""

import json
from pathlib import Path
from typing import Optional

import typer

from nlp_rnn import options
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.tasks import base as tasks
from nlp_rnn.tasks import defaults
from nlp_rnn.tasks.engines import load_for


def evaluate(
    model: Optional[list[Path]] = options.models("the shipped model of the test set's task"),
    src: list[Path] = typer.Option(
        [], "--src", help="Source file (translation); repeat with --ref for several test sets."
    ),
    ref: list[Path] = typer.Option(
        [], "--ref", help="Reference file, line-aligned with the --src of the same position."
    ),
    data: list[Path] = typer.Option(
        [],
        "--data",
        help="Test set file(s): TSV/CSV/JSONL tables (translation: the language "
        "columns, classification: --text-column/--label-column), or text files (language "
        "models).",
    ),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Hugging Face Hub dataset name."),
    split: list[str] = typer.Option([], "--split", help="Hub split(s) to evaluate (default: test)."),
    src_lang: Optional[str] = typer.Option(
        None, help="Source column (default: the model's source language)."
    ),
    tgt_lang: Optional[str] = typer.Option(
        None, help="Target column (default: the model's target language)."
    ),
    text_column: Optional[str] = typer.Option(None, help="Text column (default: the model's)."),
    label_column: Optional[str] = typer.Option(
        None, help="Label (or condition) column (default: the model's)."
    ),
    beam_size: Optional[int] = typer.Option(None, "--beam-size", help="1: greedy (default: the model's)."),
    length_penalty: Optional[float] = typer.Option(
        None, "--length-penalty", help="GNMT alpha for beam search."
    ),
    batch_size: int = typer.Option(
        0, "--batch-size", help="Sentences per batch (0: the task's own; 256 for translation)."
    ),
    precision: str = options.PRECISION_AUTO,
    report: Optional[Path] = typer.Option(None, "--report", help="Write all scores and settings as JSON."),
    hyps: Optional[Path] = typer.Option(
        None, "--hyps", help="Write hypotheses (several test sets: NAME.SET.EXT)."
    ),
    plot: Optional[Path] = typer.Option(
        None, "--plot", help="Forecasters: PNG of forecast and actual over the test period."
    ),
    cache_size: int = typer.Option(
        0, "--cache-size", help="Language models: a neural cache of this many words."
    ),
    cache_theta: float = typer.Option(
        0.3, "--cache-theta", help="Neural cache: the sharpness of its attention."
    ),
    cache_lambda: float = typer.Option(
        0.1, "--cache-lambda", help="Neural cache: its weight beside the model's."
    ),
    dynamic_lr: float = typer.Option(
        0.0,
        "--dynamic-lr",
        help="Language models: dynamic evaluation, an SGD step of this rate after each scored segment (0: off).",
    ),
    dynamic_decay: float = typer.Option(
        0.0,
        "--dynamic-decay",
        help="Dynamic evaluation: pull back towards the trained weights by this share.",
    ),
    dynamic_window: int = typer.Option(
        20, "--dynamic-window", help="Dynamic evaluation: tokens per scored-then-learned segment."
    ),
    device: str = options.DEVICE,
    engine: str = options.ENGINE,
) -> None:
    """Score a model on whole test sets: BLEU/chrF, accuracy/F1, perplexity or R², as its task says."""
    if beam_size is not None and beam_size < 1:
        raise NlpRnnError(f"--beam-size must be at least 1, got {beam_size}")
    bundle = load_for(engine, model or defaults.for_evaluation(bool(src)), device)
    task = tasks.of(bundle)
    request = tasks.EvalRequest(
        src=src,
        ref=ref,
        data=data,
        dataset=dataset,
        splits=split,
        src_lang=src_lang,
        tgt_lang=tgt_lang,
        text_column=text_column,
        label_column=label_column,
        beam_size=beam_size,
        length_penalty=length_penalty,
        batch_size=batch_size,
        precision=precision,
        hyps=hyps,
        plot=plot,
        cache_size=cache_size,
        cache_theta=cache_theta,
        cache_lambda=cache_lambda,
        dynamic_lr=dynamic_lr,
        dynamic_decay=dynamic_decay,
        dynamic_window=dynamic_window,
    )
    tasks.check_request(task, request)
    result = task.evaluate(bundle, request)
    for line in task.report(result):
        typer.echo(line)
    if report is not None:
        report.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        typer.echo(f"report: {report}")


def export(
    model: Path = typer.Argument(..., help="Bundle or training folder (translation model or classifier)."),
    fmt: str = typer.Option("onnx", "--format", help="onnx (the only format)."),
    output: Path = typer.Option(
        ..., "--output", help="Folder for the graphs, tokenizer, config and manifest."
    ),
) -> None:
    """Export a model to ONNX: encoder and one decoder step (or the classifier), dynamic batch and length axes."""
    from nlp_rnn.deploy.onnx import export as export_model

    if fmt != "onnx":
        raise NlpRnnError(f"--format must be onnx, got {fmt!r}")
    folder = export_model(tasks.load(model, device="cpu"), output)
    typer.echo(
        f"exported {model} to {folder} ({', '.join(sorted(p.name for p in folder.glob('*.onnx')))}); "
        f"run it with --engine onnxruntime --model {folder}"
    )


def serve(
    model: list[str] = typer.Option(
        [],
        "--model",
        help="NAME=PATH of a model to serve (repeat; default: the shipped translation, sentiment and language models).",
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8080, "--port", help="TCP port."),
    precision: str = options.PRECISION_AUTO,
    max_batch: int = typer.Option(
        64,
        "--max-batch",
        help="Most texts in one forward pass (requests waiting while the "
        "model is busy run together next, up to 4 times this, sorted by length).",
    ),
    max_wait_ms: float = typer.Option(
        0.0, "--max-wait-ms", help="How long an idle server waits for more requests to batch with."
    ),
    settle_ms: float = typer.Option(
        10.0,
        "--settle-ms",
        help="After a batch, wait up to this long for its clients' next texts to join those already "
        "queued (clients just answered send again a few ms later; 0: run whatever is queued at once).",
    ),
    max_texts: int = typer.Option(64, "--max-texts", help="Most texts in one request."),
    max_chars: int = typer.Option(2000, "--max-chars", help="Most characters in one text."),
    max_document_chars: int = typer.Option(
        100_000,
        "--max-document-chars",
        help="Most characters in one text for models that read whole documents.",
    ),
    max_body: int = typer.Option(
        1_000_000,
        "--max-body",
        help="Most bytes in one request body (at least --max-document-chars: a character is a byte or more).",
    ),
    max_pending: int = typer.Option(
        512, "--max-pending", help="Most texts waiting or running per model; beyond it: 503 with Retry-After."
    ),
    timeout: float = typer.Option(60.0, "--timeout", help="Seconds a request may take before a 504."),
    api_key: Optional[str] = typer.Option(
        None, "--api-key", help="Require 'Authorization: Bearer KEY' on every endpoint but /health."
    ),
    api_key_file: Optional[Path] = typer.Option(
        None, "--api-key-file", help="Read the key from this file (else --api-key, else $NLP_RNN_API_KEY)."
    ),
    grace: float = typer.Option(
        30.0, "--grace", help="Seconds to finish in-flight requests on SIGTERM/Ctrl-C."
    ),
    model_process: bool = typer.Option(
        True,
        "--model-process/--in-process",
        help="Run the batched models (translate, classify) in a process of their own, so that request "
        "handling and decoding do not wait for each other's interpreter lock (--in-process: one process).",
    ),
    device: str = options.DEVICE,
) -> None:
    """Serve models over HTTP: POST /translate, /classify, /generate with {"texts": [...]}; GET
    /health, /ready, /models, /metrics, /docs."""
    from nlp_rnn.deploy import guard
    from nlp_rnn.deploy import serve as server

    if port < 0:
        raise NlpRnnError(f"--port must be at least 0, got {port}")
    for name, value in (
        ("--max-batch", max_batch),
        ("--max-texts", max_texts),
        ("--max-chars", max_chars),
        ("--max-document-chars", max_document_chars),
        ("--max-pending", max_pending),
        ("--max-body", max_body),
    ):
        if value < 1:
            raise NlpRnnError(f"{name} must be at least 1, got {value}")
    if max_body < max(max_chars, max_document_chars):
        raise NlpRnnError(
            f"--max-body {max_body:,} bytes is below --max-document-chars/--max-chars "
            f"{max(max_chars, max_document_chars):,}: a text that long could never arrive (a character is a byte "
            "or more, in a JSON body with its own bytes); raise --max-body"
        )
    if settle_ms < 0 or max_wait_ms < 0:
        raise NlpRnnError("--settle-ms and --max-wait-ms must be at least 0")
    if timeout <= 0 or grace < 0:
        raise NlpRnnError("--timeout must be above 0 and --grace at least 0")
    limits = server.Limits(
        max_texts=max_texts,
        max_chars=max_chars,
        max_batch=max_batch,
        settle_ms=settle_ms,
        max_document_chars=max_document_chars,
        max_body=max_body,
        max_pending=max_pending,
        timeout_s=timeout,
    )
    key = guard.api_key(api_key, api_key_file)
    specs = [_named_model(item) for item in model] or server.default_specs()
    server.serve(specs, host, port, device, precision, max_wait_ms, limits, key, grace, model_process)


def _named_model(item: str) -> tuple[str, Path]:
    name, sep, path = item.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise NlpRnnError(f"--model must be NAME=PATH, got {item!r}")
    return name.strip(), Path(path.strip())


def info(
    model: Optional[Path] = typer.Argument(
        None, help="Bundle or training folder (default: the shipped translation model)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print everything as JSON."),
) -> None:
    """Show a model: task, architecture, languages/labels, tokenizer, data, scores, parameters per component."""
    from nlp_rnn.tasks.info import describe

    details = describe(tasks.load(model or defaults.for_info()))
    if as_json:
        typer.echo(json.dumps(details, indent=2, ensure_ascii=False))
        return
    shown = {"path", "task", "architecture", "tokenizer", "training_data", "best_validation", "parameters"}
    typer.echo(f"model:        {details['path']}")
    typer.echo(f"task:         {details['task']}")
    for key, value in details.items():  # the task's own lines: languages, labels, mode, ...
        if (
            key not in shown
            and key not in ("step", "library_version", "format_version")
            and value is not None
        ):
            typer.echo(f"{key + ':':<13} {', '.join(map(str, value)) if isinstance(value, list) else value}")
    typer.echo("architecture: " + ", ".join(f"{k}={v}" for k, v in details["architecture"].items()))
    if "tokenizer" in details:
        typer.echo("tokenizer:    " + ", ".join(f"{k}={v}" for k, v in details["tokenizer"].items()))
    typer.echo(f"data:         {json.dumps(details['training_data'], ensure_ascii=False)}")
    typer.echo(f"best:         {json.dumps(details['best_validation'])}")
    typer.echo("parameters:")
    for name, count in details["parameters"].items():
        typer.echo(f"  {name:<17}{count:>12,}")


def plot(
    runs: list[Path] = typer.Argument(..., help="Training folders (each with its metrics.jsonl)."),
    output: Path = typer.Option(..., "--output", help="Image file: .png, .svg or .pdf."),
    x: str = typer.Option("steps", "--x", help="steps or minutes (of training, validation excluded)."),
    metric: Optional[str] = typer.Option(
        None, "--metric", help="Validation score to draw (default: BLEU, accuracy, R², perplexity, loss)."
    ),
) -> None:
    """Learning curves of one or more runs: training loss and a validation score, the best point marked."""
    from nlp_rnn import curves

    key = curves.plot(runs, output, x, metric)
    typer.echo(f"{output}: training loss and {key} of {len(runs)} run(s) against {x}")


def average(
    run: Optional[Path] = typer.Argument(
        None, help="Training folder trained with train.keep_checkpoints: N."
    ),
    output: Path = typer.Option(..., "--output", help="Folder for the averaged bundle."),
    last: Optional[int] = typer.Option(None, "--last", help="Average the last N kept checkpoints."),
    best: Optional[int] = typer.Option(None, "--best", help="... or the N of best validation score."),
    model: list[Path] = typer.Option(
        [],
        "--model",
        help="Instead of a RUN: two or more models fine-tuned from one start (one train.init_seed), "
        "bundles or training folders, averaged into one (a model soup).",
    ),
) -> None:
    """Average a run's kept checkpoints into one bundle (checkpoint averaging, as OpenNMT-py and fairseq),
    or several models fine-tuned from the same weights (--model A --model B ...: a model soup)."""
    from nlp_rnn.tasks.averaged import average_checkpoints, average_models

    if model:
        if run is not None or last is not None or best is not None:
            raise NlpRnnError("average: give a RUN with --last/--best, or --model twice or more, not both")
        result = average_models(model, output)
        typer.echo(f"{result['output']}: the mean of {', '.join(result['models'])}")
        return
    if run is None:
        raise NlpRnnError("average: give a RUN with --last N or --best N, or --model A --model B ...")
    result = average_checkpoints(run, output, last, best)
    typer.echo(
        f"{result['output']}: the mean of the checkpoints of steps {', '.join(map(str, result['steps']))}"
    )


def push(
    model: Path = typer.Argument(..., help="Bundle or training folder (its best/)."),
    repo: str = typer.Option(..., "--repo", help="Hugging Face Hub model repository, ORG/NAME."),
    private: bool = typer.Option(False, "--private", help="Create the repository private."),
    dry_run: Optional[Path] = typer.Option(
        None, "--dry-run", help="Write the exact folder that would be uploaded here, and upload nothing."
    ),
) -> None:
    """Upload a bundle to the Hugging Face Hub (model card included, trainer state left out); load it
    anywhere with --model hf://ORG/NAME."""
    from nlp_rnn import card
    from nlp_rnn.bundle import resolve

    if card.hub_reference(f"hf://{repo}") is None:
        raise NlpRnnError(f"--repo {repo}: expected ORG/NAME")
    folder = resolve(model)
    tasks.load(folder)  # refuses a corrupt or foreign bundle before anything leaves the machine
    if dry_run is not None:
        out = card.upload_folder(folder, dry_run)
        typer.echo(f"{out}: {', '.join(sorted(p.name for p in out.iterdir()))} (not uploaded)")
        return
    import tempfile

    with tempfile.TemporaryDirectory() as staging:
        url = card.push(folder, repo, private, Path(staging) / "upload")
    typer.echo(f"pushed {folder} to {url}")


def tokenizer_train(
    output: Path = typer.Option(..., "--output", help="Folder for the sentencepiece model(s)."),
    src: list[Path] = typer.Option(..., "--src", help="Source-side text file(s), one sentence per line."),
    tgt: list[Path] = typer.Option(
        [], "--tgt", help="Target-side text file(s); omit for a one-sided tokenizer."
    ),
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
    for path in Tokenizer.train(cfg, src_text, tgt_text).save(output):
        typer.echo(str(path))
