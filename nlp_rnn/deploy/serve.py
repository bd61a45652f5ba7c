"""`nlp-rnn serve`: an HTTP JSON API (FastAPI on uvicorn) over loaded models, with dynamic batching.

Each model loads once, at start-up. Requests run on one worker thread; the requests for a model
that arrive while it is busy are translated or classified together in its next run (sorted by
length into batches of at most `max_batch` texts), so concurrent clients share the batch
throughput of `nlp-rnn translate` and an idle server answers at once; the answer for a text is the
same alone or batched (fp32 search is batch-independent).
Generation runs one request at a time (a seed must give the same samples whatever else arrives).
Every bad request — a body that is too large, not UTF-8 or not JSON, a wrong field, too many or
too long texts, an unknown model, a beam size out of range — is a 4xx with `{"error": one line}`;
the server keeps serving.
"""

import asyncio
import json
import logging
import multiprocessing
import os
import threading
import time
import typing
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

from nlp_rnn import devices
from nlp_rnn.deploy.guard import Admission, RequestError, add_guards, answer_or_drop
from nlp_rnn.deploy.page import PAGE
from nlp_rnn.deploy.streaming import add_stream_route
from nlp_rnn.errors import InvalidRequest, NlpRnnError
from nlp_rnn.tasks import base as tasks
from nlp_rnn.tasks.defaults import default_model
from nlp_rnn.tasks.info import describe
from nlp_rnn.version import __version__

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    max_texts: int = 64  # texts per request
    max_chars: int = 2000  # characters per text
    max_document_chars: int = 100_000  # characters per text for models that read whole documents
    max_body: int = 1_000_000  # bytes per request body
    max_beam: int = 16
    max_tokens: int = 1024  # generate
    max_batch: int = 64  # texts in one forward pass
    settle_ms: float = 10.0  # a run after a larger one waits this long for as many texts (BatchQueue)
    max_pending: int = 512  # texts waiting or running per model; beyond it: 503 with Retry-After
    timeout_s: float = 60.0  # a request not answered by then: 504, its texts dropped from pending work


@dataclass
class Served:
    """One loaded model: its name in requests, its task, and its raw-text interface."""

    name: str
    path: Path
    task: str
    interface: Any  # Translator, Predictor or Generator
    info: dict = field(default_factory=dict)


