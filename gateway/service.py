"""The OpenAI API's core, without HTTP: a checked request in, OpenAI's body (or its
chunks) out.

Each call resolves the requested name (`gateway.models.Catalog`), checks that the model
answers this endpoint, and calls it: a served model over the routed client (Predict, or
PredictStream for a stream), a graph through the composer (Run, or RunStream). Every
modelyard error leaves as an `ApiError` carrying its HTTP status.

A graph takes one text: the prompt, or the content of the one user message a chat
request holds (a graph has no chat template to render a conversation with). It answers
with its `text` output, streamed from the chunks of the node that output comes from. A
graph's nodes set their own generation parameters: a request's are not passed to it, and
`n` above 1 is refused.

A name third-party APIs are registered under is called like a graph, text in and text
out, over the routed client: the prompt, or for chat the conversation as one text (a
single user message as its content; more messages one per line as "role: content", since
an API registered by a URL and a body template has no chat template). Only `temperature`
is passed (it fills {MODEL_TEMPERATURE}); `n` above 1 is refused. A stream is the whole
answer in one chunk, as the API answers once. An API failing is 502 (reason API_FAILED).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

from gateway.errors import ApiError, bad_request, from_modelyard
from gateway.models import (
    EMBEDDINGS,
    LLM_TASKS,
    Catalog,
    GraphModel,
    RegisteredModel,
    ServedModel,
    Target,
)
from gateway.schemas import ChatRequest, CompletionRequest, EmbeddingRequest
from gateway.translate import (
    CHAT_SHAPE,
    Envelope,
    Shape,
    embeddings,
    model_entry,
    renamed,
    usage_chunk,
)
from modelyard.composer_client import AsyncComposerClient, Chunk, Result
from modelyard.errors import ModelyardError, NotFound
from modelyard.routed_client import RoutedClient

GenerationRequest = ChatRequest | CompletionRequest


class OpenAIService:
    def __init__(
        self,
        catalog: Catalog,
        routed: RoutedClient,
        composer: AsyncComposerClient | None,
        *,
        timeout: float,
    ) -> None:
        self.catalog = catalog
        self.routed = routed
        self.composer = composer
        self.timeout = timeout

    # -- /v1/models --------------------------------------------------------------------

    async def models(self) -> dict[str, Any]:
        try:
            targets = await self.catalog.list()
        except ModelyardError as error:
            raise from_modelyard(error) from None
        data = [_entry(t) for t in targets if not isinstance(t, ServedModel) or t.task in LLM_TASKS]
        return {"object": "list", "data": data}

    async def model(self, name: str) -> dict[str, Any]:
        target = await self._resolve(name)
        if isinstance(target, ServedModel) and target.task not in LLM_TASKS:
            raise _not_an_llm(target)
        return _entry(target)

    # -- generation --------------------------------------------------------------------

    async def complete(self, shape: Shape, request: GenerationRequest) -> dict[str, Any]:
        """The whole answer of a chat or completions request."""
        target = await self._target(request.model, shape)
        try:
            if isinstance(target, GraphModel):
                text = await self._run_graph(target, _graph_text(request))
                envelope = Envelope.new(shape, request.model)
                return envelope.answer(shape, [shape.choice(text, "stop")])
            if isinstance(target, RegisteredModel):
                text = await self._call_registered(target, request)
                envelope = Envelope.new(shape, request.model)
                return envelope.answer(shape, [shape.choice(text, "stop")])
            prediction = await self.routed.predict(
                target.name, _inputs(request), parameters=request.parameters(), timeout=self.timeout
            )
        except ModelyardError as error:
            raise from_modelyard(error, fields=isinstance(target, ServedModel)) from None
        return renamed(prediction.outputs, request.model)

    async def stream(
        self, shape: Shape, request: GenerationRequest
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The chunks of a streamed answer (then, if asked, the usage chunk)."""
        target = await self._target(request.model, shape)
        try:
            if isinstance(target, GraphModel):
                async for chunk in self._stream_graph(target, shape, request):
                    yield chunk
                return
            if isinstance(target, RegisteredModel):
                async for chunk in self._stream_registered(target, shape, request):
                    yield chunk
                return
            events = self.routed.predict_stream(
                target.name, _inputs(request), parameters=request.parameters(), timeout=self.timeout
            )
            async for event in events:
                if not event.final:
                    yield renamed(event.outputs, request.model)
                elif request.include_usage:
                    yield usage_chunk(event.outputs, request.model, shape)
        except ModelyardError as error:
            raise from_modelyard(error, fields=isinstance(target, ServedModel)) from None

    # -- embeddings --------------------------------------------------------------------

    async def embed(self, request: EmbeddingRequest) -> dict[str, Any]:
        target = await self._resolve(request.model)
        if target.task != EMBEDDINGS:
            raise _wrong_endpoint(target, "/v1/embeddings")
        try:
            prediction = await self.routed.predict(
                target.name, {"input": request.input}, timeout=self.timeout
            )
        except ModelyardError as error:
            raise from_modelyard(error) from None
        return embeddings(prediction.outputs, request.model, request.encoding_format)

    # -- resolution --------------------------------------------------------------------

    async def _resolve(self, name: str) -> Target:
        try:
            return await self.catalog.resolve(name)
        except NotFound as error:
            raise ApiError(404, error.message, param="model") from None
        except ModelyardError as error:
            raise from_modelyard(error) from None

    async def _target(self, name: str, shape: Shape) -> Target:
        target = await self._resolve(name)
        if not isinstance(target, ServedModel) or target.task == shape.task:
            return target
        path = "/v1/chat/completions" if shape is CHAT_SHAPE else "/v1/completions"
        raise _wrong_endpoint(target, path)

    # -- graphs ------------------------------------------------------------------------

    async def _run_graph(self, model: GraphModel, text: str) -> str:
        result = await self._composer().run(model.name, {model.input: text}, timeout=self.timeout)
        return _text_output(model, result)

    async def _stream_graph(
        self, model: GraphModel, shape: Shape, request: GenerationRequest
    ) -> AsyncIterator[dict[str, Any]]:
        envelope = Envelope.new(shape, request.model)
        if (opening := shape.opening()) is not None:
            yield envelope.chunk(shape, opening)
        sent = ""
        events = self._composer().run_stream(
            model.name, {model.input: _graph_text(request)}, timeout=self.timeout
        )
        async for event in events:
            if isinstance(event, Chunk) and event.node == model.stream_node:
                piece = _at(event.outputs, model.stream_path)
                if isinstance(piece, str) and piece:
                    sent += piece
                    yield envelope.chunk(shape, shape.delta(piece))
            elif isinstance(event, Result):
                text = _text_output(model, event)
                # a node that streamed no text (or not all of it) leaves the rest to say
                if len(text) > len(sent) and text.startswith(sent):
                    yield envelope.chunk(shape, shape.delta(text[len(sent) :]))
                yield envelope.chunk(shape, shape.delta("", "stop"))

    # -- registered APIs ---------------------------------------------------------------

    async def _call_registered(self, model: RegisteredModel, request: GenerationRequest) -> str:
        prediction = await self.routed.predict(
            model.name,
            {"prompt": _registered_prompt(request)},
            parameters=_registered_parameters(request),
            timeout=self.timeout,
        )
        text = prediction.outputs.get("text")
        if not isinstance(text, str):  # the caller always answers a text
            raise ApiError(500, f"The registered API '{model.name}' answered no text.")
        return text

    async def _stream_registered(
        self, model: RegisteredModel, shape: Shape, request: GenerationRequest
    ) -> AsyncIterator[dict[str, Any]]:
        text = await self._call_registered(model, request)  # before any chunk: errors stay clean
        envelope = Envelope.new(shape, request.model)
        if (opening := shape.opening()) is not None:
            yield envelope.chunk(shape, opening)
        yield envelope.chunk(shape, shape.delta(text))
        yield envelope.chunk(shape, shape.delta("", "stop"))

    def _composer(self) -> AsyncComposerClient:
        if self.composer is None:  # the catalog lists no graph without a composer
            raise ApiError(503, "this gateway has no composer to run graphs with")
        return self.composer


