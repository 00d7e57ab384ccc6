"""Errors of the control API: one sentence for the user, raised only at this layer.

Lower layers raise their own typed errors (:mod:`agent.errors`); the command table turns
them into a ``ControlError`` reply, so a message reaches the user as exactly one line.
"""

from __future__ import annotations


class ControlError(Exception):
    """A control command failed; the message is meant for the user as is."""
