"""Many-to-one sentence classifier: embeddings -> recurrent encoder -> pooling -> dropout -> linear.

B batch, S length, E embedding, H hidden per direction, D directions, C classes.
Pooling uses real tokens only: `last` is the forward direction's last real state and the backward
direction's first (exactly what packing yields), `mean`/`max` ignore padding, `attention` learns
a softmax over real tokens. `model.members: k` trains k classifiers side by side (`ClassifierEnsemble`).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from nlp_rnn.config import ClassifierModelConfig
from nlp_rnn.data import Batch
from nlp_rnn.dropout import Dropout
from nlp_rnn.encoder import Encoder, EncoderOutput
from nlp_rnn.tokenizer import PAD, UNK


class Classifier(nn.Module):
    def __init__(self, cfg: ClassifierModelConfig, vocab_size: int, num_classes: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(vocab_size, cfg.embedding_dim, padding_idx=PAD)
        self.embed_dropout = Dropout(cfg.dropout if cfg.embedding_dropout is None else cfg.embedding_dropout)
        self.encoder = Encoder(cfg.cell, cfg.embedding_dim, cfg.hidden_size, cfg.num_layers, cfg.bidirectional, cfg.dropout)
        size = self.encoder.output_size
        self.attention = nn.Sequential(nn.Linear(size, size), nn.Tanh(), nn.Linear(size, 1, bias=False)) if cfg.pooling == "attention" else None
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
        if self.training and self.cfg.word_dropout > 0:  # whole words unknown: the model cannot lean on any one
            src = src.masked_fill((torch.rand(src.shape, device=src.device) < self.cfg.word_dropout) & batch.src_mask, UNK)
        return self.encoder(self.embed_dropout(self.embed(src)), batch.src_len, batch.src_mask)

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

    def logits(self, batch: Batch) -> torch.Tensor:
        """Log of the members' mean probabilities (B, C): a softmax of it gives that mean."""
        log_probs = torch.stack([F.log_softmax(m.logits(batch).float(), dim=-1) for m in self.members])
        return torch.logsumexp(log_probs, dim=0) - math.log(len(self.members))

    def forward(self, batch: Batch) -> tuple[torch.Tensor, int]:
        """The members' summed cross-entropies: each member's gradient is the one it would get alone."""
        return sum(member(batch)[0] for member in self.members), batch.size


def build(cfg: ClassifierModelConfig, vocab_size: int, num_classes: int) -> nn.Module:
    return Classifier(cfg, vocab_size, num_classes) if cfg.members == 1 else ClassifierEnsemble(cfg, vocab_size, num_classes)


def embeddings_of(model: nn.Module) -> list[str]:
    """Module paths of the embedding tables (one per ensemble member)."""
    return ["embed"] if isinstance(model, Classifier) else [f"members.{i}.embed" for i in range(len(model.members))]
