"""Pure, bounded parsing of wpa_supplicant control-interface replies and events.

Why a separate module: every byte on the control socket is treated as hostile (a peer's
device name and SSID travel inside events verbatim, and the socket path itself may belong to
something that is not wpa_supplicant). Keeping the parsing free of I/O lets the tests feed it
any bytes, and keeps :mod:`radio.wifi_direct` a thin asyncio adapter.

Facts this copies from wpa_supplicant (ctrl_iface.c, p2p_supplicant.c, README-P2P):

* A reply is one datagram: ``OK\\n``, ``FAIL\\n`` (or ``FAIL-<REASON>\\n``), ``UNKNOWN
  COMMAND\\n``, ``PONG\\n``, or command output (``P2P_PEER``: the address on the first line,
  then ``key=value`` lines; ``STATUS``: ``key=value`` lines).
* ``P2P_PEER FIRST`` / ``P2P_PEER NEXT-<addr>`` walk the peer table; the end is ``FAIL``.
* Events reach ATTACHed sockets only, as ``<level>NAME params``; SSIDs are printed with
  printf-style escapes (``\\"``, ``\\\\``, ``\\xNN``...), device names raw between single
  quotes (control bytes already replaced with ``_`` by wpa_supplicant, but bytes >= 0x80 pass).

Nothing here raises on hostile input except :class:`WpaProtocolError`; callers log its message,
which never holds a raw control character (see :func:`safe_text`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from radio.base import RadioError

__all__ = [
    "MAX_DATAGRAM",
    "ControlEvent",
    "DeviceFound",
    "DeviceLost",
    "GoNegotiationFailure",
    "GroupFormationFailure",
    "GroupRemoved",
    "GroupStarted",
    "OtherEvent",
    "P2pPeer",
    "SupplicantTerminating",
    "WpaCommandError",
    "WpaProtocolError",
    "check_ifname",
    "check_mac",
    "parse_event",
    "parse_kv_lines",
    "parse_params",
    "parse_peer",
    "reply_text",
    "safe_text",
]

# wpa_supplicant builds replies in a 4096-byte buffer; leave room for builds that raise it, and
# refuse anything larger outright (a datagram of more is not from a sane supplicant).
MAX_DATAGRAM = 8192
MAX_LINES = 64
MAX_PARAMS = 32
MAX_NAME = 64  # event names ("P2P-GROUP-FORMATION-FAILURE" is 27)
MAX_SSID = 32  # IEEE 802.11
_MAC_RE = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")
_IFNAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}")  # IFNAMSIZ - 1
_KEY_RE = re.compile(r"[A-Za-z0-9_]{1,32}")
_EVENT_RE = re.compile(r"<([0-9])>([A-Z0-9][A-Z0-9_-]{0,63})(?: (.*))?", re.DOTALL)
_PARAM_KEY_RE = re.compile(r"([A-Za-z0-9_]{1,32})=")
_CLOSE_QUOTE_RE = re.compile(r"'(?= [A-Za-z0-9_]{1,32}=|$)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_PASSPHRASE_RE = re.compile(r"[\x20-\x7e]{8,63}")
_PSK_RE = re.compile(r"[0-9a-f]{64}")
_GROUP_REMOVED_REASONS = frozenset({
    "FORMATION_FAILED", "REQUESTED", "IDLE", "UNAVAILABLE", "GO_ENDING_SESSION",
    "PSK_FAILURE", "FREQ_CONFLICT", "UNKNOWN"})


class WpaProtocolError(RadioError):
    """A reply or event does not have the form wpa_supplicant gives it (or is too large)."""


class WpaCommandError(RadioError):
    """wpa_supplicant answered ``FAIL`` (or ``FAIL-<REASON>``) to a command."""

    def __init__(self, command: str, reply: str) -> None:
        super().__init__(f"wpa_supplicant refused {safe_text(command.split(' ')[0])}: "
                         f"{safe_text(reply)}")
        self.command = command
        self.reply = reply


def safe_text(value: str, limit: int = 120) -> str:
    """*value* fit for a log line or terminal: control characters escaped, length bounded."""
    out = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", value[:limit])
    return out + ("…" if len(value) > limit else "")


def check_mac(value: str) -> str:
    """Normalise a MAC address (lower case) or raise :class:`WpaProtocolError`."""
    mac = value.lower()
    if not _MAC_RE.fullmatch(mac):
        raise WpaProtocolError(f"not a MAC address: {safe_text(value, 40)!r}")
    return mac


def check_ifname(value: str) -> str:
    """A network interface name as the kernel allows it, safe as an ``ip`` argument."""
    if not _IFNAME_RE.fullmatch(value):
        raise WpaProtocolError(f"not an interface name: {safe_text(value, 40)!r}")
    return value


def reply_text(data: bytes) -> str:
    """Decode one reply datagram: bounded, UTF-8 (undecodable bytes escaped), no NULs."""
    if len(data) > MAX_DATAGRAM:
        raise WpaProtocolError(f"reply of {len(data)} bytes exceeds {MAX_DATAGRAM}")
    text = data.decode("utf-8", "backslashreplace")
    if "\x00" in text:
        raise WpaProtocolError("reply holds a NUL byte")
    return text


def parse_kv_lines(text: str) -> dict[str, str]:
    """``key=value`` lines (STATUS, P2P_PEER); at most :data:`MAX_LINES`; odd lines dropped."""
    lines = text.splitlines()
    if len(lines) > MAX_LINES:
        raise WpaProtocolError(f"reply has {len(lines)} lines (limit {MAX_LINES})")
    out: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.partition("=")
        if sep and _KEY_RE.fullmatch(key) and not _CONTROL.search(value):
            out[key] = value
    return out


@dataclass(frozen=True, slots=True)
class P2pPeer:
    """One entry of the supplicant's P2P peer table (``P2P_PEER`` reply)."""

    address: str  # P2P device address
    device_name: str
    pri_dev_type: str
    config_methods: int
    level: int | None


