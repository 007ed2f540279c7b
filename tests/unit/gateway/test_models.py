"""The model-resolution step without a network: which graphs are models, how served models
are read from ListWorkers, and when the catalog asks its sources again."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from gateway.models import (
    Catalog,
    GraphModel,
    RegisteredModel,
    ServedModel,
    Target,
    registered_models,
    served_models,
    text_graph,
)
from modelyard.errors import NotFound, Unavailable
from modelyard.graph_spec import graph_from_dict
from modelyard.v1 import controlplane_pb2 as cp
from tests.support.clock import FakeClock

GEN = {"name": "gen", "model": "complete", "inputs": {"prompt": "inputs.prompt"}}


def graph(inputs: Mapping[str, object], outputs: dict[str, str]) -> GraphModel | None:
    spec = {"name": "g", "inputs": inputs, "nodes": [GEN], "outputs": outputs}
    return text_graph(graph_from_dict(spec))


def test_a_graph_with_one_text_input_and_a_text_output_is_a_model() -> None:
    model = graph({"prompt": "string"}, {"text": "gen.choices.0.text"})
    assert model == GraphModel("g", "prompt", "gen", ("choices", 0, "text"))


@pytest.mark.parametrize(
    ("inputs", "outputs"),
    [
        ({"prompt": "string"}, {"answer": "gen.choices.0.text"}),  # no `text` output
        ({"prompt": "int"}, {"text": "gen.choices.0.text"}),  # its one input is no text
        ({"prompt": "string", "style": "string"}, {"text": "gen"}),  # which one is the text?
    ],
)
def test_other_graphs_are_not_models(inputs: Mapping[str, object], outputs: dict[str, str]) -> None:
    assert graph(inputs, outputs) is None


def test_optional_inputs_beside_the_required_text_keep_their_defaults() -> None:
    inputs = {"prompt": "string", "style": {"kind": "string", "default": "plain"}}
    model = graph(inputs, {"text": "inputs.prompt"})
    assert model is not None and model.input == "prompt"
    assert (model.stream_node, model.stream_path) == ("", ())  # an input streams nothing


def worker(worker_id: str, started: int, *models: tuple[str, str]) -> cp.WorkerStatus:
    status = cp.WorkerStatus(worker_id=worker_id)
    status.start_time.seconds = started
    for name, task in models:
        status.models.add(model=name, task=task)
    return status


def test_served_models_are_named_once_with_their_earliest_start() -> None:
    workers = [
        worker("a", 200, ("chat", "llm/v1/chat"), ("embed", "llm/v1/embeddings")),
        worker("b", 100, ("chat", "llm/v1/chat")),
    ]
    assert served_models(workers) == [
        ServedModel("chat", "llm/v1/chat", 100),
        ServedModel("embed", "llm/v1/embeddings", 200),
    ]


def test_registered_names_are_listed_once_if_some_registration_is_online() -> None:
    def registration(model: str, created: int, online: bool) -> cp.Registration:
        found = cp.Registration(registration_id=f"api-{created}", model=model, online=online)
        found.create_time.seconds = created
        return found

    registrations = [
        registration("answers", 300, True),
        registration("answers", 100, True),
        registration("answers", 50, False),  # offline: says nothing, not even its age
        registration("retired", 10, False),
    ]
    assert registered_models(registrations) == [RegisteredModel("answers", 100)]


class Source:
    """A model source that answers what the test sets, counting the questions."""

    def __init__(self, what: str, *targets: Target) -> None:
        self.what = what
        self.targets = list(targets)
        self.failing = False
        self.asked = 0

    async def models(self) -> list[Target]:
        self.asked += 1
        if self.failing:
            raise Unavailable(f"{self.what} is down")
        return list(self.targets)


CHAT = ServedModel("chat", "llm/v1/chat", 1)
STORY = GraphModel("story", "prompt", "gen", ("text",))


async def test_the_catalog_asks_again_only_once_its_answer_is_old() -> None:
    clock = FakeClock()
    served = Source("served", CHAT)
    catalog = Catalog([served], ttl_s=5.0, miss_refresh_s=0.5, clock=clock)
    assert await catalog.resolve("chat") == CHAT
    await clock.advance(4.9)
    assert await catalog.resolve("chat") == CHAT
    assert served.asked == 1
    await clock.advance(0.2)
    await catalog.resolve("chat")
    assert served.asked == 2


async def test_an_unknown_name_is_looked_up_afresh_at_most_every_miss_refresh() -> None:
    clock = FakeClock()
    served = Source("served", CHAT)
    catalog = Catalog([served], ttl_s=5.0, miss_refresh_s=0.5, clock=clock)
    await catalog.resolve("chat")
    with pytest.raises(NotFound):
        await catalog.resolve("new")  # too soon after the first look: not asked again
    assert served.asked == 1
    served.targets.append(ServedModel("new", "llm/v1/chat", 2))
    await clock.advance(0.5)
    assert (await catalog.resolve("new")).name == "new"  # deployed since: found at once
    assert served.asked == 2


async def test_a_model_that_left_stays_callable_for_a_while_but_is_not_listed() -> None:
    clock = FakeClock()
    served = Source("served", CHAT)
    catalog = Catalog([served], ttl_s=5.0, forget_after_s=60.0, clock=clock)
    await catalog.resolve("chat")
    served.targets = []  # its worker restarts: unregistered for a moment
    await clock.advance(59)
    assert await catalog.list() == []
    assert await catalog.resolve("chat") == CHAT  # its calls find no replica: 503, retried
    await clock.advance(1)
    await catalog.list()
    with pytest.raises(NotFound):
        await catalog.resolve("chat")


async def test_a_source_that_cannot_answer_keeps_its_last_answer() -> None:
    clock = FakeClock()
    served, graphs = Source("served", CHAT), Source("graphs", STORY)
    catalog = Catalog([served, graphs], clock=clock)
    assert [t.name for t in await catalog.list()] == ["chat", "story"]
    served.failing = True
    assert [t.name for t in await catalog.list()] == ["chat", "story"]
    graphs.targets = []
    assert [t.name for t in await catalog.list()] == ["chat"]


async def test_no_source_ever_answering_is_unavailable() -> None:
    served = Source("served", CHAT)
    served.failing = True
    with pytest.raises(Unavailable, match="served did not answer"):
        await Catalog([served], clock=FakeClock()).resolve("chat")


async def test_the_first_source_wins_a_name_both_have() -> None:
    clash = GraphModel("chat", "prompt", "", ())
    catalog = Catalog([Source("served", CHAT), Source("graphs", clash)], clock=FakeClock())
    assert await catalog.resolve("chat") == CHAT
