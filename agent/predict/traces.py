"""Readers for access traces: Common/Combined Log Format, the NASA OPeNDAP log, plain CSV.

Why here and pure: the offline harness (``bench/prefetch.py``) and the tests read traces that
anyone may hand us, so every line is hostile. A reader takes *lines* (bytes, already cut at a
bounded length by :func:`bounded_lines`) and yields :class:`Request` records; it opens no
file itself. A line that does not parse, names a control character, or is over the length
bound is counted in :class:`ReadStats` and skipped, never raised: one bad line in a million
must not stop a run, and the count tells the user how much was dropped.

Formats (``FORMATS``):

- ``clf``: ``host ident user [dd/Mon/yyyy:HH:MM:SS +zzzz] "METHOD /path PROTO" status bytes``
  with optional Combined tail (referer, agent) that is ignored. Query strings are stripped
  (they are mostly cache busters on web servers) unless ``keep_query``.
- ``opendap``: fields separated by ``|&|``: time (``yyyy-mm-dd HH:MMAM``), user hash,
  product, version, two opaque fields, URL, status, bytes[, extra]. Query strings are kept:
  they name the data slice.
- ``csv``: ``time,client,resource,size``; time is seconds (float) or ISO 8601; an optional
  header line whose first field is ``time`` is skipped.

Only successful requests are kept (2xx and 304), as the evaluation protocol in
``shared/traces/README.md`` asks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import BinaryIO, NamedTuple

FORMATS = ("clf", "opendap", "csv")
MAX_LINE = 16 * 1024  # bytes; longer lines are counted as bad and skipped
MAX_NAME = 2048  # characters in a client or resource name
MAX_SIZE = 1 << 50  # bytes; a larger size field is not believable
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class Request(NamedTuple):
    """One successful request: when, by whom, for what, how many bytes."""

    t: float  # seconds since the epoch (UTC)
    client: str
    resource: str
    size: int


@dataclass
class ReadStats:
    """What a reader saw: kept lines, bad lines (malformed or hostile), filtered (non-2xx)."""

    kept: int = 0
    bad: int = 0
    filtered: int = 0
    bad_examples: list[int] = field(default_factory=list)  # line numbers of the first bad lines

    def note_bad(self, lineno: int) -> None:
        self.bad += 1
        if len(self.bad_examples) < 5:
            self.bad_examples.append(lineno)


class TraceError(ValueError):
    """The trace cannot be read at all (unknown format); single bad lines never raise."""


def bounded_lines(stream: BinaryIO, max_line: int = MAX_LINE) -> Iterator[bytes | None]:
    """Lines of *stream*, each at most *max_line* bytes; ``None`` stands for an overlong line.

    An overlong line is drained (read in bounded pieces) without being kept, so a hostile
    file of one 10 GB line costs *max_line* bytes of memory, not 10 GB.
    """
    while True:
        line = stream.readline(max_line + 1)
        if not line:
            return
        if len(line) > max_line and not line.endswith(b"\n"):
            while True:  # drain the rest of this line
                rest = stream.readline(max_line)
                if not rest or rest.endswith(b"\n"):
                    break
            yield None
            continue
        yield line


def _ok_status(status: int) -> bool:
    return 200 <= status < 300 or status == 304


def _clean(name: str) -> str | None:
    if not name or len(name) > MAX_NAME or _CONTROL.search(name):
        return None
    return name


def _size(text: str) -> int | None:
    if text == "-":
        return 0
    if not text.isdigit() or len(text) > 16:
        return None
    value = int(text)
    return value if value <= MAX_SIZE else None


_CLF = re.compile(
    r'^(\S{1,256}) \S{1,256} \S{1,256} \[(\d{2}/[A-Za-z]{3}/\d{4}:\d{2}:\d{2}:\d{2}) '
    r'([+-]\d{4})\] "([^"]{0,8192})" (\d{3}) (\d{1,16}|-)(?: |$)'
)


def _parse_clf(text: str, keep_query: bool) -> Request | int | None:
    """A :class:`Request`, or the HTTP status when filtered, or ``None`` when malformed."""
    m = _CLF.match(text)
    if m is None:
        return None
    host, stamp, zone, request, status_s, size_s = m.groups()
    parts = request.split(" ")
    if len(parts) not in (2, 3):
        return None
    path = parts[1]
    try:
        when = datetime.strptime(f"{stamp} {zone}", "%d/%b/%Y:%H:%M:%S %z")
    except ValueError:
        return None
    status = int(status_s)
    if not _ok_status(status):
        return status
    if not keep_query:
        path = path.split("?", 1)[0]
    client, resource, size = _clean(host), _clean(path), _size(size_s)
    if client is None or resource is None or size is None:
        return None
    return Request(when.timestamp(), client, resource, size)


def _parse_opendap(text: str, keep_query: bool) -> Request | int | None:
    fields = text.split("|&|")
    if len(fields) not in (9, 10):
        return None
    try:
        when = datetime.strptime(fields[0], "%Y-%m-%d %I:%M%p").replace(tzinfo=UTC)
    except ValueError:
        return None
    if not fields[7].isdigit() or len(fields[7]) != 3:
        return None
    status = int(fields[7])
    if not _ok_status(status):
        return status
    url = fields[6] if keep_query else fields[6].split("?", 1)[0]
    client, resource, size = _clean(fields[1]), _clean(url), _size(fields[8])
    if client is None or resource is None or size is None:
        return None
    return Request(when.timestamp(), client, resource, size)


def _parse_time(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        return value if value == value and abs(value) < 1e11 else None  # finite, sane
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _parse_csv(text: str, keep_query: bool) -> Request | int | None:
    fields = text.split(",")
    if len(fields) != 4:
        return None
    t = _parse_time(fields[0].strip())
    resource = fields[2].strip()
    if not keep_query:
        resource = resource.split("?", 1)[0]
    client, name, size = _clean(fields[1].strip()), _clean(resource), _size(fields[3].strip())
    if t is None or client is None or name is None or size is None:
        return None
    return Request(t, client, name, size)


_PARSERS = {"clf": _parse_clf, "opendap": _parse_opendap, "csv": _parse_csv}


def parse(
    lines: Iterable[bytes | None],
    fmt: str,
    stats: ReadStats | None = None,
    *,
    keep_query: bool | None = None,
    max_requests: int = 10_000_000,
) -> Iterator[Request]:
    """Yield the kept requests of *lines* in file order (see :func:`read` for time order).

    *keep_query* defaults to the format's convention (stripped for ``clf``, kept otherwise).
    At most *max_requests* are yielded: a bound on what a caller has to hold.
    """
    if fmt not in _PARSERS:
        raise TraceError(f"unknown trace format {fmt!r}: use one of {', '.join(FORMATS)}")
    parser = _PARSERS[fmt]
    keep = fmt != "clf" if keep_query is None else keep_query
    st = stats if stats is not None else ReadStats()
    for lineno, raw in enumerate(lines, 1):
        if st.kept >= max_requests:
            return
        if raw is None:
            st.note_bad(lineno)
            continue
        try:
            text = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            st.note_bad(lineno)
            continue
        if not text.strip():
            continue
        if fmt == "csv" and lineno == 1 and text.split(",", 1)[0].strip().lower() == "time":
            continue
        result = parser(text, keep)
        if result is None:
            st.note_bad(lineno)
        elif isinstance(result, int):
            st.filtered += 1
        else:
            st.kept += 1
            yield result


def read(
    lines: Iterable[bytes | None],
    fmt: str,
    stats: ReadStats | None = None,
    *,
    keep_query: bool | None = None,
    max_requests: int = 10_000_000,
) -> list[Request]:
    """All kept requests in time order (stable: equal times keep their file order)."""
    out = list(parse(lines, fmt, stats, keep_query=keep_query, max_requests=max_requests))
    out.sort(key=lambda r: r.t)
    return out
