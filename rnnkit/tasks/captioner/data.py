"""Caption data: tokens, BLEU, image arrays and feature caches, splits and batches."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from rnnkit.data.images import (
    Captions,
    FeatureCache,
    cached_arrays,
    default_cache_dir,
    open_images,
    read_captions,
)
from rnnkit.errors import DataError, DataFileNotFoundError
from rnnkit.image_encoders import (
    ENCODERS,
    encoder_info,
)

if TYPE_CHECKING:
    from rnnkit.tasks.captioner.config import CaptionData
    from rnnkit.tasks.captioner.model import Captioner


# ---------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------
def caption_tokens(text: str) -> list[str]:
    """Lowercased whitespace tokens that contain a letter or a digit (punctuation dropped)."""
    return [t for t in text.lower().split() if any(ch.isalnum() for ch in t)]


def caption_bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict:
    """Corpus BLEU-1…4 (sacrebleu, 0–100) of ``hypotheses`` against every reference of each;
    ``{"bleu1": …, "bleu2": …, "bleu3": …, "bleu4": …}``."""
    from rnnkit.metrics import corpus_bleu

    hyps, refs = list(hypotheses), [list(r) for r in references]
    return {f"bleu{n}": float(corpus_bleu(hyps, refs, max_order=n)) for n in range(1, 5)}


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
@dataclass
class CaptionSplit:
    """One encoded split. ``images`` holds what the model's encoder reads, one row per image:
    cached EfficientNet features ``(N, 49, 1280)`` float16, or resized pixels ``(N, S, S, 3)``
    uint8 for the small CNN. Caption j belongs to image ``image_of[j]`` and has token ``ids``;
    ``references[k]`` are image k's captions as normalised strings (for BLEU)."""

    names: list[str]
    images: Tensor
    image_of: list[int]
    ids: list[list[int]]
    references: list[list[str]]
    source: str = ""

    def __len__(self) -> int:
        return len(self.ids)


def _feature_cache(d: CaptionData, namespace: str) -> FeatureCache:
    return FeatureCache(
        Path(d.feature_cache) if d.feature_cache else default_cache_dir(), namespace
    )


def image_arrays(
    model: Captioner, d: CaptionData, images_path: str, names: Sequence[str], progress: bool = True
) -> np.ndarray:
    """What the model's encoder reads for each image in ``names``, through the feature cache."""
    size = ENCODERS[model.config.encoder][0]
    with open_images(images_path) as source:
        for n in names:
            if n not in source:
                raise DataError(f"image {n!r} is not in the archive", source.path)
        if model.config.encoder == "small-cnn":
            cache = _feature_cache(d, f"pixels-{size}-uint8")
            return cached_arrays(
                source, names, cache, lambda px: px, size, 256, "decoding images", progress
            )
        cache = _feature_cache(d, f"{encoder_info()}-{size}-imagenet-fp16")
        return cached_arrays(
            source,
            names,
            cache,
            model.extract_features,
            size,
            d.extract_batch_size,
            "image features",
            progress,
        )


def read_split(model: Captioner, d: CaptionData, part: str, progress: bool = True) -> CaptionSplit:
    """The ``train`` or ``valid`` split, encoded for ``model`` (features from the cache)."""
    images, captions = (
        (d.images, d.captions) if part == "train" else (d.valid_images, d.valid_captions)
    )
    if not images or not captions:
        flags = "--images/--captions" if part == "train" else "--valid-images/--valid-captions"
        raise DataError(f"no {part} data: pass {flags}")
    caps = read_captions(captions).head(d.max_images if part == "train" else d.max_valid_images)
    _check_names(caps, images)
    arrays = image_arrays(model, d, images, caps.images, progress)
    return encode_split(model, caps, torch.from_numpy(arrays), str(captions))


def _check_names(caps: Captions, images: str) -> None:
    with open_images(images) as source:
        for name, line in zip(caps.images, caps.lines):
            if name not in source:
                raise DataError(f"image {name!r} is not in {images}", caps.path, line)


def encode_split(model: Captioner, caps: Captions, images: Tensor, source: str) -> CaptionSplit:
    image_of, ids, refs = [], [], []
    for k, captions in enumerate(caps.captions):
        refs.append([" ".join(caption_tokens(c)) for c in captions])
        for c in captions:
            image_of.append(k)
            ids.append(model.encode_caption(c))
    return CaptionSplit(list(caps.images), images, image_of, ids, refs, source)


def image_batches(image_of: Sequence[int], batch_size: int, rng=None) -> list[list[int]]:
    """Caption indices in batches of ``batch_size`` that keep each image's captions together, so
    a batch encodes few distinct images (about batch_size / 5 here). With ``rng`` the image order
    is shuffled; every caption appears exactly once."""
    by_image: dict[int, list[int]] = {}
    for j, k in enumerate(image_of):
        by_image.setdefault(k, []).append(j)
    order = list(by_image)
    if rng is not None:
        order = [order[i] for i in rng.permutation(len(order))]
    flat = [j for k in order for j in by_image[k]]
    return [flat[s : s + batch_size] for s in range(0, len(flat), batch_size)]


def collate(split: CaptionSplit, idx: Sequence[int], pad_id: int, bos_id: int, eos_id: int):
    """A teacher-forcing batch: ``images (U, …)`` (the distinct images), ``image_index (B,)``
    into them, ``inputs`` = <bos> w_1..w_n and ``targets`` = w_1..w_n <eos>, both ``(B, T)``
    padded, and ``lengths (B,)`` = n + 1."""
    images = sorted({split.image_of[j] for j in idx})
    row = {k: r for r, k in enumerate(images)}
    seqs = [split.ids[j] for j in idx]
    lengths = torch.tensor([len(s) + 1 for s in seqs], dtype=torch.int64)
    T = int(lengths.max())
    inputs = torch.full((len(idx), T), pad_id, dtype=torch.int64)
    targets = torch.full((len(idx), T), pad_id, dtype=torch.int64)
    for b, s in enumerate(seqs):
        inputs[b, 0] = bos_id
        inputs[b, 1 : len(s) + 1] = torch.tensor(s, dtype=torch.int64)
        targets[b, : len(s)] = torch.tensor(s, dtype=torch.int64)
        targets[b, len(s)] = eos_id
    return {
        "images": split.images[images],
        "image_index": torch.tensor([row[split.image_of[j]] for j in idx], dtype=torch.int64),
        "inputs": inputs,
        "targets": targets,
        "lengths": lengths,
    }


def read_image(spec: str | os.PathLike[str]) -> tuple[bytes, str]:
    """The bytes of an image given as a file path, or as ``archive.tar:member.jpg`` (a member
    read straight from a tar); returns ``(bytes, name for messages)``."""
    p = Path(spec)
    if p.is_file():
        return p.read_bytes(), str(p)
    text = os.fspath(spec)
    if ":" in text:
        archive, member = text.rsplit(":", 1)
        if Path(archive).is_file():
            with open_images(archive) as source:
                return source.read(member), source.where(member)
    raise DataFileNotFoundError("no such image file", p)
