"""Which names the gateway answers to, and what each one is: the model-resolution step.

Three sources, each a `ModelSource`:

- `ServedModels`: every model a registered worker serves, from the control plane's
  ListWorkers; those whose task is `llm/v1/chat`, `llm/v1/completions` or
  `llm/v1/embeddings` are OpenAI models. Calls go to them over the routed client.
- `DeployedGraphs`: the composer's deployed graphs whose output is text (`text_graph`): a
  graph is callable as a model for chat and completions.

A name is resolved through a `Catalog`, which keeps the sources' last answer for
`ttl_s` so that a request costs no listing call, and looks again (at most every
`miss_refresh_s`) before it calls a name unknown. A model that left every worker stays
callable for `forget_after_s`: its calls find no replica (503, which clients retry) while
a worker restarts or re-registers, rather than an unknown model (404, which they do not).
- `RegisteredApis`: the names third-party APIs are registered under (the control plane's
  ListRegistrations, online ones): text in, text out, for chat and completions. Calls go
  over the routed client too, which calls the APIs through the gateway's HTTP caller.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import grpc
import grpc.aio

from modelyard.channels import aio_channel
from modelyard.clock import SYSTEM_CLOCK, Clock
from modelyard.composer_client import AsyncComposerClient
from modelyard.errors import ModelyardError, NotFound, Unavailable
from modelyard.v1 import controlplane_pb2 as cp
from modelyard.v1 import controlplane_pb2_grpc, value_pb2
from modelyard.v1 import graph_pb2 as g

log = logging.getLogger(__name__)
T = TypeVar("T")

CHAT = "llm/v1/chat"
COMPLETIONS = "llm/v1/completions"
EMBEDDINGS = "llm/v1/embeddings"
LLM_TASKS = (CHAT, COMPLETIONS, EMBEDDINGS)
GRAPH = "graph"  # a graph's `task` in /v1/models: it answers chat and completions
REGISTERED = "http-api"  # a registered API's `task` in /v1/models: chat and completions

TEXT_OUTPUT = "text"  # the graph output a graph model answers with
_TEXT_KINDS = (value_pb2.VALUE_KIND_STRING, value_pb2.VALUE_KIND_ANY)
_LIST_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class ServedModel:
    """A model some worker serves, under its served name."""

    name: str
    task: str
    created: int  # Unix seconds: when the longest-running worker serving it started


@dataclass(frozen=True, slots=True)
class GraphModel:
    """A deployed graph that takes one text and answers one text."""

    name: str
    input: str  # the graph input the prompt (or the user's message) goes to
    stream_node: str  # the node whose streamed chunks carry the text ("" if none does)
    stream_path: tuple[str | int, ...]  # where in such a chunk the text is
    created: int = 0  # graphs record no creation time

    task = GRAPH


@dataclass(frozen=True, slots=True)
class RegisteredModel:
    """A name third-party APIs are registered under: it takes one text, answers one text."""

    name: str
    created: int  # Unix seconds: when its first registration was made

    task = REGISTERED


Target = ServedModel | GraphModel | RegisteredModel


class ModelSource(Protocol):
    """Somewhere models come from; `what` names it in logs."""

    what: str

    async def models(self) -> list[Target]:
        """Every model it has now; raises ModelyardError when it cannot say."""
        ...


class _FromControlPlanes:
    """A source read from the first control-plane replica that answers; one channel per
    replica, kept for the source's life."""

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        credentials: grpc.ChannelCredentials | None = None,
        what: str,
    ) -> None:
        self.addresses = tuple(addresses)
        self.what = f"{what} {', '.join(self.addresses)}"
        self._credentials = credentials  # None: plaintext
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def _first_answer(
        self,
        ask: Callable[[controlplane_pb2_grpc.ControlPlaneAsyncStub], Awaitable[T]],
        listing: str,
    ) -> T:
        problems = []
        for address in self.addresses:
            channel = self._channels.get(address)
            if channel is None:
                channel = self._channels[address] = aio_channel(
                    address, credentials=self._credentials
                )
            try:
                return await ask(controlplane_pb2_grpc.ControlPlaneStub(channel))
            except grpc.aio.AioRpcError as error:
                problems.append(f"{address}: {error.code().name}")
        raise Unavailable(f"cannot list the {listing} ({'; '.join(problems)})")

    async def close(self) -> None:
        channels = list(self._channels.values())
        self._channels.clear()
        await asyncio.gather(*(channel.close() for channel in channels))


