"""Turning id sequences into training batches.

Three shapes of data, three tools:

* one long stream (a language-model corpus): :func:`batchify` cuts it into parallel streams and
  :class:`StreamBatches` walks them in truncated-BPTT windows, so the recurrent state carried
  from one window to the next belongs to the text that really came before;
* many short sequences (sentences, tunes, examples): :func:`pad_sequences` pads them into one
  tensor and returns their lengths for masking / packing;
* a numeric series (forecasting): :func:`sliding_windows` makes (past window, future horizon)
  pairs.

Everything is batch-first: ``(B, T, ...)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from rnnkit.errors import DataError

__all__ = ["BpttWindows", "StreamBatches", "batchify", "pad_sequences", "sliding_windows"]


def batchify(ids: torch.Tensor | Sequence[int], batch_size: int) -> torch.Tensor:
    """Cut a 1-D token stream into ``batch_size`` contiguous streams, one per batch row.

    Each stream has length ``L = N // batch_size``; the last ``N % batch_size`` tokens are dropped
    (at most ``batch_size - 1`` tokens, so nothing that matters for a corpus of any size). Row
    ``b`` is ``ids[b * L : (b + 1) * L]``: reading a row left to right is reading the corpus.
    With the 26 letters and ``batch_size=4`` (``L = 6``, ``y z`` dropped)::

        ids:  a b c d e f g h i j k l m n o p q r s t u v w x y z

                      time ->
                    +-------------+
        stream 0    | a b c d e f |
        stream 1    | g h i j k l |      shape (B, L) = (4, 6)
        stream 2    | m n o p q r |
        stream 3    | s t u v w x |
                    +-------------+

    Columns are processed in parallel, one time step at a time, so an RNN sees four independent
    texts at once; the price is that the model never learns the dependency between ``f`` and
    ``g``, which for ``L`` in the thousands is negligible.

    Args:
        ids: token ids, shape ``(N,)``.
        batch_size: number of streams ``B``.

    Returns:
        A ``(B, L)`` view of ``ids`` (same dtype and device).
    """
    ids = torch.as_tensor(ids)
    if ids.dim() != 1:
        raise ValueError(f"batchify expects a 1-D tensor of ids, got shape {tuple(ids.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    length = ids.numel() // batch_size
    if length == 0:
        raise DataError(
            f"the text has {ids.numel()} tokens: too short for batch_size {batch_size} "
            "(need at least one token per stream)"
        )
    return ids[: batch_size * length].view(batch_size, length)  # (B, L)


class BpttWindows:
    """The window arithmetic of truncated BPTT over ``B`` streams of ``L = N // B`` tokens.

    A stream has ``L − 1`` input positions (its last token is a target only). Window ``k`` covers
    inputs ``s = k·bptt … e − 1`` and targets ``s + 1 … e`` with ``e = min(s + bptt, L − 1)``;
    there are ``⌈(L − 1) / bptt⌉`` windows (``⌊(L − 1) / bptt⌋`` with ``drop_last``). Subclasses
    hold the streams and build ``window(i)`` from :meth:`bounds`.
    """

    def _plan(
        self, n: int, batch_size: int, bptt: int, drop_last: bool, start: int, what: str
    ) -> int:
        """Check the sizes for ``n`` ids and set the windows up; returns ``L``."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if bptt < 1:
            raise ValueError(f"bptt must be >= 1, got {bptt}")
        need = batch_size * (bptt + 1)  # each stream needs bptt inputs plus one more target
        if n < need:
            raise DataError(
                f"the {what} has {n} tokens: too short for batch_size {batch_size} × bptt {bptt}; "
                f"need at least {need} (batch_size × (bptt + 1)); lower batch_size or bptt"
            )
        self.batch_size, self.bptt, self.drop_last = batch_size, bptt, drop_last
        length = n // batch_size
        positions = length - 1  # input positions per stream (the last is target only)
        self._positions = positions
        self._num_windows = positions // bptt if drop_last else math.ceil(positions / bptt)
        if not 0 <= start <= self._num_windows:
            raise ValueError(f"start must be in [0, {self._num_windows}], got {start}")
        self.start = start
        return length

    @property
    def num_windows(self) -> int:
        """Windows in a whole epoch, regardless of ``start``."""
        return self._num_windows

    def __len__(self) -> int:
        return self._num_windows - self.start

    def bounds(self, i: int) -> tuple[int, int]:
        """``(s, e)`` of window ``i`` (negative ``i`` counts from the end)."""
        if i < 0:
            i += self._num_windows
        if not 0 <= i < self._num_windows:
            raise IndexError(f"window {i} out of range for {self._num_windows} windows")
        s = i * self.bptt
        return s, min(s + self.bptt, self._positions)

    def window(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(self.start, self._num_windows):
            yield self.window(i)


class StreamBatches(BpttWindows):
    """Truncated-BPTT windows over :func:`batchify`'d streams.

    Window ``k`` takes inputs from time steps ``s = k * bptt`` up to (not including)
    ``e = min(s + bptt, L - 1)`` of every stream; targets are the inputs shifted by one step.
    With ``bptt = 2`` on the example of :func:`batchify` (``L = 6``: 5 input positions, 3
    windows)::

                       window 0   window 1   window 2
        stream 0  inputs   a b        c d        e
                  targets  b c        d e        f
        stream 1  inputs   g h        i j        k
                  targets  h i        j k        l
        ...

    so window ``k + 1`` starts exactly where window ``k`` stopped and the last target of window
    ``k`` is the first input of window ``k + 1``: carrying the recurrent state across windows
    (detached, to cut the gradient) continues each stream without a gap or an overlap. The last
    window is shorter when ``bptt`` does not divide ``L - 1``; ``drop_last=True`` leaves it out.

    Args:
        ids: token ids of the whole corpus, shape ``(N,)``.
        batch_size: number of parallel streams ``B``.
        bptt: window length ``T`` (time steps back-propagated through).
        drop_last: skip a final window shorter than ``bptt``.
        start: first window that iteration yields (resume mid-epoch); :meth:`window` still
            indexes from 0.
        device: if given, windows are moved there as they are yielded.
        what: how the data is called in error messages (e.g. ``"validation text"``).

    Raises:
        DataError: ``N < batch_size * (bptt + 1)``: not enough for one full window.

    ``len()`` counts the windows iteration yields (``num_windows - start``); ``num_windows`` is
    the whole epoch, ``num_tokens`` the number of target tokens iteration yields.
    """

    def __init__(
        self,
        ids: torch.Tensor | Sequence[int],
        batch_size: int,
        bptt: int,
        drop_last: bool = False,
        start: int = 0,
        device: torch.device | str | None = None,
        what: str = "training text",
    ) -> None:
        ids = torch.as_tensor(ids)
        if ids.dim() != 1:
            raise ValueError(f"expected a 1-D tensor of ids, got shape {tuple(ids.shape)}")
        self._plan(ids.numel(), batch_size, bptt, drop_last, start, what)
        self.device = None if device is None else torch.device(device)
        self.data = batchify(ids, batch_size)  # (B, L)

    @property
    def num_tokens(self) -> int:
        """Target tokens in the windows that iteration yields (``B`` × their total length)."""
        end = min(self._num_windows * self.bptt, self._positions)
        return self.batch_size * max(0, end - self.start * self.bptt)

    def window(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Window ``i`` of the epoch (negative ``i`` counts from the end): ``(inputs, targets)``,
        each ``(B, l)`` with ``l <= bptt``."""
        s, e = self.bounds(i)
        inputs = self.data[:, s:e].contiguous()  # (B, l)
        targets = self.data[:, s + 1 : e + 1].contiguous()  # (B, l)
        if self.device is not None:
            inputs = inputs.to(self.device, non_blocking=True)
            targets = targets.to(self.device, non_blocking=True)
        return inputs, targets

    def __repr__(self) -> str:
        return (
            f"StreamBatches(batch_size={self.batch_size}, bptt={self.bptt}, "
            f"stream_length={self.data.size(1)}, windows={self._num_windows}, start={self.start})"
        )


def pad_sequences(
    seqs: Sequence[torch.Tensor | Sequence[Any]],
    pad_value: float = 0,
    batch_first: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad variable-length sequences into one tensor.

    Args:
        seqs: ``B`` sequences, each a tensor ``(T_i, ...)`` or a list; trailing dims must match.
            Zero-length sequences are allowed.
        pad_value: fill for positions past a sequence's end.
        batch_first: ``(B, T, ...)`` if true, else ``(T, B, ...)``.

    Returns:
        ``(padded, lengths)``: ``T = max T_i``; ``lengths`` is an int64 ``(B,)`` CPU tensor (what
        ``pack_padded_sequence`` wants). The dtype is the common dtype of the inputs.
    """
    if len(seqs) == 0:
        raise ValueError("pad_sequences needs at least one sequence")
    tensors = [torch.as_tensor(s) for s in seqs]
    trailing = tuple(tensors[0].shape[1:])
    dtype = tensors[0].dtype
    for i, t in enumerate(tensors):
        if t.dim() == 0:
            raise ValueError(f"sequence {i} is a scalar, expected at least 1 dimension")
        if tuple(t.shape[1:]) != trailing:
            raise ValueError(
                f"sequence {i} has trailing shape {tuple(t.shape[1:])}, sequence 0 has {trailing}"
            )
        dtype = torch.promote_types(dtype, t.dtype)
    lengths = torch.tensor([t.size(0) for t in tensors], dtype=torch.int64)  # (B,)
    max_len = int(lengths.max())
    padded = torch.full(
        (len(tensors), max_len, *trailing), pad_value, dtype=dtype, device=tensors[0].device
    )  # (B, T, ...)
    for i, t in enumerate(tensors):
        padded[i, : t.size(0)] = t
    if not batch_first:
        padded = padded.transpose(0, 1).contiguous()  # (T, B, ...)
    return padded, lengths


def sliding_windows(
    x: torch.Tensor | Sequence[Any],
    window: int,
    horizon: int = 1,
    stride: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(past, future) pairs from a series, for forecasting.

    Pair ``m`` starts at ``s = m * stride``: ``inputs[m] = x[s : s + window]`` and
    ``targets[m] = x[s + window : s + window + horizon]``, so a target never overlaps its own
    input window (no leakage of the future into the past).

    Args:
        x: the series, shape ``(N, ...)`` (``(N,)`` or ``(N, features)``).
        window: input length.
        horizon: number of future steps to predict.
        stride: step between consecutive windows.

    Returns:
        ``inputs (M, window, ...)`` and ``targets (M, horizon, ...)`` with
        ``M = (N - window - horizon) // stride + 1``.

    Raises:
        DataError: ``N < window + horizon``.
    """
    x = torch.as_tensor(x)
    if x.dim() == 0:
        raise ValueError("sliding_windows expects a series of shape (N, ...), got a scalar")
    for name, value in (("window", window), ("horizon", horizon), ("stride", stride)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    n = x.size(0)
    span = window + horizon
    if n < span:
        raise DataError(
            f"the series has {n} steps: too short for window {window} + horizon {horizon}; "
            f"need at least {span}"
        )
    pairs = x.unfold(0, span, stride).movedim(-1, 1)  # (M, span, ...)
    inputs = pairs[:, :window].contiguous()  # (M, window, ...)
    targets = pairs[:, window:].contiguous()  # (M, horizon, ...)
    return inputs, targets
