"""Every error fhir_adapters raises, in one place."""

from __future__ import annotations


class IntakeError(Exception):
    """A FHIR element that cannot be read; carries the element path so a sender can fix it."""

    def __init__(self, path: str, message: str, code: str = "invalid") -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message
        self.code = code  # OperationOutcome issue type


class InputError(Exception):
    """A whole input (file, request body) that cannot be read at all."""


def shown(value: object, limit: int = 60) -> str:
    """A value as an error message quotes it: a scalar's repr, cut short; never a whole array or
    object (the repr of a value nested 1,000 deep raises RecursionError, and a message must not
    echo megabytes back)."""
    if isinstance(value, list | dict):
        return "an array" if isinstance(value, list) else "an object"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
