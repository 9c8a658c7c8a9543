"""MkDocs hook: render the site's math as MathML at build time, so pages need no JavaScript.

``pymdownx.arithmatex`` (generic mode) leaves ``\\(...\\)`` in ``<span class="arithmatex">`` and
``\\[...\\]`` in ``<div class="arithmatex">``; this hook converts each to a ``<math>`` element
with latex2mathml, which every current browser renders natively. Nothing is fetched at build or
view time. ``aligned`` environments are mapped to ``split`` (the same layout; latex2mathml
knows the latter), and ``\\_`` in text is shown as ``_``. A formula latex2mathml cannot
convert fails the build with its text.
"""

from __future__ import annotations

import html
import re

from latex2mathml.converter import convert

_INLINE = re.compile(r'<span class="arithmatex">\\\((.*?)\\\)</span>', re.S)
_BLOCK = re.compile(r'<div class="arithmatex">\\\[(.*?)\\\]</div>', re.S)


def _mathml(tex: str, display: str) -> str:
    tex = html.unescape(tex).strip()
    tex = tex.replace(r"\begin{aligned}", r"\begin{split}").replace(
        r"\end{aligned}", r"\end{split}"
    )
    try:
        # latex2mathml keeps the escape in text (\text{reset\_after}): drop it
        return convert(tex, display=display).replace("\\_", "_")
    except Exception as exc:  # latex2mathml raises its own exceptions for unknown commands
        raise ValueError(f"cannot render the formula {tex!r} as MathML: {exc}") from exc


def on_page_content(html_text: str, **kwargs) -> str:
    """Replace every arithmatex span/div of the page by MathML."""
    html_text = _BLOCK.sub(
        lambda m: f'<div class="math-block">{_mathml(m.group(1), "block")}</div>', html_text
    )
    return _INLINE.sub(lambda m: _mathml(m.group(1), "inline"), html_text)
