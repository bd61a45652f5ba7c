"""nlp-rnn: recurrent networks for translation, classification, language modelling and forecasting."""

import os

# Tensors of 2 MB and more on transparent huge pages: in a virtual machine every 4 KB page fault of a fresh
# large tensor is expensive, and a training step makes many (docs/results.md: a quarter of a profiled bf16
# translation step on a 2-core AMD EPYC). torch reads this once, when it is imported, so it takes effect only
# when nlp_rnn is imported first (the `nlp-rnn` command; docs/training.md). Set it to 0 to turn it off.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


def _keep_freed_memory() -> None:
    """glibc hands large freed blocks back to the kernel (blocks above a few MB are mapped and unmapped one by
    one, and the heap's free top is trimmed), so the next tensor of that size pays a page fault per page again:
    on a 2-core Xeon a fresh 4 MB cast took 3.4 ms against 0.3 ms into reused memory, and an IMDb classifier
    trained 48-51 reviews/s with the memory kept against 42-45 without (docs/results.md). Large blocks come from
    the heap and freed memory stays with the process (its resident size stays at its peak). glibc only (Linux);
    NLP_RNN_KEEP_MEMORY=0 turns it off."""
    import sys

    if os.environ.get("NLP_RNN_KEEP_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to set
        return
    trim_threshold, mmap_threshold = -1, -3  # mallopt's M_TRIM_THRESHOLD, M_MMAP_THRESHOLD
    if not mallopt(mmap_threshold, 1 << 30):
        mallopt(mmap_threshold, 32 << 20)  # glibc's largest allowed on some builds
    mallopt(trim_threshold, (1 << 31) - 1)


_keep_freed_memory()

from nlp_rnn.version import __version__  # noqa: E402


def load(path, device="auto", **options):
    """Loads a bundle (or a training folder's best/) ready for use on `device` (auto: a CUDA GPU when there
    is one, cpu, cuda, cuda:N): a `Translator`, a `Predictor`, a `Generator` or a forecaster's `Predictor`,
    as its task says. `options` (e.g. precision="fp32") go to that interface."""
    from nlp_rnn.tasks import base as tasks

    bundle = tasks.load(path, device=device)
    return tasks.of(bundle).wrap(bundle, **options)


__all__ = ["__version__", "load"]
