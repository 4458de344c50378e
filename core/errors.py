"""User-facing errors.

Anything a user can cause (a bad file, an unknown version, a malformed --where) raises AssayError
with a one-line message that names the file and line, the field or the version; the CLI prints it and
exits non-zero. Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools


class AssayError(Exception):
    """An error caused by input or state the user controls; the message is shown as is."""


class BadInput(AssayError):
    """A source file that cannot be imported, located as precisely as we can (file, line, field)."""

    def __init__(self, source: str, problem: str, *, line: int | None = None, field: str | None = None,
                 unit: str = "line"):
        self.source, self.problem, self.line, self.field, self.unit = source, problem, line, field, unit
        where = source if line is None else f"{source}:{line}" if unit == "line" else f"{source} ({unit} {line})"
        what = f"field '{field}': {problem}" if field else problem
        super().__init__(f"{where}: {what}")

    def __reduce__(self):
        # whole across processes (a Ray import task returns it): pickle's default would call
        # BadInput(message) with the formatted text only
        return functools.partial(BadInput, line=self.line, field=self.field, unit=self.unit), (self.source,
                                                                                               self.problem)


class UnknownVersion(AssayError):
    """A version reference (id, prefix, NAME or NAME@N) that does not resolve to exactly one version."""
