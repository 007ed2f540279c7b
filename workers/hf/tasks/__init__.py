"""One adapter per supported task, by canonical task name."""

from __future__ import annotations

from workers.hf.tasks.base import TaskAdapter
from workers.hf.tasks.classification import TextClassification, ZeroShotClassification
from workers.hf.tasks.embedding import FeatureExtraction, SentenceEmbedding
from workers.hf.tasks.fill_mask import FillMask
from workers.hf.tasks.llm_chat import LlmChat
from workers.hf.tasks.llm_completions import LlmCompletions
from workers.hf.tasks.llm_embeddings import LlmEmbeddings
from workers.hf.tasks.text_generation import TextGeneration
from workers.hf.tasks.token_classification import TokenClassification

ADAPTERS: dict[str, type[TaskAdapter]] = {
    adapter.task: adapter
    for adapter in (
        TextGeneration,
        TextClassification,
        ZeroShotClassification,
        TokenClassification,
        FillMask,
        FeatureExtraction,
        SentenceEmbedding,
        LlmChat,
        LlmCompletions,
        LlmEmbeddings,
    )
}

__all__ = ["ADAPTERS", "TaskAdapter"]
