"""Griffe extension: show rnnkit's reStructuredText-flavoured docstrings properly in MkDocs.

rnnkit's docstrings are written to read well in ``help()``: Sphinx roles (``:class:`X```) and
``.. math::`` blocks. mkdocstrings renders docstrings as Markdown, where both would print
verbatim and the math would lose its backslashes. Before rendering, this extension turns roles
into inline code and each ``.. math::`` block into a ``$$`` block for ``pymdownx.arithmatex``
(which the build's MathML hook then renders). The docstrings in the code are not changed.
"""

from __future__ import annotations

import re
import textwrap

import griffe

_ROLE = re.compile(r":(?:class|func|meth|attr|data|mod|obj|exc):`~?([^`]+)`")
_MATH = re.compile(
    r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<first>.*)\n(?P<body>(?:(?:(?P=indent)[ \t]+.*)?\n)*)",
    re.M,
)


def _math_block(match: re.Match) -> str:
    indent = match.group("indent")
    body = textwrap.dedent(match.group("body")).strip()
    tex = "\n".join(part for part in (match.group("first").strip(), body) if part)
    if "&" in tex:  # several aligned lines
        tex = "\\begin{aligned}\n" + tex + "\n\\end{aligned}"
    lines = ["", "$$", *tex.split("\n"), "$$", ""]
    return "\n".join(indent + line if line else "" for line in lines) + "\n"


def rewrite(text: str) -> str:
    """The docstring ``text`` with roles as code and ``.. math::`` blocks as ``$$`` blocks."""
    text = _MATH.sub(_math_block, text if text.endswith("\n") else text + "\n")
    return _ROLE.sub(r"`\1`", text).rstrip("\n")


class RstDocstrings(griffe.Extension):
    """Rewrite every loaded object's docstring with :func:`rewrite`."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)
