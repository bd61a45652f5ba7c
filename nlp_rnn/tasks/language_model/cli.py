"""The language model's commands: `nlp-rnn train lm` options, `nlp-rnn generate`, and POST /generate."""

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import typer

from nlp_rnn import options, textio
from nlp_rnn.tasks import base as tasks
from nlp_rnn.tasks.defaults import default_model
from nlp_rnn.tasks.language_model.config import NAME
from nlp_rnn.tasks.language_model.generator import Generator


def train_options(
    train: list[str] = typer.Option(
        [], "--train", help="Training text file(s), or TSV/CSV/JSONL tables with --text-column."
    ),
    valid: list[str] = typer.Option([], "--valid", help="Validation file(s)."),
    valid_fraction: Optional[float] = typer.Option(
        None, help="No --valid: hold out this last fraction of the training text (e.g. 0.1)."
    ),
    dataset: Optional[str] = options.DATASET,
    train_split: Optional[str] = options.TRAIN_SPLIT,
    valid_split: Optional[str] = options.VALID_SPLIT,
    text_column: Optional[str] = typer.Option(
        None, help="Text column of tables and Hub datasets (default: text)."
    ),
    condition_column: Optional[str] = typer.Option(
        None, help="Label column to condition generation on (sentence mode)."
    ),
    mode: Optional[str] = typer.Option(
        None, help="stream (one token stream per file, truncated BPTT) or sentence (one row = one sequence)."
    ),
    bptt: Optional[int] = typer.Option(
        None, help="Stream mode: window length of truncated backpropagation through time."
    ),
    streams: Optional[int] = typer.Option(
        None, help="Stream mode: batch rows (contiguous parts of the corpus)."
    ),
    init_from: Optional[str] = typer.Option(
        None,
        "--init-from",
        help="Fine-tune a language model (run folder or bundle) on this text: its tokenizer and weights "
        "(config: model.init_from; the model's shape comes from it).",
    ),
) -> dict:
    """Train a recurrent language model on raw text (character or subword level)."""
    if condition_column and mode is None:
        mode = "sentence"
    return {
        "data": dict(
            train=tuple(train) or None,
            valid=tuple(valid) or None,
            valid_fraction=valid_fraction,
            dataset=dataset,
            train_split=train_split,
            valid_split=valid_split,
            text_column=text_column,
            condition_column=condition_column,
            mode=mode,
            bptt=bptt,
            streams=streams,
        ),
        "model": dict(init_from=init_from),
    }


def generate(
    prompts: Optional[list[str]] = typer.Argument(
        None, help="Prompts to continue; none: --input, standard input (one per line), or an empty prompt."
    ),
    model: Optional[Path] = options.model("checkpoints/shakespeare-char"),
    input: Optional[Path] = options.input_file("File with one prompt per line."),
    output: Optional[Path] = options.output("Write samples here instead of standard output."),
    temperature: Optional[float] = typer.Option(
        None, "--temperature", help="Sampling temperature; 0 is greedy (default: the model's, 1.0)."
    ),
    top_k: Optional[int] = typer.Option(
        None, "--top-k", help="Sample only from the k most probable tokens (0: off)."
    ),
    top_p: Optional[float] = typer.Option(
        None, "--top-p", help="Sample only from the smallest set with probability >= p, in (0, 1]."
    ),
    seed: Optional[int] = typer.Option(
        None, "--seed", help="Random seed: the same seed gives the same samples."
    ),
    num_samples: int = typer.Option(1, "--num-samples", help="Samples per prompt."),
    max_tokens: Optional[int] = typer.Option(
        None, "--max-tokens", help="Stop after this many tokens (default: 256)."
    ),
    stop: Optional[str] = typer.Option(
        None, "--stop", help="Stop when this string appears (it is not printed)."
    ),
    greedy: bool = typer.Option(False, "--greedy", help="The most probable token at every step."),
    beam_size: int = typer.Option(
        1, "--beam-size", help="Beam search with this many beams (the best sequence)."
    ),
    condition: Optional[str] = typer.Option(
        None, "--condition", help="Conditional models: the label to generate for."
    ),
    allow_unk: bool = typer.Option(
        False, "--allow-unk", help="Let sampling draw the unknown token (word models)."
    ),
    precision: str = typer.Option("fp32", "--precision", help="fp32, bf16, int8 (CPU) or auto."),
    fmt: str = typer.Option("text", "--format", help="text (prompt and continuation) or jsonl."),
    device: str = options.DEVICE,
) -> None:
    """Continue prompts with a language model: sampling, greedy or beam search. Streams to a terminal."""
    textio.check_format(fmt)
    generator = Generator(tasks.load(model or default_model(NAME), device=device), precision)
    generator.condition_id(condition)  # an unknown label is refused before any input is read
    settings = dict(
        num_samples=num_samples,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        max_tokens=max_tokens,
        stop=stop,
        beam_size=beam_size,
        greedy_search=greedy,
        condition=condition,
        allow_unk=allow_unk or None,  # None: the model's config decides
    )
    generator.check(**settings)  # bad options fail before anything is printed
    piped = input is not None or (sys.stdin is not None and not sys.stdin.isatty())
    lines = list(prompts) if prompts else list(textio.read_input_lines(input)) if piped else []
    lines = lines or [""]  # nothing given: continue the empty prompt
    with textio.output_file(output) as sink:
        live = output is None and fmt == "text" and sys.stdout.isatty()
        for number, prompt in enumerate(lines, 1):
            step_seed = None if seed is None else seed + 1_000_003 * (number - 1)
            show = _echo(sink, prompt) if live else None  # the first sample is printed as it grows
            samples = generator.generate([prompt], **settings, seed=step_seed, on_text=show)[0]
            for j, sample in enumerate(samples):
                last = number == len(lines) and j + 1 == len(samples)
                sink.write(_format_sample(number, j, prompt, sample, fmt, live, last))


