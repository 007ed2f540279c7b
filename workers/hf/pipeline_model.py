"""A `Model` served through a `transformers` pipeline: a Hugging Face id or a local path.

    model = PipelineModel("sentiment-analysis")      # or None: inferred from config.json
    model.load(LoadContext(source="/models/sst2", device="cpu"))
    model.predict([Request({"text": "great!"}, model.default_parameters)])

The task's adapter (`workers.hf.tasks`) supplies the signature and does the work; this
class only decides the task, builds the pipeline and hands calls to the adapter.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Mapping
from typing import Any

import torch
import transformers
from transformers import AutoConfig

from modelyard.errors import InvalidArgument
from modelyard.model import LoadContext, Model, Outputs, Request
from workers.hf.hub import probe_source
from workers.hf.task_inference import canonical_task, resolve_task
from workers.hf.tasks import ADAPTERS, TaskAdapter

# Options from the worker config that mean the same to the config, tokenizer and weights.
_HUB_OPTIONS = ("revision", "trust_remote_code", "token")
_DTYPES = ("auto", "float32", "float16", "bfloat16")

# Its overloads only accept literal task names; ours is a checked str.
_build_pipeline: Callable[..., Any] = transformers.pipeline


class PipelineModel(Model):
    """Serves one checkpoint with one task; `task=None` infers the task from its config."""

    def __init__(self, task: str | None = None, hub: dict[str, Any] | None = None) -> None:
        """`hub`: what `probe_source` answered for the source, when the caller asked the
        hub already (the worker does, before importing this module); else `load` asks."""
        self._requested_task = task or None
        self._hub = hub
        self._adapter: TaskAdapter | None = None
        if self._requested_task is not None:
            # a named task fixes the signature now, so metadata is right before loading
            self._describe(ADAPTERS[canonical_task(self._requested_task)])

    def load(self, context: LoadContext) -> None:
        if not context.source:
            raise InvalidArgument("a pipeline model needs a source: a Hugging Face id or a path")
        options = context.options
        hub = {k: options[k] for k in _HUB_OPTIONS if k in options}
        dtype = _dtype(options.get("dtype", "auto"))
        model_kwargs = options.get("model_kwargs", {})
        if not isinstance(model_kwargs, Mapping):
            raise InvalidArgument(
                "option 'model_kwargs' must be a map of from_pretrained arguments"
            )
        # a hub id: ask the hub once, quickly, first (unless the caller did)
        access = self._hub if self._hub is not None else probe_source(context.source, options)
        hub |= access or {}
        # The worker loads one model at a time (workers.registry.LOAD_LOCK): transformers'
        # loading swaps process-wide state and is not thread-safe.
        self._load(context.source, context.device, hub, dtype, model_kwargs)

    def _load(
        self,
        source: str,
        device: str,
        hub: dict[str, Any],
        dtype: str | torch.dtype,
        model_kwargs: Mapping[str, Any],
    ) -> None:
        try:
            config = AutoConfig.from_pretrained(source, **hub)
        except (OSError, ValueError) as error:
            raise InvalidArgument(f"cannot read a model config from '{source}': {error}") from error
        adapter_class = ADAPTERS[resolve_task(self._requested_task, config, source)]
        pipe = _build_pipeline(
            adapter_class.pipeline_task,
            model=source,
            device=device,
            dtype=dtype,
            model_kwargs=dict(model_kwargs),
            **hub,
        )
        self._adapter = adapter_class(pipe)
        self._describe(adapter_class)

    @property
    def pipeline(self) -> Any:
        """The loaded `transformers` pipeline (its `model` and `tokenizer`), for inspection."""
        return self._loaded().pipe

    def predict(self, batch: list[Request]) -> list[Outputs]:
        return self._loaded().predict(batch)

    def predict_stream(
        self, request: Request, stop: threading.Event
    ) -> Generator[Outputs, None, Outputs]:
        return (yield from self._loaded().stream(request, stop))

    def predict_stream_to(
        self, request: Request, stop: threading.Event, emit: Callable[[Outputs], None]
    ) -> Outputs:
        return self._loaded().stream_to(request, stop, emit)

    def _loaded(self) -> TaskAdapter:
        if self._adapter is None:
            raise RuntimeError("PipelineModel used before load()")
        return self._adapter

    def _describe(self, adapter: type[TaskAdapter]) -> None:
        self.task = adapter.task
        self.inputs = adapter.inputs
        self.outputs = adapter.outputs
        self.parameters = adapter.parameters
        self.default_parameters = dict(adapter.default_parameters)
        self.streaming = adapter.streaming


def _dtype(value: Any) -> str | torch.dtype:
    if isinstance(value, torch.dtype):
        return value
    if value not in _DTYPES:
        raise InvalidArgument(f"option 'dtype' must be one of {', '.join(_DTYPES)}; got {value!r}")
    return value if value == "auto" else getattr(torch, value)  # type: ignore[no-any-return]
