"""`nlp-rnn serve`: a live server on a free localhost port answers like the Python API, batches concurrent
requests without changing any answer, refuses every bad request with a 4xx and one line, and stops cleanly."""

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import IMDB_TEST, ROOT, call, running

from nlp_rnn.deploy.serve import Limits, create_app, load_models
from nlp_rnn.tasks.base import load
from nlp_rnn.tasks.classification import Predictor
from nlp_rnn.tasks.translation import Translator

CHECKPOINTS = ROOT / "checkpoints"


@pytest.fixture(scope="module")
def server():
    specs = [("de-en", CHECKPOINTS / "multi30k-de-en"), ("sst2", CHECKPOINTS / "sst2")]
    app = create_app(
        load_models(specs, "cpu", "fp32"), Limits(max_texts=40, max_chars=500), max_batch=64, max_wait_ms=20
    )
    with running(app) as base:
        yield base


@pytest.mark.slow
def test_the_server_answers_like_the_python_api_alone_and_among_30_concurrent_requests(
    server: str, multi30k: Path
) -> None:
    sentences = (multi30k / "test_2016_flickr.de").read_text(encoding="utf-8").splitlines()[:31]
    translator = Translator(load(CHECKPOINTS / "multi30k-de-en"), "fp32")
    expected = [t[0].text for t in translator.translate(sentences, translator.options(beam_size=1))]
    assert call(server, "/health")[1]["status"] == "ok"
    names = {m["name"]: m["task"] for m in call(server, "/models")[1]["models"]}
    assert names == {"de-en": "translation", "sst2": "classification"}
    status, alone = call(server, "/translate", {"texts": [sentences[0]], "beam_size": 1})
    assert status == 200 and alone == {
        "model": "de-en",
        "translations": [
            {
                "text": expected[0],
                "score": pytest.approx(
                    translator.translate(sentences[:1], translator.options(beam_size=1))[0][0].score, abs=1e-4
                ),
            }
        ],
    }
    # 30 clients at once (the first sentence again among them): answers batched together are the same as alone.
    with ThreadPoolExecutor(30) as pool:
        answers = list(
            pool.map(
                lambda s: call(server, "/translate", {"texts": [s], "beam_size": 1}),
                sentences[:1] + sentences[1:30],
            )
        )
    assert [a[0] for a in answers] == [200] * 30
    assert [a[1]["translations"][0]["text"] for a in answers] == expected[:30]
    counted = call(server, "/health")[1]["batching"]["de-en"]  # 31 texts so far, in fewer runs than requests
    assert counted["texts"] == 31 and 1 <= counted["batches"] < 31 and 0 < counted["busy_fraction"] <= 1
    status, beams = call(server, "/translate", {"texts": sentences[:2], "beam_size": 3, "n_best": 2})
    assert status == 200 and [len(t["n_best"]) for t in beams["translations"]] == [2, 2]
    assert (
        beams["translations"][0]["text"]
        == translator.translate(sentences[:1], translator.options(beam_size=3))[0][0].text
    )


def test_classify_answers_with_label_names_like_the_predictor(server: str) -> None:
    texts = ["a gripping , beautifully acted film .", "a dull , lifeless mess ."]
    expected = Predictor(load(CHECKPOINTS / "sst2")).classify(texts)
    status, body = call(server, "/classify", {"texts": texts})
    assert status == 200 and body["model"] == "sst2"
    assert (
        [p["label"] for p in body["predictions"]] == [p.label for p in expected] == ["positive", "negative"]
    )
    assert body["predictions"][0]["probability"] == pytest.approx(expected[0].probability, abs=1e-5)


@pytest.mark.parametrize(
    "raw, status, message",
    [
        (b'{"texts": ["ein Hund"', 400, "body: not valid JSON"),
        (json.dumps({"texts": "ein Hund"}).encode(), 422, "texts: Input should be a valid list"),
        (json.dumps({"texts": ["ein Hund", 3]}).encode(), 422, "texts.1: Input should be a valid string"),
        (json.dumps({"texts": []}).encode(), 422, "texts: List should have at least 1 item"),
        (json.dumps({"texts": ["x"] * 41}).encode(), 422, "texts: List should have at most 40 items"),
        (json.dumps({"texts": ["x" * 501]}).encode(), 413, "texts.0: 501 characters; at most 500 per text"),
        (json.dumps({"texts": ["x" * 1_000_000]}).encode(), 413, "body: 1,000,015 bytes; at most 1,000,000"),
        (
            json.dumps({"texts": ["x"], "model": "fr-en"}).encode(),
            404,
            "model: unknown model 'fr-en' (served: de-en, sst2)",
        ),
        (
            json.dumps({"texts": ["x"], "model": "sst2"}).encode(),
            400,
            "model: 'sst2' is a classification model",
        ),
        (
            json.dumps({"texts": ["x"], "beam_size": 0}).encode(),
            422,
            "beam_size: Input should be greater than or equal to 1",
        ),
        (
            json.dumps({"texts": ["x"], "beam_size": 1000}).encode(),
            422,
            "beam_size: Input should be less than or equal to 16",
        ),
        (
            json.dumps({"texts": ["x"], "beam_size": "2"}).encode(),
            422,
            'body: Value error, beam_size must be a number, got "2"',
        ),
        (
            json.dumps({"texts": ["x"], "colour": "red"}).encode(),
            422,
            "colour: Extra inputs are not permitted",
        ),
        (b'{"texts": ["ein Hund \xff"]}', 400, "body: not valid UTF-8 (byte 0xff at offset 21)"),
    ],
)
def test_every_bad_request_is_a_4xx_with_one_line_and_the_next_request_is_served(
    server: str, raw: bytes, status: int, message: str
) -> None:
    got, body = call(server, "/translate", raw=raw)
    assert got == status and body["error"].startswith(message) and "\n" not in body["error"], body
    assert call(server, "/translate", {"texts": ["ein Hund"], "beam_size": 1})[0] == 200