class ServedModels(_FromControlPlanes):
    """The served models, from the first control-plane replica that answers ListWorkers."""

    def __init__(
        self, addresses: Sequence[str], *, credentials: grpc.ChannelCredentials | None = None
    ) -> None:
        super().__init__(addresses, credentials=credentials, what="control plane")

    async def models(self) -> list[Target]:
        reply = await self._first_answer(
            lambda stub: stub.ListWorkers(cp.ListWorkersRequest(), timeout=_LIST_TIMEOUT_S),
            "served models",
        )
        return served_models(reply.workers)


class RegisteredApis(_FromControlPlanes):
    """The registered names, from the first control-plane replica that answers
    ListRegistrations; a name whose registrations are all offline is not listed."""

    def __init__(
        self, addresses: Sequence[str], *, credentials: grpc.ChannelCredentials | None = None
    ) -> None:
        super().__init__(addresses, credentials=credentials, what="registrations of control plane")

    async def models(self) -> list[Target]:
        reply = await self._first_answer(
            lambda stub: stub.ListRegistrations(
                cp.ListRegistrationsRequest(), timeout=_LIST_TIMEOUT_S
            ),
            "registered APIs",
        )
        return registered_models(reply.registrations)


def registered_models(registrations: Sequence[cp.Registration]) -> list[Target]:
    """One target per name some online registration serves (created: its first one)."""
    found: dict[str, RegisteredModel] = {}
    for registration in registrations:
        if not registration.online:
            continue
        created = registration.create_time.seconds
        known = found.get(registration.model)
        if known is None or created < known.created:
            found[registration.model] = RegisteredModel(registration.model, created)
    return list(found.values())


def served_models(workers: Sequence[cp.WorkerStatus]) -> list[Target]:
    """One target per served name (its task as the first worker listing it says)."""
    found: dict[str, ServedModel] = {}
    for worker in workers:
        started = worker.start_time.seconds
        for model in worker.models:
            known = found.get(model.model)
            if known is None or (started and started < known.created):
                task = known.task if known is not None else model.task
                found[model.model] = ServedModel(model.model, task, started)
    return list(found.values())


class DeployedGraphs:
    """The composer's deployed graphs that qualify as models (`text_graph`)."""

    def __init__(self, composer: AsyncComposerClient, address: str) -> None:
        self.composer = composer
        self.what = f"composer {address}"

    async def models(self) -> list[Target]:
        graphs = await self.composer.list(timeout=_LIST_TIMEOUT_S)
        return [model for graph in graphs if (model := text_graph(graph)) is not None]


def text_graph(graph: g.Graph) -> GraphModel | None:
    """The graph as a model, if it takes one text and has an output named `text`.

    One text: exactly one input of kind string (or any) that a run must give, every other
    input optional; or, when none is required, a single input of that kind.
    """
    if TEXT_OUTPUT not in graph.outputs:
        return None
    texts = [i for i in graph.inputs if i.kind in _TEXT_KINDS]
    required = [i for i in graph.inputs if i.required]
    if required:
        if len(required) != 1 or required[0].kind not in _TEXT_KINDS:
            return None
        chosen = required[0]
    elif len(texts) == 1:
        chosen = texts[0]
    else:
        return None
    node, path = _reference(graph.outputs[TEXT_OUTPUT])
    return GraphModel(graph.name, chosen.name, node, path)


