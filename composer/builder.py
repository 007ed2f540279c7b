"""The Python graph builder lives in the client core (`modelyard.graph_builder`), so client
apps build graphs without the composer's dependencies; this is its older import path."""

from modelyard.graph_builder import GraphBuilder, InputRef, NodeRef, ValueRef

__all__ = ["GraphBuilder", "InputRef", "NodeRef", "ValueRef"]
