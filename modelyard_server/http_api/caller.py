"""Registered third-party APIs called as if they were workers: the routed client's
`OutsideApis` (`RoutedClient(..., outside_apis=HttpApiCaller(settings))`).

One call: the prompt, temperature and model name of the PredictRequest (`signature`) fill
the registration's templates (`render`), the pooled client POSTs the body (`client`), the
response path finds the text (`extract`), and the answer is a PredictResponse with one
output, `text`, as a worker's would be (the routed client names the registration as its
`worker`). PredictStream sends that same answer as one message, the final result: an API
called once has no partial results (the metadata says `streaming` false).

Errors, as the routed client expects a worker's:
- anything the API or the way to it did wrong (a refused address, no connection, a
  timeout, HTTP 4xx or 5xx, a body too large, not JSON, or one the response path cannot
  read, a ${NAME} this service lacks) is UNAVAILABLE for that call, so it is tried on
  another replica, and counts towards the registration's cooldown (`cooldown`). 4xx is
  UNAVAILABLE too: an API refusing a call (a revoked key, a rate limit, a template its new
  version rejects) is this registration's problem, which another replica may not have.
  The reason is `API_FAILED`, so the gateway can answer 502 rather than 503;
- a call this service cannot make at all (no prompt, a temperature that is not a finite
  number) is INVALID_ARGUMENT, not retried, and says nothing about the registration.
Messages name the registration and its host, never a header value.

With a `tracer` each call is a client span "POST" (method, server address and port, the
model and the registration as replica), failed when the call failed; none without one.
"""

from __future__ import annotations

import math
import os
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, cast
from urllib.parse import urlsplit

import grpc
import grpc.aio
from opentelemetry import trace
from opentelemetry.util.types import Attributes

from modelyard.clock import SYSTEM_CLOCK, Clock
from modelyard.endpoints import Endpoint, HttpApi
from modelyard.errors import ModelyardError, Unavailable
from modelyard.v1 import predict_pb2 as pb
from modelyard.v1 import predict_pb2_grpc
from modelyard_server.error_status import details_metadata
from modelyard_server.http_api.cooldown import Cooldowns
from modelyard_server.http_api.extract import extract_text
from modelyard_server.http_api.lazy_import import CLIENT_MODULE, import_off_the_loop
from modelyard_server.http_api.render import render_body, render_headers, render_url
from modelyard_server.http_api.settings import HttpApiSettings
from modelyard_server.http_api.signature import OUTPUT, prompt_of, temperature_of
from modelyard_server.telemetry import spans

if TYPE_CHECKING:
    from modelyard_server.http_api.client import HttpApiClient

#: The ErrorInfo reason of a call a registered API failed (UNAVAILABLE).
API_FAILED = "API_FAILED"

PredictCall = pb.PredictRequest | pb.PredictStreamRequest


