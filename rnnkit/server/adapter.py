"""The one module of the server that steps a language model, through its public stepping API
(``encode``, ``prime``, ``step``, ``select_state``, ``banned_ids``, ``decode``) and
``decoding.concat_states``."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from rnnkit.decoding import concat_states
from rnnkit.errors import DataError
from rnnkit.tasks.language_model.sampling import sample_rows


@torch.no_grad()
def prime(model, prompt: str, unknown: str = "error"):
    """Feed ``prompt`` (or the model's default context); returns (last logits (V,), state)."""
    ids = model.encode(prompt if prompt else model.default_context(), unknown)
    if not ids:
        raise DataError("the prompt has no characters left after dropping unknown ones")
    state, logits = model.prime([ids])
    return logits[0], state


def join(model, parts: list) -> object:
    """Batched states (a batch each) → one batched state, rows in the order given."""
    return concat_states(parts, model.state_batch_dim)


def rows(model, state, keep: list[int]) -> object:
    """The rows ``keep`` of a batched state."""
    return model.select_state(state, keep)


@torch.no_grad()
def step(model, ids: list[int], state) -> tuple[Tensor, object]:
    """One recurrent step for a batch of streams: next logits (B, V) and the batched state."""
    return model.step(torch.tensor(ids), state)


def sample(model, logits: Tensor, options: tuple, generators: list) -> list[int]:
    """One id per row of ``logits (B, V)`` with the specials masked, drawn exactly as the
    model's own ``generate`` draws it; ``options`` = (temperature, top_k, top_p)."""
    logits = logits.clone()
    logits[:, model.banned_ids()] = -math.inf
    return sample_rows(logits, *options, generators=generators)


def extend(model, ids: list[int], text: str) -> str:
    """The text of ``ids`` given ``text``, the text of ``ids[:-1]``: a character model appends
    one character; word and BPE models decode again (spacing and bytes depend on neighbours)."""
    if model.vocab.level == "char":
        return text + model.vocab.itos[ids[-1]]
    return model.decode(ids)


def render(model, ids: list[int]) -> str:
    """Token ids → the text generation shows."""
    return model.decode(ids)