class BatchQueue:
    """Gathers the requests for one model and runs them in batches, one run at a time.

    While a run is busy, new requests wait and are taken together by the next run (up to `gather`
    texts, those with the same settings), so batches grow with the load and an idle server starts
    at once; `max_wait_s` > 0 also holds an idle server back that long for more requests.
    `run(texts, request)` is called on the worker thread with the batch's first request (all of a batch
    share its settings) and returns one result per text.

    `settle_s`: clients that have just been answered send their next requests a few milliseconds later
    (HTTP round trip and parsing on the event loop). Taking the queue at once then runs the texts that
    arrived during the last run and leaves the clients just answered waiting a whole run: batches stay at
    about half the clients' texts, each a mix of lengths sorted only within itself. So after a run, the
    next one waits up to `settle_s` for the texts of the clients just answered on top of those already
    waiting (up to `gather`): under a steady load one run takes every client's texts, and the larger the
    run, the more its texts sorted by length cost like batch mode's. An idle server (nothing just
    answered) still starts at once.
    `stats()` says how many batches ran, their mean size, and the share of time the model was busy.
    """

    def __init__(
        self,
        run: Callable[[list[str], Any], list],
        executor: ThreadPoolExecutor,
        gather: int,
        max_wait_s: float,
        settle_s: float = 0.0,
    ):
        self.run, self.executor, self.gather, self.max_wait_s = run, executor, gather, max_wait_s
        self.settle_s = settle_s
        self.pending: list[tuple[list[str], tuple, asyncio.Future, Any]] = []
        self.busy = False
        self.tasks: set[asyncio.Task] = set()
        self.arrived: Optional[asyncio.Event] = None
        self.counts = {"batches": 0, "texts": 0, "busy_s": 0.0, "settle_s": 0.0}
        self.since = time.monotonic()

    def stats(self) -> dict:
        c, elapsed = self.counts, max(time.monotonic() - self.since, 1e-9)
        return {
            "batches": c["batches"],
            "texts": c["texts"],
            "mean_batch": round(c["texts"] / c["batches"], 2) if c["batches"] else 0.0,
            "busy_fraction": round(c["busy_s"] / elapsed, 3),
            "settle_s": round(c["settle_s"], 3),
            "busy_s": round(c["busy_s"], 3),
            "uptime_s": round(elapsed, 3),
        }

    async def submit(self, texts: list[str], key: tuple, request: Any = None) -> list:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending.append((texts, key, future, request))
        if self.arrived is not None:
            self.arrived.set()
        if not self.busy:
            self.busy = True
            task = loop.create_task(self._drain())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return await future

    def _pending_texts(self) -> int:
        return sum(len(item[0]) for item in self.pending if not item[2].done())

    async def _settle(self, want: int) -> None:
        """Wait up to settle_s for `want` texts (at most a whole gather) to be pending."""
        want, deadline = min(want, self.gather), time.monotonic() + self.settle_s
        started = time.monotonic()
        self.arrived = asyncio.Event()
        try:
            while self._pending_texts() < want:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.arrived.clear()
                try:
                    await asyncio.wait_for(self.arrived.wait(), left)
                except asyncio.TimeoutError:
                    break
        finally:
            self.arrived = None
            self.counts["settle_s"] += time.monotonic() - started

    async def _drain(self) -> None:
        try:
            if self.max_wait_s > 0:
                await asyncio.sleep(self.max_wait_s)
            previous = 0  # texts of the run just answered: their clients are about to send again
            while True:
                if self.settle_s > 0 and previous:
                    waiting = self._pending_texts()
                    if waiting < self.gather:
                        await self._settle(previous + waiting)
                self.pending = [item for item in self.pending if not item[2].done()]  # cancelled: dropped
                if not self.pending:
                    break
                key, batch, rest, size = self.pending[0][1], [], [], 0
                for (
                    item
                ) in self.pending:  # the oldest request's settings; others of the same settings join it
                    if item[1] == key and (size == 0 or size + len(item[0]) <= self.gather):
                        batch.append(item)
                        size += len(item[0])
                    else:
                        rest.append(item)
                self.pending = rest
                started = time.monotonic()
                await self._run(batch, key)
                self.counts["busy_s"] += time.monotonic() - started
                self.counts["batches"] += 1
                self.counts["texts"] += size
                previous = size
        finally:
            self.busy = False

    async def _run(self, batch: list[tuple[list[str], tuple, asyncio.Future, Any]], key: tuple) -> None:
        def job() -> tuple[list, list]:
            # On the model thread, when its turn comes: requests cancelled meanwhile (a client that left, a
            # deadline) are left out, so their texts never run.
            live = [item for item in batch if not item[2].done()]
            texts = [t for texts, _, _, _ in live for t in texts]
            return live, (self.run(texts, live[0][3]) if live else [])

        try:
            batch, results = await asyncio.get_running_loop().run_in_executor(self.executor, job)
        except Exception as err:  # a failure answers every request of the batch, and the server goes on
            for _, _, future, _ in batch:
                if not future.done():
                    future.set_exception(err)
            return
        start = 0
        for texts_, _, future, _ in batch:
            if not future.done():
                future.set_result(results[start : start + len(texts_)])
            start += len(texts_)


