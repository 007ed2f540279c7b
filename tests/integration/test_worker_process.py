"""A real `modelyard worker` process serving real transformers pipelines (tiny checkpoints
built offline, and the real all-MiniLM-L6-v2), called through the Python client."""

from __future__ import annotations

import numpy as np
import pytest

from modelyard.client import Client
from modelyard.errors import InvalidArgument
from modelyard.v1 import predict_pb2 as pb


@pytest.fixture(scope="module")
def client(hf_worker: str) -> Client:
    return Client(hf_worker, timeout=30)


def test_every_model_is_ready_with_its_task_and_a_version(client: Client) -> None:
    models = {m.model: m for m in client.list_models()}
    assert {name: m.task for name, m in models.items()} == {
        "embed": "sentence-embedding",
        "sentiment": "text-classification",  # inferred from the checkpoint's config
        "zero-shot": "zero-shot-classification",
        "generate": "text-generation",
        "ner": "token-classification",
        "fill-mask": "fill-mask",
        "echo": "echo",
    }
    assert all(m.state == pb.MODEL_STATE_READY for m in models.values())
    assert len(models["sentiment"].version) == 12  # derived from the checkpoint's files


def test_real_minilm_embeddings_capture_meaning(client: Client) -> None:
    def embed(text: str) -> np.ndarray:
        return client.predict("embed", text=text).outputs["embedding"]  # type: ignore[no-any-return]

    guitar = embed("A man is playing a guitar.")
    music = embed("Someone is playing an instrument.")
    stocks = embed("The stock market fell sharply today.")
    assert guitar.shape == (384,) and guitar.dtype == np.float32
    assert np.linalg.norm(guitar) == pytest.approx(1.0, abs=1e-5)
    assert guitar @ music > guitar @ stocks + 0.2


def test_sentiment_scores_every_label(client: Client) -> None:
    outputs = client.predict("sentiment", text="I love this!").outputs
    assert set(outputs["labels"]) == {"NEGATIVE", "POSITIVE"}
    assert outputs["label"] == outputs["labels"][0]
    assert sum(outputs["scores"]) == pytest.approx(1.0, abs=1e-4)
    top = client.predict("sentiment", text="I love this!", parameters={"top_k": 1}).outputs
    assert top["labels"] == [outputs["label"]]


def test_zero_shot_ranks_the_candidate_labels(client: Client) -> None:
    labels = ["sports", "cooking", "politics"]
    outputs = client.predict("zero-shot", text="The match ended 2-1.", candidate_labels=labels)
    assert sorted(outputs.outputs["labels"]) == sorted(labels)
    assert sum(outputs.outputs["scores"]) == pytest.approx(1.0, abs=1e-4)
    multi = client.predict(
        "zero-shot",
        text="The match ended 2-1.",
        candidate_labels=labels,
        parameters={"multi_label": True},
    )
    assert all(0.0 <= s <= 1.0 for s in multi.outputs["scores"])


def test_generation_streams_chunks_that_add_up_to_the_final_text(client: Client) -> None:
    events = list(client.predict_stream("generate", text="Once upon a time"))
    chunks, final = events[:-1], events[-1]
    assert final.final and len(chunks) >= 2
    assert "".join(c.outputs["text"] for c in chunks) == final.outputs["text"]
    whole = client.predict("generate", text="Once upon a time").outputs["text"]
    assert whole == final.outputs["text"]  # greedy decoding: the same text either way


def test_a_stream_interval_sends_tokens_faster_than_it_together(client: Client) -> None:
    def chunks(interval_ms: float) -> tuple[list[str], str]:
        parameters = {"max_new_tokens": 24, "stream_interval_ms": interval_ms}
        events = list(client.predict_stream("generate", text="Once", parameters=parameters))
        return [e.outputs["text"] for e in events[:-1]], events[-1].outputs["text"]

    each_word, whole = chunks(0)
    # a minute between chunks: the first word at once (after a lone space, if any), then
    # everything else in one chunk at the end
    together, same = chunks(60_000)
    assert same == whole and "".join(together) == "".join(each_word) == whole
    first_word = next(i for i, piece in enumerate(each_word) if not piece.isspace())
    assert together[: first_word + 1] == each_word[: first_word + 1]
    assert len(together) == first_word + 2 < len(each_word)
    with pytest.raises(InvalidArgument) as caught:
        list(client.predict_stream("generate", text="x", parameters={"stream_interval_ms": -1}))
    assert "'stream_interval_ms' must be 0 or more" in caught.value.message


def test_token_classification_and_fill_mask(client: Client) -> None:
    entities = client.predict("ner", text="Ada Lovelace lived in London.").outputs["entities"]
    assert entities and {"entity", "score", "word", "start", "end"} <= set(entities[0])
    filled = client.predict("fill-mask", text="The model [MASK] fast.").outputs
    assert len(filled["tokens"]) == 5 and filled["scores"] == sorted(filled["scores"], reverse=True)


@pytest.mark.parametrize(
    ("model", "inputs", "message"),
    [
        ("fill-mask", {"text": "no mask here"}, "must contain the mask token [MASK]"),
        ("zero-shot", {"text": "x", "candidate_labels": []}, "candidate_labels"),
        ("sentiment", {"text": 42}, "input 'text' must be a string, got an integer"),
        ("generate", {"prompt": "hi"}, "unknown input 'prompt'"),
    ],
)
def test_bad_inputs_for_a_task_are_invalid_argument(
    client: Client, model: str, inputs: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        client.predict(model, inputs)
    assert message in caught.value.message
    # and the model keeps serving good requests
    assert client.predict("echo", x=1).outputs == {"x": 1}


def test_metadata_reports_the_task_signature_and_defaults(client: Client) -> None:
    meta = client.metadata("generate")
    assert meta.task == "text-generation" and meta.streaming
    assert [f.name for f in meta.inputs] == ["text"]
    assert meta.default_parameters["max_new_tokens"].int_value == 8  # the config's default
    assert {"max_new_tokens", "temperature"} <= {p.name for p in meta.parameters}
    assert meta.device == "cpu" and meta.device_tags["zone"] == "ci"
