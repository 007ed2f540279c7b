"""Several transformers models loading in one worker come out whole.

transformers 5 swaps process-wide state while it loads; loaded concurrently on several
threads, models came out with tied weights left on the meta device. The registry loads one
model at a time (workers.registry.LOAD_LOCK); this test fails without that lock.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelyard.model import LoadContext
from workers.hf.pipeline_model import PipelineModel
from workers.metrics import WorkerMetrics
from workers.registry import ModelRegistry, ModelState
from workers.settings import ModelConfig

SPECS = [
    ("text-generation", "tiny-gpt2"),
    ("fill-mask", "tiny-bert-mlm"),
    ("token-classification", "tiny-bert-ner"),
    ("text-generation", "tiny-distilgpt2"),
    ("text-classification", "tiny-bert-sentiment"),
]


def _weights(model: Any) -> dict[str, Any]:
    return dict(model.pipeline.model.state_dict())


async def test_models_loaded_by_one_worker_equal_models_loaded_alone(
    tiny_checkpoints: dict[str, Path],
) -> None:
    configs = [
        ModelConfig(name=f"m{i}", source=str(tiny_checkpoints[name]), task=task)
        for i, (task, name) in enumerate(SPECS)
    ]
    registry = ModelRegistry(configs, WorkerMetrics())
    await registry.load_all()
    try:
        for entry, (task, name) in zip(registry.entries(), SPECS, strict=True):
            assert entry.state is ModelState.READY, entry.reason
            alone = PipelineModel(task)
            alone.load(LoadContext(source=str(tiny_checkpoints[name]), device="cpu"))
            expected = _weights(alone)
            for key, tensor in _weights(entry.model).items():
                assert tensor.device.type == "cpu", (name, key)  # not left on "meta"
                assert bool((tensor == expected[key]).all()), (name, key)
    finally:
        await registry.close()