def _int(value: str | None, base: int = 10) -> int | None:
    if value is None or len(value) > 12:
        return None
    try:
        return int(value, base)
    except ValueError:
        return None


def parse_peer(text: str) -> P2pPeer | None:
    """One ``P2P_PEER`` reply; None for ``FAIL`` (the end of a FIRST/NEXT walk)."""
    if text.strip() == "FAIL":
        return None
    first, _, rest = text.partition("\n")
    address = check_mac(first.strip())
    fields = parse_kv_lines(rest)
    return P2pPeer(
        address=address,
        device_name=fields.get("device_name", "")[:MAX_NAME],
        pri_dev_type=fields.get("pri_dev_type", "")[:32],
        config_methods=_int(fields.get("config_methods", "").removeprefix("0x"), 16) or 0,
        level=_int(fields.get("level")),
    )


# ----------------------------------------------------------------------------------- events
@dataclass(frozen=True, slots=True)
class DeviceFound:
    """``P2P-DEVICE-FOUND``: a peer answered our search (or searched while we listened)."""

    address: str  # P2P device address
    name: str
    pri_dev_type: str


@dataclass(frozen=True, slots=True)
class DeviceLost:
    """``P2P-DEVICE-LOST``: the peer left the supplicant's table."""

    address: str


@dataclass(frozen=True, slots=True)
class GroupStarted:
    """``P2P-GROUP-STARTED``: a group interface exists; we are its GO or a client.

    ``passphrase`` is known on the GO (and sometimes on a client), ``psk`` (64 hex) on a
    client. Never log either: :meth:`__repr__` hides them.
    """

    ifname: str
    role: Literal["GO", "client"]
    ssid: bytes
    freq: int
    go_dev_addr: str
    persistent: bool
    passphrase: str | None = None
    psk: str | None = None

    def __repr__(self) -> str:
        secret = "set" if self.passphrase or self.psk else "none"
        return (f"GroupStarted(ifname={self.ifname!r}, role={self.role!r}, ssid={self.ssid!r}, "
                f"freq={self.freq}, go_dev_addr={self.go_dev_addr!r}, "
                f"persistent={self.persistent}, secret={secret})")


