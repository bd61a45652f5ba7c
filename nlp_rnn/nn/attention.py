"""Additive (Bahdanau) and multiplicative (Luong dot/general) attention sharing one interface.

B batch, S source length, Dv encoder output size (D*H), Hq query (decoder) size, A attention size.
Keys are projected once per source sentence by `keys()` and passed to every step.
"""

import math
from collections.abc import Callable
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from nlp_rnn.nn import deferred
from nlp_rnn.nn.fast import TWO, exporting

CHUNK = 256 * 1024  # elements of (rows, S, A) per piece when decoding: 1 MB of float32
# The same off the CPU (a GPU): one pass, only capped in memory (256 MB of float32)
CHUNK_OFF_CPU = 64 * 1024 * 1024


class Attention(nn.Module):
    def quantize_(self, linear: Callable[[torch.Tensor, Optional[torch.Tensor]], nn.Module]) -> None:
        """Runs the key and query products through `linear(weight, bias)` (int8 kernels), for inference."""
        for name in ("key_layer", "query_layer"):
            layer = getattr(self, name, None)
            if layer is not None:
                setattr(self, name, linear(layer.weight, layer.bias))

    def keys(self, values: torch.Tensor) -> torch.Tensor:
        """values (B, S, Dv) -> keys (B, S, A), computed once per sentence."""
        raise NotImplementedError

    def deferred_pass(self, keys: torch.Tensor, values: torch.Tensor, steps: int) -> deferred.AttentionPass:
        """For one teacher-forced pass of `steps` steps (training): the products whose backward is cheaper than
        autograd's step by step (`nn.deferred`) — here the context over `values`; a kind adds its own."""
        return deferred.AttentionPass(None, None, deferred.DeferredContext(values, steps))

    def scores(
        self, query: torch.Tensor, keys: torch.Tensor, products: Optional[deferred.AttentionPass] = None
    ) -> torch.Tensor:
        """query (B, Hq), keys (B, S, A) -> unnormalised scores (B, S). `products`: the pass's deferred products
        (`deferred_pass`) in place of the module's own, where the kind has them."""
        raise NotImplementedError

    def grouped_scores(self, query: torch.Tensor, keys: torch.Tensor, group: int) -> torch.Tensor:
        """query (B*K, Hq) with K = `group` rows per row of keys (B, S, A) -> unnormalised scores (B, K, S)."""
        raise NotImplementedError

    def forward(
        self,
        query: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        mask: torch.Tensor,
        products: Optional[deferred.AttentionPass] = None,
        group: int = 1,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Context (B, Dv) and weights (B, S): zero on padding, summing to one. `products`: the pass's deferred
        products (training), built over these keys and values. `group` > 1: the query has that many consecutive
        rows per row of keys, values and mask (a sentence's beams, which share one copy of them), (B*K, Hq)."""
        if group > 1:
            scores = self.grouped_scores(query, keys, group)  # (B, K, S)
            weights = torch.softmax(torch.where(mask.unsqueeze(1), scores, float("-inf")), dim=-1)
            context = torch.bmm(weights.to(values.dtype), values)
            return context.flatten(0, 1), weights.flatten(0, 1)  # (B*K, Dv), (B*K, S)
        scores = torch.where(mask, self.scores(query, keys, products), float("-inf"))  # (B, S)
        weights = torch.softmax(scores, dim=-1)  # (B, S)
        if products is not None:
            return products.context(weights), weights
        context = torch.bmm(weights.unsqueeze(1).to(values.dtype), values).squeeze(1)  # (B, Dv)
        return context, weights


class AdditiveAttention(Attention):
    """score = v . tanh(W_k value + W_q query)  (Bahdanau et al., 2015).

    Computed as 2 v . sigmoid(2 W_k value + 2 W_q query) - sum(v), the same number (tanh z = 2 sigmoid(2z) - 1):
    x86 CPUs take 5-6x longer for a tanh than for a sigmoid (torch's vectorised kernels, fp32 and bf16), and
    this (B, S, A) element-wise pass is the largest cost of a decoding step after the products. The keys
    carry the factor 2 (`keys()`; exact in every float type), the query gets it inside the addition.
    """

    def __init__(self, value_size: int, query_size: int, attention_size: int) -> None:
        super().__init__()
        self.key_layer = nn.Linear(value_size, attention_size, bias=False)
        self.query_layer = nn.Linear(query_size, attention_size, bias=False)
        self.energy = nn.Linear(attention_size, 1, bias=False)

    def keys(self, values: torch.Tensor) -> torch.Tensor:
        keys = self.key_layer(values) * 2  # (B, S, A): 2 W_k value
        if keys.dtype == torch.bfloat16 and keys.device.type == "cpu" and not torch.is_grad_enabled():
            # Decoding a bf16 model on a CPU: the scores' element-wise pass over (B, S, A) runs in float32, about
            # twice as fast there as in bf16 (which converts each element to float32 and back)
            return keys.float()
        return keys

    def deferred_pass(self, keys: torch.Tensor, values: torch.Tensor, steps: int) -> deferred.AttentionPass:
        query = deferred.DeferredLinear(self.query_layer.weight, self.query_layer.bias)
        scores = deferred.DeferredScores(keys, self.energy.weight, steps)
        return deferred.AttentionPass(query, scores, deferred.DeferredContext(values, steps))

    def scores(
        self, query: torch.Tensor, keys: torch.Tensor, products: Optional[deferred.AttentionPass] = None
    ) -> torch.Tensor:
        if products is not None:
            return products.scores(products.query(query))
        return self._additive(self.query_layer(query).unsqueeze(1), keys)  # (B, 1, A) with (B, S, A)

    def grouped_scores(self, query: torch.Tensor, keys: torch.Tensor, group: int) -> torch.Tensor:
        projected = self.query_layer(query).view(keys.size(0), group, 1, -1)  # (B, K, 1, A)
        return self._additive(projected, keys.unsqueeze(1))  # with (B, 1, S, A)

    def _additive(self, projected: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """The scores of projected queries against keys that broadcast over the last dimension (A): (B, 1, A)
        with (B, S, A) -> (B, S), or (B, K, 1, A) with (B, 1, S, A) -> (B, K, S)."""
        weight = self.energy.weight  # v (1, A)
        if projected.dtype != keys.dtype:  # a bf16 model decoding over float32 keys (`keys`)
            projected, weight = projected.to(keys.dtype), weight.to(keys.dtype)
        shift = weight.sum()  # sum(v)

        def score(k: torch.Tensor, q: torch.Tensor) -> torch.Tensor:  # (b, .., S, A) -> (b, .., S)
            return F.linear(torch.add(k, q, alpha=2).sigmoid_(), weight).squeeze(-1).mul(TWO).sub_(shift)

        if torch.is_grad_enabled():
            return score(keys, projected)
        # (B, [K,] S): the scores' shape, from the two call forms above (a general broadcast, e.g.
        # torch.broadcast_shapes, costs a decoding step of one sentence 40 µs here)
        shape = (keys.size(0), *projected.shape[1:-2], keys.size(-2))
        limit = CHUNK if keys.device.type == "cpu" else CHUNK_OFF_CPU
        rows = max(1, limit // max(math.prod(shape[1:]) * keys.size(-1), 1))
        if keys.size(0) <= rows or exporting():
            return score(keys, projected)  # one (B, .., S, A) tensor, not two
        # Decoding a large batch on a CPU: a few rows at a time, so that the sum, its sigmoid and the product
        # with v stay in the core's cache instead of making three passes over a (B, .., S, A) tensor in memory
        # (about 25 % faster for a batch of 256 here). Each row's score is the same either way. On a GPU, where
        # decoding is bound by kernel launches and each piece is six more of them (a beam-5 batch of 256 sentences:
        # 2,161 pieces, about 13,000 launches), the pieces are only a cap on memory (`CHUNK_OFF_CPU`).
        scores = keys.new_empty(shape)  # (B, [K,] S)
        for start in range(0, keys.size(0), rows):
            part = slice(start, start + rows)
            scores[part] = score(keys[part], projected[part])
        return scores


class MultiplicativeAttention(Attention):
    """score = value^T W query ("general") or value^T query ("dot")  (Luong et al., 2015).

    For "general" the value side is projected (once per sentence) instead of the query at every step.
    """

    def __init__(self, value_size: int, query_size: int, general: bool) -> None:
        super().__init__()
        self.key_layer = nn.Linear(value_size, query_size, bias=False) if general else None

    def keys(self, values: torch.Tensor) -> torch.Tensor:
        return values if self.key_layer is None else self.key_layer(values)  # (B, S, Hq)

    def scores(
        self, query: torch.Tensor, keys: torch.Tensor, products: Optional[deferred.AttentionPass] = None
    ) -> torch.Tensor:
        return torch.bmm(keys, query.unsqueeze(2)).squeeze(2)  # (B, S)

    def grouped_scores(self, query: torch.Tensor, keys: torch.Tensor, group: int) -> torch.Tensor:
        return torch.bmm(query.view(keys.size(0), group, -1), keys.transpose(1, 2))  # (B, K, S)


def build_attention(kind: str, value_size: int, query_size: int, attention_size: int) -> Attention:
    if kind == "bahdanau":
        return AdditiveAttention(value_size, query_size, attention_size)
    return MultiplicativeAttention(value_size, query_size, general=kind == "luong")
