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
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from nlp_rnn.errors import NlpRnnError

log = logging.getLogger(__name__)

TASK_OF_ENDPOINT = {"translate": "translation", "classify": "classification", "generate": "language_model"}


@dataclass(frozen=True)
class Limits:
    max_texts: int = 64  # texts per request
    max_chars: int = 2000  # characters per text
    max_body: int = 1_000_000  # bytes per request body
    max_beam: int = 16
    max_tokens: int = 1024  # generate


@dataclass
class Served:
    """One loaded model: its name in requests, its task, and its raw-text interface."""

    name: str
    path: Path
    task: str
    interface: Any  # Translator, Predictor or Generator
    info: dict = field(default_factory=dict)


class RequestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class BatchQueue:
    """Gathers the requests for one model and runs them in batches, one run at a time.

    While a run is busy, new requests wait and are taken together by the next run (up to `gather`
    texts, those with the same settings), so batches grow with the load and an idle server starts
    at once; `max_wait_s` > 0 also holds an idle server back that long for more requests.
    `run(texts, key)` is called on the worker thread and returns one result per text.
    """

    def __init__(self, run: Callable[[list[str], tuple], list], executor: ThreadPoolExecutor, gather: int, max_wait_s: float):
        self.run, self.executor, self.gather, self.max_wait_s = run, executor, gather, max_wait_s
        self.pending: list[tuple[list[str], tuple, asyncio.Future]] = []
        self.busy = False
        self.tasks: set[asyncio.Task] = set()

    async def submit(self, texts: list[str], key: tuple) -> list:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending.append((texts, key, future))
        if not self.busy:
            self.busy = True
            task = loop.create_task(self._drain())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return await future

    async def _drain(self) -> None:
        try:
            if self.max_wait_s > 0:
                await asyncio.sleep(self.max_wait_s)
            while self.pending:
                key, batch, rest, size = self.pending[0][1], [], [], 0
                for item in self.pending:  # the oldest request's settings; others of the same settings join it
                    if item[1] == key and (size == 0 or size + len(item[0]) <= self.gather):
                        batch.append(item)
                        size += len(item[0])
                    else:
                        rest.append(item)
                self.pending = rest
                await self._run(batch, key)
        finally:
            self.busy = False

    async def _run(self, batch: list[tuple[list[str], tuple, asyncio.Future]], key: tuple) -> None:
        texts = [t for texts, _, _ in batch for t in texts]
        try:
            results = await asyncio.get_running_loop().run_in_executor(self.executor, self.run, texts, key)
        except Exception as err:  # a failure answers every request of the batch, and the server goes on
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(err)
            return
        start = 0
        for texts_, _, future in batch:
            if not future.done():
                future.set_result(results[start : start + len(texts_)])
            start += len(texts_)


def load_models(specs: list[tuple[str, Path]], device: str, precision: str) -> dict[str, Served]:
    """Loads each NAME=PATH once; its task decides the interface."""
    from nlp_rnn.bundle import load
    from nlp_rnn.classification_task import Predictor
    from nlp_rnn.info import describe
    from nlp_rnn.lm_task import Generator
    from nlp_rnn.translation_task import Translator

    served = {}
    for name, path in specs:
        if name in served:
            raise NlpRnnError(f"--model {name}=...: the name {name!r} is given twice")
        bundle = load(path, device=device)
        if bundle.task == "translation":
            interface = Translator(bundle, precision)
        elif bundle.task == "classification":
            interface = Predictor(bundle, precision)
        elif bundle.task == "language_model":
            interface = Generator(bundle, "fp32" if precision == "auto" else precision)
        else:
            raise NlpRnnError(f"{path}: {bundle.task} models are not served (translation, classification, language_model)")
        details = {k: v for k, v in describe(bundle).items() if k not in ("path", "task") and isinstance(v, (str, int, float, list))}
        served[name] = Served(name, Path(bundle.path), bundle.task, interface, details)
        log.info("serving %s (%s) from %s", name, bundle.task, bundle.path)
    return served


