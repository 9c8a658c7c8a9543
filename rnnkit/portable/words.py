"""Words and punctuation: the tokenizer of parallel text and its inverse (standard library only).

:func:`tokenize` lower-cases (optionally) and splits words from punctuation; :func:`detokenize`
glues the tokens back into ordinary text, which is what BLEU is computed on. rnnkit's parallel
text reader (:mod:`rnnkit.data.parallel`) and the exported runner's translator both use them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["detokenize", "tokenize"]

# A word (letters/digits, possibly joined by hyphens: "t-shirt", "5-jährige"), a clitic that
# starts with an apostrophe ("'s", "'re"), or any other single non-space character.
_TOKEN = re.compile(r"['’]\w+|\w+(?:-\w+)*|[^\w\s]")
_NO_SPACE_BEFORE = set(".,!?;:%)]}…") | {"'", "’"}
_NO_SPACE_AFTER = set("([{¿¡")


def tokenize(text: str, lowercase: bool = True) -> list[str]:
    """Words and punctuation marks of ``text``: ``"A man's bike."`` → ``a man 's bike .``."""
    return _TOKEN.findall(text.lower() if lowercase else text)


def detokenize(tokens: Sequence[str]) -> str:
    """Join tokens as ordinary text: no space before closing punctuation or an apostrophe
    clitic, none after an opening bracket; straight double quotes alternate open / close."""
    out: list[str] = []
    glue_next = False
    open_quote = False
    for tok in tokens:
        glue = glue_next or not out
        glue_next = False
        if tok == '"':
            if open_quote:
                glue = True
            else:
                glue_next = True
            open_quote = not open_quote
        elif tok in _NO_SPACE_BEFORE or tok[0] in "'’" and len(tok) > 1:
            glue = True
        if tok in _NO_SPACE_AFTER:
            glue_next = True
        out.append(tok if glue else " " + tok)
    return "".join(out).strip()
