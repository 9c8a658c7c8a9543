"""The documentation site: it builds strictly and offline, its API pages are documented, and
every ``rnnkit ...`` command it shows is one the command line accepts.

* ``mkdocs build --strict`` fails on a broken link, a missing anchor or a ``:::`` / autoref
  target that no longer exists; the built pages must fetch nothing (no remote script, style
  sheet or font) and carry their math as MathML.
* Every public function and class of the modules the API reference renders has a docstring
  (mkdocstrings silently drops undocumented objects, so a missing one would just vanish).
* Every ``rnnkit`` command in a code block or inline code of the docs (and the README) parses
  with ``build_parser().parse_args`` — the commands are parsed, never run.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
API_PAGES = sorted((DOCS / "reference" / "api").glob("*.md"))


def _pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "_hooks" not in p.parts)


def test_mkdocs_build_strict_offline(tmp_path):
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python", "latex2mathml"):
        pytest.importorskip(module)
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", "mkdocs.yml", "-d", site],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    built = sorted(site.rglob("index.html"))
    assert len(built) == len(_pages())  # every page of docs/ is in the site (one index.html each)
    lecture = (site / "lecture-to-code" / "index.html").read_text(encoding="utf-8")
    assert lecture.count("<math") > 10 and 'class="arithmatex"' not in lecture
    cells = (site / "reference" / "api" / "cells" / "index.html").read_text(encoding="utf-8")
    assert "<math" in cells and ".. math::" not in cells  # docstring equations rendered too
    remote = re.compile(r"<(?:script|link|img)\b[^>]*\b(?:src|href)=\"(?:https?:)?//", re.I)
    for page in built:
        text = page.read_text(encoding="utf-8")
        assert not remote.search(text), f"{page} loads something from the network"
    assert "fonts.googleapis" not in "".join(p.read_text() for p in site.rglob("*.css"))


def _api_modules() -> list[str]:
    names = []
    for page in API_PAGES:
        for line in page.read_text(encoding="utf-8").splitlines():
            m = re.match(r"^:::\s+([\w.]+)\s*$", line)
            if m:
                names.append(m.group(1))
    return names


def test_api_reference_covers_the_modules_it_names():
    modules = _api_modules()
    assert {"rnnkit.cells", "rnnkit.layers", "rnnkit.train", "rnnkit.runs"} <= set(modules)
    for name in modules:
        importlib.import_module(name)  # a page naming a module that is gone fails here too


@pytest.mark.parametrize("module_name", _api_modules())
def test_every_public_object_of_the_api_reference_has_a_docstring(module_name):
    module = importlib.import_module(module_name)
    assert inspect.getdoc(module), f"{module_name} has no module docstring"
    names = getattr(module, "__all__", None)
    if names is None:  # public = defined here and not underscored
        names = [
            n
            for n, obj in vars(module).items()
            if not n.startswith("_") and getattr(obj, "__module__", None) == module_name
        ]
    missing = []
    for name in names:
        obj = getattr(module, name)
        if inspect.ismodule(obj):
            continue  # a subpackage listed in __all__ has its own directive
        if (inspect.isfunction(obj) or inspect.isclass(obj)) and not inspect.getdoc(obj):
            missing.append(name)
    assert not missing, f"{module_name}: no docstring on {', '.join(missing)}"


_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
_INLINE = re.compile(r"`(rnnkit [^`]+)`")
_SHELL = {"", "bash", "sh", "shell", "console"}


def _shell_commands(block: str) -> list[str]:
    """Logical lines of a shell block: continuations joined, comments dropped, chains split."""
    text = block.replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        line = line.strip().removeprefix("$ ")
        if not line or line.startswith("#"):
            continue
        words = shlex.split(line, comments=True)
        part: list[str] = []
        for word in [*words, "&&"]:
            if word in ("&&", "||", ";", "|"):
                if part:
                    commands.append(part)
                part = []
            else:
                part.append(word)
    return commands


def _rnnkit_argv(words: list[str]) -> list[str] | None:
    """The arguments after ``rnnkit`` (also ``.venv/bin/rnnkit`` and ``... -m rnnkit``)."""
    for i, word in enumerate(words):
        if word == "rnnkit" or word.endswith("/rnnkit"):
            if i == 0 or words[i - 1] == "-m":
                return words[i + 1 :]
    return None


def _doc_commands() -> list[tuple[str, list[str]]]:
    found = []
    for page in [*_pages(), ROOT / "README.md"]:
        text = page.read_text(encoding="utf-8")
        where = page.relative_to(ROOT).as_posix()
        for lang, body in _FENCE.findall(text):
            if lang in _SHELL:
                for words in _shell_commands(body):
                    argv = _rnnkit_argv(words)
                    if argv is not None:
                        found.append((where, argv))
        prose = _FENCE.sub("", text)
        for span in _INLINE.findall(prose):
            words = shlex.split(span)
            # a bare verb in prose ("`rnnkit train` runs under torchrun") names, not commands
            if len(words) >= 3 and all(
                re.fullmatch(r"[\w./:=,;@+-]+|\"[^\"]*\"", w) for w in words[1:]
            ):
                found.append((where, words[1:]))
    return found


def test_docs_show_many_commands():
    commands = _doc_commands()
    verbs = {argv[0] for _, argv in commands if argv}
    assert len(commands) >= 40
    assert {"train", "generate", "evaluate", "diagnose", "bench"} <= verbs


@pytest.mark.parametrize(
    "where,argv", _doc_commands(), ids=lambda v: v if isinstance(v, str) else " ".join(v)[:60]
)
def test_command_shown_in_the_docs_parses(where, argv, capsys):
    from rnnkit.cli import build_parser

    parser = build_parser()
    try:
        parser.parse_args(argv)
    except SystemExit as exc:
        if exc.code == 0 and "--help" in argv:
            return
        err = capsys.readouterr().err.strip().splitlines()
        pytest.fail(f"{where}: `rnnkit {shlex.join(argv)}` does not parse: {err[-1:] or exc}")
