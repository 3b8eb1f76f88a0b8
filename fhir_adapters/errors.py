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
