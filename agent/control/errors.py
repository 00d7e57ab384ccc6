"""Errors of the control API: one sentence for the user, raised only at this layer.

Lower layers raise their own typed errors (:mod:`agent.errors`); the command table turns
them into a ``ControlError`` reply, so a message reaches the user as exactly one line.
"""

from __future__ import annotations

from agent.errors import ErrorKind, ShoalError


class ControlError(ShoalError):
    """A control command failed; the message is meant for the user as is.

    ``error_kind`` is the kind the agent reported (client side) or the command chose."""

    kind = ErrorKind.INVALID

    def __init__(self, message: str, error_kind: ErrorKind | str | None = None) -> None:
        super().__init__(message)
        try:
            self.error_kind = ErrorKind(error_kind) if error_kind else self.kind
        except ValueError:  # a newer agent's kind this client does not know
            self.error_kind = ErrorKind.INTERNAL
