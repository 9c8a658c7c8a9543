"""Reading a prepared corpus: ``np.memmap`` views of its ids and truncated-BPTT windows over them.

:class:`PreparedCorpus` opens a folder written by :func:`~rnnkit.data.prepared.prepare_lm`
(checking that each ``.bin`` has the size ``meta.json`` records) and maps ``train.bin`` /
``valid.bin`` read-only. :class:`MemmapStreams` is :class:`~rnnkit.data.batching.StreamBatches`
over such a map: the ``B`` contiguous streams of ``batchify`` are a ``(B, L)`` reshape of the map
(a view: offsets, no copy), and window ``k`` is the slice ``[:, k·T : k·T + T + 1]`` converted to
an int64 tensor, so only the window is ever materialised and resident memory does not grow with
the corpus (pages the windows touch are file-backed page cache the OS can drop). The windows equal
``StreamBatches`` windows over the same ids, element for element, so a run trained on a prepared
folder sees exactly the batches of the in-memory path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rnnkit.data.batching import BpttWindows
from rnnkit.data.prepared.prepare import META, check_sizes, read_meta, verify
from rnnkit.data.prepared.tokenizer import Tokenizer, load_tokenizer
from rnnkit.errors import DataError

__all__ = ["PreparedCorpus", "MemmapStreams", "is_prepared"]

PathLike = str | os.PathLike[str]


def is_prepared(path: PathLike) -> bool:
    """Whether ``path`` is a folder with a ``meta.json`` (a prepared corpus, or meant to be)."""
    return (Path(path) / META).is_file()


class PreparedCorpus:
    """A prepared folder, opened: ``meta``, ``tokenizer``, and ``ids(split)`` as a memory map.

    Raises:
        DataError: no or a foreign ``meta.json``, or a ``.bin`` whose size disagrees with it (a
            truncated or replaced file). Hashes are checked by :meth:`verify`, not here: reading
            a 1 GB file to open it would defeat the memory map.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self.meta: dict[str, Any] = read_meta(self.path)
        check_sizes(self.path, self.meta)
        self.dtype = np.dtype(self.meta["dtype"]).newbyteorder("<")
        self._maps: dict[str, np.memmap] = {}
        self._tokenizer: Tokenizer | None = None

    @property
    def level(self) -> str:
        return self.meta["level"]

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.path / self.meta["tokenizer"])
            if len(self._tokenizer) != self.vocab_size:
                raise DataError(
                    f"holds {len(self._tokenizer)} ids but meta.json records {self.vocab_size}",
                    path=self.path / self.meta["tokenizer"],
                )
        return self._tokenizer

    def ids(self, split: str = "train") -> np.ndarray:
        """The split's ids as a read-only memory map (shape ``(N,)``, the stored dtype)."""
        if split not in self.meta["splits"]:
            raise KeyError(f"no split {split!r}; have {', '.join(self.meta['splits'])}")
        if split not in self._maps:
            info = self.meta["splits"][split]
            self._maps[split] = np.memmap(
                self.path / info["file"], dtype=self.dtype, mode="r", shape=(info["tokens"],)
            )
        return self._maps[split]

    @property
    def train(self) -> np.ndarray:
        return self.ids("train")

    @property
    def valid(self) -> np.ndarray:
        return self.ids("valid")

    def verify(self) -> dict[str, Any]:
        """Hash every ``.bin`` against ``meta.json`` (see :func:`~.prepare.verify`)."""
        return verify(self.path)

    def __repr__(self) -> str:
        s = self.meta["splits"]
        return (
            f"PreparedCorpus({str(self.path)!r}, level={self.level!r}, vocab={self.vocab_size}, "
            f"train={s['train']['tokens']}, valid={s['valid']['tokens']}, dtype={self.meta['dtype']})"
        )


class MemmapStreams(BpttWindows):
    """:class:`~rnnkit.data.batching.StreamBatches` windows read from a 1-D array of ids (a
    memory map, or any NumPy view) without loading it.

    Window ``k`` holds inputs ``s = k·bptt … e − 1`` and targets ``s + 1 … e`` of every stream,
    ``e = min(s + bptt, L − 1)``, stream ``b`` being ``ids[b·L : (b + 1)·L]`` with
    ``L = N // batch_size``. ``rows`` keeps only some streams (a torchrun rank's own); they are
    the only rows read.

    Args:
        ids: token ids ``(N,)``, any integer dtype.
        batch_size: streams ``B``.
        bptt: window length.
        drop_last: skip a final window shorter than ``bptt``.
        start: first window that iteration yields.
        rows: which streams to return (default all).
        what: the data's name in error messages.
    """

    def __init__(
        self,
        ids: np.ndarray,
        batch_size: int,
        bptt: int,
        drop_last: bool = False,
        start: int = 0,
        rows: slice | None = None,
        what: str = "training text",
    ) -> None:
        if ids.ndim != 1:
            raise ValueError(f"expected a 1-D array of ids, got shape {tuple(ids.shape)}")
        length = self._plan(ids.shape[0], batch_size, bptt, drop_last, start, what)
        self.data = ids[: batch_size * length].reshape(batch_size, length)  # (B, L), a view
        self.rows = rows if rows is not None else slice(0, batch_size)

    @property
    def stream_length(self) -> int:
        return self.data.shape[1]

    def window(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Window ``i``: ``(inputs, targets)``, each int64 ``(b, l)``, copied from the map."""
        s, e = self.bounds(i)
        block = torch.from_numpy(np.asarray(self.data[self.rows, s : e + 1], dtype=np.int64))
        return block[:, :-1].contiguous(), block[:, 1:].contiguous()  # (b, l) each

    def __repr__(self) -> str:
        return (
            f"MemmapStreams(batch_size={self.batch_size}, bptt={self.bptt}, "
            f"stream_length={self.stream_length}, windows={self._num_windows}, rows={self.rows})"
        )
