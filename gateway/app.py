"""The HTTP routes: OpenAI's paths over `OpenAIService`, plus /health.

    POST /v1/chat/completions   POST /v1/completions   POST /v1/embeddings
    GET  /v1/models             GET  /v1/models/{model}          GET /health

With API keys configured (`gateway.api_keys`), every route but /health first checks the
request's `Authorization: Bearer <key>`.

Routes only do HTTP: read a bounded JSON body, check it (`gateway.schemas`), await the
service, and write JSON, or server-sent events ending with `data: [DONE]` for
`"stream": true`. A stream's status is decided by its first chunk: whatever fails before
it (an unknown model, a bad field, no replica) is an ordinary error response; a failure
after it is an `error` event, which the official clients raise as APIError.

A client that goes away stops its call: a stream's events stop being produced, and a
unary call is cancelled as soon as the connection closes, so the model stops generating
for nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, TypeVar

from fastapi import FastAPI, Request, Response
from starlette.types import Receive, Scope, Send

from gateway.api_keys import ApiKeys, RequireApiKey
from gateway.errors import INTERNAL_MESSAGE, ApiError, bad_request
from gateway.schemas import ChatRequest, CompletionRequest, EmbeddingRequest, Parsed, parse
from gateway.service import OpenAIService
from gateway.translate import CHAT_SHAPE, COMPLETION_SHAPE, DONE, Shape, dumps, event

log = logging.getLogger(__name__)
T = TypeVar("T")

# what the closed connection of a client that left is answered with (nobody reads it)
_CLIENT_CLOSED = 499
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class Health:
    """What GET /health says: serving until a graceful shutdown begins."""

    serving = True


def build_app(
    service: OpenAIService, *, max_body_bytes: int, health: Health, keys: ApiKeys
) -> FastAPI:
    """The routes; with `keys` required, every one but /health needs a key (401)."""
    app = FastAPI(title="modelyard gateway", summary="OpenAI-compatible API over modelyard")
    if keys.required:
        app.add_middleware(RequireApiKey, keys=keys)
    app.add_exception_handler(ApiError, _api_error)  # type: ignore[arg-type]
    for status in (404, 405):  # no such route, or not with this method
        app.add_exception_handler(status, _http_error)
    app.add_exception_handler(Exception, _unexpected)

    async def body_of(request: Request, kind: type[Parsed]) -> Parsed:
        return parse(kind, await read_json(request, max_body_bytes))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await _generate(request, service, CHAT_SHAPE, await body_of(request, ChatRequest))

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        parsed = await body_of(request, CompletionRequest)
        return await _generate(request, service, COMPLETION_SHAPE, parsed)

    @app.post("/v1/embeddings")
    async def create_embeddings(request: Request) -> Response:
        parsed = await body_of(request, EmbeddingRequest)
        return _json(await unless_disconnected(request, service.embed(parsed)))

    @app.get("/v1/models")
    async def list_models() -> Response:
        return _json(await service.models())

    @app.get("/v1/models/{model:path}")
    async def retrieve_model(model: str) -> Response:
        return _json(await service.model(model))

    @app.get("/health")
    async def health_check() -> Response:
        if health.serving:
            return _json({"status": "serving"})
        return _json({"status": "shutting down"}, status=503)

    return app


async def _generate(
    request: Request, service: OpenAIService, shape: Shape, parsed: ChatRequest | CompletionRequest
) -> Response:
    if not parsed.streams:
        return _json(await unless_disconnected(request, service.complete(shape, parsed)))
    chunks = service.stream(shape, parsed)
    try:
        first = await unless_disconnected(request, anext(chunks))
    except StopAsyncIteration:
        first = None
    return EventStream(_events(first, chunks))


class EventStream(Response):
    """A `text/event-stream` response of `events` (framed server-sent events).

    Starlette's StreamingResponse, in fewer steps: no task group (one watcher task, plain
    asyncio), and `DONE` ends the body in the same write. A client that leaves cancels the
    stream where it waits (the model's call with it) and ends the response, as there.
    """

    media_type = "text/event-stream"

    def __init__(self, events: AsyncGenerator[bytes, None]) -> None:
        self.events = events
        self.status_code = 200
        self.background = None
        self.init_headers(_SSE_HEADERS)
        self._sent_all = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        streaming = _current_task()
        watcher = asyncio.ensure_future(
            _cancel_when_disconnected(receive, streaming, lambda: self._sent_all)
        )
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async with contextlib.aclosing(self.events) as events:
                async for data in events:
                    last = data is DONE
                    self._sent_all = last
                    await send({"type": "http.response.body", "body": data, "more_body": not last})
            if not self._sent_all:
                self._sent_all = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not _cancelled_by(watcher):
                raise  # by the server (a shutdown), not by the client leaving
            streaming.uncancel()
        finally:
            watcher.cancel()


async def _events(
    first: dict[str, Any] | None, chunks: AsyncGenerator[dict[str, Any], None]
) -> AsyncGenerator[bytes, None]:
    # aclosing: a client that left ends the chunks (and so the model's call) at once,
    # not whenever the abandoned generator is collected
    async with contextlib.aclosing(chunks):
        if first is not None:
            yield event(first)
        try:
            async for chunk in chunks:
                yield event(chunk)
        except ApiError as error:
            yield event(error.body())
            return
        except Exception:
            log.exception("a stream failed after its first chunk")
            yield event(ApiError(500, INTERNAL_MESSAGE).body())
            return
        yield DONE


async def read_json(request: Request, limit: int) -> Any:
    """The request's JSON body; 413 beyond `limit` bytes (read no further), 400 if it is
    not JSON."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise _too_large(limit)
    try:
        return json.loads(body)
    except ValueError:  # UnicodeDecodeError is one
        raise bad_request(
            "We could not parse the JSON body of your request: send a JSON object with "
            "Content-Type: application/json.",
            None,
        ) from None


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """`work`'s result, or (once the client closed the connection) `work` cancelled.

    `work` runs in this task (no task of its own to hand its result over: the first chunk
    reaches the response sooner); a watcher cancels this task if the client leaves first.
    """
    waiting = _current_task()
    watcher = asyncio.ensure_future(_cancel_when_disconnected(request.receive, waiting))
    try:
        return await work
    except asyncio.CancelledError:
        if _cancelled_by(watcher):
            waiting.uncancel()
        raise ApiError(_CLIENT_CLOSED, "the client closed the connection") from None
    finally:
        watcher.cancel()


async def _cancel_when_disconnected(
    receive: Receive, task: asyncio.Task[Any], finished: Callable[[], bool] = lambda: False
) -> None:
    """Cancels `task` once the client closes the connection, unless `finished()` by then."""
    # the body was read: what the server sends next is the disconnect (or the end of
    # the response, which reads as one too)
    while (await receive())["type"] != "http.disconnect":
        pass
    if not finished():
        task.cancel()


def _cancelled_by(watcher: asyncio.Task[None]) -> bool:
    """Whether `watcher` cancelled its task (the client left), rather than someone else."""
    return watcher.done() and not watcher.cancelled()


def _current_task() -> asyncio.Task[Any]:
    task = asyncio.current_task()
    assert task is not None  # a request is served by a task of uvicorn's
    return task


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"The request body is larger than this server accepts ({limit} bytes).")


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(dumps(body), status_code=status, media_type="application/json")


async def _api_error(request: Request, error: ApiError) -> Response:
    return _json(error.body(), error.status)


async def _http_error(request: Request, error: Exception) -> Response:
    """The router's own answers (no such route, wrong method) in OpenAI's shape."""
    status = int(getattr(error, "status_code", 404))
    what = "Invalid URL" if status == 404 else "Method not allowed"
    message = f"{what} ({request.method} {request.url.path})"
    return _json(ApiError(status, message, code="unknown_url").body(), status)


async def _unexpected(request: Request, error: Exception) -> Response:
    # Starlette re-raises the error once this answer is sent, and uvicorn logs its traceback
    return _json(ApiError(500, INTERNAL_MESSAGE).body(), 500)
