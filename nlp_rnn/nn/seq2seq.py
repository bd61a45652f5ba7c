"""The encoder-decoder translation model built from the parts in encoder.py, attention.py, decoder.py.

B batch, S source length, T target length, E embedding, H hidden, N real target tokens, V vocabulary.
"""

import torch
from torch import nn

from nlp_rnn.data import Batch
from nlp_rnn.nn.decoder import Decoder
from nlp_rnn.nn.dropout import Dropout
from nlp_rnn.nn.encoder import Encoder, EncoderOutput
from nlp_rnn.nn.int8 import Int8Encoder, Int8Linear
from nlp_rnn.nn.loss import linear_cross_entropy_sum
from nlp_rnn.nn.seq2seq_config import Seq2SeqModelConfig
from nlp_rnn.tokenizer import BOS, PAD


class Seq2Seq(nn.Module):
    def __init__(self, cfg: Seq2SeqModelConfig, src_vocab: int, tgt_vocab: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.src_embed = nn.Embedding(src_vocab, cfg.embedding_dim, padding_idx=PAD)
        self.embed_dropout = Dropout(cfg.dropout if cfg.embedding_dropout is None else cfg.embedding_dropout)
        self.encoder = Encoder(
            cfg.cell,
            cfg.embedding_dim,
            cfg.encoder_hidden,
            cfg.encoder_layers,
            cfg.bidirectional,
            cfg.dropout,
        )
        self.decoder = Decoder(cfg, tgt_vocab, self.encoder.output_size)
        self.shortlist = None  # an `nn.shortlist.Shortlist` decoding uses when set (not a weight)

    def encode(self, src: torch.Tensor, src_len: torch.Tensor, src_mask: torch.Tensor) -> EncoderOutput:
        """src (B, S) ids -> states (B, S, D*H), final (B, D*H)."""
        return self.encoder(self.embed_dropout(self.src_embed(src)), src_len, src_mask)

    def start(self, batch: Batch, shortlist=None):
        """Search protocol: encode once -> (memory, decoder state, BOS tokens (B,)). `shortlist`: one call's
        (`Shortlisted`), else the model's own, if it has one."""
        enc = self.encode(batch.src, batch.src_len, batch.src_mask)
        memory = self.decoder.memory(enc)
        shortlist = self.shortlist if shortlist is None else shortlist
        if shortlist is not None:
            memory = self.decoder.shortlisted(
                memory, *shortlist.for_batch(batch.src), shortlist.kept, shortlist.common
            )
        return (
            memory,
            self.decoder.init_state(enc),
            torch.full((batch.size,), BOS, dtype=torch.long, device=batch.src.device),
        )

    def step(self, prev: torch.Tensor, memory, state):
        """Search protocol: prev (B,) -> logits (B, V), new state, attention weights (B, S) or None."""
        return self.decoder.step(prev, memory, state)

    def int8_(self) -> None:
        """Every matrix product of encoder and decoder in int8 (`nn.int8`), in place; for inference on the CPU."""
        self.encoder = Int8Encoder(self.encoder)
        self.decoder.quantize_(Int8Linear)

    def forward(
        self, batch: Batch, teacher_forcing: float = 1.0, label_smoothing: float = 0.0
    ) -> tuple[torch.Tensor, int]:
        """Summed cross-entropy over the real target tokens and their number (padding never counts)."""
        enc = self.encode(batch.src, batch.src_len, batch.src_mask)
        hidden = self.decoder(
            batch.tgt_in, self.decoder.memory(enc), self.decoder.init_state(enc), teacher_forcing
        )  # (B, T, H)
        real = hidden[batch.tgt_mask]  # (N, H): the output layer never sees padding
        output = self.decoder.output  # fused with the loss: the (N, V) logits are never stored
        loss = linear_cross_entropy_sum(
            real, output.weight, output.bias, batch.tgt_out[batch.tgt_mask], label_smoothing
        )
        return loss, real.size(0)


class Shortlisted:
    """A Seq2Seq as the searches see it for one call over one shortlist (`Shortlist.over`): the model
    itself is not changed, so threads and other translators sharing it (an fp32 bundle's own model) are
    not affected."""

    def __init__(self, model: Seq2Seq, shortlist) -> None:
        self.model, self.shortlist = model, shortlist

    def start(self, batch: Batch):
        return self.model.start(batch, self.shortlist)

    def step(self, prev: torch.Tensor, memory, state):
        return self.model.step(prev, memory, state)

    def eval(self) -> "Shortlisted":
        self.model.eval()
        return self

    def parameters(self):
        return self.model.parameters()