class ModelProcess:
    """The batched endpoints' model runs in a child process of its own (`nlp-rnn serve --model-process`).

    In one process, the event loop's per-request Python work (HTTP parsing, validation, JSON) and the
    decoding loop's per-step Python share one interpreter lock: each waits for the other, and torch's
    threads idle while the model thread waits (measured: the model busy 98-100 % of the time, yet at
    about half its batch-mode speed under 32 clients). The child loads the same models and runs
    `endpoint.run` on the texts and settings the server sends it, one batch at a time; the server's
    model thread only waits for its answer. Generation without batching, streaming and the
    requests' checks stay in the server process. A child that dies is started again; the batch it
    was running is answered with an error, the server goes on.

    A plain child process and one pipe, a batch and its answer at a time: a process pool adds two threads
    of its own (one feeding its queue, one reading answers) between a request and its answer; without
    them a request of one empty text took 1.4-1.5 ms instead of 1.8-2.2 on a 2-core EPYC.
    """

    def __init__(self, specs: list[tuple[str, Path]], device: str, precision: str, limits: "Limits"):
        self.args = (list(specs), device, precision, limits)
        self.lock = threading.Lock()  # one batch at a time on the pipe (several models' queues share it)
        self.process: Optional[multiprocessing.process.BaseProcess] = None
        self.conn: Any = None
        self.start()

    @property
    def pid(self) -> Optional[int]:
        return None if self.process is None else self.process.pid

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        self.process = context.Process(
            target=_child_main, args=(theirs, *self.args), name="nlp-rnn-model", daemon=True
        )
        self.process.start()
        theirs.close()  # the child's end lives in the child only: its death ends our reads (EOFError)
        self.conn = ours
        try:
            ok, value = ours.recv()  # a model that does not load fails here, at start-up
        except (EOFError, OSError):
            self.process.join()
            raise NlpRnnError(
                f"the model process stopped while loading the models (exit code {self.process.exitcode})"
            ) from None
        if not ok:
            self.close()
            raise value

    def runner(self, endpoint: "tasks.Endpoint", model: "Served") -> Callable[[list[str], Any], list]:
        def run(texts: list[str], request: Any) -> list:
            fields = request.model_dump()  # the request's pydantic model: its fields travel, not its class
            with self.lock:
                try:
                    self.conn.send((model.name, endpoint.path, texts, fields))
                    ok, value = self.conn.recv()
                except (EOFError, OSError):
                    log.error("the model process stopped; starting it again")
                    self._stopped()
                    self.start()
                    raise RequestError(
                        503, "the model process stopped while running this batch; it was started again: retry"
                    ) from None
            if not ok:
                raise value
            return value

        return run

    def _stopped(self) -> None:
        self.conn.close()
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()

    def close(self) -> None:
        if self.process is None:
            return
        with self.lock:
            try:
                self.conn.send(None)  # the child's loop ends
            except OSError:
                pass
            self._stopped()
            self.process = None


