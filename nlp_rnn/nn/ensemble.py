"""An ensemble of models of one task that share a tokenizer, decoded as one model.

It follows the search protocol (`start`/`step`, memory and state with `select`), so greedy search,
beam search and sampling all serve it: each step's distribution is the mean of the members'
probabilities (its log is returned as the logits). Classifiers average their class probabilities the
same way (`logits`). An ensemble of a model with itself equals the model.
"""

import math
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from nlp_rnn import search
from nlp_rnn.errors import NlpRnnError


class Members:
    """One memory or state per member, reordered together."""

    def __init__(self, items: list) -> None:
        self.items = list(items)

    def select(self, index: torch.Tensor) -> "Members":
        return Members([None if x is None else x.select(index) for x in self.items])

    def for_beams(self, beams: int) -> Optional["Members"]:
        """Each member's memory shared by a sentence's beams (`search.beam_search`); None unless every member's
        memory offers it (then beam search copies them all per beam)."""
        shared = [None if x is None else search.shared_by_beams(x, beams) for x in self.items]
        if any(s is None and x is not None for s, x in zip(shared, self.items)):
            return None
        return Members(shared)

    def detach(self) -> "Members":
        return Members([None if x is None else x.detach() for x in self.items])


def mean_log_probs(logits: list[torch.Tensor]) -> torch.Tensor:
    """log of the mean of softmax(logits_i): (B, V) from k tensors (B, V)."""
    stacked = torch.stack([F.log_softmax(x.float(), dim=-1) for x in logits])
    return torch.logsumexp(stacked, dim=0) - math.log(len(logits))


class Ensemble(nn.Module):
    def __init__(self, models: list[nn.Module]) -> None:
        super().__init__()
        if len(models) < 2:
            raise NlpRnnError("an ensemble needs at least two models")
        self.members = nn.ModuleList(models)

    def start(self, batch) -> tuple[Members, Members, torch.Tensor]:
        outs = [m.start(batch) for m in self.members]
        return Members([o[0] for o in outs]), Members([o[1] for o in outs]), outs[0][2]

    def step(
        self, prev: torch.Tensor, memory: Members, state: Members
    ) -> tuple[torch.Tensor, Members, Optional[Any]]:
        outs = [m.step(prev, mem, st) for m, mem, st in zip(self.members, memory.items, state.items)]
        return mean_log_probs([o[0] for o in outs]), Members([o[1] for o in outs]), outs[0][2]

    def logits(self, batch) -> torch.Tensor:
        """Classifiers: the log of the members' mean class probabilities (B, C)."""
        return mean_log_probs([m.logits(batch) for m in self.members])

    def int8_(self) -> None:
        for member in self.members:
            if not callable(getattr(member, "int8_", None)):
                raise NlpRnnError(f"--precision int8 does not cover {type(member).__name__} models")
            member.int8_()
