"""The Hugging Face side of the worker: transformers pipelines served as `Model`s.

`PipelineModel` is imported on first use, not with the package: the worker imports
`workers.hf.hub` for every config it reads, and a worker serving only plain-Python models
must not pay for torch and transformers (seconds of start-up, about 300 MB).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workers.hf.pipeline_model import PipelineModel

__all__ = ["PipelineModel"]


def __getattr__(name: str) -> Any:
    if name == "PipelineModel":
        from workers.hf.pipeline_model import PipelineModel

        return PipelineModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