def _one_line(errors: list[dict]) -> str:
    first = errors[0]
    where = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or "body"
    return f"{where}: {first.get('msg', 'invalid')}"


def create_app(served: dict[str, Served], limits: Limits = Limits(), max_batch: int = 64, max_wait_ms: float = 0.0):
    """The FastAPI application: POST /translate, /classify, /generate; GET /health, /models; /docs."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, Field, StrictStr

    from nlp_rnn import __version__

    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nlp-rnn-model")  # one batch at a time: torch uses every core
    started = time.time()

    class TextsRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        texts: list[StrictStr] = Field(min_length=1, max_length=limits.max_texts, description="The texts (at least one).")
        model: Optional[StrictStr] = Field(None, description="A served model's name (default: the one model of this task).")

    class TranslateRequest(TextsRequest):
        beam_size: Optional[int] = Field(None, ge=1, le=limits.max_beam, description="1: greedy (default: the model's).")
        n_best: int = Field(1, ge=1, le=limits.max_beam, description="Hypotheses per text (at most beam_size).")

    class GenerateRequest(TextsRequest):
        max_tokens: Optional[int] = Field(None, ge=1, le=limits.max_tokens)
        temperature: Optional[float] = Field(None, ge=0)
        top_k: Optional[int] = Field(None, ge=0)
        top_p: Optional[float] = Field(None, gt=0, le=1)
        seed: Optional[int] = None
        beam_size: int = Field(1, ge=1, le=limits.max_beam)

    def pick(endpoint: str, name: Optional[str]) -> Served:
        task = TASK_OF_ENDPOINT[endpoint]
        of_task = [s for s in served.values() if s.task == task]
        if name is None:
            if len(of_task) != 1:
                names = ", ".join(s.name for s in of_task) or "none"
                raise RequestError(400 if of_task else 404, f"model: name one of the {task} models ({names})")
            return of_task[0]
        if name not in served:
            raise RequestError(404, f"model: unknown model {name!r} (served: {', '.join(served)})")
        if served[name].task != task:
            raise RequestError(400, f"model: {name!r} is a {served[name].task} model; /{endpoint} needs a {task} model")
        return served[name]

    def check_texts(texts: list[str]) -> None:
        for i, text in enumerate(texts):
            if len(text) > limits.max_chars:
                raise RequestError(413, f"texts.{i}: {len(text):,} characters; at most {limits.max_chars:,} per text")

    def run_translate(model: Served) -> Callable[[list[str], tuple], list]:
        def run(texts: list[str], key: tuple) -> list:
            beam, n_best = key[1], key[2]
            opts = model.interface.options(beam_size=beam, n_best=n_best)
            return model.interface.translate(texts, opts, max_batch)
        return run

    def run_classify(model: Served) -> Callable[[list[str], tuple], list]:
        return lambda texts, key: model.interface.classify(texts, max_batch)

    queues = {name: BatchQueue(run_translate(m) if m.task == "translation" else run_classify(m), executor, 4 * max_batch,
                               max_wait_ms / 1000) for name, m in served.items() if m.task != "language_model"}

    app = FastAPI(title="nlp-rnn", version=__version__, description="Translation, classification and generation with recurrent "
                  "networks. Requests for the same model arriving within a few milliseconds are batched together.")

    @app.exception_handler(RequestError)
    async def request_error(request: Request, err: RequestError):
        return JSONResponse({"error": err.message}, status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError):
        errors = err.errors()
        if errors and errors[0].get("type") == "json_invalid":
            return JSONResponse({"error": f"body: not valid JSON ({errors[0].get('ctx', {}).get('error', 'parse error')})"},
                                status_code=400)
        return JSONResponse({"error": _one_line(errors)}, status_code=422)

    @app.exception_handler(NlpRnnError)
    async def user_error(request: Request, err: NlpRnnError):
        return JSONResponse({"error": str(err).splitlines()[0]}, status_code=400)

    @app.middleware("http")
    async def body_limits(request: Request, call_next):
        if request.method == "POST":
            declared = request.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > 64 * limits.max_body:
                return JSONResponse({"error": f"body: {int(declared):,} bytes; at most {limits.max_body:,}"}, status_code=413)
            # Read the whole body even when it is too large: answering before the client has sent it
            # would reset the connection under it (the client sees a broken pipe, not the 413).
            body = await request.body()  # starlette keeps it for the endpoint
            if len(body) > limits.max_body:
                return JSONResponse({"error": f"body: {len(body):,} bytes; at most {limits.max_body:,}"}, status_code=413)
            try:
                body.decode("utf-8")
            except UnicodeDecodeError as err:
                return JSONResponse({"error": f"body: not valid UTF-8 (byte {body[err.start]:#04x} at offset {err.start})"},
                                    status_code=400)
        return await call_next(request)

    @app.get("/health")
    async def health() -> dict:
        """Liveness: the models are loaded and requests are served."""
        return {"status": "ok", "models": len(served), "uptime_s": round(time.time() - started, 1)}

    @app.get("/models")
    async def models() -> dict:
        """The served models: name, task, folder and what `nlp-rnn info` says of them."""
        return {"models": [{"name": m.name, "task": m.task, "path": str(m.path), **m.info} for m in served.values()]}

    @app.post("/translate")
    async def translate(req: TranslateRequest) -> dict:
        """Translate texts; `n_best` > 1 also returns the other hypotheses with their scores."""
        model = pick("translate", req.model)
        check_texts(req.texts)
        beam = req.beam_size or model.interface.options().beam_size
        if req.n_best > beam:
            raise RequestError(422, f"n_best: {req.n_best} needs beam_size of at least {req.n_best} (got {beam})")
        results = await queues[model.name].submit(list(req.texts), ("translate", beam, req.n_best))
        out = []
        for hyps in results:
            best = {"text": hyps[0].text, "score": hyps[0].score} if hyps else {"text": "", "score": 0.0}
            if req.n_best > 1:
                best["n_best"] = [{"text": h.text, "score": h.score} for h in hyps[: req.n_best]]
            out.append(best)
        return {"model": model.name, "translations": out}

    @app.post("/classify")
    async def classify(req: TextsRequest) -> dict:
        """Classify texts: the label's name, its id in the training data and every class's probability."""
        model = pick("classify", req.model)
        check_texts(req.texts)
        results = await queues[model.name].submit(list(req.texts), ("classify",))
        return {"model": model.name, "predictions": [{"label": p.label, "label_id": p.label_id, "probability": p.probability,
                                                        "probabilities": p.probabilities} for p in results]}

    @app.post("/generate")
    async def generate(req: GenerateRequest) -> dict:
        """Continue prompts with a language model (sampling, or beam search with beam_size > 1); one request at a time."""
        model = pick("generate", req.model)
        check_texts(req.texts)
        generator = model.interface
        generator.check(1, req.temperature, req.top_k, req.top_p, req.max_tokens, req.beam_size)

        def run() -> list:
            return generator.generate(list(req.texts), temperature=req.temperature, top_k=req.top_k, top_p=req.top_p,
                                      max_tokens=req.max_tokens, seed=req.seed, beam_size=req.beam_size)

        samples = await asyncio.get_running_loop().run_in_executor(executor, run)
        return {"model": model.name, "generations": [{"prompt": s[0].prompt, "text": s[0].text, "log_prob": s[0].log_prob}
                                                       for s in samples]}

    app.state.executor = executor
    return app


def serve(specs: list[tuple[str, Path]], host: str, port: int, device: str = "auto", precision: str = "auto",
          max_batch: int = 64, max_wait_ms: float = 0.0, limits: Limits = Limits()) -> None:
    """Loads the models and serves until interrupted (Ctrl-C or SIGTERM end it cleanly)."""
    try:
        import uvicorn
    except ImportError:
        raise NlpRnnError('nlp-rnn serve needs FastAPI and uvicorn: pip install -e ".[serve]"') from None
    app = create_app(load_models(specs, device, precision), limits, max_batch, max_wait_ms)
    log.info("listening on http://%s:%d (API docs: /docs)", host, port)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
