"""The models of one worker and their life: loading, ready, failed.

Models load concurrently, each on its own runner thread, after the server is already up
(health says NOT_SERVING meanwhile). A model that fails to load is kept with its reason,
so the worker serves the others and can say exactly what went wrong.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace

from modelyard.clock import SYSTEM_CLOCK, Clock
from modelyard.errors import InvalidArgument, ModelyardError, NotFound, Reason, Resource
from modelyard.model import LoadContext, Model
from modelyard.names import quote, some_names
from modelyard.signature import resolve_parameters
from workers.devices import resolve_device
from workers.loader import create_model, model_version
from workers.metrics import WorkerMetrics
from workers.runner import ModelRunner, set_torch_threads
from workers.settings import ModelConfig

log = logging.getLogger(__name__)

#: Held around every model's `load`: one model loads at a time in a process. Loading in
#: transformers 5 is not thread-safe: for its duration it swaps process-wide state
#: (PreTrainedModel.tie_weights patched to a no-op, torch's default dtype, torch.nn.init
#: functions), so two models loading at once on different threads came out with tied
#: weights left on the meta device (a GPT-2 without its output layer, NER failing with
#: "Tensor on device meta"). Custom models often call from_pretrained too, so the lock is
#: here rather than in the pipeline adapter. Loads still run off the event loop.
LOAD_LOCK = threading.Lock()


class ModelState(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


@dataclass
class ModelEntry:
    config: ModelConfig
    runner: ModelRunner
    state: ModelState = ModelState.LOADING
    reason: str = "loading"
    model: Model | None = None
    #: A failure the config is to blame for (InvalidArgument: no such folder, a bad task,
    #: option or class path), not the environment or the model's own code.
    config_mistake: bool = False
    device: str = ""
    version: str = ""
    # The task's defaults with the config's `parameters` applied; requests override these.
    default_parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def task(self) -> str:
        if self.model is not None:
            return self.model.task
        return self.config.task or ("custom" if self.config.class_path else "")


StateListener = Callable[[ModelEntry], None]


class ModelRegistry:
    def __init__(
        self,
        configs: Iterable[ModelConfig],
        metrics: WorkerMetrics,
        on_change: StateListener | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        tracer: trace.Tracer | None = None,
    ) -> None:
        """`tracer` makes the spans of the models' runners (none: no spans)."""
        self._entries = {
            c.name: ModelEntry(
                c,
                ModelRunner(
                    c.name,
                    c.batching,
                    threads=c.threads,
                    metrics=metrics,
                    clock=clock,
                    tracer=tracer,
                ),
            )
            for c in configs
        }
        self._on_change = on_change or (lambda entry: None)

    def get(self, name: str) -> ModelEntry:
        entry = self._entries.get(name)
        if entry is None:
            known = some_names(self._entries)
            raise NotFound(
                f"model {quote(name)} is not served here; this worker serves: {known}",
                reason=Reason.MODEL_NOT_FOUND,
                resource=Resource("model", name),
            )
        return entry

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._entries)

    def entries(self) -> list[ModelEntry]:
        return list(self._entries.values())

    async def load_all(self) -> None:
        await asyncio.gather(*(self._load(entry) for entry in self._entries.values()))

    async def _load(self, entry: ModelEntry) -> None:
        config = entry.config
        try:
            entry.device = resolve_device(config.device)
            model = await entry.runner.run_in_thread(lambda: _load_model(config, entry.device))
            entry.default_parameters = resolve_parameters(
                model.parameters, model.default_parameters, config.parameters
            )
            entry.version = model_version(config, model)
        except Exception as error:  # any load failure is reported, never fatal by itself
            entry.state, entry.reason = ModelState.FAILED, _describe(error)
            entry.config_mistake = isinstance(error, InvalidArgument)
            # One line a user can act on; the traceback only with --verbose (DEBUG).
            log.error("model %s failed to load: %s", config.name, entry.reason)
            log.debug("model %s: the load's traceback", config.name, exc_info=error)
        else:
            entry.runner.attach(model)
            entry.model = model
            entry.state, entry.reason = ModelState.READY, ""
            log.info("model %s ready (%s on %s)", config.name, model.task, entry.device)
        self._on_change(entry)

    async def close(self) -> None:
        await asyncio.gather(*(e.runner.close() for e in self._entries.values()))


def _load_model(config: ModelConfig, device: str) -> Model:
    with LOAD_LOCK:
        model = create_model(config)
        model.load(LoadContext(source=config.source, device=device, options=config.options))
    set_torch_threads(config.threads)  # on the model's own thread, now that torch may be in
    return model


def _describe(error: Exception) -> str:
    """Why a load failed, in a line: a modelyard error's message is worded for people as
    it is ("no such folder: ..."); anything else is prefixed with its type."""
    if isinstance(error, ModelyardError):
        return " ".join(error.message.split())  # transformers' messages span lines
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
