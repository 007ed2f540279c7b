"""Graphs in etcd (`/modelyard/graphs/<name>`), so every composer replica runs the same ones.

Each replica keeps an informer cache of the prefix; reads never touch etcd. Graphs are
stored as protobuf JSON, readable with etcdctl. Writes ride out an etcd leader election and
otherwise fail UNAVAILABLE (modelyard_server.etcd_writes).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from modelyard.errors import NotFound, Reason, Resource, Unavailable
from modelyard.names import quote, some_names
from modelyard.v1 import graph_pb2
from modelyard_server.etcd import Keys
from modelyard_server.etcd_writes import retried
from modelyard_server.informer import Informer


def _decode(raw: bytes) -> graph_pb2.Graph:
    return json_format.Parse(raw, graph_pb2.Graph())


class GraphStore:
    def __init__(self, client: Any, keys: Keys) -> None:
        self._client = client
        self._keys = keys
        self.informer: Informer[graph_pb2.Graph] = Informer(
            client, keys.graphs, _decode, lambda name: None
        )

    async def put(self, graph: graph_pb2.Graph) -> int:
        """Stores `graph`; the etcd revision of the write."""
        key, value = self._key(graph.name), json_format.MessageToJson(graph).encode()
        written = await retried(
            lambda: self._client.put(key, value), what=f"deploy graph '{graph.name}'"
        )
        return int(written.header.revision)

    async def delete(self, name: str) -> None:
        self.get(name)  # NOT_FOUND for a graph nobody deployed
        key = self._key(name)
        await retried(lambda: self._client.delete(key), what=f"delete graph '{name}'")
        self.informer.cache.pop(name, None)  # read-your-writes on this replica

    def _require_synced(self) -> None:
        # Before the first listing the cache is empty: "not deployed" would be a lie that
        # callers take as final, while "unavailable" tells them to retry.
        if not self.informer.synced.is_set():
            raise Unavailable(
                "this composer has not read the graphs from etcd yet; retry",
                reason=Reason.NOT_SYNCED,
            )

    def get(self, name: str) -> graph_pb2.Graph:
        self._require_synced()
        entry = self.informer.cache.get(name)
        if entry is None:
            known = some_names(sorted(self.informer.cache))
            raise NotFound(
                f"graph {quote(name)} is not deployed; deployed graphs: {known}",
                reason=Reason.GRAPH_NOT_FOUND,
                resource=Resource("graph", name),
            )
        return entry.value

    def list(self) -> list[graph_pb2.Graph]:
        self._require_synced()
        return [self.informer.cache[name].value for name in sorted(self.informer.cache)]

    def remember(self, graph: graph_pb2.Graph, revision: int) -> None:
        """Makes a just-deployed graph runnable here before the watch event arrives (written
        at `revision`: a listing older than that keeps it, see Informer._list)."""
        from modelyard_server.informer import Entry

        current = self.informer.cache.get(graph.name)
        created = current.create_revision if current else revision
        self.informer.cache[graph.name] = Entry(graph, created, revision)

    def _key(self, name: str) -> bytes:
        return f"{self._keys.graphs}{name}".encode()
