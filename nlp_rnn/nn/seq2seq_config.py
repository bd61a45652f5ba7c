"""The encoder-decoder's architecture, as the `model:` section of a translation config."""

from dataclasses import dataclass
from typing import Optional

from nlp_rnn.config import CELLS, _choice, _positive
from nlp_rnn.errors import NlpRnnError

ATTENTIONS = ("none", "bahdanau", "luong", "luong_dot")


@dataclass(frozen=True)
class Seq2SeqModelConfig:
    cell: str = "gru"
    embedding_dim: int = 256
    encoder_hidden: int = 256
    encoder_layers: int = 1
    bidirectional: bool = True
    decoder_hidden: int = 512
    decoder_layers: int = 1
    attention: str = "bahdanau"  # none | bahdanau | luong (general) | luong_dot
    attention_dim: int = 512  # additive attention's inner size
    input_feeding: bool = True
    bridge: bool = True  # initialise the decoder from the encoder's final state (else zeros)
    tie_output: bool = False  # share target embedding and output weights
    dropout: float = 0.3
    embedding_dropout: Optional[float] = None  # defaults to dropout
    # word vectors in word2vec/GloVe/fastText text format (.txt/.vec, optionally .gz) for the embeddings
    pretrained_src_embeddings: Optional[str] = None
    pretrained_tgt_embeddings: Optional[str] = None
    freeze_embeddings: bool = False

    def __post_init__(self) -> None:
        _choice("model.cell", self.cell, CELLS)
        _choice("model.attention", self.attention, ATTENTIONS)
        for name in (
            "embedding_dim",
            "encoder_hidden",
            "encoder_layers",
            "decoder_hidden",
            "decoder_layers",
            "attention_dim",
        ):
            _positive(f"model.{name}", getattr(self, name))
        if not 0 <= self.dropout < 1:
            raise NlpRnnError(f"config: model.dropout must be in [0, 1), got {self.dropout}")
        enc_out = self.encoder_hidden * (2 if self.bidirectional else 1)
        if self.attention == "luong_dot" and enc_out != self.decoder_hidden:
            raise NlpRnnError(
                f"config: model.attention luong_dot needs decoder_hidden ({self.decoder_hidden}) == "
                f"encoder output size ({enc_out})"
            )
        if self.tie_output and self.embedding_dim != self.decoder_hidden:
            raise NlpRnnError(
                f"config: model.tie_output needs embedding_dim ({self.embedding_dim}) == "
                f"decoder_hidden ({self.decoder_hidden})"
            )
