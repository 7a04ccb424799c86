"""The one kind of error an operator can act on: caught once in `cli.main`, shown as one line."""

from __future__ import annotations


class OperatorError(Exception):
    """A failure the operator can fix (unreachable Redis, unwritable directory, bad file).

    The message is one line that says what went wrong and, where it helps, what to do; the
    CLI prints it without a traceback and exits 1.
    """
