"""The one module of the server that steps a language model, through its public stepping API
(``encode``, ``prime``, ``step``, ``select_state``, ``banned_ids``, ``decode``) and
``decoding.concat_states``."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from rnnkit.decoding import concat_states
from rnnkit.errors import DataError
from rnnkit.tasks.language_model.sampling import sample_next


@torch.no_grad()
def prime(model, prompt: str, unknown: str = "error"):
    """Feed ``prompt`` (or the model's default context); returns (last logits (V,), state)."""
    ids = model.encode(prompt if prompt else model.default_context(), unknown)
    if not ids:
        raise DataError("the prompt has no characters left after dropping unknown ones")
    state, logits = model.prime([ids])
    return logits[0], state


def gather(model, states: list) -> object:
    """Per-stream states (batch 1 each) → one batched state."""
    return concat_states(states, model.state_batch_dim)


def scatter(model, state, count: int) -> list:
    """A batched state → ``count`` per-stream states."""
    return [model.select_state(state, [r]) for r in range(count)]


@torch.no_grad()
def step(model, ids: list[int], states: list) -> tuple[Tensor, list]:
    """One recurrent step for a batch of streams: logits (B, V) and the new per-stream states."""
    logits, state = model.step(torch.tensor(ids), gather(model, states))
    return logits, scatter(model, state, len(ids))


def choose(model, logits: Tensor, temperature, top_k, top_p, generator) -> int:
    """Sample one id from a stream's logits (V,) with the specials masked, exactly as the
    model's own ``generate`` draws it."""
    logits = logits.clone()
    logits[model.banned_ids()] = -math.inf
    return sample_next(logits, temperature, top_k, top_p, generator)


def render(model, ids: list[int]) -> str:
    """Token ids → the text generation shows."""
    return model.decode(ids)
