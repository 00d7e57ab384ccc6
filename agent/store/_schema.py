"""Strict JSON decoding/encoding helpers shared by manifests, histories and records.

Why a separate module: everything the store reads (from disk or a peer) is untrusted, so
every parser must agree on the same rules: bounded size, UTF-8, no duplicate keys, no
NaN/Infinity, exact key sets, exact types (``True`` is not an int), one canonical encoding.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from agent.store.errors import ManifestError

MAX_SAFE_INT = 2**53 - 1  # largest int every JSON implementation reads exactly
_HEX_RE = re.compile(r"[0-9a-f]+")


def canonical_json(obj: Any) -> bytes:
    """The one byte encoding we hash and compare: sorted keys, no spaces, ASCII only."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def _reject_constant(token: str) -> Any:
    raise ManifestError(f"JSON constant {token} is not allowed")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ManifestError(f"duplicate JSON key {key[:40]!r}")
        out[key] = value
    return out


def loads_strict(data: object, *, max_bytes: int, what: str) -> Any:
    """Decode untrusted JSON *data*; any problem becomes a one-line ManifestError."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ManifestError(f"{what}: expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise ManifestError(f"{what}: {len(data)} bytes exceeds the {max_bytes} byte limit")
    try:
        text = bytes(data).decode("utf-8")
        return json.loads(
            text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant
        )
    except ManifestError as e:
        raise ManifestError(f"{what}: {e}") from None
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError, JSONDecodeError, int digits
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ManifestError(f"{what}: not valid JSON ({msg[:120]})") from None


def require_canonical(data: bytes | bytearray | memoryview, obj: Any, what: str) -> None:
    """Reject encodings other than ours so one object has exactly one hash."""
    if canonical_json(obj) != bytes(data):
        raise ManifestError(f"{what}: not in canonical form (sorted keys, no spaces, ASCII)")


def exact_keys(obj: Any, keys: frozenset[str], what: str) -> Mapping[str, Any]:
    """*obj* must be a JSON object with exactly *keys*."""
    if not isinstance(obj, dict):
        raise ManifestError(f"{what}: expected a JSON object, got {type(obj).__name__}")
    got = set(obj)
    if got != keys:
        missing, extra = sorted(keys - got), sorted(got - keys)
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected {', '.join(k[:40] for k in extra[:5])}")
        raise ManifestError(f"{what}: wrong keys ({'; '.join(parts)})")
    return obj


def check_int(value: object, field: str, lo: int, hi: int = MAX_SAFE_INT) -> int:
    """*value* must be a real int (not bool) in lo..hi."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ManifestError(f"{field} must be an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise ManifestError(f"{field} must be in {lo}..{hi}, got {value}")
    return value


def check_float(value: object, field: str, lo: float, hi: float) -> float:
    """*value* must be a finite float in lo..hi (ints are not accepted: one encoding)."""
    if not isinstance(value, float):
        raise ManifestError(f"{field} must be a float, got {type(value).__name__}")
    if not math.isfinite(value) or not lo <= value <= hi:
        raise ManifestError(f"{field} must be a finite number in {lo}..{hi}, got {value!r}")
    return value


def check_bool(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise ManifestError(f"{field} must be a boolean, got {type(value).__name__}")
    return value


def check_hex(value: object, field: str, *, length: int | None = None,
              min_len: int = 1, max_len: int = 128) -> str:
    """*value* must be lowercase hex, of exactly *length* chars or in min_len..max_len."""
    if not isinstance(value, str):
        raise ManifestError(f"{field} must be a hex string, got {type(value).__name__}")
    ok_len = len(value) == length if length is not None else min_len <= len(value) <= max_len
    if not ok_len or not value.isascii() or not _HEX_RE.fullmatch(value):
        want = f"{length}" if length is not None else f"{min_len}..{max_len}"
        raise ManifestError(f"{field} must be {want} lowercase hex chars, got {value[:80]!r}")
    return value


def check_list(value: object, field: str, max_len: int) -> list[Any]:
    if not isinstance(value, list):
        raise ManifestError(f"{field} must be a list, got {type(value).__name__}")
    if len(value) > max_len:
        raise ManifestError(f"{field} has {len(value)} items, limit is {max_len}")
    return value


def is_hex(value: str, length: int) -> bool:
    """Non-raising check used to vet ids before they ever become file names."""
    return len(value) == length and value.isascii() and _HEX_RE.fullmatch(value) is not None
