"""The one module of the server that touches a language model: prime a prompt, step a batch.

Kept small so the server can switch to ``rnnkit.inference``'s stepping API when it lands.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from rnnkit.state import map_state
from rnnkit.tasks.language_model import sample_next


def banned_ids(model) -> list[int]:
    """Special ids never sampled (the same rule as ``TextModel.generate``)."""
    vocab = model.vocab
    return [i for i in range(len(vocab.specials)) if i != vocab.eos_id or vocab.level == "char"]


@torch.no_grad()
def prime(model, prompt: str):
    """Feed ``prompt`` (or the model's default context); returns (last logits (V,), state)."""
    ids = model.encode(prompt if prompt else model.default_context())
    if not ids:
        raise ValueError("the prompt has no characters left after dropping unknown ones")
    return model._advance(ids)


def gather(states: list) -> object:
    """Per-stream states (layers, 1, H) → one batched state (layers, B, H)."""
    first = states[0]
    if isinstance(first, Tensor):
        return torch.cat(states, dim=1)
    return type(first)(*(torch.cat([s[k] for s in states], dim=1) for k in range(len(first))))


def scatter(state, count: int) -> list:
    """A batched state (layers, B, H) → ``count`` per-stream states (layers, 1, H)."""
    return [map_state(lambda t, r=r: t[:, r : r + 1].contiguous(), state) for r in range(count)]


@torch.no_grad()
def step(model, ids: list[int], states: list) -> tuple[Tensor, list]:
    """One recurrent step for a batch of streams: logits (B, V) and the new per-stream states."""
    x = torch.tensor([[i] for i in ids], device=model.device)  # (B, 1)
    out = model(x, gather(states))
    return out.logits[:, -1], scatter(out.state, len(ids))


def choose(model, logits: Tensor, temperature, top_k, top_p, generator) -> int:
    """Sample one id from a stream's logits (V,) with the specials masked."""
    logits = logits.clone()
    logits[banned_ids(model)] = -math.inf
    return sample_next(logits, temperature, top_k, top_p, generator)


def render(model, ids: list[int]) -> str:
    return model._render(ids)
