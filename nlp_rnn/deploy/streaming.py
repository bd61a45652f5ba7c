"""POST /PATH/stream: one text answered as server-sent events while the model produces it (generation).

Events: `data: {"text": "..."}` for each new piece of text, then `event: done` with the same body the
plain endpoint answers, or `event: error` with `{"error": one line}`. A client that leaves stops the
generation at its next token.
"""

import asyncio
import json
from collections.abc import Callable
from typing import Any

from nlp_rnn.deploy.guard import Admission


class _Stopped(Exception):
    """The client left: raised inside the model's on_text callback to end the generation early."""


def _event(data: dict, kind: str = "") -> str:
    return (f"event: {kind}\n" if kind else "") + f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def add_stream_route(
    app,
    endpoint,
    request_model,
    accepted: Callable[[Any], Any],
    admissions: dict[str, Admission],
    executor,
    timeout_s: float,
    responses: dict,
) -> None:
    from fastapi.responses import StreamingResponse
    from pydantic import Field, StrictStr, create_model

    stream_model = create_model(
        f"{endpoint.path.title()}StreamRequest",
        __base__=request_model,
        texts=(list[StrictStr], Field(min_length=1, max_length=1, description="One text (prompt).")),
    )

    async def stream(req: stream_model):
        model = accepted(req)
        admission = admissions[model.name]
        admission.enter(1)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        gone = False

        def on_text(piece: str) -> None:
            if gone:
                raise _Stopped
            loop.call_soon_threadsafe(queue.put_nowait, ("text", piece))

        def job() -> None:
            try:
                result = endpoint.stream(model.interface, req.texts[0], req, on_text)
                loop.call_soon_threadsafe(queue.put_nowait, ("done", result))
            except _Stopped:
                pass
            except Exception as err:  # one line to the client; the server goes on
                loop.call_soon_threadsafe(
                    queue.put_nowait, ("error", str(err).splitlines()[0] if str(err) else repr(err))
                )

        loop.run_in_executor(executor, job)

        async def events():
            nonlocal gone
            try:
                while True:
                    try:
                        kind, value = await asyncio.wait_for(queue.get(), timeout=timeout_s)
                    except asyncio.TimeoutError:
                        yield _event({"error": f"deadline: no text within {timeout_s:g} s"}, "error")
                        return
                    if kind == "text":
                        yield _event({"text": value})
                    elif kind == "done":
                        yield _event({"model": model.name, **endpoint.answer(value, req)}, "done")
                        return
                    else:
                        yield _event({"error": value}, "error")
                        return
            finally:
                gone = True
                admission.leave(1)

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    stream.__doc__ = f"{endpoint.summary} Streamed: server-sent events while the text is produced."
    app.post(
        f"/{endpoint.path}/stream",
        name=f"{endpoint.path}_stream",
        responses={
            200: {
                "description": "text/event-stream: data {text}, then event done (the answer) or error",
                "content": {"text/event-stream": {"schema": {"type": "object"}}},
            },
            **responses,
        },
    )(stream)