@dataclass(frozen=True, slots=True)
class GroupRemoved:
    """``P2P-GROUP-REMOVED``: the group interface is gone (``reason`` says why)."""

    ifname: str
    role: Literal["GO", "client"]
    reason: str


@dataclass(frozen=True, slots=True)
class GoNegotiationFailure:
    """``P2P-GO-NEG-FAILURE``: GO negotiation failed (P2P status code, -1 when timed out)."""

    status: int


@dataclass(frozen=True, slots=True)
class GroupFormationFailure:
    """``P2P-GROUP-FORMATION-FAILURE``: provisioning failed or timed out."""

    reason: str


@dataclass(frozen=True, slots=True)
class SupplicantTerminating:
    """``CTRL-EVENT-TERMINATING``: wpa_supplicant is exiting; its sockets go with it."""


@dataclass(frozen=True, slots=True)
class OtherEvent:
    """An event this client does not act on (name only, sanitised)."""

    name: str


ControlEvent = (DeviceFound | DeviceLost | GroupStarted | GroupRemoved | GoNegotiationFailure
                | GroupFormationFailure | SupplicantTerminating | OtherEvent)


def parse_params(text: str) -> tuple[list[str], dict[str, str]]:
    """Split event parameters into positional words and ``key=value`` pairs.

    Values may be double-quoted with printf escapes (kept escaped here; see
    :func:`unescape`), or single-quoted raw (a device name: the closing quote is the one
    followed by the end or by `` key=``). At most :data:`MAX_PARAMS` items.
    """
    words: list[str] = []
    pairs: dict[str, str] = {}
    i, n, items = 0, len(text), 0
    while i < n:
        if text[i] == " ":
            i += 1
            continue
        items += 1
        if items > MAX_PARAMS:
            raise WpaProtocolError(f"event has more than {MAX_PARAMS} parameters")
        m = _PARAM_KEY_RE.match(text, i)
        if m is None:
            end = text.find(" ", i)
            end = n if end < 0 else end
            words.append(text[i:end])
            i = end
            continue
        key, j = m.group(1), m.end()
        if j < n and text[j] == '"':
            k = j + 1
            while k < n and text[k] != '"':
                k += 2 if text[k] == "\\" else 1
            if k >= n:
                raise WpaProtocolError(f"unterminated quoted value for {key}")
            pairs[key] = text[j + 1:k]
            i = k + 1
        elif j < n and text[j] == "'":
            close = _CLOSE_QUOTE_RE.search(text, j + 1)
            if close is None:
                raise WpaProtocolError(f"unterminated quoted value for {key}")
            pairs[key] = text[j + 1:close.start()]
            i = close.end()
        else:
            end = text.find(" ", j)
            end = n if end < 0 else end
            pairs[key] = text[j:end]
            i = end
    return words, pairs


_ESCAPES = {"\\": b"\\", '"': b'"', "n": b"\n", "r": b"\r", "t": b"\t", "e": b"\x1b"}


def unescape(value: str) -> bytes:
    """Undo wpa_supplicant's printf_encode (SSIDs): ``\\xNN`` and C escapes to bytes."""
    out = bytearray()
    i = 0
    while i < len(value):
        c = value[i]
        if c != "\\":
            out += c.encode("utf-8", "backslashreplace")
            i += 1
            continue
        nxt = value[i + 1:i + 2]
        if nxt in _ESCAPES:
            out += _ESCAPES[nxt]
            i += 2
        elif nxt == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", value[i + 2:i + 4]):
            out.append(int(value[i + 2:i + 4], 16))
            i += 4
        else:
            raise WpaProtocolError("bad escape in a quoted value")
    return bytes(out)


