"""The language-model task: builds the model, prepares stream or sentence training, evaluates, describes."""

import contextlib
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

import torch

from nlp_rnn import devices
from nlp_rnn.bundle import Bundle
from nlp_rnn.data import (
    TokenBatcher,
    label_names,
)
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.nn.language_model import LanguageModel, LMState
from nlp_rnn.tasks import base as tasks
from nlp_rnn.tasks.evaluation import model_info, table
from nlp_rnn.tasks.language_model.cli import endpoint, generate, train_options
from nlp_rnn.tasks.language_model.config import NAME, LMConfig, LMDataConfig
from nlp_rnn.tasks.language_model.data import (
    Corpus,
    Sequences,
    StreamBatcher,
    Window,
    cache_nll,
    condition_ids,
    dynamic_nll,
    make_sequences,
    read_corpus,
    scores,
    sentence_ids,
    sequences_nll,
    split_off_validation,
    stream_ids,
    stream_nll,
)
from nlp_rnn.tasks.language_model.generator import Generator
from nlp_rnn.tasks.predict import precision_for, with_precision

log = logging.getLogger(__name__)


class LanguageModelTask(tasks.Task):
    name = NAME
    reads_cache = True
    config_cls = LMConfig
    default_bundle = "shakespeare-char"
    train_command = tasks.TrainCommand(
        "lm", train_options, config_required=False, example_config="configs/shakespeare_char.yaml"
    )
    components = (
        ("embeddings", ("embed.",)),
        ("condition", ("condition.", "condition_init.")),
        ("recurrent layers", ("rnn.",)),
        ("output layer", ("output.",)),
    )

    def build_model(self, cfg: LMConfig, tokenizer, meta: dict) -> LanguageModel:
        return LanguageModel(cfg.model, tokenizer.src_vocab_size, len(meta.get("conditions") or []))

    def prepare(self, cfg: LMConfig, out_dir: Path, tokenizer: tasks.TokenizerChoice) -> tasks.TrainingSetup:
        data = cfg.data
        hub = not data.train and data.dataset is not None
        if not data.train and not hub:
            raise NlpRnnError("no training data: give --train FILE (text or table), or --dataset NAME")
        train = read_corpus(data.train, data, "train", hub)
        if data.valid or (hub and not data.valid_fraction):
            valid = read_corpus(data.valid, data, "valid", hub and not data.valid)
        elif data.valid_fraction > 0:
            train, valid = split_off_validation(train, data.valid_fraction)
        else:
            raise NlpRnnError(
                "no validation data: give --valid FILE, or --valid-fraction 0.1 to hold out the end of --train"
            )
        log.info(
            "data: %s characters for training (%s), %s for validation",
            f"{sum(map(len, train.texts)):,}",
            train.name,
            f"{valid.characters:,}",
        )
        if data.mode == "stream" and not cfg.tokenizer.byte_exact:
            raise NlpRnnError(
                "config: data.mode stream needs tokenizer.byte_exact: true (newlines and spaces kept exactly)"
            )
        source = self._source(cfg.model.init_from) if cfg.model.init_from else None
        if source is not None:
            cfg = replace(
                cfg,
                model=replace(source.config.model, init_from=cfg.model.init_from),
                tokenizer=source.config.tokenizer,
            )
            tok = source.tokenizer
        else:
            tok = tokenizer.get(cfg.tokenizer, [line for t in train.texts for line in t.split("\n") if line])
        names = label_names(train.conditions) if train.conditions is not None else []
        meta = {
            "mode": data.mode,
            "conditions": names or None,
            "data": {
                "train": train.name,
                "valid": valid.name,
                "train_characters": sum(map(len, train.texts)),
                "text_column": data.text_column,
                "condition_column": data.condition_column,
            },
        }
        if tok.words:
            unseen = sum(map(tok.src.unknown, valid.texts))
            if unseen:
                log.warning("validation text: %d words the word list never saw, read as <unk>", unseen)
            meta["data"]["valid_unknown_words"] = unseen
        if source is not None:
            meta["init_from"] = str(source.path)
        bundle = tasks.new_bundle(self, cfg, tok, meta)
        if source is not None:
            bundle.model.load_state_dict(source.model.state_dict())
            log.info("fine-tuning the language model %s", source.path)
        if data.mode == "stream":
            train_ids = stream_ids(tok, train, cfg.model.reverse)
            if source is None:
                bundle.model.init_output_bias(torch.bincount(train_ids[1:], minlength=tok.src_vocab_size))
            return self._stream_setup(
                cfg,
                bundle,
                train_ids,
                stream_ids(tok, valid, cfg.model.reverse),
                valid.characters,
                valid.words,
            )
        return self._sentence_setup(cfg, bundle, train, valid, names)

    def _source(self, where: str) -> Bundle:
        source = tasks.load_start(where)
        if source.task != self.name:
            raise NlpRnnError(
                f"--init-from {where}: a {source.task} model; fine-tuning needs a language model"
            )
        return source

    def _stream_setup(
        self,
        cfg: LMConfig,
        bundle: Bundle,
        train_ids: torch.Tensor,
        valid_ids: torch.Tensor,
        characters: int,
        words: Optional[int] = None,
    ) -> tasks.TrainingSetup:
        model: LanguageModel = bundle.model
        if train_ids.numel() <= cfg.data.bptt + 1:
            raise NlpRnnError(
                f"data.bptt {cfg.data.bptt} is longer than the training corpus ({train_ids.numel()} pieces); "
                f"lower --bptt or give more text"
            )
        batcher = StreamBatcher(
            train_ids, cfg.data.streams, cfg.data.bptt, cfg.train.seed, cfg.data.variable_bptt
        )
        carry: dict[str, Optional[LMState]] = {"state": None}

        def loss_fn(window: Window, step: int):
            state = carry["state"]
            if window.first or state is None or state.h.size(1) != window.inputs.size(0):
                state = model.initial_state(window.inputs.size(0))
            loss, count, state = model.loss(window.inputs, window.targets, state.detach())
            carry["state"] = state.detach()  # gradients stop at the window boundary
            return loss, count

        def validate() -> dict:
            nll, tokens = stream_nll(model, valid_ids)
            return scores(nll, tokens, characters, words)

        def state_dict() -> dict:
            s = carry["state"]
            return {} if s is None else {"h": s.h, **({} if s.c is None else {"c": s.c})}

        def load_state_dict(saved: dict) -> None:
            carry["state"] = LMState(saved["h"], saved.get("c")) if "h" in saved else None

        return tasks.TrainingSetup(
            bundle=bundle,
            batcher=batcher,
            collate=batcher.window,
            loss_fn=loss_fn,
            validate=validate,
            score_key="val_loss",
            higher_is_better=False,
            state_dict=state_dict,
            load_state_dict=load_state_dict,
            lr_scale=batcher.lr_scale if cfg.data.variable_bptt else None,
        )

    def _sentence_setup(
        self, cfg: LMConfig, bundle: Bundle, train: Corpus, valid: Corpus, names: list[str]
    ) -> tasks.TrainingSetup:
        model: LanguageModel = bundle.model
        tok = bundle.tokenizer
        x_train, x_valid = (
            sentence_ids(tok, train, cfg.data.max_len, cfg.model.reverse),
            sentence_ids(tok, valid, cfg.data.max_len, cfg.model.reverse),
        )
        y_train = condition_ids(train, names)
        y_valid = condition_ids(valid, names)
        model.init_output_bias(
            torch.bincount(torch.tensor([t for s in x_train for t in s[1:]]), minlength=tok.src_vocab_size)
        )
        batcher = TokenBatcher(
            [len(s) for s in x_train], cfg.train.batch_tokens, cfg.train.max_batch_sentences, cfg.train.seed
        )

        def collate(index: list[int]) -> Sequences:
            return make_sequences(
                [x_train[i] for i in index], None if y_train is None else [y_train[i] for i in index]
            )

        def loss_fn(batch: Sequences, step: int):
            cond = model.condition_vectors(batch.conditions)
            loss, count, _ = model.loss(
                batch.inputs, batch.targets, model.initial_state(batch.inputs.size(0), cond), batch.mask, cond
            )
            return loss, count

        def validate() -> dict:
            return scores(*sequences_nll(model, x_valid, y_valid), valid.characters, valid.words)

        return tasks.TrainingSetup(
            bundle=bundle,
            batcher=batcher,
            collate=collate,
            loss_fn=loss_fn,
            validate=validate,
            score_key="val_loss",
            higher_is_better=False,
        )

    def commands(self) -> list:
        return [generate]

    def endpoint(self, limits) -> tasks.Endpoint:
        return endpoint(limits)

    def wrap(self, bundle: Bundle, precision: str = "fp32") -> Generator:
        return Generator(bundle, precision)

    def evaluate(self, bundle: Bundle, request: tasks.EvalRequest) -> dict:
        cfg: LMConfig = bundle.config
        model: LanguageModel = bundle.model
        if request.cache_size or request.dynamic_lr:  # they read the model's states and weights in fp32
            tasks.fp32_only(request, "language models with --cache-size or --dynamic-lr")
            precision = "fp32"
        else:
            precision = precision_for(model, request.precision, self.name)
            model = with_precision(model, precision) if precision == "int8" else model
        products = (  # bf16: the products under autocast, the weights, softmax and sums in fp32 (as validation)
            torch.autocast(devices.of(model).type, dtype=torch.bfloat16)
            if precision == "bf16"
            else contextlib.nullcontext()
        )
        data = LMDataConfig(
            mode=cfg.data.mode,
            text_column=request.text_column or cfg.data.text_column,
            condition_column=request.label_column or cfg.data.condition_column,
            dataset=request.dataset,
            dataset_config=None,
        )
        sets = [read_corpus([str(p)], data, "test", False) for p in request.data]
        for split in (request.splits or ["test"]) if request.dataset else []:
            sets.append(read_corpus([], LMDataConfig(**{**vars(data), "valid_split": split}), "valid", True))
        if not sets:
            raise NlpRnnError("no test set: give --data FILE (text or table) or --dataset NAME")
        if (request.cache_size or request.dynamic_lr) and cfg.data.mode != "stream":
            option = "--cache-size" if request.cache_size else "--dynamic-lr"
            raise NlpRnnError(
                f"{option}: it reads the text as one stream; this model was trained in sentence mode"
            )
        names = list(bundle.meta.get("conditions") or [])

        def stream(corpus: Corpus) -> torch.Tensor:  # as the model reads text (a backward one from its end)
            return stream_ids(bundle.tokenizer, corpus, cfg.model.reverse)

        results = []
        for corpus in sets:
            started = time.perf_counter()
            if request.dynamic_lr:
                nll, tokens = dynamic_nll(
                    model,
                    stream(corpus),
                    request.dynamic_lr,
                    request.dynamic_decay,
                    request.dynamic_window,
                )
            elif request.cache_size:
                nll, tokens = cache_nll(
                    model,
                    stream(corpus),
                    request.cache_size,
                    request.cache_theta,
                    request.cache_lambda,
                )
            elif cfg.data.mode == "stream":
                with products:
                    nll, tokens = stream_nll(model, stream(corpus))
            else:
                with products:
                    nll, tokens = sequences_nll(
                        model,
                        sentence_ids(bundle.tokenizer, corpus, cfg.data.max_len, cfg.model.reverse),
                        condition_ids(corpus, names) if names else None,
                    )
            seconds = time.perf_counter() - started
            s = scores(nll, tokens, corpus.characters, corpus.words)
            unknown = sum(map(bundle.tokenizer.src.unknown, corpus.texts)) if bundle.tokenizer.words else 0
            if unknown:
                log.warning("%s: %d words the word list never saw, read as <unk>", corpus.name, unknown)
            results.append(
                {
                    "name": corpus.name,
                    "tokens": tokens,
                    "characters": corpus.characters,
                    "loss": round(s["val_loss"], 4),
                    "perplexity": round(s["val_ppl"], 3),
                    "words": corpus.words,
                    "perplexity_per_word": round(s["val_ppl_per_word"], 3) if corpus.words else None,
                    "unknown_words": unknown,
                    "loss_per_char": round(s["val_loss_per_char"], 4),
                    "bits_per_char": round(s["val_bits_per_char"], 4),
                    "seconds": round(seconds, 2),
                    "tokens_per_s": round(tokens / max(seconds, 1e-9), 1),
                }
            )
        cache = None
        if request.cache_size:
            cache = {"size": request.cache_size, "theta": request.cache_theta, "lambda": request.cache_lambda}
        dynamic = None
        if request.dynamic_lr:
            dynamic = {
                "lr": request.dynamic_lr,
                "decay": request.dynamic_decay,
                "window": request.dynamic_window,
            }
        return {
            "task": self.name,
            "model": model_info(bundle),
            "precision": precision,
            "sets": results,
            "cache": cache,
            "dynamic": dynamic,
        }

    def report(self, result: dict) -> list[str]:
        return table(
            [
                "test set",
                "tokens",
                "characters",
                "loss/token",
                "perplexity",
                "ppl/word",
                "loss/char",
                "bits/char",
                "seconds",
            ],
            [
                [
                    s["name"],
                    s["tokens"],
                    s["characters"],
                    f"{s['loss']:.4f}",
                    f"{s['perplexity']:.3f}",
                    "-" if s.get("perplexity_per_word") is None else f"{s['perplexity_per_word']:.2f}",
                    f"{s['loss_per_char']:.4f}",
                    f"{s['bits_per_char']:.4f}",
                    s["seconds"],
                ]
                for s in result["sets"]
            ],
        ) + self._settings(result)

    @staticmethod
    def _settings(result: dict) -> list[str]:
        """What the scores above were computed with, beyond the model: precision, cache or dynamic evaluation."""
        lines = [f"precision: {result['precision']}"] if result.get("precision") else []
        if result.get("cache"):
            c = result["cache"]
            lines.append(f"with a neural cache: size {c['size']}, theta {c['theta']}, lambda {c['lambda']}")
        if result.get("dynamic"):
            d = result["dynamic"]
            lines.append(f"with dynamic evaluation: lr {d['lr']}, decay {d['decay']}, window {d['window']}")
        return lines

    def describe(self, bundle: Bundle) -> dict:
        extra = {"mode": bundle.meta.get("mode")}
        if bundle.config.model.reverse:
            extra["direction"] = "backward (reads text right to left)"
        if bundle.meta.get("conditions"):
            extra["conditions"] = bundle.meta["conditions"]
        return extra


TASK = tasks.register(LanguageModelTask())


def train_lm(
    cfg: LMConfig,
    out_dir: str | Path,
    resume: bool = False,
    tokenizer_dir: Optional[str | Path] = None,
    progress_bar: bool = True,
) -> dict:
    return tasks.train(TASK.name, cfg, out_dir, resume, tokenizer_dir, progress_bar)
