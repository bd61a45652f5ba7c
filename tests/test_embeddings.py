"""Pretrained word vectors (embeddings.py): text formats into embedding rows, and translation's two sides."""

from pathlib import Path

import pytest
import torch
from test_sentiment import WORDS, vector, write_vectors

from nlp_rnn.config import TokenizerConfig
from nlp_rnn.embeddings import load_into, read_vectors


@pytest.mark.parametrize(
    "name,header",
    [("glove.txt", False), ("wiki.vec", True), ("vectors.vec.gz", True), ("glove.txt.gz", False)],
)
def test_vectors_fill_the_rows_of_their_words_and_coverage_is_counted(
    tmp_path: Path, name: str, header: bool
) -> None:
    path = tmp_path / name
    write_vectors(path, WORDS[:6] + ["unrelated"], 5, header)
    pieces = [
        "<pad>",
        "<unk>",
        "<s>",
        "</s>",
        "\u2581good",
        "\u2581Film",
        "\u2581zebra",
        "<0x41>",
        "ing",
        "\u2581awful",
        "\u2581",
    ]
    embedding = torch.nn.Embedding(len(pieces), 5, padding_idx=0)
    before = embedding.weight.detach().clone()
    coverage = load_into(embedding, path, pieces)
    # Words: good, Film (found lower-cased), zebra (no vector), awful; not the specials, bytes, a
    # word-internal piece or "▁".
    assert coverage["words"] == 4 and coverage["covered"] == 3 and coverage["coverage"] == 0.75
    for row, word in ((4, "good"), (5, "film"), (9, "awful")):
        assert embedding.weight[row].tolist() == pytest.approx(vector(word, 5))
    for row in (0, 1, 2, 3, 6, 7, 8, 10):  # rows without a vector keep their initialisation
        assert torch.equal(embedding.weight[row], before[row])
    assert read_vectors(path, {"unrelated"}, 5)["unrelated"].tolist() == pytest.approx(vector("unrelated", 5))


def test_translation_takes_source_and_target_vectors_from_separate_files(tmp_path: Path) -> None:
    from nlp_rnn import embeddings
    from nlp_rnn.nn.seq2seq import Seq2Seq
    from nlp_rnn.nn.seq2seq_config import Seq2SeqModelConfig
    from nlp_rnn.tokenizer import Tokenizer

    src = ["ein hund läuft", "eine katze schläft", "der hund schläft"] * 20
    tgt = ["a dog runs", "a cat sleeps", "the dog sleeps"] * 20
    tok = Tokenizer.train(TokenizerConfig(model_type="word", vocab_size=300, joint=False), src, tgt)
    write_vectors(tmp_path / "de.txt", ["hund", "katze"], 6, header=False)
    write_vectors(tmp_path / "en.vec.gz", ["dog", "cat", "sleeps"], 6, header=True)
    cfg = Seq2SeqModelConfig(
        embedding_dim=6,
        encoder_hidden=8,
        decoder_hidden=8,
        attention_dim=8,
        pretrained_src_embeddings=str(tmp_path / "de.txt"),
        pretrained_tgt_embeddings=str(tmp_path / "en.vec.gz"),
    )
    model, meta = Seq2Seq(cfg, tok.src_vocab_size, tok.tgt_vocab_size), {}
    embeddings.apply(
        cfg,
        model,
        tok,
        meta,
        False,
        [
            ("pretrained_src_embeddings", ["src_embed"], "src"),
            ("pretrained_tgt_embeddings", ["decoder.embed"], "tgt"),
        ],
    )
    assert model.src_embed.weight[tok.src.piece_to_id("\u2581hund")].tolist() == pytest.approx(
        vector("hund", 6)
    )
    assert model.decoder.embed.weight[tok.tgt.piece_to_id("\u2581sleeps")].tolist() == pytest.approx(
        vector("sleeps", 6)
    )
    assert meta["embeddings"]["pretrained_src_embeddings"]["covered"] == 2
    assert meta["embeddings"]["pretrained_tgt_embeddings"]["covered"] == 3
