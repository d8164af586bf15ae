"""The errors a command can be refused with: each names the field it is about."""

from __future__ import annotations


class CommandError(ValueError):
    """A command that cannot be applied; `field` names what is wrong with it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


class CommandConflict(CommandError):
    """A `command_id` already applied with a different command: refused, nothing stored."""


class FieldProblem(ValueError):
    """Raised by checks that span fields, to name the one at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
