"""What keeps `nlp-rnn serve` up under load and hostile clients: bounded work per model (503 with
Retry-After beyond it), request deadlines, the work of disconnected clients dropped, an API key,
readiness distinct from liveness, and Prometheus metrics."""

import asyncio
import hmac
import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, Optional

from nlp_rnn.errors import NlpRnnError

log = logging.getLogger(__name__)

KEY_ENV = "NLP_RNN_API_KEY"
OPEN_PATHS = (
    "/health",
    "/",
)  # answered without the API key: liveness probes, the demo page (it asks for the key)
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class RequestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class Admission:
    """Texts admitted for one model (waiting or running): at most `limit`; beyond it a request is refused
    at once (503) instead of joining an ever longer queue."""

    def __init__(self, name: str, limit: int) -> None:
        self.name, self.limit, self.texts = name, limit, 0

    def enter(self, n: int) -> None:
        if self.texts and self.texts + n > self.limit:
            raise RequestError(
                503,
                f"busy: {self.texts} texts are waiting for model {self.name} (at most {self.limit}); retry later",
            )
        self.texts += n

    def leave(self, n: int) -> None:
        self.texts -= n


async def answer_or_drop(work, request: Any, timeout_s: float):
    """The result of `work` (a coroutine or future); cancelled — its texts dropped from pending work — when
    the client disconnects (499) or the deadline passes (504)."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    deadline = loop.time() + timeout_s
    while True:
        left = deadline - loop.time()
        done, _ = await asyncio.wait({task}, timeout=max(0.0, min(0.05, left)))
        if done:
            return task.result()
        if loop.time() >= deadline:
            task.cancel()
            raise RequestError(504, f"deadline: no answer within {timeout_s:g} s; the request was dropped")
        if request is not None and await request.is_disconnected():
            task.cancel()
            raise RequestError(499, "client disconnected; the request was dropped")


def api_key(key: Optional[str], key_file: Optional[Path]) -> Optional[str]:
    """The key from --api-key, else --api-key-file, else $NLP_RNN_API_KEY; None: no key required."""
    if key is None and key_file is not None:
        try:
            key = Path(key_file).read_text(encoding="utf-8").strip()
        except OSError as err:
            raise NlpRnnError(f"--api-key-file {key_file}: cannot read it ({err.strerror})") from None
        if not key:
            raise NlpRnnError(f"--api-key-file {key_file}: empty")
    if key is None:
        key = os.environ.get(KEY_ENV) or None
    if key is not None and len(key) < 8:
        raise NlpRnnError("API key: at least 8 characters")
    return key


class Metrics:
    """Counters and a latency histogram per path, written in Prometheus' text format."""

    def __init__(self) -> None:
        self.requests: Counter = Counter()  # (path, status) -> count
        self.buckets: dict[str, list[int]] = {}
        self.sums: Counter = Counter()
        self.started = time.time()

    def observe(self, path: str, status: int, seconds: float) -> None:
        self.requests[(path, status)] += 1
        counts = self.buckets.setdefault(path, [0] * (len(BUCKETS) + 1))
        counts[next((i for i, b in enumerate(BUCKETS) if seconds <= b), len(BUCKETS))] += 1
        self.sums[path] += seconds

    def text(self, admissions: dict[str, Admission]) -> str:
        lines = [
            "# HELP nlp_rnn_requests_total Requests answered, by path and status.",
            "# TYPE nlp_rnn_requests_total counter",
        ]
        lines += [
            f'nlp_rnn_requests_total{{path="{p}",status="{s}"}} {n}'
            for (p, s), n in sorted(self.requests.items())
        ]
        errors = sum(n for (_, s), n in self.requests.items() if s >= 400)
        busy = sum(n for (_, s), n in self.requests.items() if s == 503)
        lines += [
            "# HELP nlp_rnn_errors_total Requests answered with a 4xx or 5xx status.",
            "# TYPE nlp_rnn_errors_total counter",
            f"nlp_rnn_errors_total {errors}",
            "# HELP nlp_rnn_rejected_total Requests refused as busy (503).",
            "# TYPE nlp_rnn_rejected_total counter",
            f"nlp_rnn_rejected_total {busy}",
            "# HELP nlp_rnn_queue_texts Texts waiting or running per model.",
            "# TYPE nlp_rnn_queue_texts gauge",
        ]
        lines += [
            f'nlp_rnn_queue_texts{{model="{name}"}} {a.texts}' for name, a in sorted(admissions.items())
        ]
        lines += [
            "# HELP nlp_rnn_request_seconds Time from request to answer.",
            "# TYPE nlp_rnn_request_seconds histogram",
        ]
        for path, counts in sorted(self.buckets.items()):
            running = 0
            for bound, count in zip([*map(str, BUCKETS), "+Inf"], counts):
                running += count
                lines.append(f'nlp_rnn_request_seconds_bucket{{path="{path}",le="{bound}"}} {running}')
            lines.append(f'nlp_rnn_request_seconds_sum{{path="{path}"}} {self.sums[path]:.6f}')
            lines.append(f'nlp_rnn_request_seconds_count{{path="{path}"}} {running}')
        lines.append(f"nlp_rnn_uptime_seconds {time.time() - self.started:.1f}")
        return "\n".join(lines) + "\n"


