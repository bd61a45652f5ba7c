"""Frozen config dataclasses and a loader that rejects unknown keys and wrong types.

A YAML file maps onto a task's config (e.g. `TranslationConfig`, in its task module); CLI options override a few
fields with `dataclasses.replace`. Bundles store the same structure as JSON.
"""

import dataclasses
import json
import re
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from nlp_rnn import normalise
from nlp_rnn.errors import NlpRnnError

CELLS = ("rnn_tanh", "rnn_relu", "gru", "lstm")


def _choice(where: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise NlpRnnError(f"config: {where} must be one of {', '.join(choices)}, got {value!r}")


def _positive(where: str, value: float) -> None:
    if value <= 0:
        raise NlpRnnError(f"config: {where} must be positive, got {value!r}")


@dataclass(frozen=True)
class DataConfig:
    """Where the examples come from. CLI options override these; all are optional here."""

    # translation: two line-aligned files per split ...
    train_src: Optional[str] = None
    train_tgt: Optional[str] = None
    valid_src: Optional[str] = None
    valid_tgt: Optional[str] = None
    # ... or a TSV/CSV/JSONL table per split (translation and classification) ...
    train: Optional[str] = None
    valid: Optional[str] = None
    # ... or a Hugging Face Hub dataset with splits.
    dataset: Optional[str] = None
    dataset_config: Optional[str] = None
    train_split: str = "train"
    valid_split: str = "validation"
    src_lang: str = "src"
    tgt_lang: str = "tgt"
    text_column: str = "sentence"
    label_column: str = "label"
    # classification: the name each label of the data is shown as, e.g. {0: negative, 1: positive}
    label_names: Optional[dict[str, str]] = None
    max_src_len: int = 100
    max_tgt_len: int = 100
    # classification without a validation table: this fraction of the training rows, shuffled with a
    # fixed seed (the same rows whatever train.seed is), held out for validation
    valid_fraction: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.valid_fraction < 1:
            raise NlpRnnError(f"config: data.valid_fraction must be in [0, 1), got {self.valid_fraction}")
        _positive("data.max_src_len", self.max_src_len)
        _positive("data.max_tgt_len", self.max_tgt_len)


@dataclass(frozen=True)
class TokenizerConfig:
    # bpe | unigram | char (one piece per character) | word (sentencepiece words, bytes for the rest)
    # | wordlist (one token per whitespace-separated word of a pre-tokenised corpus, one per end of
    # line, the corpus's own <unk> and unseen words as the unknown token; vocab_size: the most
    # frequent words kept, e.g. 40000 keeps all 33,278 of WikiText-2)
    model_type: str = "bpe"
    vocab_size: int = 8000  # an upper bound for char: every character of the training text gets a piece
    joint: bool = True  # one model for source and target (translation only)
    character_coverage: float = 1.0
    max_sentences: int = 1_000_000  # sentences sampled to train it
    # Byte-exact text (language-model streams): no normalisation, no whitespace folding, no dummy
    # prefix, a piece for the newline, so that decode(encode(text)) == text.
    byte_exact: bool = False
    # Applied to every text before it is encoded, in training and prediction alike, and stored with the
    # tokenizer: html (line breaks and tags out, entities decoded), nfkc, lower (`nlp_rnn.normalise`).
    normalise: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "normalise", normalise.check(self.normalise))
        _choice("tokenizer.model_type", self.model_type, ("bpe", "unigram", "char", "word", "wordlist"))
        if self.model_type == "wordlist" and not self.joint:
            raise NlpRnnError(
                "config: tokenizer.model_type wordlist is one list for both sides (joint: true)"
            )
        if self.vocab_size < 300:
            raise NlpRnnError(
                f"config: tokenizer.vocab_size must be at least 300 (256 byte pieces + specials), got {self.vocab_size}"
            )


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 1
    # The seed of the model's new weights alone (None: `seed`). Runs with one init_seed and different seeds
    # start from the same weights and differ in data order and dropout: fine-tunings whose weights can be
    # averaged into one model (`nlp-rnn average --model A --model B ...`, a "model soup").
    init_seed: Optional[int] = None
    batch_tokens: int = 4096  # padded source+target tokens per batch (token budget)
    max_batch_sentences: int = 512
    lr: float = 1e-3
    weight_decay: float = 0.0
    clip_norm: float = 1.0
    label_smoothing: float = 0.0
    teacher_forcing: float = 1.0  # probability of feeding the gold previous token
    teacher_forcing_min: float = 1.0  # scheduled sampling decays the ratio down to this ...
    teacher_forcing_decay_steps: int = 0  # ... linearly over this many steps (0: no decay)
    lr_factor: float = 0.5  # reduce-on-plateau of the validation score
    lr_patience: int = 2
    min_lr: float = 1e-5
    patience: int = 8  # early stopping, in validations without improvement
    validate_every: int = 500
    log_every: int = 50
    save_every: int = 0  # extra `last/` saves between validations (0: at validation only)
    max_steps: int = 0  # 0: unlimited
    max_minutes: float = 0.0  # 0: unlimited
    max_epochs: int = 0  # 0: unlimited
    precision: str = (
        "fp32"  # fp32 | bf16 (autocast matrix products) | auto (bf16 where the CPU or GPU has it natively)
    )
    num_threads: int = 0  # 0: torch's default
    optimizer: str = "adam"  # adam | sgd (AWD-LSTM: sgd, lr 30, clip_norm 0.25, weight_decay 1.2e-6)
    # Weight averaging: none | mean (the mean of every iterate since it started: averaged SGD, AWD-LSTM's
    # NT-ASGD) | ema (an exponential moving average). Validation, best/ and the final model use the average.
    average: str = "none"
    average_start: int = 0  # the step averaging starts; 0 with mean: when validation stops improving (below)
    average_patience: int = 5  # NT-ASGD's n: start once a validation is worse than the best before the last n
    ema_decay: float = 0.999
    # Learning-rate schedule: plateau (halve when validation stalls) | slanted (ULMFiT's slanted triangle:
    # a linear warm-up over `warmup_fraction` of the budget — max_steps, max_epochs or max_minutes — to
    # `lr`, then a linear decay to lr / slanted_ratio at its end).
    schedule: str = "plateau"
    warmup_fraction: float = 0.1
    slanted_ratio: float = 32.0
    # With a task's layer groups (a classifier started from a language model): layer k from the top learns
    # at lr / layer_lr_decay**k (ULMFiT: 2.6), and with unfreeze_every N only the top group trains at first,
    # one more group every N steps (gradual unfreezing; 0: all train from the start).
    layer_lr_decay: float = 1.0
    unfreeze_every: int = 0
    # A step whose loss or gradient norm is NaN/inf is skipped; this many in a row stop training (one line).
    nonfinite_patience: int = 10
    # TensorBoard event files in OUTPUT/tensorboard/ beside metrics.jsonl, the same scalars (needs the
    # tensorboard extra; without it, nothing): on by default, --no-tensorboard or false to stop it.
    tensorboard: bool = True
    # Keep the weights of the last N validations in OUTPUT/checkpoints/ (0: none), for `nlp-rnn average`.
    keep_checkpoints: int = 0

    def __post_init__(self) -> None:
        _choice("train.schedule", self.schedule, ("plateau", "slanted"))
        _positive("train.nonfinite_patience", self.nonfinite_patience)
        if self.keep_checkpoints < 0:
            raise NlpRnnError(
                f"config: train.keep_checkpoints must be at least 0, got {self.keep_checkpoints}"
            )
        if not 0 < self.warmup_fraction < 1 or self.slanted_ratio < 1:
            raise NlpRnnError(
                "config: train.warmup_fraction must be in (0, 1) and train.slanted_ratio at least 1"
            )
        if self.layer_lr_decay < 1 or self.unfreeze_every < 0:
            raise NlpRnnError(
                "config: train.layer_lr_decay must be at least 1 and train.unfreeze_every at least 0"
            )
        _positive("train.batch_tokens", self.batch_tokens)
        _positive("train.lr", self.lr)
        _positive("train.validate_every", self.validate_every)
        _positive("train.log_every", self.log_every)
        _choice("train.precision", self.precision, ("fp32", "bf16", "auto"))
        _choice("train.optimizer", self.optimizer, ("adam", "sgd"))
        _choice("train.average", self.average, ("none", "mean", "ema"))
        if not 0 < self.ema_decay < 1:
            raise NlpRnnError(f"config: train.ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.average_start < 0 or self.average_patience < 1:
            raise NlpRnnError(
                "config: train.average_start must be at least 0 and train.average_patience at least 1"
            )
        for name in ("teacher_forcing", "teacher_forcing_min"):
            if not 0 <= getattr(self, name) <= 1:
                raise NlpRnnError(f"config: train.{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0 <= self.label_smoothing < 1:
            raise NlpRnnError(f"config: train.label_smoothing must be in [0, 1), got {self.label_smoothing}")


_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _check_type(where: str, value: Any, annotation: Any) -> Any:
    """Checks one scalar against its annotation; ints are accepted where floats are expected."""
    if typing.get_origin(annotation) is typing.Union:  # Optional[X]
        if value is None:
            return None
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if (
        typing.get_origin(annotation) is dict
    ):  # dict[str, str]: a YAML mapping; keys may be numbers (0: negative)
        if not isinstance(value, dict):
            raise NlpRnnError(f"config: {where} must be a mapping, got {value!r}")
        for key, item in value.items():
            if (
                not isinstance(key, (str, int))
                or isinstance(key, bool)
                or not isinstance(item, (str, int))
                or isinstance(item, bool)
            ):
                raise NlpRnnError(f"config: {where} must map labels to names, got {key!r}: {item!r}")
        return {str(k): str(v) for k, v in value.items()}
    if typing.get_origin(annotation) is tuple:  # tuple[str, ...]: a YAML list (or one value)
        items = value if isinstance(value, (list, tuple)) else [value]
        return tuple(
            _check_type(f"{where}[{i}]", v, typing.get_args(annotation)[0]) for i, v in enumerate(items)
        )
    if annotation is float and isinstance(value, str) and _EXPONENT.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 (PyYAML) reads 1e-3, without a dot, as a string
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }[annotation]
    if not ok:
        raise NlpRnnError(f"config: {where} must be {annotation.__name__}, got {value!r}")
    return float(value) if annotation is float else value


def _optional_dataclass(annotation: Any) -> Optional[type]:
    """X for Optional[X] where X is a dataclass, else None."""
    if typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and dataclasses.is_dataclass(args[0]):
            return args[0]
    return None


def from_dict(cls: type, raw: Any, where: str = "", base: Any = None) -> Any:
    """Builds dataclass `cls` from nested dicts, naming the first unknown key or bad value.

    Keys not given keep their defaults — for a nested section, the parent's own default for that
    section (e.g. a language model's byte-exact tokenizer), not the section class's plain defaults.
    """
    if not isinstance(raw, dict):
        raise NlpRnnError(f"config: {where or 'top level'} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise NlpRnnError(f"config: unknown key '{key}' (known: {', '.join(sorted(fields))})")
    kwargs = {}
    defaults = base if base is not None else None
    for name, value in raw.items():
        path = f"{where}.{name}" if where else name
        inner = _optional_dataclass(hints[name])
        if dataclasses.is_dataclass(hints[name]):
            defaults = defaults if defaults is not None else cls()
            kwargs[name] = from_dict(hints[name], value or {}, path, base=getattr(defaults, name))
        elif inner is not None:  # Optional[Section]: null, or a section over the default's (if any)
            defaults = defaults if defaults is not None else cls()
            kwargs[name] = (
                None if value is None else from_dict(inner, value, path, base=getattr(defaults, name))
            )
        else:
            kwargs[name] = _check_type(path, value, hints[name])
    return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)


def load_config(path: str | Path, cls: type) -> Any:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NlpRnnError(f"{path}: config file not found") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise NlpRnnError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    try:
        return from_dict(cls, raw or {})
    except NlpRnnError as err:
        raise NlpRnnError(f"{path}: {err}") from None


def with_settings(config: Any, settings: Sequence[str]) -> Any:
    """`config` with `SECTION.KEY=VALUE` settings applied in order (`nlp-rnn train --set`): VALUE is read as
    YAML (`0.002`, `ema`, `null`, `[1, 2]`) and checked as the same key in a config file would be."""
    for setting in settings:
        key, sep, text = setting.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise NlpRnnError(f"--set {setting}: expected SECTION.KEY=VALUE, e.g. train.lr=0.002")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise NlpRnnError(f"--set {setting}: the value is not valid YAML") from None
        for part in reversed(key.split(".")):
            value = {part: value}
        try:
            config = from_dict(type(config), value, base=config)
        except NlpRnnError as err:
            raise NlpRnnError(f"--set {setting}: {err}") from None
    return config


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def to_json(config: Any) -> str:
    return json.dumps(to_dict(config), indent=2)
