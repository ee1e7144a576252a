"""Exceptions that carry a one-line, user-facing message.

The command line turns :class:`InputError` into exit code 2 and :class:`ExcludedError`
into exit code 3 (see ``docs/contracts.md``); anything else is an internal error (exit 1).
"""


class EmphysemaXAIError(Exception):
    """Base class of the project's own errors; ``str(error)`` is one line for the user."""


class InputError(EmphysemaXAIError, ValueError):
    """The input cannot be read or used: the message says what is wrong and what to do."""


class MissingPackage(InputError):
    """A Python package that an explicitly chosen feature needs is not installed (``package``
    names it; the message says what to install or choose instead)."""

    def __init__(self, package: str, message: str):
        super().__init__(message)
        self.package = package


class ExcludedError(EmphysemaXAIError):
    """Quality control excluded the case: analysis is impossible (message gives the reason)."""


def plain_numbers(values, digits: int = 4) -> str:
    """(0.7, 0, 1.5) as plain text for messages: never numpy reprs such as np.float64(0.7);
    ``digits=0`` prints integers."""
    if digits == 0:
        return "(" + ", ".join(str(int(v)) for v in values) + ")"
    return "(" + ", ".join(f"{round(float(v), digits):g}" for v in values) + ")"
