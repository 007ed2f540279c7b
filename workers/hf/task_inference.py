"""Which task a checkpoint serves: inferred from its config, or checked against it.

transformers 5 cannot infer a pipeline task offline (it asks the hub), and a wrong task
on a local checkpoint does not fail: `pipeline("text-classification")` on a GPT-2 builds a
randomly initialised classifier head and serves noise. So the task is decided here, from
the architecture names in the checkpoint's `config.json`, before any weights load.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from modelyard.errors import InvalidArgument

SUPPORTED_TASKS: tuple[str, ...] = (
    "text-generation",
    "text-classification",
    "zero-shot-classification",
    "token-classification",
    "fill-mask",
    "feature-extraction",
    "sentence-embedding",
    # MLflow's llm/v1 task types: only ever named, never inferred (a causal LM serves
    # text-generation unless its config says otherwise)
    "llm/v1/chat",
    "llm/v1/completions",
    "llm/v1/embeddings",
)
ALIASES: dict[str, str] = {
    "sentiment-analysis": "text-classification",
    "ner": "token-classification",
}

# Head kinds, read from architecture names such as "BertForSequenceClassification".
_CAUSAL_LM = "causal-lm"
_SEQUENCE_CLASSIFIER = "sequence-classifier"
_TOKEN_CLASSIFIER = "token-classifier"
_MASKED_LM = "masked-lm"
_ENCODER = "encoder"

_NEEDS_CAUSAL_LM = "a causal language model (an architecture ending in ForCausalLM or LMHeadModel)"
_NEEDS: dict[str, str] = {
    "text-generation": _NEEDS_CAUSAL_LM,
    "text-classification": "a sequence classifier (an architecture ending in "
    "ForSequenceClassification)",
    "zero-shot-classification": "an NLI sequence classifier (ForSequenceClassification with an "
    "'entailment' label)",
    "token-classification": "a token classifier (an architecture ending in ForTokenClassification)",
    "fill-mask": "a masked language model (an architecture ending in ForMaskedLM)",
    "llm/v1/chat": _NEEDS_CAUSAL_LM,
    "llm/v1/completions": _NEEDS_CAUSAL_LM,
}


def canonical_task(task: str) -> str:
    """The supported task a name (or alias) stands for; InvalidArgument for any other."""
    name = ALIASES.get(task, task)
    if name not in SUPPORTED_TASKS:
        names = ", ".join([*SUPPORTED_TASKS, *ALIASES])
        raise InvalidArgument(f"unsupported task '{task}'; supported tasks: {names}")
    return name


def resolve_task(task: str | None, config: Any, source: str = "") -> str:
    """The canonical task to serve `source` with: `task` checked, or inferred when None."""
    if task is None or task == "":
        return infer_task(config, source)
    return check_task(task, config, source)


def infer_task(config: Any, source: str = "") -> str:
    """The one task the checkpoint's architecture implies; InvalidArgument when not one."""
    if source and os.path.isfile(os.path.join(source, "modules.json")):
        # A sentence-transformers directory: its architecture says little (some carry an
        # unused ForMaskedLM head); what it is for is embeddings.
        return "feature-extraction"
    archs = _architectures(config)
    candidates = _natural_tasks(archs, config)
    if len(candidates) == 1:
        return candidates[0]
    what = f"{_describe(source)} ({', '.join(archs) or 'no architecture in its config'})"
    if not candidates:
        raise InvalidArgument(
            f"cannot infer the task of {what}; set the model's task to one of: "
            f"{', '.join(SUPPORTED_TASKS)}"
        )
    raise InvalidArgument(
        f"the task of {what} is ambiguous{_nli_note(config)}; set the model's task to one of: "
        f"{', '.join(candidates)}"
    )


def check_task(task: str, config: Any, source: str = "") -> str:
    """Returns the canonical task when the checkpoint fits it, else InvalidArgument."""
    name = canonical_task(task)
    archs = _architectures(config)
    if not archs or _fits(name, archs, config):
        # No architecture named: nothing to check against; the pipeline will say if wrong.
        return name
    fitting = [t for t in SUPPORTED_TASKS if _fits(t, archs, config)]
    raise InvalidArgument(
        f"task '{task}' does not fit {_describe(source)}: it needs {_NEEDS[name]}, but the "
        f"checkpoint is {', '.join(archs)}; tasks it fits: {', '.join(fitting)}"
    )


def _architectures(config: Any) -> list[str]:
    return list(getattr(config, "architectures", None) or [])


def _head(arch: str) -> str | None:
    if arch.endswith(("ForCausalLM", "LMHeadModel")):
        return _CAUSAL_LM
    if arch.endswith("ForSequenceClassification"):
        return _SEQUENCE_CLASSIFIER
    if arch.endswith("ForTokenClassification"):
        return _TOKEN_CLASSIFIER
    if arch.endswith("ForMaskedLM"):
        return _MASKED_LM
    if arch.endswith("Model") and "For" not in arch:
        return _ENCODER
    return None


def _labels(config: Any) -> list[str]:
    id2label = getattr(config, "id2label", None) or {}
    return [str(label) for label in id2label.values()]


def _has_entailment(config: Any) -> bool:
    # the same test the zero-shot pipeline uses to find the entailment logit
    return any(label.lower().startswith("entail") for label in _labels(config))


def _is_nli(config: Any) -> bool:
    lowered = [label.lower() for label in _labels(config)]
    return _has_entailment(config) or any(label.startswith("contradict") for label in lowered)


def _nli_note(config: Any) -> str:
    if not _is_nli(config):
        return ""
    return f": a sequence classifier with NLI labels ({', '.join(_labels(config))})"


def _natural_tasks(archs: Sequence[str], config: Any) -> list[str]:
    tasks: list[str] = []
    for head in (_head(arch) for arch in archs):
        if head == _CAUSAL_LM:
            tasks.append("text-generation")
        elif head == _SEQUENCE_CLASSIFIER:
            if _is_nli(config):
                tasks += ["zero-shot-classification", "text-classification"]
            else:
                tasks.append("text-classification")
        elif head == _TOKEN_CLASSIFIER:
            tasks.append("token-classification")
        elif head == _MASKED_LM:
            tasks.append("fill-mask")
        elif head == _ENCODER:
            tasks.append("feature-extraction")
    return list(dict.fromkeys(tasks))


def _fits(task: str, archs: Sequence[str], config: Any) -> bool:
    heads = {_head(arch) for arch in archs}
    match task:
        case "text-generation" | "llm/v1/chat" | "llm/v1/completions":
            return _CAUSAL_LM in heads
        case "text-classification":
            return _SEQUENCE_CLASSIFIER in heads
        case "zero-shot-classification":
            return _SEQUENCE_CLASSIFIER in heads and _has_entailment(config)
        case "token-classification":
            return _TOKEN_CLASSIFIER in heads
        case "fill-mask":
            return _MASKED_LM in heads
        case _:
            # feature extraction reads hidden states, which every architecture has
            return True


def _describe(source: str) -> str:
    return f"'{source}'" if source else "the checkpoint"
