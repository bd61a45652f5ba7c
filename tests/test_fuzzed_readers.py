"""Property-based tests (hypothesis) of what reads user files and text: arbitrary bytes and Unicode give a
result or one NlpRnnError line — never another exception; byte-exact tokenizers round-trip any text; the
normalisation is idempotent."""

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from nlp_rnn.config import TokenizerConfig
from nlp_rnn.data import LabeledSource, read_labeled, read_table, read_text
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.normalise import STEPS, normalise
from nlp_rnn.tasks.forecasting.config import ForecastDataConfig
from nlp_rnn.tasks.forecasting.data import read_series
from nlp_rnn.tokenizer import Tokenizer, WordList

FAST = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
SUFFIXES = (".tsv", ".csv", ".jsonl", ".txt")


def one_line_or_result(read):
    try:
        return read()
    except NlpRnnError as err:
        message = str(err)
        assert message and "\n" not in message.strip(), message
        return None


def written(data: bytes, suffix: str) -> Path:
    folder = Path(tempfile.mkdtemp())
    path = folder / f"input{suffix}"
    path.write_bytes(data)
    return path


@FAST
@given(data=st.binary(max_size=400), suffix=st.sampled_from(SUFFIXES))
def test_readers_take_arbitrary_bytes_with_a_result_or_one_line(data: bytes, suffix: str) -> None:
    path = written(data, suffix)
    one_line_or_result(lambda: read_text(path))
    if suffix != ".txt":
        one_line_or_result(lambda: read_table(path, ["sentence", "label"]))
        one_line_or_result(lambda: read_labeled(LabeledSource(table=str(path))))


ROW = st.lists(st.text(st.characters(blacklist_categories=("Cs",)), max_size=12), min_size=2, max_size=2)


@FAST
@given(rows=st.lists(ROW, max_size=8), header=st.booleans())
@example(rows=[["a\rb", "1"]], header=True)  # found by hypothesis: csv's error for a bare CR, now one line
def test_tables_of_arbitrary_unicode_read_or_refuse_in_one_line(rows: list, header: bool) -> None:
    lines = (["sentence\tlabel"] if header else []) + ["\t".join(r) for r in rows]
    path = written("\n".join(lines).encode("utf-8"), ".tsv")
    result = one_line_or_result(lambda: read_labeled(LabeledSource(table=str(path))))
    if result is not None:
        texts, labels = result
        assert len(texts) == len(labels)


@FAST
@given(data=st.binary(max_size=300), suffix=st.sampled_from((".csv", ".tsv", ".jsonl")))
def test_series_readers_take_arbitrary_bytes(data: bytes, suffix: str) -> None:
    path = written(b"date,value\n" + data if suffix == ".csv" else data, suffix)
    cfg = ForecastDataConfig(data=str(path), target="value", lags=2)
    one_line_or_result(lambda: read_series(cfg, str(path), split=False))


@pytest.fixture(scope="module")
def exact_tokenizer() -> Tokenizer:
    text = "The quick brown fox jumps over the lazy dog. Ünïcödé, 数字 and emoji 🙂!\n" * 30
    return Tokenizer.train(TokenizerConfig(model_type="unigram", vocab_size=300, byte_exact=True), [text])


@FAST
@given(text=st.text(st.characters(blacklist_categories=("Cs",)), max_size=80))
def test_a_byte_exact_tokenizer_round_trips_any_text(exact_tokenizer: Tokenizer, text: str) -> None:
    ids = exact_tokenizer.encode_stream(text)
    assert exact_tokenizer.src.decode(ids) == text


@FAST
@given(text=st.text(max_size=80))
def test_word_lists_and_normalisation_take_any_text(text: str) -> None:
    words = WordList.train([text, "a b c"], 100)
    ids = words.encode([text])[0]
    assert all(0 <= i < words.get_piece_size() for i in ids)
    once = normalise(text, STEPS)
    assert normalise(once, STEPS) == once


LINE = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=40)


@pytest.mark.slow
@settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(lines=st.lists(LINE, min_size=1, max_size=6))
def test_classify_and_translate_keep_line_alignment_for_any_input_lines(lines: list) -> None:
    from helpers import CHECKPOINTS

    from nlp_rnn.cli import main

    folder = Path(tempfile.mkdtemp())
    source = folder / "in.txt"
    source.write_bytes("".join(line + "\n" for line in lines).encode("utf-8"))
    for command, model in (("classify", "sst2"), ("translate", "multi30k-de-en")):
        out = folder / f"{command}.txt"
        args = [command, "--model", str(CHECKPOINTS / model), "--input", str(source), "--output", str(out)]
        assert main([*args, "--precision", "fp32"]) == 0
        assert len(out.read_bytes().decode("utf-8").split("\n")) - 1 == len(lines), command
