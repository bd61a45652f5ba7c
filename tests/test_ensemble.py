"""Ensembles: repeated --model decodes several models as one (the mean of their probabilities at each
step), through greedy, beam search and classification alike; an ensemble of a model with itself equals the
model; models of other tasks or tokenizers are refused in one line."""

from pathlib import Path

import pytest
from helpers import ROOT, train_tiny_classifier

from nlp_rnn.cli import main
from nlp_rnn.data import make_batch
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.tasks.classification import Predictor
from nlp_rnn.tasks.engines import load_for
from nlp_rnn.tasks.translation import Translator

CHECKPOINTS = ROOT / "checkpoints"
SENTENCES = ["Ein Hund rennt über die Wiese.", "Zwei Männer spielen Fußball im Park."]


@pytest.mark.parametrize("beam", [1, 3])
def test_a_translation_model_with_itself_translates_as_the_model(beam: int) -> None:
    alone = Translator(load_for("torch", CHECKPOINTS / "multi30k-de-en"), "fp32", "off")  # as the ensemble
    pair = Translator(load_for("torch", [CHECKPOINTS / "multi30k-de-en"] * 2), "fp32")
    for a, b in zip(
        alone.translate(SENTENCES, alone.options(beam_size=beam)),
        pair.translate(SENTENCES, pair.options(beam_size=beam)),
    ):
        assert a[0].text == b[0].text and a[0].score == pytest.approx(b[0].score, abs=1e-4)
    if beam > 1:  # the members' beams share each sentence's memory, as a single model's do
        memory, _, _ = pair.model.start(make_batch(pair.encode(SENTENCES)))
        assert [m.group for m in memory.for_beams(beam).items] == [beam, beam]


def test_a_classifier_with_itself_gives_the_same_probabilities_and_int8_covers_it(capsys) -> None:
    texts = ["a gripping , beautifully acted film .", "dull and far too long ."]
    alone = Predictor(load_for("torch", CHECKPOINTS / "sst2"), "fp32").classify(texts)
    pair = Predictor(load_for("torch", [CHECKPOINTS / "sst2"] * 2), "fp32").classify(texts)
    for a, b in zip(alone, pair):
        assert a.label == b.label and a.probability == pytest.approx(b.probability, abs=1e-5)
    assert (
        Predictor(load_for("torch", [CHECKPOINTS / "sst2"] * 2), "int8").classify(texts)[0].label
        == "positive"
    )
    model = str(CHECKPOINTS / "sst2")
    assert main(["classify", texts[0], "--model", model, "--model", model, "--precision", "fp32"]) == 0
    assert capsys.readouterr().out.startswith("positive")


def test_models_that_cannot_be_ensembled_are_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(NlpRnnError, match="is a translation model"):
        load_for("torch", [CHECKPOINTS / "sst2", CHECKPOINTS / "multi30k-de-en"])
    run = train_tiny_classifier(tmp_path)
    with pytest.raises(NlpRnnError, match="have different tokenizers"):
        load_for("torch", [CHECKPOINTS / "sst2", run])
    with pytest.raises(NlpRnnError, match="ensembles run on torch"):
        load_for("onnxruntime", [CHECKPOINTS / "sst2", run])