def _echo(sink, prompt: str) -> Callable[[str], None]:
    def show(text: str) -> None:
        sink.write(text)
        sink.flush()

    show(prompt)
    return show


def _format_sample(number: int, j: int, prompt: str, sample, fmt: str, live: bool, last: bool) -> str:
    if fmt == "jsonl":
        return (
            json.dumps(
                {
                    "line": number,
                    "sample": j + 1,
                    "prompt": prompt,
                    "text": sample.text,
                    "log_prob": round(sample.log_prob, 4),
                    "tokens": len(sample.tokens),
                    "condition": sample.condition,
                },
                ensure_ascii=False,
            )
            + "\n"
        )
    if live and j == 0:  # already on the screen
        return "\n" if last else "\n\n"
    return prompt + sample.text + ("\n" if last else "\n\n")


def endpoint(limits) -> tasks.Endpoint:
    """POST /generate: {"texts": [prompts], "max_tokens", "temperature", "top_k", "top_p", "seed", "beam_size"};
    one request at a time, so that a seed gives the same samples whatever else arrives."""
    from pydantic import Field

    def check(generator: "Generator", req) -> None:
        generator.check(1, req.temperature, req.top_k, req.top_p, req.max_tokens, req.beam_size)

    def run(generator: "Generator", texts: list[str], req, on_text=None) -> list:
        return generator.generate(
            texts,
            temperature=req.temperature,
            top_k=req.top_k,
            top_p=req.top_p,
            max_tokens=req.max_tokens,
            seed=req.seed,
            beam_size=req.beam_size,
            on_text=on_text,
        )

    def stream(generator: "Generator", text: str, req, on_text) -> list:
        return run(generator, [text], req, on_text)

    def answer(samples: list, req) -> dict:
        return {
            "generations": [
                {"prompt": s[0].prompt, "text": s[0].text, "log_prob": s[0].log_prob} for s in samples
            ]
        }

    fields = {
        "max_tokens": (Optional[int], Field(None, ge=1, le=limits.max_tokens)),
        "temperature": (Optional[float], Field(None, ge=0, le=100)),
        "top_k": (Optional[int], Field(None, ge=0)),
        "top_p": (Optional[float], Field(None, gt=0, le=1)),
        "seed": (Optional[int], None),
        "beam_size": (int, Field(1, ge=1, le=limits.max_beam)),
    }
    return tasks.Endpoint(
        "generate",
        "Continue prompts with a language model (sampling, or beam search with beam_size > 1); one request at a time.",
        fields,
        run,
        answer,
        check,
        stream=stream,
    )
