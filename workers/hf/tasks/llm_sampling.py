"""Sampling with a generator per request, so that a seed means something.

transformers samples with torch's global generator, which every thread of the process
shares: a seed set there is spoilt by any other model sampling at the same time, and the
draws of one request depend on which other requests share its batch. Here each request
owns a `torch.Generator` (seeded with its seed, or randomly) that draws for its own rows
only. The draw is made in a logits processor that leaves only the drawn token possible,
and transformers' greedy step then picks exactly that token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)


class SeededSampler(LogitsProcessor):
    """Draws each row's next token from the generator of the request the row belongs to.

    `draws` pairs a generator with how many consecutive rows (the request's n choices) it
    draws for, in row order.
    """

    def __init__(self, draws: Sequence[tuple[torch.Generator, int]]) -> None:
        self._draws = draws

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = torch.softmax(scores, dim=-1)
        chosen = torch.empty(scores.shape[0], dtype=torch.long, device=scores.device)
        start = 0
        for generator, rows in self._draws:
            part = probs[start : start + rows]
            chosen[start : start + rows] = torch.multinomial(part, 1, generator=generator)[:, 0]
            start += rows
        only = torch.full_like(scores, -float("inf"))
        only.scatter_(1, chosen[:, None], 0.0)
        return only  # type: ignore[return-value]  # a FloatTensor, as torch does not type it


def request_generator(seed: int | None, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()  # from the operating system's randomness
    else:
        generator.manual_seed(seed)
    return generator


def sampling_processors(
    params: Mapping[str, Any], draws: Sequence[tuple[torch.Generator, int]]
) -> LogitsProcessorList:
    """Temperature, then top-k and top-p when set, then the draw. Only what the request
    (or the model's config) sets applies: transformers' implicit top_k=50 does not."""
    processors: list[Any] = [TemperatureLogitsWarper(params["temperature"])]
    if params["top_k"] > 0:
        processors.append(TopKLogitsWarper(params["top_k"]))
    if params["top_p"] < 1:
        processors.append(TopPLogitsWarper(params["top_p"]))
    processors.append(SeededSampler(draws))
    return LogitsProcessorList(processors)
