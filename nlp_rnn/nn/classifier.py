"""Many-to-one sentence classifier: embeddings -> recurrent encoder -> pooling -> dropout -> linear.

B batch, S length, E embedding, H hidden per direction, D directions, C classes.
Pooling uses real tokens only: `last` is the forward direction's last real state and the backward
direction's first (exactly what packing yields), `mean`/`max` ignore padding, `attention` learns
a softmax over real tokens. `model.members: k` trains k classifiers side by side (`ClassifierEnsemble`).

`model.encoder: language_model` is the document classifier of ULMFiT (Howard & Ruder 2018,
`DocumentClassifier`): a language model's body (embeddings and unidirectional recurrent stack, the
weights `--init-from` copies) reads a document of any length in windows of `window` tokens with the
state carried across them; the top layer's outputs are pooled over the whole document (the last real
token's, the maximum and the mean, concatenated) into a small head. In training, gradients flow
through the last `grad_windows` windows only (earlier ones run without a graph), so memory is bounded
by `grad_windows * window` tokens per document whatever its length; in prediction by one window.
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
from nlp_rnn.nn.language_model import LanguageModel, LMModelConfig
from nlp_rnn.tokenizer import PAD, UNK

POOLINGS = ("last", "mean", "max", "attention")
ENCODERS = ("rnn", "language_model")
HEAD_NORMS = ("batch", "layer")


class PooledBatchNorm(nn.BatchNorm1d):
    """BatchNorm over pooled document features (ULMFiT's head): it standardises each feature across the
    batch, which makes the small differences between documents' averaged states visible to the head (a
    LayerNorm, across the features of one document, does not: IMDb from the language model stayed near
    chance for hundreds of steps with it). A training batch of one document uses the running statistics.

    `steps` > 0: the running statistics are the plain average over the first `steps` training batches, and
    from then on training normalises with them too, as prediction does. Batches group texts of one length,
    so when a corpus mixes whole reviews and short phrases, each batch's own statistics fit its kind only,
    and the single set prediction uses fits neither (the shipped default lost 2.5 points on SST-2 to this);
    with the statistics fixed, training and prediction normalise alike."""

    def __init__(self, size: int, steps: int = 0) -> None:
        super().__init__(size, momentum=None if steps else 0.1)
        self.steps = steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fixed = self.steps and int(self.num_batches_tracked) >= self.steps
        if self.training and (x.size(0) == 1 or fixed):
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)


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
    # rnn: the sentence encoder above (cell, embedding_dim, hidden_size, ... bidirectional, pooling);
    # language_model: a language model's body read in windows (`DocumentClassifier`), sized by `body`,
    # which `train classifier --init-from LM` fills from the language model.
    encoder: str = "rnn"
    body: Optional[LMModelConfig] = None
    window: int = 70  # language_model encoder: tokens per window (ULMFiT's bptt)
    grad_windows: int = 20  # ... training backpropagates through the last this many windows of a batch
    head_size: int = 50  # ... the head's hidden layer over the pooled [last, max, mean] features
    head_norm: str = (
        "batch"  # ... batch (ULMFiT's BatchNorm across documents) | layer (LayerNorm per document)
    )
    # ... batch: after this many training batches, normalise with the statistics averaged over them (as
    # prediction does) instead of each batch's own; for corpora that mix documents and sentences. 0: never
    head_norm_steps: int = 0
    # A language model (bundle or training folder) whose tokenizer, embeddings and recurrent stack the
    # classifier starts from (`--init-from`); read once, when training starts.
    init_from: Optional[str] = None
    # init_from a document classifier with the same labels: take its head too (`--init-head`), so that a
    # trained classifier continues on other data; otherwise the head starts afresh.
    init_head: bool = False

    def __post_init__(self) -> None:
        _choice("model.cell", self.cell, CELLS)
        _choice("model.encoder", self.encoder, ENCODERS)
        _choice("model.head_norm", self.head_norm, HEAD_NORMS)
        for name in ("window", "grad_windows", "head_size"):
            _positive(f"model.{name}", getattr(self, name))
        if self.head_norm_steps < 0:
            raise NlpRnnError(f"config: model.head_norm_steps must be 0 or more, got {self.head_norm_steps}")
        if self.head_norm_steps and self.head_norm != "batch":
            raise NlpRnnError(
                f"config: model.head_norm_steps goes with model.head_norm batch (given: {self.head_norm})"
            )
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


class DocumentClassifier(nn.Module):
    """A language model's body over a whole document in windows, concat pooling, a small head."""

    def __init__(self, cfg: ClassifierModelConfig, vocab_size: int, num_classes: int) -> None:
        super().__init__()
        if cfg.body is None:
            raise NlpRnnError(
                "config: model.encoder language_model needs model.body (or --init-from a language model)"
            )
        if cfg.members != 1:
            raise NlpRnnError("config: model.members > 1 goes with model.encoder rnn only")
        self.cfg = cfg
        self.body = LanguageModel(cfg.body, vocab_size, output=False)
        size = cfg.body.top_size
        self.head = nn.Sequential(
            PooledBatchNorm(3 * size, cfg.head_norm_steps)
            if cfg.head_norm == "batch"
            else nn.LayerNorm(3 * size),
            Dropout(cfg.dropout),
            nn.Linear(3 * size, cfg.head_size),
            nn.ReLU(),
            Dropout(cfg.dropout),
            nn.Linear(cfg.head_size, num_classes),
        )

    def features(self, src: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Right-padded documents src (B, S) of `lengths` (B,) -> pooled features (B, 3H): the top layer's
        output at the last real token, its maximum and its mean over the real tokens. A backward body
        (`body.reverse`) reads each document's real tokens last to first (padding stays on the right).

        The rows run longest first, and a window runs only the rows whose documents reach into it: a batch of
        documents of mixed lengths costs the sum of their windows, not the batch size times the longest one's.
        """
        if self.cfg.body.reverse:
            src = reverse_real(src, lengths)
        order = None
        if src.size(0) > 1 and bool((lengths[1:] > lengths[:-1]).any()):
            order = torch.argsort(lengths, descending=True, stable=True)
            src, lengths = src[order], lengths[order]
        size, width = self.cfg.body.top_size, self.cfg.window
        windows = max(1, -(-src.size(1) // width))
        # rows reaching into each window: a prefix of the sorted batch, one host read for all windows
        starts = torch.arange(windows, device=lengths.device) * width
        reaching = [max(1, n) for n in (lengths.unsqueeze(0) > starts.unsqueeze(1)).sum(1).tolist()]
        reaching[0] = src.size(0)  # every row reads the first window (as an empty document would)
        grad = torch.is_grad_enabled()
        first_graph = windows - self.cfg.grad_windows  # earlier windows run without a graph
        state, rows = self.body.initial_state(reaching[0]), reaching[0]
        top = src.new_full((rows, size), float("-inf"), dtype=torch.float32)
        total = src.new_zeros((rows, size), dtype=torch.float32)
        last = src.new_zeros((rows, size), dtype=torch.float32)
        done: list[torch.Tensor] = []
        for k in range(windows):
            if reaching[k] < rows:  # the rows past reaching[k] have ended: their features are final
                done.append(torch.cat([last[reaching[k] :], top[reaching[k] :], total[reaching[k] :]], dim=1))
                rows = reaching[k]
                top, total, last = top[:rows], total[:rows], last[:rows]
                state = state.first(rows)
            with torch.set_grad_enabled(grad and k >= first_graph):
                tokens = src[:rows, k * width : (k + 1) * width]  # (b, w)
                out, state = self.body._recurrent(tokens, state)
                out = out.float()  # (b, w, H)
                at = lengths[:rows] - 1 - k * width  # (b,) the last real token's place in this window
                real = torch.arange(tokens.size(1), device=src.device).unsqueeze(0) <= at.unsqueeze(
                    1
                )  # (b, w)
                top = torch.maximum(top, out.masked_fill(~real.unsqueeze(2), float("-inf")).amax(1))
                total = total + (out * real.unsqueeze(2)).sum(1)
                picked = out.gather(1, at.clamp(0, tokens.size(1) - 1).view(-1, 1, 1).expand(-1, 1, size))
                inside = ((at >= 0) & (at < tokens.size(1))).unsqueeze(1)  # (b, 1)
                last = torch.where(inside, picked.squeeze(1), last)
        pooled = torch.cat([torch.cat([last, top, total], dim=1), *reversed(done)])  # (B, 3H), longest first
        last, top, total = pooled.split(size, dim=1)
        mean = total / lengths.clamp(min=1).unsqueeze(1).float()
        features = torch.cat([last, top, mean], dim=1)  # (B, 3H)
        if order is not None:
            features = features[torch.argsort(order)]
        return features

    def embedding_paths(self) -> list[str]:
        return ["body.embed"]

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Parameters from the top: the head, the recurrent layers top to bottom, the embeddings."""
        return [list(self.head.parameters()), *reversed(self.body.layer_groups())]

    def int8_(self) -> None:
        self.body.int8_()
        self.head[2], self.head[5] = int8_linear(self.head[2]), int8_linear(self.head[5])

    def logits(self, batch: Batch) -> torch.Tensor:
        features = self.features(batch.src, batch.src_len)  # pooled in float32
        return self.head(features.to(self.head[0].weight.dtype))  # (B, C); a bf16 copy's head takes bf16

    def forward(self, batch: Batch) -> tuple[torch.Tensor, int]:
        return F.cross_entropy(self.logits(batch).float(), batch.labels, reduction="sum"), batch.size


def reverse_real(src: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Right-padded src (B, S) with each row's first `lengths` tokens in reverse order, padding in place."""
    places = torch.arange(src.size(1), device=src.device).unsqueeze(0)  # (1, S)
    back = lengths.unsqueeze(1) - 1 - places  # (B, S) where a real position's token comes from
    return src.gather(1, torch.where(back >= 0, back, places))


def build(cfg: ClassifierModelConfig, vocab_size: int, num_classes: int) -> nn.Module:
    if cfg.encoder == "language_model":
        return DocumentClassifier(cfg, vocab_size, num_classes)
    return (
        Classifier(cfg, vocab_size, num_classes)
        if cfg.members == 1
        else ClassifierEnsemble(cfg, vocab_size, num_classes)
    )


def embeddings_of(model: nn.Module) -> list[str]:
    """Module paths of the embedding tables (one per ensemble member)."""
    return model.embedding_paths()
