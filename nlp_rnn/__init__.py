"""nlp-rnn: recurrent networks for translation, classification, language modelling and forecasting."""

from nlp_rnn.version import __version__


def load(path, device="auto", **options):
    """Loads a bundle (or a training folder's best/) ready for use on `device` (auto: a CUDA GPU when there
    is one, cpu, cuda, cuda:N): a `Translator`, a `Predictor`, a `Generator` or a forecaster's `Predictor`,
    as its task says. `options` (e.g. precision="fp32") go to that interface."""
    from nlp_rnn.tasks import base as tasks

    bundle = tasks.load(path, device=device)
    return tasks.of(bundle).wrap(bundle, **options)


__all__ = ["__version__", "load"]
