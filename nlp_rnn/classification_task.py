"""Training a sentence classifier: data, labels and tokenizer set-up, validation accuracy.

Reuses the data readers, tokenizer, encoder, training loop and bundles of translation.
"""

import logging
from pathlib import Path

import torch

from nlp_rnn.bundle import Bundle
from nlp_rnn.classifier import Classifier
from nlp_rnn.config import ClassifierConfig, DataConfig
from nlp_rnn.data import LabeledSource, TokenBatcher, encode_sources, label_names, make_batch, ordered_batches, read_labeled
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.tokenizer import Tokenizer
from nlp_rnn.train import Trainer
from nlp_rnn import bundle as bundles
from nlp_rnn.info import count_parameters

log = logging.getLogger(__name__)


def labeled_source(data: DataConfig, split: str) -> LabeledSource:
    table = data.train if split == "train" else data.valid
    common = dict(text_column=data.text_column, label_column=data.label_column)
    if table:
        return LabeledSource(table=table, **common)
    if data.dataset:
        hub_split = data.train_split if split == "train" else data.valid_split
        return LabeledSource(dataset=data.dataset, dataset_config=data.dataset_config, split=hub_split, **common)
    raise NlpRnnError(f"no {split} data: give --{split} TABLE or --dataset NAME")


def label_ids(labels: list[str], names: list[str], where: str) -> list[int]:
    index = {name: i for i, name in enumerate(names)}
    for row, label in enumerate(labels):
        if label not in index:
            raise NlpRnnError(f"{where} (row {row + 1}): label {label!r} was never seen in training (known: {', '.join(names)})")
    return [index[label] for label in labels]


def train_classifier(cfg: ClassifierConfig, out_dir: str | Path, resume: bool = False, progress_bar: bool = True) -> dict:
    out_dir = Path(out_dir)
    train_spec, valid_spec = labeled_source(cfg.data, "train"), labeled_source(cfg.data, "valid")
    train_texts, train_labels = read_labeled(train_spec)
    valid_texts, valid_labels = read_labeled(valid_spec)
    names = label_names(train_labels)
    if len(names) < 2:
        raise NlpRnnError(f"{train_spec.describe()}: column '{cfg.data.label_column}' has only one label ({names[0]!r})")
    y_train = label_ids(train_labels, names, train_spec.describe())
    y_valid = label_ids(valid_labels, names, valid_spec.describe())
    log.info("data: %d training, %d validation examples; labels: %s", len(train_texts), len(valid_texts), ", ".join(names))

    if resume and (out_dir / "last" / bundles.META).is_file():
        tokenizer = Tokenizer.load(out_dir / "last")
    else:
        tokenizer = Tokenizer.train(cfg.tokenizer, [t for t in train_texts if t.strip()])
    x_train = encode_sources(tokenizer, train_texts, cfg.data.max_src_len)
    x_valid = encode_sources(tokenizer, valid_texts, cfg.data.max_src_len)

    torch.manual_seed(cfg.train.seed)
    model = Classifier(cfg.model, tokenizer.src_vocab_size, len(names))
    meta = {
        "labels": names,
        "data": {"train": train_spec.describe(), "valid": valid_spec.describe(), "train_examples": len(train_texts),
                 "text_column": cfg.data.text_column, "label_column": cfg.data.label_column},
        "parameters": count_parameters(model),
    }
    bundle = Bundle("classification", cfg, model, tokenizer, meta)
    batcher = TokenBatcher([len(x) for x in x_train], cfg.train.batch_tokens, cfg.train.max_batch_sentences, cfg.train.seed)

    def collate(index: list[int]):
        return make_batch([x_train[i] for i in index], labels=[y_train[i] for i in index])

    def validate() -> dict:
        total, correct = 0.0, 0
        for index in ordered_batches([len(x) for x in x_valid], 256):
            batch = make_batch([x_valid[i] for i in index], labels=[y_valid[i] for i in index])
            logits = model.logits(batch)
            total += float(torch.nn.functional.cross_entropy(logits.float(), batch.labels, reduction="sum"))
            correct += int((logits.argmax(-1) == batch.labels).sum())
        return {"val_loss": total / len(x_valid), "val_acc": correct / len(x_valid)}

    trainer = Trainer(cfg.train, bundle, batcher, collate, lambda batch, step: model(batch), validate, "val_acc", out_dir, progress_bar)
    return trainer.run(resume)
