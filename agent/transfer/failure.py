"""One line for "no peer could serve this", however many peers were asked.

Why: the fetch error used to append every peer's answer ("alpha: not in the store; beta:
...; ..."), a line that grew with the mesh and buried the point. The user needs the count and
the kinds of answers; each peer's own answer goes to the agent's log at debug level.
Pure functions: no I/O, tested on their own.
"""

from __future__ import annotations

from collections.abc import Mapping

from agent.errors import ErrorKind, kind_of
from agent.peer.connection import RemoteError

NOT_HOLDING = "not holding it"
UNREACHABLE = "unreachable"
REFUSED = "refused"
INVALID = "invalid answer"
_ORDER = (NOT_HOLDING, UNREACHABLE, REFUSED, INVALID)


def classify(exc: BaseException) -> str:
    """What a peer's failure to offer a resource means for the user, coarsely."""
    if isinstance(exc, RemoteError):
        if exc.remote_kind in (ErrorKind.NOT_FOUND, ErrorKind.INTEGRITY):
            return NOT_HOLDING
        return REFUSED
    kind = kind_of(exc)
    if kind in (ErrorKind.TIMEOUT, ErrorKind.GONE, ErrorKind.UNREACHABLE,
                ErrorKind.UNAVAILABLE):
        return UNREACHABLE
    if kind in (ErrorKind.REFUSED, ErrorKind.UNTRUSTED):
        return REFUSED
    return INVALID


MAX_REASON = 160  # characters of a peer's own answer quoted in the line


def _text(exc: BaseException) -> str:
    text = " ".join((str(exc) or type(exc).__name__).split())
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


def summary(resource: str, errors: Mapping[str, BaseException]) -> str:
    """``no holder could serve 'x': 3 peers tried (2 not holding it, 1 unreachable)``.

    The peers' own answers are quoted only while they stay short: one peer's answer, or the
    one answer every peer gave (e.g. "only public resources are shared before pairing",
    which tells the user what to do); never one per peer.
    """
    counts: dict[str, int] = {}
    for exc in errors.values():
        c = classify(exc)
        counts[c] = counts.get(c, 0) + 1
    n = len(errors)
    parts = ", ".join(f"{counts[c]} {c}" for c in _ORDER if c in counts)
    line = (f"no holder could serve {resource!r}: {n} peer{'s' if n != 1 else ''} tried"
            + (f" ({parts})" if parts else ""))
    texts = {_text(e) for e in errors.values()}
    if len(texts) == 1:
        line += f"; {'it' if n == 1 else 'each'} answered: {texts.pop()}"
    return line