def _child_main(conn, specs: list[tuple[str, Path]], device: str, precision: str, limits: "Limits") -> None:
    """The model process: loads the models, says so (or sends the error), then answers batches until told to stop
    (None) or its server's end of the pipe closes."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the server, which then stops this process
    logging.basicConfig(level=logging.WARNING)
    parent = os.getppid()

    def orphaned() -> None:
        """A server killed outright (SIGKILL, OOM) cannot stop this process: it stops itself."""
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=orphaned, daemon=True, name="nlp-rnn-parent-watch").start()
    try:
        served = load_models(specs, device, precision)
        endpoints = {m.task: tasks.get(m.task).endpoint(limits) for m in served.values()}
    except Exception as err:
        conn.send((False, _sendable(err)))
        return
    conn.send((True, len(served)))
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        name, path, texts, fields = job
        try:
            model = served[name]
            endpoint = endpoints[model.task]
            assert endpoint.path == path, (endpoint.path, path)
            answer = (True, endpoint.run(model.interface, texts, SimpleNamespace(**fields)))
        except Exception as err:
            answer = (False, _sendable(err))
        conn.send(answer)


def _sendable(err: Exception) -> Exception:
    """`err` if it pickles (the server answers with it as if raised there), else a RuntimeError of its text."""
    import pickle

    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:
        return RuntimeError(f"{type(err).__name__}: {err}")


def load_models(specs: list[tuple[str, Path]], device: str, precision: str) -> dict[str, Served]:
    """Loads each NAME=PATH once; its task decides the interface, and whether it is served at all."""
    served = {}
    for name, path in specs:
        if name in served:
            raise NlpRnnError(f"--model {name}=...: the name {name!r} is given twice")
        bundle = tasks.load(path, device=device)
        task = tasks.of(bundle)
        if task.endpoint(Limits()) is None:
            offered = ", ".join(t.name for t in _served_tasks())
            raise NlpRnnError(f"{path}: {bundle.task} models are not served ({offered})")
        details = {
            k: v
            for k, v in describe(bundle).items()
            if k not in ("path", "task") and isinstance(v, (str, int, float, list))
        }
        served[name] = Served(name, Path(bundle.path), bundle.task, task.serving(bundle, precision), details)
        log.info("serving %s (%s) from %s", name, bundle.task, bundle.path)
    return served


def _served_tasks() -> list[tasks.Task]:
    return [task for task in tasks.all_tasks() if task.endpoint(Limits()) is not None]


def default_specs() -> list[tuple[str, Path]]:
    """The shipped model of every task that has an endpoint and a default model."""
    paths = [default_model(task.name) for task in _served_tasks() if task.default_bundle]
    return [(path.name, path) for path in paths]


def _one_line(errors: list[dict]) -> str:
    first = errors[0]
    where = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or "body"
    return f"{where}: {first.get('msg', 'invalid')}"


def create_app(
    served: dict[str, Served],
    limits: Limits = Limits(),
    max_batch: Optional[int] = None,
    max_wait_ms: float = 0.0,
    api_key: Optional[str] = None,
    model_process: Optional[ModelProcess] = None,
):
    """The FastAPI application: POST /PATH of every served task's endpoint; GET /health, /models; /docs.
    With `model_process`, the batched endpoints run their batches there (ModelProcess)."""
    from fastapi import FastAPI

    if max_batch is not None:
        limits = replace(limits, max_batch=max_batch)
    executor = ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="nlp-rnn-model"
    )  # one batch at a time: torch uses every core
    app = FastAPI(
        title="nlp-rnn",
        version=__version__,
        description="Translation, classification and generation with "
        "recurrent networks. Requests for the same model arriving within a few milliseconds are batched together.",
    )
    _add_error_handlers(app, limits)
    all_queues: dict[str, BatchQueue] = {}
    _add_status_routes(app, served, time.time(), all_queues)
    admissions = {name: Admission(name, limits.max_pending) for name in served}
    endpoints = {m.task: tasks.get(m.task).endpoint(limits) for m in served.values()}
    for endpoint in {e.path: e for e in endpoints.values()}.values():
        owners = {task for task, e in endpoints.items() if e.path == endpoint.path}
        models = {name: m for name, m in served.items() if m.task in owners}
        queues = (
            {
                name: BatchQueue(
                    model_process.runner(endpoint, m) if model_process else _runner(endpoint, m),
                    executor,
                    4 * limits.max_batch,
                    max_wait_ms / 1000,
                    limits.settle_ms / 1000,
                )
                for name, m in models.items()
            }
            if endpoint.batch_key
            else {}
        )
        _add_endpoint(app, endpoint, served, owners, queues, executor, limits, admissions)
        all_queues.update(queues)
    add_guards(app, api_key, admissions, limits.max_body)
    app.state.executor = executor
    return app


def _runner(endpoint: tasks.Endpoint, model: Served) -> Callable[[list[str], Any], list]:
    return lambda texts, request: endpoint.run(model.interface, texts, request)


def _add_endpoint(
    app,
    endpoint: tasks.Endpoint,
    served: dict[str, Served],
    owners: set[str],
    queues: dict,
    executor: ThreadPoolExecutor,
    limits: Limits,
    admissions: dict[str, Admission],
) -> None:
    """POST /PATH: the request model made from the endpoint's fields; batched through `queues` or run alone."""
    from fastapi import Request
    from pydantic import BaseModel, ConfigDict, Field, StrictStr, create_model, model_validator

    class TextsRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")

        @model_validator(mode="before")
        @classmethod
        def no_lax_coercion(cls, data: Any) -> Any:
            """JSON's own types only: "7" is not a number, false is not 0, 1 is not true (3.0 is the integer
            3, as JSON Schema says)."""
            if isinstance(data, dict):
                for name, field in cls.model_fields.items():
                    value, kind = data.get(name), _scalar(field.annotation)
                    if value is None or kind is None:
                        continue
                    if kind in (int, float) and isinstance(value, (str, bool)):
                        raise ValueError(f"{name} must be a number, got {json.dumps(value)}")
                    if kind is bool and not isinstance(value, bool):
                        raise ValueError(f"{name} must be true or false, got {json.dumps(value)}")
            return data

        texts: list[StrictStr] = Field(
            min_length=1, max_length=limits.max_texts, description="The texts (at least one)."
        )
        model: Optional[StrictStr] = Field(
            None, description="A served model's name (default: the one model of this task)."
        )

    request_model = create_model(f"{endpoint.path.title()}Request", __base__=TextsRequest, **endpoint.fields)
    kind = " or ".join(sorted(owners))

    def accepted(req) -> Served:
        """The request's model, once its texts and settings are within bounds."""
        model = _pick(served, owners, kind, endpoint.path, req.model)
        cap = (
            limits.max_document_chars
            if getattr(model.interface, "reads_documents", False)
            else limits.max_chars
        )
        for i, text in enumerate(req.texts):
            if len(text) > cap:
                raise RequestError(
                    413,
                    f"texts.{i}: {len(text):,} characters; at most {cap:,} per text for model {model.name}",
                )
        if endpoint.check is not None:
            endpoint.check(model.interface, req)
        return model

    async def handle(req: request_model, request: Request) -> dict:
        model = accepted(req)
        admission = admissions[model.name]
        admission.enter(len(req.texts))
        try:
            if model.name in queues:
                work = queues[model.name].submit(list(req.texts), endpoint.batch_key(req), req)
            else:
                run = lambda: endpoint.run(model.interface, list(req.texts), req)  # noqa: E731
                work = asyncio.get_running_loop().run_in_executor(executor, run)
            results = await answer_or_drop(work, request, limits.timeout_s)
        finally:
            admission.leave(len(req.texts))
        return {"model": model.name, **endpoint.answer(results, req)}

    handle.__doc__ = endpoint.summary
    app.post(f"/{endpoint.path}", name=endpoint.path, description=endpoint.summary, responses=RESPONSES)(
        handle
    )
    if endpoint.stream is not None:
        add_stream_route(
            app, endpoint, request_model, accepted, admissions, executor, limits.timeout_s, RESPONSES
        )