def _reference(reference: str) -> tuple[str, tuple[str | int, ...]]:
    """ "gen.choices.0.text" -> ("gen", ("choices", 0, "text")); a graph input streams
    nothing: ("", ())."""
    node, *path = reference.split(".")
    if node == "inputs":
        return "", ()
    return node, tuple(int(step) if step.isdigit() else step for step in path)


@dataclass(frozen=True, slots=True)
class _Snapshot:
    targets: dict[str, Target]  # what the sources have now
    departed: dict[str, Target]  # what they had within forget_after_s, and have no more
    taken_at: float


class Catalog:
    """The models of every source, by name; sources listed first win a clash of names
    (a served model over a graph of the same name)."""

    def __init__(
        self,
        sources: Sequence[ModelSource],
        *,
        ttl_s: float = 5.0,
        miss_refresh_s: float = 0.5,
        forget_after_s: float = 60.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.sources = tuple(sources)
        self.ttl_s = ttl_s
        self.miss_refresh_s = miss_refresh_s
        self.forget_after_s = forget_after_s
        self._clock = clock
        self._snapshot: _Snapshot | None = None
        self._last: dict[str, list[Target]] = {}  # by source: its last good answer
        self._seen: dict[str, tuple[Target, float]] = {}  # by name: when it was last listed
        self._refreshing = asyncio.Lock()

    async def resolve(self, name: str) -> Target:
        """The model called `name`; NotFound when no source has it."""
        snapshot = await self._fresh(self.ttl_s)
        if name not in snapshot.targets:
            snapshot = await self._fresh(self.miss_refresh_s)
        target = snapshot.targets.get(name) or snapshot.departed.get(name)
        if target is None:
            raise NotFound(
                f"The model '{name}' does not exist: GET /v1/models lists the models served"
            )
        return target

    async def list(self) -> list[Target]:
        """Every model, read afresh from the sources, sorted by name."""
        snapshot = await self._fresh(0.0)
        return [snapshot.targets[name] for name in sorted(snapshot.targets)]

    async def _fresh(self, max_age: float) -> _Snapshot:
        """A snapshot at most `max_age` old; concurrent callers share one refresh."""
        if self._young(max_age):
            assert self._snapshot is not None
            return self._snapshot
        async with self._refreshing:
            if not self._young(max_age):  # nobody refreshed while this one waited
                self._snapshot = await self._take()
            assert self._snapshot is not None
            return self._snapshot

    def _young(self, max_age: float) -> bool:
        snapshot = self._snapshot
        return snapshot is not None and self._clock.now() - snapshot.taken_at < max_age

    async def _take(self) -> _Snapshot:
        taken_at = self._clock.now()
        answers = await asyncio.gather(
            *(source.models() for source in self.sources), return_exceptions=True
        )
        targets: dict[str, Target] = {}
        answered = False
        for source, answer in zip(self.sources, answers, strict=True):
            if isinstance(answer, ModelyardError | grpc.aio.AioRpcError):
                # a source that cannot answer keeps what it said last: a control plane
                # restarting must not make every model unknown
                log.warning("cannot list the models of %s: %s", source.what, _reason(answer))
                answer = self._last.get(source.what, [])
            elif isinstance(answer, BaseException):
                raise answer
            else:
                answered = True
                self._last[source.what] = answer
            for target in answer:
                targets.setdefault(target.name, target)
        if not answered and not self._last:
            raise Unavailable(
                "cannot tell which models exist: "
                + ", ".join(source.what for source in self.sources)
                + " did not answer"
            )
        for name, target in targets.items():
            self._seen[name] = (target, taken_at)
        departed = {}
        for name, (target, seen_at) in list(self._seen.items()):
            if taken_at - seen_at >= self.forget_after_s:
                del self._seen[name]
            elif name not in targets:
                departed[name] = target
        return _Snapshot(targets, departed, taken_at)


def _reason(error: BaseException) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    return str(error)
