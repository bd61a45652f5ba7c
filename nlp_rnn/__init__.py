"""nlp-rnn: recurrent networks for translation, classification, language modelling and forecasting."""

import os

# Tensors of 2 MB and more on transparent huge pages: in a virtual machine every 4 KB page fault of a fresh
# large tensor is expensive, and a training step makes many (docs/results.md: a quarter of a profiled bf16
# translation step on a 2-core AMD EPYC). torch reads this once, when it is imported, so it takes effect only
# when nlp_rnn is imported first (the `nlp-rnn` command; docs/training.md). Set it to 0 to turn it off.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from nlp_rnn.version import __version__  # noqa: E402


def load(path, device="auto", **options):
    """Loads a bundle (or a training folder's best/) ready for use on `device` (auto: a CUDA GPU when there
    is one, cpu, cuda, cuda:N): a `Translator`, a `Predictor`, a `Generator` or a forecaster's `Predictor`,
    as its task says. `options` (e.g. precision="fp32") go to that interface."""
    from nlp_rnn.tasks import base as tasks

    bundle = tasks.load(path, device=device)
    return tasks.of(bundle).wrap(bundle, **options)


__all__ = ["__version__", "load"]
