"""`nlp-rnn info`: parameter counts per component match the textbook for a vanilla RNN."""

import json
from pathlib import Path

import pytest
import torch

from nlp_rnn import bundle as bundles
from nlp_rnn.bundle import Bundle
from nlp_rnn.cli import main
from nlp_rnn.config import TokenizerConfig
from nlp_rnn.data import make_batch
from nlp_rnn.nn.classifier import Classifier, ClassifierModelConfig
from nlp_rnn.tasks.classification import ClassifierConfig
from nlp_rnn.tasks.info import parameter_breakdown
from nlp_rnn.tokenizer import Tokenizer


@pytest.mark.parametrize("d, h, classes", [(16, 32, 2), (40, 7, 5)])
def test_vanilla_rnn_count_is_the_textbook_formula(
    d: int, h: int, classes: int, tmp_path: Path, capsys
) -> None:
    tok = Tokenizer.train(
        TokenizerConfig(vocab_size=300, model_type="unigram"), ["a good film", "a bad film"] * 30
    )
    cfg = ClassifierConfig(
        model=ClassifierModelConfig(
            cell="rnn_tanh",
            embedding_dim=d,
            hidden_size=h,
            num_layers=1,
            bidirectional=False,
            pooling="last",
            dropout=0.0,
        )
    )
    model = Classifier(cfg.model, tok.src_vocab_size, classes)
    counts = parameter_breakdown(model)
    textbook = h * d + h * h + h + classes * h + classes  # input d, hidden h, output V = classes
    assert counts["encoder"] + counts["output layer"] == textbook
    assert counts["embeddings"] == tok.src_vocab_size * d and counts["attention"] == 0
    # Weight sharing over time: the same weights read a sentence of 3 or of 300 tokens.
    model.eval()
    for length in (3, 300):
        with torch.no_grad():
            assert model.logits(make_batch([[5] * length])).shape == (1, classes)
        assert parameter_breakdown(model) == counts

    path = bundles.save(
        tmp_path / "rnn",
        Bundle("classification", cfg, model, tok, {"labels": [str(i) for i in range(classes)], "data": {}}),
    )
    assert main(["info", str(path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (
        shown["parameters"] == counts
        and shown["task"] == "classification"
        and len(shown["labels"]) == classes
    )
    assert main(["info", str(path)]) == 0
    assert "encoder" in capsys.readouterr().out


def test_info_of_a_translation_model_adds_up(tmp_path: Path, capsys) -> None:
    from helpers import small_config

    from nlp_rnn.nn.seq2seq import Seq2Seq
    from nlp_rnn.tasks.translation import TranslationConfig

    tok = Tokenizer.train(TokenizerConfig(vocab_size=300, model_type="unigram"), ["ein hund", "a dog"] * 30)
    cfg = TranslationConfig(model=small_config(tie_output=True, embedding_dim=64))
    model = Seq2Seq(cfg.model, tok.src_vocab_size, tok.tgt_vocab_size)
    counts = parameter_breakdown(model)
    assert (
        sum(v for k, v in counts.items() if k != "total")
        == counts["total"]
        == sum(p.numel() for p in model.parameters())
    )
    assert counts["output layer"] == 0  # tied to the target embedding, counted there once
    path = bundles.save(
        tmp_path / "mt", Bundle("translation", cfg, model, tok, {"src_lang": "de", "tgt_lang": "en"})
    )
    assert main(["info", str(path)]) == 0
    assert "de -> en" in capsys.readouterr().out
