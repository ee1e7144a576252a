"""Exceptions that carry a one-line, user-facing message.

The command line turns :class:`InputError` into exit code 2 and :class:`ExcludedError`
into exit code 3 (see ``contracts.md``); anything else is an internal error (exit 1).
"""


class EmphysemaXAIError(Exception):
    """Base class of the project's own errors; ``str(error)`` is one line for the user."""


class InputError(EmphysemaXAIError, ValueError):
    """The input cannot be read or used: the message says what is wrong and what to do."""


class ExcludedError(EmphysemaXAIError):
    """Quality control excluded the case: analysis is impossible (message gives the reason)."""