_ERROR = {
    "content": {
        "application/json": {"schema": {"type": "object", "properties": {"error": {"type": "string"}}}}
    }
}
RESPONSES = {  # every status a POST endpoint answers besides 200, each with {"error": one line}
    400: {
        "description": "Bad request: not JSON or UTF-8, NUL bytes, a setting the model cannot take.",
        **_ERROR,
    },
    401: {"description": "The server needs an API key (Authorization: Bearer KEY).", **_ERROR},
    404: {"description": "No such model.", **_ERROR},
    413: {"description": "Body or text too large.", **_ERROR},
    422: {"description": "A field is missing, of the wrong type or out of range.", **_ERROR},
    503: {
        "description": "Busy: too much work waiting for the model; retry after Retry-After seconds.",
        **_ERROR,
    },
    504: {"description": "Deadline: no answer within the server's --timeout.", **_ERROR},
}


def _scalar(annotation: Any) -> Optional[type]:
    """int, float or bool for a field annotated with one of them (or Optional of one), else None."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    return args[0] if len(args) == 1 and args[0] in (int, float, bool) else None


def _pick(served: dict[str, Served], owners: set[str], kind: str, path: str, name: Optional[str]) -> Served:
    of_task = [s for s in served.values() if s.task in owners]
    if name is None:
        if len(of_task) != 1:
            names = ", ".join(s.name for s in of_task) or "none"
            raise RequestError(400 if of_task else 404, f"model: name one of the {kind} models ({names})")
        return of_task[0]
    if name not in served:
        raise RequestError(404, f"model: unknown model {name!r} (served: {', '.join(served)})")
    if served[name].task not in owners:
        raise RequestError(
            400, f"model: {name!r} is a {served[name].task} model; /{path} needs a {kind} model"
        )
    return served[name]


def _add_error_handlers(app, limits: Limits) -> None:
    """Every bad request is a 4xx with {"error": one line}; running out of memory a 503, a bug a 500, alike."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    @app.exception_handler(RequestError)
    async def request_error(request: Request, err: RequestError):
        headers = {"Retry-After": "1"} if err.status == 503 else None
        return JSONResponse({"error": err.message}, status_code=err.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError):
        errors = err.errors()
        if errors and errors[0].get("type") == "json_invalid":
            return JSONResponse(
                {"error": f"body: not valid JSON ({errors[0].get('ctx', {}).get('error', 'parse error')})"},
                status_code=400,
            )
        return JSONResponse({"error": _one_line(errors)}, status_code=422)

    @app.exception_handler(NlpRnnError)
    async def user_error(request: Request, err: NlpRnnError):
        status = 422 if isinstance(err, InvalidRequest) else 400
        return JSONResponse({"error": str(err).splitlines()[0]}, status_code=status)

    @app.exception_handler(Exception)
    async def failure(request: Request, err: Exception):
        """A batch that ran out of memory (CPU or GPU): 503 with one line and Retry-After, and the server goes
        on. Any other failure is a bug of ours: 500 with one line. Either way the traceback goes to the log."""
        said = devices.out_of_memory(err)
        if said is not None:
            return JSONResponse(
                {
                    "error": f"out of memory ({said}): send fewer or shorter texts, or serve with a smaller --max-batch"
                },
                status_code=503,
                headers={"Retry-After": "1"},
            )
        first = (str(err).strip().splitlines() or [""])[0][:200]
        return JSONResponse({"error": f"internal error ({type(err).__name__}: {first})"}, status_code=500)


