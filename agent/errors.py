"""The one root of Shoal's typed failures, and the kinds a user or a program can act on.

Why a kind: callers used to classify failures by matching their messages ("quota" in a
reason, a reason starting with "connection lost"), which breaks the day a sentence is
reworded. Every layer raises its own exception classes (the store's ``QuotaExceeded``, the
peer protocol's ``PeerGone``, the transfer's ``FetchFailed``), each a :class:`ShoalError`
with a fixed :class:`ErrorKind`; policy code branches on the class or the kind, the control
API sends the kind along with the one-line message, and the CLI picks its hint by kind.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar


class ErrorKind(StrEnum):
    """What went wrong, coarsely enough for a program to decide what to do next."""

    INVALID = "invalid"  # the request or input is malformed: fix it and retry
    NOT_FOUND = "not_found"  # no such resource, peer, pairing
    AMBIGUOUS = "ambiguous"  # a name matches several things: use an ID
    UNREACHABLE = "unreachable"  # no route or no answer from a peer
    GONE = "gone"  # the session closed underneath the operation
    TIMEOUT = "timeout"  # waited the allowed time
    REFUSED = "refused"  # the peer (or policy) said no
    UNTRUSTED = "untrusted"  # needs pairing, or a signature did not verify
    INTEGRITY = "integrity"  # bytes did not match their hash
    QUOTA = "quota"  # storing would exceed the configured quota
    CONFLICT = "conflict"  # contradicts what is already known (versions, pairings)
    UNAVAILABLE = "unavailable"  # a subsystem is disabled or not running
    INTERNAL = "internal"  # a bug: logged with a traceback


class ShoalError(Exception):
    """Base of every failure Shoal raises on purpose; ``str(e)`` is one line for a user."""

    kind: ClassVar[ErrorKind] = ErrorKind.INTERNAL


def kind_of(exc: BaseException) -> ErrorKind:
    """The kind of any exception: a ShoalError's own, else a best mapping of builtins."""
    if isinstance(exc, ShoalError):
        return exc.kind
    if isinstance(exc, TimeoutError):
        return ErrorKind.TIMEOUT
    if isinstance(exc, ConnectionError):
        return ErrorKind.GONE
    if isinstance(exc, (ValueError, TypeError)):
        return ErrorKind.INVALID
    if isinstance(exc, LookupError):
        return ErrorKind.NOT_FOUND
    if isinstance(exc, OSError):
        return ErrorKind.UNAVAILABLE
    return ErrorKind.INTERNAL