def test_n_best_above_the_beam_widens_the_beam(server: str) -> None:
    status, body = call(server, "/translate", {"texts": ["Ein Hund rennt."], "beam_size": 2, "n_best": 3})
    wide = call(server, "/translate", {"texts": ["Ein Hund rennt."], "beam_size": 3, "n_best": 3})[1]
    narrow = call(server, "/translate", {"texts": ["Ein Hund rennt."], "beam_size": 2, "n_best": 2})[1]
    assert status == 200 and body == wide and body != narrow


def test_a_document_classifier_takes_whole_reviews_where_a_sentence_model_answers_413() -> None:
    """The per-text limit is the model's: whole documents for a classifier that reads them in windows."""
    import csv

    with open(IMDB_TEST, encoding="utf-8", newline="") as rows:
        review = next(r["text"] for r in csv.DictReader(rows) if 600 < len(r["text"]) <= 3000)
    specs = [("sst2", CHECKPOINTS / "sst2"), ("sentiment", CHECKPOINTS / "sentiment")]
    app = create_app(load_models(specs, "cpu", "fp32"), Limits(max_chars=500, max_document_chars=3000))
    with running(app) as base:
        status, body = call(base, "/classify", {"texts": [review], "model": "sentiment"})
        expected = Predictor(load(CHECKPOINTS / "sentiment")).classify([review])[0]
        assert status == 200 and body["predictions"][0]["label"] == expected.label
        assert body["predictions"][0]["probability"] == pytest.approx(expected.probability, abs=1e-5)
        status, body = call(base, "/classify", {"texts": [review], "model": "sst2"})
        assert status == 413 and body["error"] == (
            f"texts.0: {len(review):,} characters; at most 500 per text for model sst2"
        )
        status, body = call(base, "/classify", {"texts": ["x" * 3001], "model": "sentiment"})
        assert status == 413 and "at most 3,000 per text for model sentiment" in body["error"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--max-document-chars", "2000000"], "--max-body 1,000,000 bytes is below --max-document-chars"),
        (["--max-chars", "5000", "--max-document-chars", "4000", "--max-body", "4500"], "--max-chars 5,000:"),
        (["--max-body", "0"], "--max-body must be at least 1"),
    ],
)
def test_limits_the_server_could_never_reach_are_refused_before_it_starts(args, message, capsys) -> None:
    from nlp_rnn.cli import main

    assert main(["serve", "--port", "0", *args]) == 2  # no model is loaded, no port opened
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_a_batch_that_runs_out_of_memory_is_a_503_in_one_line_and_the_server_goes_on(monkeypatch) -> None:
    """A real allocator failure (40 TB asked of the CPU) while translating: 503 with torch's words, what to lower
    and Retry-After; the next request is answered; any other failure stays a 500."""
    import torch

    specs = [("de-en", CHECKPOINTS / "multi30k-de-en")]
    app = create_app(load_models(specs, "cpu", "fp32"), Limits(), max_batch=8, max_wait_ms=0)
    translate = Translator.translate
    with running(app) as base:
        monkeypatch.setattr(Translator, "translate", lambda self, *a, **k: torch.empty(10**13))
        status, body = call(base, "/translate", {"texts": ["Ein Hund rennt."]})
        assert status == 503 and list(body) == ["error"] and "\n" not in body["error"]
        assert body["error"].startswith("out of memory (DefaultCPUAllocator: can't allocate memory")
        assert "--max-batch" in body["error"]
        monkeypatch.setattr(Translator, "translate", lambda self, *a, **k: 1 / 0)
        assert call(base, "/translate", {"texts": ["Ein Hund rennt."]}) == (
            500,
            {"error": "internal error (ZeroDivisionError: division by zero)"},
        )
        monkeypatch.setattr(Translator, "translate", translate)
        status, body = call(base, "/translate", {"texts": ["Ein Hund rennt."]})
        assert status == 200 and body["translations"][0]["text"]
