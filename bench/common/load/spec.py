"""What the load generator is asked to do: one kind of call, at one load level."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class LoadSpec:
    # predict | predict_stream | run | stream | chain | fanout | http | routed | chat_grpc |
    # chat_sse
    kind: str
    concurrency: int = 1
    requests: int = 100
    warmup: int = 10
    time_cap_s: float = 20.0
    deadline_s: float = 10.0  # per call
    # CPU of these processes is read around the measured phase ("server" figures).
    server_pids: list[int] = field(default_factory=list)
    # Requests cycle through these inputs (several texts, so a batch is not N copies).
    inputs: list[dict[str, Any]] = field(default_factory=lambda: [{}])
    parameters: dict[str, Any] = field(default_factory=dict)
    # The checked call before the warm-up: outputs must hold these values ...
    expect: dict[str, Any] = field(default_factory=dict)
    # ... or equal the inputs (echo models).
    expect_echo: bool = False
    # Width of timeline buckets (by request start) in seconds; 0 keeps no timeline.
    bucket_s: float = 0.0

    address: str = ""  # predict, predict_stream, chat_grpc: the worker; run, stream: the composer
    model: str = ""  # predict, predict_stream, routed, chat_grpc, chat_sse
    channels: int = 1  # predict: coroutine i uses channel i % channels
    graph: str = ""  # run, stream: a deployed graph's name ...
    ca_file: str = ""  # run, stream: TLS to the composer, trusting this CA (PEM); "" plaintext
    graph_inline: dict[str, Any] | None = None  # ... or the graph itself (file form)
    node: str = ""  # stream: the node whose first result is timed
    until: str = "chunk"  # stream: its first "chunk" or its "finished" event
    hops: list[list[str]] = field(default_factory=list)  # chain, fanout: [address, model]
    url: str = ""  # http; chat_sse: the gateway's /v1/chat/completions
    control_planes: list[str] = field(default_factory=list)  # routed
    policy: str = "p2c"  # routed
    selector: str = ""  # routed
