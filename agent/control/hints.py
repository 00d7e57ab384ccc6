"""What went wrong and what to do next: any failure as a :class:`Failure` for the user.

Why a module: a failure reaches the CLI as an agent reply (message + kind), a config error,
a usage error or an exception of this process; each becomes one kind, one sentence and one
next step, chosen by kind and refined per command (``fetch`` + not_found points at
``shoal resources``). :mod:`agent.control.render` prints it as a line or a JSON object.
"""

from __future__ import annotations

import re

from agent.config import ConfigError
from agent.control.errors import ControlError
from agent.control.render import Failure
from agent.errors import ShoalError

__all__ = ["HINTS", "CliError", "failure_of", "hint"]


class CliError(Exception):
    """A user-facing failure: printed as one line (or one JSON object), exit status 1."""

    def __init__(self, message: str, kind: str = "invalid", hint: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.hint = hint


#: The next step for a failure of a kind (agent.errors.ErrorKind values, plus "usage").
HINTS: dict[str, str] = {
    "not_found": "list what is there: shoal resources",
    "ambiguous": "use the ID shown by: shoal resources",
    "unreachable": "check which peers are reachable: shoal peers",
    "gone": "the peer went away; retry, or check: shoal peers",
    "timeout": "retry with a longer --timeout",
    "refused": "the other device said no; check its side (shoal trust list there)",
    "untrusted": "pair with the device first: shoal pair HOST",
    "integrity": "retry: the source that sent bad data is not used again",
    "quota": "free space in the store or raise [store] quota in the config",
    "conflict": "see the current state: shoal status",
    "unavailable": "is the agent running? start it with: shoal run",
    "internal": "this is a bug: see the agent's log and report it",
    "interrupted": "run the command again to continue",
}
#: Where a command knows a better next step than its kind's.
_COMMANDHINTS: dict[tuple[str, str], str] = {
    ("fetch", "not_found"): "see what peers offer: shoal resources (the agent logs each "
    "peer's answer at --log-level debug)",
    ("fetch", "unreachable"): "check the peers: shoal peers (the agent logs each source's "
    "answer at --log-level debug)",
    ("unpair", "not_found"): "list paired devices: shoal trust list",
    ("run", "unavailable"): "the agent's log above says more (--log-level debug)",
    ("authority", "not_found"): "list the whole map: shoal authority",
    ("pair", "not_found"): "list pairings in progress: shoal pair --pending",
    ("publish", "conflict"): "publish again once the files are no longer being written "
    "(or let --watch do it)",
    ("unwatch", "not_found"): "list the watched paths: shoal publish --watching",
    ("service", "unavailable"): "see the unit's state: shoal service status (and journalctl "
    "-u shoal -n 50)",
    ("service", "refused"): "run it as root (sudo)",
    ("dashboard", "unavailable"): "change [dashboard] in the config and restart the agent "
    "(every key: shoal config defaults)",
}


#: What a failure of a kind means, for an exception that carried no message of its own.
_KIND_TEXT: dict[str, str] = {
    "timeout": "timed out", "gone": "failed: the connection closed",
    "unreachable": "failed: the peer is unreachable", "refused": "was refused",
}
_BARE_NAME = re.compile(r"[A-Z][A-Za-z]*(Error|Exception|Exit)")


def _sentence(message: str, kind: str, command: str | None) -> str:
    """*message*, unless it is only an exception's class name ("TimeoutError"): then what
    happened, in words ("pair timed out (TimeoutError)")."""
    if message and not _BARE_NAME.fullmatch(message):
        return message
    what = _KIND_TEXT.get(kind, "failed")
    return f"{command or 'the command'} {what}" + (f" ({message})" if message else "")


def hint(command: str | None, kind: str) -> str | None:
    if kind in ("invalid", "usage"):
        return f"see: shoal {command} --help" if command else "see: shoal --help"
    return _COMMANDHINTS.get((command or "", kind)) or HINTS.get(kind)


def failure_of(exc: BaseException, command: str | None) -> Failure:
    """The user's view of *exc*: its kind, its one-line message and the next step."""
    if isinstance(exc, CliError):
        return Failure(exc.kind, str(exc), exc.hint or hint(command, exc.kind))
    if isinstance(exc, ControlError):
        kind = str(exc.error_kind)
    elif isinstance(exc, ConfigError):
        if exc.key == "--config":
            return Failure("invalid", str(exc), "check the file given to --config")
        if exc.key.startswith("-"):
            return Failure("usage", str(exc), hint(command, "usage"))
        return Failure("invalid", str(exc), "fix that key; every key with its default: "
                       "shoal config defaults")
    elif isinstance(exc, ShoalError):
        kind = str(exc.kind)
    elif isinstance(exc, ValueError):
        kind = "invalid"
    else:  # OSError: a file or socket of this machine
        kind = "unavailable" if not isinstance(exc, FileExistsError) else "conflict"
        return Failure(kind, str(exc) or type(exc).__name__,
                       None if kind == "conflict" else "check the path and its permissions")
    return Failure(kind, _sentence(str(exc) or type(exc).__name__, kind, command),
                   hint(command, kind))
