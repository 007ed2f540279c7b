"""The generation parameters of llm/v1/chat and llm/v1/completions, and their checks.

OpenAI's fields (temperature, top_p, top_k, max_tokens, stop, n, stream) and the standard
transformers arguments (seed, min_new_tokens, num_beams, no_repeat_ngram_size,
repetition_penalty). A model's `parameters:` in the worker config (MLflow's model_config)
replaces these defaults; a request overrides both. Every value is checked before any model
work, and a bad one is INVALID_ARGUMENT naming its field.

Decoding is greedy unless temperature is above 0. The default temperature is 0, not
OpenAI's 1: a served model answers the same request the same way unless its config or the
request asks it to sample. So n > 1 needs sampling (temperature > 0) or beam search with at
least n beams: n copies of one greedy answer are never what a caller wants.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from modelyard.errors import InvalidArgument
from modelyard.signature import Field

MAX_TEMPERATURE = 2.0  # OpenAI's range
MAX_CHOICES = 16  # every input is bounded: n choices are n rows of one generation
MAX_BEAMS = 16
MAX_STOP_SEQUENCES = 4  # OpenAI's limit

PARAMETERS: tuple[Field, ...] = (
    Field(
        "temperature",
        "float",
        "0 decodes greedily; above 0 (up to 2) samples, hotter is more random.",
        required=False,
    ),
    Field(
        "top_p",
        "float",
        "Sample only from the likeliest tokens whose probabilities add up to this, in (0, 1].",
        required=False,
    ),
    Field(
        "top_k", "int", "Sample only from the k likeliest tokens; 0 is no limit.", required=False
    ),
    Field(
        "max_tokens",
        "int",
        "Most tokens to generate per choice; unset: as many as the model's context holds.",
        required=False,
    ),
    Field(
        "stop",
        "any",
        f"A string, or a list of up to {MAX_STOP_SEQUENCES}, that ends a choice; the text "
        "never contains it.",
        required=False,
    ),
    Field(
        "n",
        "int",
        f"How many choices to generate, up to {MAX_CHOICES}; above 1 needs temperature > 0 "
        "or num_beams >= n.",
        required=False,
    ),
    Field(
        "stream",
        "bool",
        "Unset: PredictStream streams chunks and Predict answers once. true needs "
        "PredictStream; false makes PredictStream send only the final result.",
        required=False,
    ),
    Field(
        "seed",
        "int",
        "Makes sampling repeatable: the same request with the same seed gets the same choices.",
        required=False,
    ),
    Field(
        "min_new_tokens",
        "int",
        "Fewest tokens before the end-of-text token may end a choice (stop sequences still "
        "end it).",
        required=False,
    ),
    Field(
        "num_beams",
        "int",
        f"Beam search with this many beams, up to {MAX_BEAMS} (it does not sample).",
        required=False,
    ),
    Field("no_repeat_ngram_size", "int", "Never repeat an n-gram of this size.", required=False),
    Field("repetition_penalty", "float", "Above 1 discourages repeating tokens.", required=False),
)

#: None: not set. For min_new_tokens, no_repeat_ngram_size and repetition_penalty that
#: leaves the checkpoint's own generation_config in charge.
DEFAULTS: Mapping[str, Any] = {
    "temperature": 0.0,
    "top_p": 1.0,
    "top_k": 0,
    "max_tokens": None,
    "stop": None,
    "n": 1,
    "stream": None,
    "seed": None,
    "min_new_tokens": None,
    "num_beams": 1,
    "no_repeat_ngram_size": None,
    "repetition_penalty": None,
}


def sampling(params: Mapping[str, Any]) -> bool:
    return bool(params["temperature"] > 0)


def check_generation(params: Mapping[str, Any]) -> None:
    """InvalidArgument naming the first parameter that is out of range or conflicts."""
    _in_range(params, "temperature", 0.0, MAX_TEMPERATURE, "a number from 0 to 2")
    top_p = params["top_p"]
    if not (math.isfinite(top_p) and 0 < top_p <= 1):
        raise InvalidArgument(f"parameter 'top_p' must be above 0 and at most 1, got {top_p!r}")
    _at_least(params, "top_k", 0)
    _at_least(params, "max_tokens", 1)
    _in_range(params, "n", 1, MAX_CHOICES, f"from 1 to {MAX_CHOICES}")
    _at_least(params, "seed", 0)
    _at_least(params, "min_new_tokens", 0)
    _in_range(params, "num_beams", 1, MAX_BEAMS, f"from 1 to {MAX_BEAMS}")
    _at_least(params, "no_repeat_ngram_size", 0)
    penalty = params["repetition_penalty"]
    if penalty is not None and not (math.isfinite(penalty) and penalty > 0):
        raise InvalidArgument(
            f"parameter 'repetition_penalty' must be a number above 0, got {penalty!r}"
        )
    stop_sequences(params["stop"])
    if params["num_beams"] > 1 and sampling(params):
        raise InvalidArgument(
            "parameter 'num_beams' above 1 is beam search, which does not sample: set "
            "temperature to 0, or num_beams to 1"
        )
    n = params["n"]
    if n > 1 and not sampling(params) and params["num_beams"] < n:
        raise InvalidArgument(
            f"parameter 'n' is {n} but decoding is greedy, which would give {n} identical "
            "choices: set temperature above 0 to sample, or num_beams to at least n"
        )
    min_new, most = params["min_new_tokens"], params["max_tokens"]
    if min_new is not None and most is not None and min_new > most:
        raise InvalidArgument(
            f"parameter 'min_new_tokens' ({min_new}) must not exceed max_tokens ({most})"
        )


def stop_sequences(stop: Any) -> tuple[str, ...]:
    """`stop` as a tuple of strings (a string or a list of strings; None is none)."""
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if (
        not isinstance(stops, list)
        or not 0 < len(stops) <= MAX_STOP_SEQUENCES
        or not all(isinstance(s, str) and s for s in stops)
    ):
        raise InvalidArgument(
            f"parameter 'stop' must be a non-empty string or a list of 1 to "
            f"{MAX_STOP_SEQUENCES} non-empty strings"
        )
    return tuple(stops)


def _at_least(params: Mapping[str, Any], name: str, least: int) -> None:
    value = params[name]
    if value is not None and value < least:
        raise InvalidArgument(f"parameter '{name}' must be at least {least}, got {value!r}")


def _in_range(params: Mapping[str, Any], name: str, low: float, high: float, expected: str) -> None:
    value = params[name]
    # `not low <= value` also catches NaN, which every comparison fails
    if not (low <= value <= high):
        raise InvalidArgument(f"parameter '{name}' must be {expected}, got {value!r}")
