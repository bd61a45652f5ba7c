"""A server that holds: bounded work per model (503 + Retry-After at once), deadlines, disconnected clients'
texts never run, the API key, /ready while draining, /metrics, strict request fields, a drained shutdown."""

import json
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers import ROOT, free_port, running

from nlp_rnn.deploy.serve import Limits, create_app, draining_server, load_models

CHECKPOINTS = ROOT / "checkpoints"
KEY = "test-key-12345"


def ask(base: str, path: str, body=None, key: str = None) -> tuple[int, dict, dict]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        base + path, data=data, headers=headers, method="GET" if data is None else "POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            raw = response.read()
            return (
                response.status,
                (json.loads(raw) if path != "/metrics" else {"text": raw.decode()}),
                dict(response.headers),
            )
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), dict(err.headers)


@pytest.fixture(scope="module")
def models():
    return load_models(
        [("sst2", CHECKPOINTS / "sst2"), ("chars", CHECKPOINTS / "shakespeare-char")], "cpu", "fp32"
    )


def blocked(app) -> threading.Event:
    """Holds the model thread until the event is set: requests wait for it."""
    release = threading.Event()
    app.state.executor.submit(release.wait, 30)
    return release


def recorded(models) -> list:
    """Every batch of texts the sentiment model really classifies."""
    seen, predictor = [], models["sst2"].interface
    original = predictor.classify

    def classify(texts, *args, **kwargs):
        seen.append(list(texts))
        return original(texts, *args, **kwargs)

    predictor.classify = classify
    return seen


def test_beyond_the_bound_the_server_answers_503_at_once_and_a_deadline_answers_504(models) -> None:
    app = create_app(models, Limits(max_pending=3, timeout_s=1.5))
    with running(app) as base:
        release = blocked(app)
        with ThreadPoolExecutor(2) as pool:
            waiting = pool.submit(ask, base, "/classify", {"texts": ["good", "bad", "fine"]})
            time.sleep(0.3)
            started = time.monotonic()
            status, body, headers = ask(base, "/classify", {"texts": ["more"]})
            assert (
                status == 503
                and headers.get("retry-after", headers.get("Retry-After")) == "1"
                and "busy: 3 texts are waiting" in body["error"]
            )
            assert time.monotonic() - started < 0.5
            assert waiting.result()[0] == 504  # the model thread stayed blocked past the deadline
        release.set()
        assert ask(base, "/classify", {"texts": ["a fine film"]})[0] == 200  # served again
        metrics = ask(base, "/metrics")[1]["text"]
        assert 'nlp_rnn_requests_total{path="/classify",status="503"} 1' in metrics
        assert "nlp_rnn_rejected_total 1" in metrics and 'nlp_rnn_queue_texts{model="sst2"} 0' in metrics
        assert 'nlp_rnn_request_seconds_bucket{path="/classify",le="+Inf"} 3' in metrics


def test_a_disconnected_clients_texts_are_never_run(models) -> None:
    seen = recorded(models)
    app = create_app(models, Limits())
    with running(app) as base:
        release = blocked(app)
        port = int(base.rsplit(":", 1)[1])
        body = json.dumps({"texts": ["the client that left"]}).encode()
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(
                b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            time.sleep(0.3)
        time.sleep(0.3)  # the server notices the closed connection and drops the request
        release.set()
        assert ask(base, "/classify", {"texts": ["the client that stayed"]})[0] == 200
    assert ["the client that left"] not in seen and ["the client that stayed"] in seen


def test_the_api_key_is_required_everywhere_but_health_and_ready_turns_false_while_draining(models) -> None:
    app = create_app(models, Limits(), api_key=KEY)
    with running(app) as base:
        assert ask(base, "/health")[0] == 200
        status, body, headers = ask(base, "/classify", {"texts": ["good"]})
        assert (
            status == 401
            and headers.get("www-authenticate", headers.get("WWW-Authenticate")) == "Bearer"
            and "Bearer" in body["error"]
        )
        assert ask(base, "/classify", {"texts": ["good"]}, key="wrong-key-123")[0] == 401
        assert ask(base, "/classify", {"texts": ["good"]}, key=KEY)[0] == 200
        assert ask(base, "/ready", key=KEY)[:2] == (200, {"ready": True})
        app.state.draining = True
        assert ask(base, "/ready", key=KEY)[:2] == (503, {"ready": False, "reason": "draining"})


def test_strict_fields_refuse_lax_coercion_and_the_schema_declares_every_status(models) -> None:
    app = create_app(models, Limits())
    with running(app) as base:
        for field in ({"seed": False}, {"max_tokens": "7"}, {"beam_size": "2"}, {"top_k": 1.5}):
            status, body, _ = ask(base, "/generate", {"texts": ["ROMEO:"], **field})
            assert status == 422, (field, body)
        assert ask(base, "/generate", {"texts": ["ROMEO:"], "max_tokens": 5, "seed": 3})[0] == 200
        schema = ask(base, "/openapi.json")[1]
        for path in ("/classify", "/generate"):
            assert {"400", "401", "404", "413", "422", "503", "504"} <= set(
                schema["paths"][path]["post"]["responses"]
            )


def test_sigterm_drains_the_requests_in_flight_before_stopping(models) -> None:
    import uvicorn

    app = create_app(models, Limits())
    port = free_port()
    server = draining_server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"), app)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    release = blocked(app)
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(ask, base, "/classify", {"texts": ["answered after the signal"]})
        time.sleep(0.3)
        server.handle_exit(signal.SIGTERM, None)
        assert app.state.draining
        time.sleep(0.3)
        release.set()
        assert in_flight.result()[0] == 200
    thread.join(timeout=15)
    assert not thread.is_alive()
