"""nlp-rnn: recurrent encoder-decoder translation and sentence classification, raw text in and out."""

__version__ = "0.1.0"


def load(path):
    """Loads a bundle (or a training folder's best/): a `Translator` or a `Predictor` ready for raw text."""
    from nlp_rnn.bundle import load as load_bundle
    from nlp_rnn.predict import wrap

    return wrap(load_bundle(path))


__all__ = ["__version__", "load"]
