"""Many-to-one sentence classifier: embeddings -> recurrent encoder -> pooling -> dropout -> linear.

B batch, S length, E embedding, H hidden per direction, D directions, C classes.
Pooling uses real tokens only: `last` is the forward direction's last real state and the backward
direction's first (exactly what packing yields), `mean`/`max` ignore padding, `attention` learns
a softmax over real tokens. `model.members: k` trains k classifiers side by side (`ClassifierEnsemble`).
"""

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from nlp_rnn.config import CELLS, _choice, _positive
from nlp_rnn.data import Batch
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.nn.dropout import Dropout
from nlp_rnn.nn.encoder import Encoder, EncoderOutput
from nlp_rnn.nn.int8 import Int8Encoder, int8_linear
from nlp_rnn.tokenizer import PAD, UNK

POOLINGS = ("last", "mean", "max", "attention")


@dataclass(frozen=True)
class ClassifierModelConfig:
    cell: str = "lstm"
    embedding_dim: int = 256
    hidden_size: int = 256
    num_layers: int = 1
    bidirectional: bool = True
    pooling: str = "max"  # last | mean | max | attention
    dropout: float = 0.5
    embedding_dropout: Optional[float] = None
    pretrained_embeddings: Optional[str] = (
        None  # word2vec/GloVe/fastText text format (.txt/.vec, optionally .gz)
    )
    freeze_embeddings: bool = False
    word_dropout: float = 0.0  # training only: each input token becomes <unk> with this probability
    members: int = 1  # >1: an ensemble of this many classifiers trained side by side, probabilities averaged

    def __post_init__(self) -> None:
        _choice("model.cell", self.cell, CELLS)
        _choice("model.pooling", self.pooling, POOLINGS)
        for name in ("embedding_dim", "hidden_size", "num_layers"):
            _positive(f"model.{name}", getattr(self, name))
        if not 0 <= self.dropout < 1:
            raise NlpRnnError(f"config: model.dropout must be in [0, 1), got {self.dropout}")
        _positive("model.members", self.members)
        if not 0 <= self.word_dropout < 1:
            raise NlpRnnError(f"config: model.word_dropout must be in [0, 1), got {self.word_dropout}")


class Classifier(nn.Module):
    def __init__(self, cfg: ClassifierModelConfig, vocab_size: int, num_classes: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(vocab_size, cfg.embedding_dim, padding_idx=PAD)
        self.embed_dropout = Dropout(cfg.dropout if cfg.embedding_dropout is None else cfg.embedding_dropout)
        self.encoder = Encoder(
            cfg.cell, cfg.embedding_dim, cfg.hidden_size, cfg.num_layers, cfg.bidirectional, cfg.dropout
        )
        size = self.encoder.output_size
        self.attention = (
            nn.Sequential(nn.Linear(size, size), nn.Tanh(), nn.Linear(size, 1, bias=False))
            if cfg.pooling == "attention"
            else None
        )
        self.dropout = Dropout(cfg.dropout)
        self.output = nn.Linear(size, num_classes)

    def pool(self, enc: EncoderOutput) -> torch.Tensor:
        """Sentence vectors (B, D*H) from the encoder output, over real tokens only."""
        mask = enc.mask.unsqueeze(-1)  # (B, S, 1)
        if self.cfg.pooling == "last":
            return enc.final
        if self.cfg.pooling == "mean":
            return (enc.states * mask).sum(1) / mask.sum(1).clamp(min=1)
        if self.cfg.pooling == "max":
            return enc.states.masked_fill(~mask, float("-inf")).max(dim=1).values
        scores = self.attention(enc.states).squeeze(-1).masked_fill(~enc.mask, float("-inf"))  # (B, S)
        return torch.bmm(torch.softmax(scores, dim=-1).unsqueeze(1), enc.states).squeeze(1)  # (B, D*H)

    def encode(self, batch: Batch) -> EncoderOutput:
        src = batch.src
        if (
            self.training and self.cfg.word_dropout > 0
        ):  # whole words unknown: the model cannot lean on any one
            src = src.masked_fill(
                (torch.rand(src.shape, device=src.device) < self.cfg.word_dropout) & batch.src_mask, UNK
            )
        return self.encoder(self.embed_dropout(self.embed(src)), batch.src_len, batch.src_mask)

    def embedding_paths(self) -> list[str]:
        return ["embed"]

    def int8_(self) -> None:
        """Encoder, attention pooling and output layer in int8 (`nn.int8`), in place; for inference on the CPU."""
        self.encoder = Int8Encoder(self.encoder)
        self.output = int8_linear(self.output)
        if self.attention is not None:
            self.attention[0], self.attention[2] = (
                int8_linear(self.attention[0]),
                int8_linear(self.attention[2]),
            )

    def logits(self, batch: Batch) -> torch.Tensor:
        return self.output(self.dropout(self.pool(self.encode(batch))))  # (B, C)

    def forward(self, batch: Batch) -> tuple[torch.Tensor, int]:
        """Summed cross-entropy over the batch and the number of sentences."""
        return F.cross_entropy(self.logits(batch).float(), batch.labels, reduction="sum"), batch.size


class ClassifierEnsemble(nn.Module):
    """`cfg.members` classifiers trained side by side on the same batches, each with its own loss (their own
    initialisation and dropout make them differ); the prediction is the mean of their class probabilities."""

    def __init__(self, cfg: ClassifierModelConfig, vocab_size: int, num_classes: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.members = nn.ModuleList(Classifier(cfg, vocab_size, num_classes) for _ in range(cfg.members))

    def embedding_paths(self) -> list[str]:
        return [
            f"members.{i}.{path}"
            for i, member in enumerate(self.members)
            for path in member.embedding_paths()
        ]

    def int8_(self) -> None:
        for member in self.members:
            member.int8_()

    def logits(self, batch: Batch) -> torch.Tensor:
        """Log of the members' mean probabilities (B, C): a softmax of it gives that mean."""
        log_probs = torch.stack([F.log_softmax(m.logits(batch).float(), dim=-1) for m in self.members])
        return torch.logsumexp(log_probs, dim=0) - math.log(len(self.members))

    def forward(self, batch: Batch) -> tuple[torch.Tensor, int]:
        """The members' summed cross-entropies: each member's gradient is the one it would get alone."""
        return sum(member(batch)[0] for member in self.members), batch.size


def build(cfg: ClassifierModelConfig, vocab_size: int, num_classes: int) -> nn.Module:
    return (
        Classifier(cfg, vocab_size, num_classes)
        if cfg.members == 1
        else ClassifierEnsemble(cfg, vocab_size, num_classes)
    )


def embeddings_of(model: nn.Module) -> list[str]:
    """Module paths of the embedding tables (one per ensemble member)."""
    return model.embedding_paths()
