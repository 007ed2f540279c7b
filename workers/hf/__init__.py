"""The Hugging Face side of the worker: transformers pipelines served as `Model`s."""

from workers.hf.pipeline_model import PipelineModel

__all__ = ["PipelineModel"]
