"""What every task's raw-text interface shares: batched search over id lists, precision, chunked streams.

The interfaces themselves (`Translator`, `Predictor`, `Generator`, ...) live in their task modules;
`wrap` finds a bundle's through the task registry.
"""

import copy
import logging
from collections.abc import Iterable, Iterator, Sequence

import torch

from nlp_rnn import devices
from nlp_rnn.data import make_batch, ordered_batches
from nlp_rnn.precision import precision_for, resolve_precision  # noqa: F401  (re-exported for the tasks)
from nlp_rnn.search import Hypothesis, SearchOptions, search

log = logging.getLogger(__name__)


def search_ids(
    model, src_ids: Sequence[Sequence[int]], opts: SearchOptions, batch_size: int
) -> list[list[Hypothesis]]:
    """n-best hypotheses for each source id list (each ending in EOS), in input order."""
    results: list[list[Hypothesis]] = [[] for _ in src_ids]
    model.eval()
    device = devices.of(model)
    for index in ordered_batches([len(s) for s in src_ids], batch_size):
        batch = devices.move(make_batch([src_ids[i] for i in index]), device)
        for i, hyps in zip(index, search(model, batch, opts)):
            results[i] = hyps
    return results


def with_precision(model, precision: str):
    """The model to run at a resolved precision: itself (fp32), a bf16 copy, or an int8 copy. The bundle's own
    model is never converted: another interface on the same bundle (the server's ensemble, a second Translator)
    still finds it in float32."""
    if precision == "bf16":
        if all(p.dtype == torch.bfloat16 for p in model.parameters()):
            return model
        return copy.deepcopy(model).to(torch.bfloat16)
    if precision == "int8":
        from nlp_rnn.nn.int8 import quantize

        return quantize(model)
    return model


def chunked(items: Iterable, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
