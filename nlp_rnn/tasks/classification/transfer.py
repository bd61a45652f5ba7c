"""`train classifier --init-from LM`: a classifier that starts from a language model (Dai & Le 2015, ULMFiT), or
from another document classifier's body (intermediate-task transfer: e.g. SST-2 from an IMDb classifier; the head,
whose labels may differ, starts afresh), or from a whole document classifier, head included (`--init-head`: the same
labels, so a trained classifier continues on other data).

The classifier takes the language model's tokenizer (with its normalisation), and its embeddings and
recurrent stack become the document classifier's body (`model.encoder: language_model`). The body's
shape (cell, sizes, layers, layer layout) comes from the language model; a config that states another
shape, or another tokenizer, is refused naming both; its direction (a backward model's `reverse`) is the language
model's. Its regularisation (dropouts, DropConnect) is the
config's `model.body` where given, else the language model's. The vocabulary is the language model's own,
so there are no new rows to initialise.
"""

import logging
from dataclasses import dataclass, fields, replace

from torch import nn

from nlp_rnn.bundle import Bundle
from nlp_rnn.config import TokenizerConfig
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.nn.language_model import LanguageModel, LMModelConfig
from nlp_rnn.tasks import base as tasks
from nlp_rnn.tokenizer import Tokenizer

log = logging.getLogger(__name__)

SHAPE = ("cell", "embedding_dim", "hidden_size", "num_layers", "last_layer_size", "per_layer")


@dataclass
class Start:
    config: object  # the classifier's config with model.encoder language_model and model.body filled in
    source: Bundle
    body: LanguageModel  # the language model itself, or a document classifier's body
    head: bool = False  # --init-head: the document classifier's head too

    @property
    def tokenizer(self) -> Tokenizer:
        return self.source.tokenizer

    @property
    def kind(self) -> str:
        return "language model" if self.body is self.source.model else "document classifier"

    def describe(self) -> dict:
        return {
            "path": str(self.source.path),
            "kind": self.kind,
            "parameters": self.source.meta.get("parameters"),
            "head": self.head,
        }

    def check_labels(self, values: list, where: str) -> None:
        """`--init-head`: the classifier's labels (their values in the training data `where`) must be the
        source's, in the same order, for its head's outputs to mean the same."""
        if not self.head:
            return
        theirs = self.source.meta.get("label_values", self.source.meta.get("labels"))
        if [str(v) for v in theirs or []] != [str(v) for v in values]:
            raise NlpRnnError(
                f"--init-head: {where} has the labels {values}, the classifier {self.source.path} has "
                f"{theirs}; its head only continues on the same labels (leave --init-head out for a fresh head)"
            )

    def copy_into(self, model: nn.Module) -> None:
        """The language model's (or the document classifier's) embeddings and recurrent stack into the classifier's
        body, exactly; the head starts afresh, or with `--init-head` is the source's, exactly (its batch-norm
        statistics and their count too)."""
        weights = {k: v for k, v in self.body.state_dict().items() if not k.startswith("output.")}
        missing, unexpected = model.body.load_state_dict(weights, strict=False)
        if missing or unexpected:
            raise NlpRnnError(
                f"--init-from {self.source.path}: its weights do not fit the classifier's body "
                f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        if self.head:
            try:  # strict: other keys (another norm) or other shapes (another size) are refused
                model.head.load_state_dict(self.source.model.head.state_dict())
            except RuntimeError:
                raise NlpRnnError(
                    f"--init-head: the head of {self.source.path} ({_head_shape(self.source.config.model)}) does not "
                    f"fit the config's ({_head_shape(model.cfg)})"
                ) from None
        log.info(
            "started from the %s %s (embeddings and recurrent stack%s)",
            self.kind,
            self.source.path,
            ", head" if self.head else "",
        )


def _head_shape(cfg) -> str:
    return f"head_size {cfg.head_size}, head_norm {cfg.head_norm}"


def _shape(cfg: LMModelConfig) -> dict:
    return {name: getattr(cfg, name) for name in SHAPE}


def _mismatch(what: str, key: str, lm, given, names) -> str:
    """'its WHAT (name value, ...) does not fit the config's KEY (name value, ...)' over the names that differ."""
    differ = [n for n in names if getattr(given, n) != getattr(lm, n)]
    mine = ", ".join(f"{n} {getattr(lm, n)}" for n in differ)
    theirs = ", ".join(f"{n} {getattr(given, n)}" for n in differ)
    return f"its {what} ({mine}) does not fit the config's {key} ({theirs})"


def _check_tokenizer(
    where: str, given: TokenizerConfig, default: TokenizerConfig, lm: TokenizerConfig
) -> None:
    """A config that states a tokenizer other than the language model's is refused naming both (the
    classifier reads pieces of the language model's vocabulary; a config without one, which reads as
    `default`, takes the model's)."""
    if given in (default, lm):
        return
    names = [f.name for f in fields(TokenizerConfig)]
    raise NlpRnnError(
        f"--init-from {where}: {_mismatch('tokenizer', 'tokenizer', lm, given, names)}; a classifier started "
        "from a language model takes its tokenizer: leave tokenizer: out of the config"
    )


def start_from(cfg) -> Start:
    """The language model (or document classifier) named by cfg.model.init_from, checked against the classifier
    config."""
    where = cfg.model.init_from
    source = tasks.load_start(where)
    if isinstance(source.model, LanguageModel):
        weights, lm = source.model, source.config.model
    elif isinstance(getattr(source.model, "body", None), LanguageModel):  # a document classifier's body
        weights, lm = source.model.body, source.config.model.body
    else:
        what = f"a {source.task} model" + (
            " that reads no language model's body" if source.task == "classification" else ""
        )
        raise NlpRnnError(
            f"--init-from {where}: {what}; a classifier starts from a language model or a document classifier"
        )
    if cfg.model.init_head and weights is source.model:
        raise NlpRnnError(
            f"--init-head: {where} is a language model, which has no classifier head; leave --init-head out"
        )
    if weights.condition is not None:
        raise NlpRnnError(f"--init-from {where}: a conditional language model; train an unconditional one")
    given = cfg.model.body
    if given is not None and _shape(given) != _shape(lm):
        raise NlpRnnError(f"--init-from {where}: {_mismatch('body', 'model.body', lm, given, SHAPE)}")
    _check_tokenizer(where, cfg.tokenizer, type(cfg)().tokenizer, source.config.tokenizer)
    body = lm if given is None else given
    # the direction is the language model's: a backward model's body reads documents reversed
    body = replace(body, tie_output=False, adaptive_softmax=(), condition_input=False, reverse=lm.reverse)
    if cfg.model.encoder != "language_model":
        log.info("--init-from: model.encoder language_model (the language model's body reads the documents)")
    model = replace(cfg.model, encoder="language_model", body=body)
    config = replace(cfg, model=model, tokenizer=source.config.tokenizer)
    return Start(config, source, weights, head=cfg.model.init_head)
