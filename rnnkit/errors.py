"""Exceptions for problems the user can fix: bad input files and bad run directories.

Everything here derives from :class:`ValueError`, so the CLI can catch one family, print the
one-line message and exit with status 2, while genuine bugs (anything else) still surface with a
traceback. Messages follow the compiler convention ``path:line: what was expected, what was
found`` so editors and terminals can jump to the spot.
"""

from __future__ import annotations

import os

__all__ = ["CheckpointError", "DataError", "DataFileNotFoundError"]


class DataError(ValueError):
    """A problem with user input: a file, a corpus, a vocabulary, a batch configuration.

    Args:
        message: one line saying what was expected and what was found.
        path: the file the problem is in, when there is one.
        line: the 1-based line number inside ``path``, when known.

    ``str(err)`` renders as ``path:line: message``, ``path: message`` or just ``message``
    depending on what is known; the parts stay available as ``err.message``, ``err.path`` and
    ``err.line``.
    """

    def __init__(
        self,
        message: str,
        path: str | os.PathLike[str] | None = None,
        line: int | None = None,
    ) -> None:
        self.message = message
        self.path = None if path is None else os.fspath(path)
        self.line = line
        super().__init__(self._render())

    def _render(self) -> str:
        if self.path is None:
            return self.message
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.message}"

    def __str__(self) -> str:
        # Rendered from the fields (not args) so the FileNotFoundError mix-in below, whose
        # OSError.__str__ would format errno/strerror, prints the same one-liner.
        return self._render()

    def __reduce__(self):  # keep the exception picklable (multiprocessing, pytest-xdist)
        return (self.__class__, (self.message, self.path, self.line))


class DataFileNotFoundError(DataError, FileNotFoundError):
    """An input file that does not exist: both a :class:`DataError` and a
    :class:`FileNotFoundError`, so either ``except`` clause catches it."""

    @property
    def filename(self) -> str | None:
        """The missing file, where ``OSError`` handlers look for it (``err.path``)."""
        return self.path


class CheckpointError(DataError):
    """A run directory or checkpoint file that is missing, corrupt or unsafe to load."""
