"""rnnkit's vocabulary JSON read back in the runner: ids ↔ symbols (standard library only)."""

from __future__ import annotations

from typing import Any


class Vocab:
    """rnnkit's vocabulary JSON (``{"level", "specials", "tokens"}``): ids ↔ symbols."""

    def __init__(self, data: dict[str, Any]):
        self.level = data["level"]
        self.specials = list(data["specials"])
        self.itos = self.specials + list(data["tokens"])
        self.stoi = {s: i for i, s in enumerate(self.itos)}

    def id_of(self, symbol: str) -> int | None:
        return self.stoi.get(symbol) if symbol in self.specials else None

    @property
    def unk_id(self) -> int | None:
        return self.id_of("<unk>")

    @property
    def eos_id(self) -> int | None:
        return self.id_of("<eos>")

    @property
    def pad_id(self) -> int | None:
        return self.id_of("<pad>")

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: list[str], unknown: str = "unk") -> list[int]:
        missing = [t for t in dict.fromkeys(tokens) if t not in self.stoi]
        if not missing:
            return [self.stoi[t] for t in tokens]
        if unknown == "drop":
            return [self.stoi[t] for t in tokens if t in self.stoi]
        if unknown == "unk" and self.unk_id is not None:
            return [self.stoi.get(t, self.unk_id) for t in tokens]
        kind = "characters" if self.level == "char" else "words"
        raise ValueError(f"{kind} not in the vocabulary: {', '.join(map(repr, missing[:10]))}")
