"""nlp-rnn: recurrent networks for translation, classification, language modelling and forecasting."""

__version__ = "0.1.0"


def load(path, device="auto", **options):
    """Loads a bundle (or a training folder's best/) ready for use on `device` (auto: a CUDA GPU when there
    is one, cpu, cuda, cuda:N): a `Translator`, a `Predictor`, a `Generator` or a forecaster's `Predictor`,
    as its task says. `options` (e.g. precision="fp32") go to that interface."""
    from nlp_rnn.bundle import load as load_bundle
    from nlp_rnn.predict import wrap

    return wrap(load_bundle(path, device=device), **options)


__all__ = ["__version__", "load"]