def _add_status_routes(app, served: dict[str, Served], started: float, queues: dict) -> None:
    from fastapi.responses import HTMLResponse

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        """The demo page: a text box per served model and its results."""
        return PAGE

    @app.get("/health")
    async def health() -> dict:
        """Liveness: the models are loaded and requests are served; per batched model, its batches so far
        (count, mean texts, the share of time the model ran, time spent settling)."""
        return {
            "status": "ok",
            "models": len(served),
            "uptime_s": round(time.time() - started, 1),
            "batching": {name: queue.stats() for name, queue in queues.items()},
        }

    @app.get("/models")
    async def models() -> dict:
        """The served models: name, task, folder and what `nlp-rnn info` says of them."""
        return {
            "models": [
                {"name": m.name, "task": m.task, "path": str(m.path), **m.info} for m in served.values()
            ]
        }


def serve(
    specs: list[tuple[str, Path]],
    host: str,
    port: int,
    device: str = "auto",
    precision: str = "auto",
    max_wait_ms: float = 0.0,
    limits: Limits = Limits(),
    api_key: Optional[str] = None,
    grace_s: float = 30.0,
    model_process: bool = True,
) -> None:
    """Loads the models and serves until Ctrl-C or SIGTERM: then /ready turns false, no new connection is
    taken and the requests in flight are answered (for at most `grace_s` seconds) before it stops."""
    try:
        import uvicorn
    except ImportError:
        raise NlpRnnError('nlp-rnn serve needs FastAPI and uvicorn: pip install -e ".[serve]"') from None
    if api_key is None and host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(
            "listening on %s without an API key: anyone who can reach it can use it (--api-key)", host
        )
    served = load_models(specs, device, precision)
    batched = [m for m in served.values() if tasks.get(m.task).endpoint(limits).batch_key is not None]
    process = ModelProcess(specs, device, precision, limits) if model_process and batched else None
    app = create_app(served, limits, max_wait_ms=max_wait_ms, api_key=api_key, model_process=process)
    log.info("listening on http://%s:%d (API docs: /docs)", host, port)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=grace_s
    )
    app.state.on_stopped = [process.close] if process is not None else []
    draining_server(config, app).run()


def _server_class():
    import uvicorn

    class Draining(uvicorn.Server):
        """uvicorn's server that marks the app as draining (/ready false) as soon as it is asked to stop."""

        def __init__(self, config, app) -> None:
            super().__init__(config)
            self.app = app

        def handle_exit(self, sig, frame) -> None:
            self.app.state.draining = True
            super().handle_exit(sig, frame)

        async def shutdown(self, sockets=None) -> None:
            """After the requests in flight are answered: `app.state.on_stopped` (e.g. the model process stops).
            Here, not after `run()`: uvicorn raises the stopping signal again once it has shut down."""
            await super().shutdown(sockets)
            for stop in getattr(self.app.state, "on_stopped", []):
                stop()

    return Draining


def draining_server(config, app):
    """uvicorn's server that turns /ready false as soon as it is asked to stop (uvicorn is an optional extra,
    so the class is made on first use)."""
    return _server_class()(config, app)