def _inputs(request: GenerationRequest) -> dict[str, Any]:
    if isinstance(request, ChatRequest):
        return {"messages": request.message_values()}
    return {"prompt": request.prompt}


def _graph_text(request: GenerationRequest) -> str:
    """The one text a graph takes; 400 for what a graph cannot take."""
    if request.n is not None and request.n > 1:
        raise bad_request("A graph answers one choice: n must be 1.", "n")
    if isinstance(request, CompletionRequest):
        return request.prompt
    if len(request.messages) != 1 or request.messages[0].role != "user":
        raise bad_request(
            f"The model '{request.model}' is a graph: it takes one user message, not a "
            "conversation (a graph has no chat template to render one with).",
            "messages",
        )
    return request.messages[0].content


def _registered_prompt(request: GenerationRequest) -> str:
    """The one text a registered API takes; 400 for n > 1."""
    if request.n is not None and request.n > 1:
        raise bad_request("A registered API answers one choice: n must be 1.", "n")
    if isinstance(request, CompletionRequest):
        return request.prompt
    messages = request.messages
    if len(messages) == 1 and messages[0].role == "user":
        return messages[0].content
    return "\n".join(f"{message.role}: {message.content}" for message in messages)


def _registered_parameters(request: GenerationRequest) -> dict[str, Any]:
    return {} if request.temperature is None else {"temperature": request.temperature}


def _text_output(model: GraphModel, result: Result) -> str:
    text = result.outputs.get("text")
    if not isinstance(text, str):
        raise ApiError(
            500, f"The graph '{model.name}' answered a text that is not a string; fix its graph."
        )
    return text


def _at(outputs: Mapping[str, Any], path: tuple[str | int, ...]) -> Any:
    """The value at `path` inside a chunk's outputs, or None where the path leads nowhere."""
    value: Any = outputs
    for step in path:
        if isinstance(step, int) and isinstance(value, list) and step < len(value):
            value = value[step]
        elif isinstance(step, str) and isinstance(value, dict):
            value = value.get(step)
        else:
            return None
    return value


def _entry(target: Target) -> dict[str, Any]:
    return model_entry(target.name, target.created, target.task)


def _wrong_endpoint(target: Target, path: str) -> ApiError:
    if isinstance(target, ServedModel) and target.task not in LLM_TASKS:
        return _not_an_llm(target)
    what = "a graph" if isinstance(target, GraphModel) else f"an {target.task} model"
    return bad_request(f"The model '{target.name}' is {what}: it does not answer {path}.", "model")


def _not_an_llm(target: ServedModel) -> ApiError:
    return ApiError(
        404,
        f"The model '{target.name}' is served as {target.task}, which the OpenAI API does not "
        "carry: serve it as llm/v1/chat, llm/v1/completions or llm/v1/embeddings.",
        param="model",
    )