class HttpApiCaller:
    """Calls registrations for one service: one pooled HTTP client, one passive-health
    record. Create it in the running loop; `aclose()` it after the routed client."""

    def __init__(
        self,
        settings: HttpApiSettings,
        *,
        clock: Clock = SYSTEM_CLOCK,
        environ: Mapping[str, str] = os.environ,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self.settings = settings
        self._tracer = tracer
        self.cooldowns = Cooldowns(
            allowed_fails=settings.allowed_fails, cooldown_s=settings.cooldown_s, clock=clock
        )
        # made on the first call: httpx 0.28 imports its command-line tool (rich, pygments,
        # click: 4 MB) whenever those are installed, which a service that never calls a
        # registered API should not hold
        self._http: HttpApiClient | None = None
        self._environ = environ

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def _client(self) -> HttpApiClient:
        if self._http is None:
            await import_off_the_loop(CLIENT_MODULE)
            from modelyard_server.http_api.client import HttpApiClient

            if self._http is None:  # another first call may have made it meanwhile
                self._http = HttpApiClient(self.settings)
        return self._http

    def stub(self, endpoint: Endpoint) -> predict_pb2_grpc.PredictAsyncStub:
        # a stub in behaviour (Predict, PredictStream), not in type: the Protocol names the
        # generated stub class (which exists in the type stubs only)
        return cast("predict_pb2_grpc.PredictAsyncStub", _ApiStub(self, endpoint))

    async def predict(
        self, endpoint: Endpoint, request: PredictCall, timeout: float | None
    ) -> pb.PredictResponse:
        """The answer of `endpoint`'s API, or an AioRpcError as a worker would fail."""
        api = endpoint.http_api
        if api is None:
            raise ValueError(f"{endpoint.worker_id} is a worker, not a registered API")
        if self._tracer is None:
            return await self._answer(endpoint, api, request, timeout)
        with self._tracer.start_as_current_span(
            "POST", kind=trace.SpanKind.CLIENT, attributes=_span_attributes(endpoint, api, request)
        ):
            return await self._answer(endpoint, api, request, timeout)

    async def _answer(
        self, endpoint: Endpoint, api: HttpApi, request: PredictCall, timeout: float | None
    ) -> pb.PredictResponse:
        try:
            prompt = prompt_of(request.inputs)
            temperature = temperature_of(request.parameters, self.settings.default_temperature)
            body = render_body(
                api.body_template, prompt=prompt, temperature=temperature, model=request.model
            )
            with self.cooldowns.call(endpoint.worker_id):
                text = await self._call(api, request.model, body, _limit(api, timeout))
        except ModelyardError as error:
            where = f"registration {endpoint.worker_id} ({_host(api)})"
            raise _rpc_error(error.within(where)) from None
        response = pb.PredictResponse(model=request.model, request_id=request.request_id)
        response.outputs[OUTPUT].string_value = text
        return response

    async def _call(self, api: HttpApi, model: str, body: bytes, timeout_s: float) -> str:
        headers = render_headers(api.headers, self._environ)
        url = render_url(api.url_template, model=model)
        document = await (await self._client()).post_json(url, body, headers, timeout_s=timeout_s)
        return extract_text(document, api.response_path)


class _ApiStub:
    """What the routed client calls in place of a worker's PredictStub."""

    def __init__(self, caller: HttpApiCaller, endpoint: Endpoint) -> None:
        self._caller = caller
        self._endpoint = endpoint

    async def Predict(
        self, request: pb.PredictRequest, timeout: float | None = None
    ) -> pb.PredictResponse:
        return await self._caller.predict(self._endpoint, request, timeout)

    def PredictStream(
        self, request: pb.PredictStreamRequest, timeout: float | None = None
    ) -> _OneMessageCall:
        return _OneMessageCall(self._caller, self._endpoint, request, timeout)


class _OneMessageCall:
    """A stream call of one message, the final result; `cancel()` stops it before it is
    read (a call in progress is cancelled with the task iterating it)."""

    def __init__(
        self,
        caller: HttpApiCaller,
        endpoint: Endpoint,
        request: pb.PredictStreamRequest,
        timeout: float | None,
    ) -> None:
        self._caller = caller
        self._endpoint = endpoint
        self._request = request
        self._timeout = timeout
        self._done = False

    def __aiter__(self) -> AsyncIterator[pb.PredictStreamResponse]:
        return self

    async def __anext__(self) -> pb.PredictStreamResponse:
        if self._done:
            raise StopAsyncIteration
        self._done = True
        result = await self._caller.predict(self._endpoint, self._request, self._timeout)
        return pb.PredictStreamResponse(result=result)

    def cancel(self) -> bool:
        self._done = True
        return True


def _span_attributes(endpoint: Endpoint, api: HttpApi, request: PredictCall) -> Attributes:
    """OpenTelemetry's HTTP client attributes (no URL: a query may hold what is not for
    traces), and modelyard's model and replica."""
    parts = urlsplit(api.url_template)
    default_port = 443 if parts.scheme == "https" else 80
    return {
        "http.request.method": "POST",
        "server.address": parts.hostname or "",
        "server.port": parts.port or default_port,
        spans.MODEL: request.model,
        spans.REPLICA: endpoint.worker_id,
    }


def _limit(api: HttpApi, timeout: float | None) -> float:
    """The registration's timeout, or what is left of the caller's deadline if shorter."""
    return min(api.timeout_s, math.inf if timeout is None else timeout)


def _host(api: HttpApi) -> str:
    return urlsplit(api.url_template).netloc or "no host"


def _rpc_error(error: ModelyardError) -> grpc.aio.AioRpcError:
    """`error` as a worker's failed call would raise it, details (the reason) included."""
    if isinstance(error, Unavailable):
        error = Unavailable(error.message, reason=API_FAILED)
    return grpc.aio.AioRpcError(
        error.code,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(*details_metadata(error)),
        details=error.message,
    )
