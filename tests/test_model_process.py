"""`nlp-rnn serve --model-process`: the batched models run in a child process; answers are the same as in one
process, alone or among concurrent requests, and a child that dies is started again (its batch answered 503)."""

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import ROOT, call, free_port, running

from nlp_rnn.deploy.serve import Limits, ModelProcess, create_app, load_models
from nlp_rnn.tasks.base import load
from nlp_rnn.tasks.classification import Predictor
from nlp_rnn.tasks.translation import Translator

CHECKPOINTS = ROOT / "checkpoints"
SPECS = [("de-en", CHECKPOINTS / "multi30k-de-en"), ("sst2", CHECKPOINTS / "sst2")]


@pytest.fixture(scope="module")
def served():
    limits = Limits(max_texts=40, max_chars=500)
    process = ModelProcess(SPECS, "cpu", "fp32", limits)
    try:
        app = create_app(load_models(SPECS, "cpu", "fp32"), limits, max_batch=64, model_process=process)
        with running(app) as base:
            yield base, process
    finally:
        process.close()


@pytest.mark.slow
def test_the_model_process_answers_like_the_python_api_and_comes_back_after_it_dies(
    served, multi30k: Path
) -> None:
    base, process = served
    sentences = (multi30k / "test_2016_flickr.de").read_text(encoding="utf-8").splitlines()[:12]
    translator = Translator(load(CHECKPOINTS / "multi30k-de-en"), "fp32")
    expected = [t[0].text for t in translator.translate(sentences, translator.options(beam_size=1))]
    with ThreadPoolExecutor(12) as pool:
        answers = list(
            pool.map(lambda s: call(base, "/translate", {"texts": [s], "beam_size": 1}), sentences)
        )
    assert [a[0] for a in answers] == [200] * 12
    assert [a[1]["translations"][0]["text"] for a in answers] == expected
    assert call(base, "/health")[1]["batching"]["de-en"]["texts"] == 12

    texts = ["a gripping , beautifully acted film .", "a dull , lifeless mess ."]
    predicted = Predictor(load(CHECKPOINTS / "sst2")).classify(texts)
    status, body = call(base, "/classify", {"texts": texts})
    assert status == 200 and [p["label"] for p in body["predictions"]] == [p.label for p in predicted]
    assert body["predictions"][0]["probability"] == pytest.approx(predicted[0].probability, abs=1e-5)
    first = process.pid
    assert first and first != os.getpid()  # the model ran in another process

    # the child dies: the next batch is refused with one line, then it serves again
    os.kill(first, signal.SIGKILL)
    status, body = call(base, "/translate", {"texts": sentences[:1], "beam_size": 1})
    assert status == 503 and "model process stopped" in body["error"]
    status, body = call(base, "/translate", {"texts": sentences[:1], "beam_size": 1})
    assert status == 200 and body["translations"][0]["text"] == expected[0]
    assert process.pid not in (None, first)


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":  # exited, not yet reaped by its (new) parent
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_the_model_process_stops_with_the_server(how: signal.Signals) -> None:
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nlp_rnn",
            "serve",
            "--model",
            f"sst2={CHECKPOINTS / 'sst2'}",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
            try:
                if call(f"http://127.0.0.1:{port}", "/health")[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
        status, body = call(f"http://127.0.0.1:{port}", "/classify", {"texts": ["a gripping film ."]})
        assert status == 200 and body["predictions"][0]["label"] == "positive"
        children = _children(server.pid)
        workers = [p for p in children if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()]
        assert len(workers) == 1  # the model process (besides it: multiprocessing's resource tracker)
        server.send_signal(how)
        server.wait(timeout=60)
        left = [p for p in children if not _gone(p, 10)]
        assert not left, f"processes of the server outlived it ({how.name}): {left}"
    finally:
        if server.poll() is None:
            server.kill()


def test_a_model_the_child_cannot_load_fails_at_start_up_with_its_own_error(tmp_path: Path) -> None:
    """The child's load error crosses the pipe and is raised by `ModelProcess` itself, the child gone."""
    from nlp_rnn.errors import NlpRnnError

    with pytest.raises(NlpRnnError) as caught:
        ModelProcess([("broken", tmp_path)], "cpu", "fp32", Limits())
    assert str(tmp_path) in str(caught.value) and "\n" not in str(caught.value)
