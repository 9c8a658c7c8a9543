"""Griffe extension: show rnnkit's reStructuredText-flavoured docstrings properly in MkDocs.

rnnkit's docstrings are written to read well in ``help()``: Sphinx roles (``:class:`X```) and
``.. math::`` blocks. mkdocstrings renders docstrings as Markdown, where both would print
verbatim and the math would lose its backslashes. Before rendering, this extension turns roles
into inline code, each ``.. math::`` block into a ``$$`` block for ``pymdownx.arithmatex``
(which the build's MathML hook then renders) and each doctest (``>>>`` lines and their output,
up to a blank line) into a fenced ``pycon`` block, which Markdown would otherwise read as a
quote with links in it. The docstrings in the code are not changed.
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

_DOCTEST = re.compile(r"^(?P<indent>[ \t]*)>>> .*\n(?:(?P=indent)\S.*\n)*", re.M)


def _doctest_block(match: re.Match) -> str:
    indent = match.group("indent")
    body = textwrap.dedent(match.group(0))
    lines = ["", "```pycon", *body.rstrip("\n").split("\n"), "```", ""]
    return "\n".join(indent + line if line else "" for line in lines) + "\n"


def _math_block(match: re.Match) -> str:
    indent = match.group("indent")
    body = textwrap.dedent(match.group("body")).strip()
    tex = "\n".join(part for part in (match.group("first").strip(), body) if part)
    if "&" in tex:  # several aligned lines
        tex = "\\begin{aligned}\n" + tex + "\n\\end{aligned}"
    lines = ["", "$$", *tex.split("\n"), "$$", ""]
    return "\n".join(indent + line if line else "" for line in lines) + "\n"


def rewrite(text: str) -> str:
    """The docstring ``text`` with roles as code, ``.. math::`` blocks as ``$$`` blocks and
    doctests as ``pycon`` blocks."""
    text = _MATH.sub(_math_block, text if text.endswith("\n") else text + "\n")
    text = _DOCTEST.sub(_doctest_block, text)
    return _ROLE.sub(r"`\1`", text).rstrip("\n")


class RstDocstrings(griffe.Extension):
    """Rewrite every loaded object's docstring with :func:`rewrite`."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)