def _role(word: str) -> Literal["GO", "client"]:
    if word == "GO":
        return "GO"
    if word == "client":
        return "client"
    raise WpaProtocolError(f"unknown group role {safe_text(word, 20)!r}")


def _group_started(words: list[str], pairs: dict[str, str]) -> GroupStarted:
    if len(words) < 2:
        raise WpaProtocolError("P2P-GROUP-STARTED without interface and role")
    ssid = unescape(pairs.get("ssid", ""))
    if not 1 <= len(ssid) <= MAX_SSID:
        raise WpaProtocolError("P2P-GROUP-STARTED with a bad SSID")
    freq = _int(pairs.get("freq"))
    if freq is None or not 0 < freq < 100_000:
        raise WpaProtocolError("P2P-GROUP-STARTED with a bad freq")
    passphrase = pairs.get("passphrase")
    if passphrase is not None:
        raw = unescape(passphrase).decode("ascii", "replace")
        if not _PASSPHRASE_RE.fullmatch(raw):
            raise WpaProtocolError("P2P-GROUP-STARTED with a bad passphrase")
        passphrase = raw
    psk = pairs.get("psk")
    if psk is not None and not _PSK_RE.fullmatch(psk):
        raise WpaProtocolError("P2P-GROUP-STARTED with a bad psk")
    return GroupStarted(
        ifname=check_ifname(words[0]), role=_role(words[1]), ssid=ssid, freq=freq,
        go_dev_addr=check_mac(pairs.get("go_dev_addr", "")),
        persistent="[PERSISTENT]" in words[2:], passphrase=passphrase, psk=psk)


def parse_event(data: bytes) -> tuple[int, ControlEvent]:
    """``(level, event)`` from one datagram of an ATTACHed socket.

    Raises :class:`WpaProtocolError` for anything that is not a well-formed event; the
    message is safe to log.
    """
    text = reply_text(data).rstrip("\n")
    m = _EVENT_RE.fullmatch(text)
    if m is None:
        raise WpaProtocolError(f"not an event: {safe_text(text, 60)!r}")
    level, name, rest = int(m.group(1)), m.group(2), m.group(3) or ""
    if _CONTROL.search(rest):
        raise WpaProtocolError(f"{name} holds control characters")
    event: ControlEvent
    if name == "P2P-DEVICE-FOUND":
        words, pairs = parse_params(rest)
        if not words:
            raise WpaProtocolError("P2P-DEVICE-FOUND without an address")
        address = check_mac(pairs.get("p2p_dev_addr", words[0]))
        event = DeviceFound(address, pairs.get("name", "")[:MAX_NAME],
                            pairs.get("pri_dev_type", "")[:32])
    elif name == "P2P-DEVICE-LOST":
        _, pairs = parse_params(rest)
        event = DeviceLost(check_mac(pairs.get("p2p_dev_addr", "")))
    elif name == "P2P-GROUP-STARTED":
        event = _group_started(*parse_params(rest))
    elif name == "P2P-GROUP-REMOVED":
        words, pairs = parse_params(rest)
        if len(words) < 2:
            raise WpaProtocolError("P2P-GROUP-REMOVED without interface and role")
        reason = pairs.get("reason", "UNKNOWN")
        event = GroupRemoved(check_ifname(words[0]), _role(words[1]),
                             reason if reason in _GROUP_REMOVED_REASONS else "UNKNOWN")
    elif name == "P2P-GO-NEG-FAILURE":
        _, pairs = parse_params(rest)
        status = _int(pairs.get("status"))
        event = GoNegotiationFailure(-1 if status is None else status)
    elif name == "P2P-GROUP-FORMATION-FAILURE":
        _, pairs = parse_params(rest)
        event = GroupFormationFailure(safe_text(pairs.get("reason", "unspecified"), 40))
    elif name == "CTRL-EVENT-TERMINATING":
        event = SupplicantTerminating()
    else:
        event = OtherEvent(name)
    return level, event