class Gate:
    """Pure ASGI middleware in front of every route (not Starlette's BaseHTTPMiddleware, under which an
    endpoint can never see its client disconnect): the API key, the body's size and encoding, the metrics."""

    def __init__(self, app, key: Optional[str], max_body: int, metrics: Metrics, known: set) -> None:
        self.app, self.key, self.max_body, self.metrics, self.known = app, key, max_body, metrics, known

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), [500]

        async def sending(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            refusal, receive = await self._check(scope, receive)
            if refusal is not None:
                await refusal(scope, receive, sending)
            else:
                await self.app(scope, receive, sending)
        finally:
            path = scope.get("path", "")
            self.metrics.observe(
                path if path in self.known else "other", status[0], time.perf_counter() - started
            )

    async def _check(self, scope, receive):
        """(a response refusing the request, or None; the receive function the app gets)."""
        from fastapi.responses import JSONResponse

        headers = dict(scope.get("headers") or [])
        if self.key is not None and scope.get("path") not in OPEN_PATHS:
            scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                token.strip().encode(), self.key.encode()
            ):
                return JSONResponse(
                    {"error": "authorization: send 'Authorization: Bearer <API key>'"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                ), receive
        if scope.get("method") != "POST":
            return None, receive
        declared = headers.get(b"content-length", b"").decode("latin-1")
        if declared.isdigit() and int(declared) > 64 * self.max_body:
            return JSONResponse(
                {"error": f"body: {int(declared):,} bytes; at most {self.max_body:,}"}, 413
            ), receive
        # The whole body is read even when it is too large: answering before the client has sent it would
        # reset the connection under it (the client would see a broken pipe, not the 413).
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return None, receive  # the client left: the app sees the disconnect
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if size > self.max_body:
            return JSONResponse({"error": f"body: {size:,} bytes; at most {self.max_body:,}"}, 413), receive
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as err:
            return JSONResponse(
                {"error": f"body: not valid UTF-8 (byte {body[err.start]:#04x} at offset {err.start})"}, 400
            ), receive
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # then the real channel: a disconnect reaches the endpoint

        return None, replay


def add_guards(app, key: Optional[str], admissions: dict[str, Admission], max_body: int) -> None:
    """The gate (API key, body limits, metrics), GET /ready and GET /metrics."""
    from fastapi.responses import JSONResponse, PlainTextResponse

    metrics = Metrics()
    app.state.draining = False
    app.state.metrics = metrics

    @app.get(
        "/ready", responses={503: {"description": "Draining: finishing in-flight requests before it stops."}}
    )
    async def ready():
        """Readiness: true once the models are loaded, false while the server drains before it stops."""
        if app.state.draining:
            return JSONResponse({"ready": False, "reason": "draining"}, status_code=503)
        return {"ready": True}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> str:
        """Prometheus metrics: requests and errors by path and status, 503s, queue depth, latency histogram."""
        return metrics.text(admissions)

    known = {route.path for route in app.routes}
    app.add_middleware(Gate, key=key, max_body=max_body, metrics=metrics, known=known)
