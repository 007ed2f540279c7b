"""Drawing graphs (composer.drawing): one edge per reference, labelled by what it is."""

from __future__ import annotations

import pytest

from composer.drawing import draw, edges
from composer.spec import graph_from_dict
from modelyard.v1 import graph_pb2 as g


@pytest.fixture
def graph() -> g.Graph:
    return graph_from_dict(
        {
            "name": "every-kind",
            "inputs": {"text": "string", "items": "list"},
            "nodes": [
                {"name": "gen", "model": "gpt2", "inputs": {"text": "inputs.text"}},
                {"name": "tts", "model": "tts", "inputs": {"t": "gen.text"}, "stream": "segment"},
                {"name": "each", "model": "echo", "inputs": {"t": "gen.text"}, "stream": "chunk"},
                {"name": "m", "map": {"over": "inputs.items", "call": {
                    "model": "cls", "inputs": {"t": "item", "z": "gen"}}}},
                {"name": "s", "optional": True, "switch": {
                    "cases": [{"when": {"value": "gen.text", "op": "==", "operand": "a"},
                               "call": {"model": "a", "inputs": {"t": "inputs.text"}}}],
                    "default": {"model": "b", "inputs": {"t": "m.results"}}}},
                {"name": "v", "aggregate": {"method": "concat", "values": ["gen.text", "s.text"]}},
            ],
            "outputs": {"o": "v.value"},
        }
    )  # fmt: skip


def test_edges(graph: g.Graph) -> None:
    assert edges(graph) == [
        ("inputs.text", "gen", ""),
        ("gen", "tts", "streams segment"),
        ("gen", "each", "streams chunk"),
        ("inputs.items", "m", "map over"),
        ("gen", "m", ""),  # "item" is no edge
        ("gen", "s", "switch on"),
        ("inputs.text", "s", ""),
        ("m", "s", ""),
        ("gen", "v", "concat"),
        ("s", "v", "concat"),
        ("v", "outputs.o", ""),
    ]


def test_text_mermaid_and_dot(graph: g.Graph) -> None:
    text = draw(graph)
    assert text.splitlines()[:4] == [
        "graph every-kind",
        "  input  text: string",
        "  input  items: list",
        "  node   gen: model gpt2",
    ]
    assert "  node   m: map cls\n           ← inputs.items (map over)\n           ← gen\n" in text
    assert "  node   s: switch (optional)\n           ← gen (switch on)\n" in text
    assert text.endswith("  output o ← v.value")
    assert '  gen["gen"] -- streams segment --> tts["tts"]' in draw(graph, "mermaid").splitlines()
    dot = draw(graph, "dot").splitlines()
    assert dot[:2] == ['digraph "every-kind" {', "  rankdir=LR;"]
    assert '  "gen" -> "tts" [label="streams segment"];' in dot
    assert '  "v" -> "outputs.o";' in dot
    with pytest.raises(ValueError, match="unknown format 'svg'"):
        draw(graph, "svg")
