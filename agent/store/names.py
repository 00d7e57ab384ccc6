"""Resource and path-component names: the one rule for what a peer may call a file.

Why a module of its own: manifests (a resource's name) and folder trees (each component of
each path, agent/store/tree.py) apply the same rule, and neither may import the other.
"""

from __future__ import annotations

import unicodedata

from agent.store.errors import ManifestError

__all__ = ["ALLOWED_FORMAT_CHARS", "FORBIDDEN_NAME_CATEGORIES", "MAX_NAME_BYTES",
           "MAX_NAME_CHARS", "name_char_allowed", "validate_name"]

MAX_NAME_CHARS = 255
MAX_NAME_BYTES = 255  # UTF-8; what ext4/FAT accept as one path component


#: Unicode categories a name may not contain: controls, surrogates, format characters
#: (bidi overrides such as U+202E make "exe.txt" display as "txt.exe"; zero-width and BOM
#: characters make two names look the same) and line/paragraph separators.
FORBIDDEN_NAME_CATEGORIES = frozenset({"Cc", "Cs", "Cf", "Zl", "Zp"})
#: Format characters that scripts (Persian, Indic) and emoji sequences need; they cannot
#: reorder text.
ALLOWED_FORMAT_CHARS = frozenset({"\u200c", "\u200d"})  # ZWNJ, ZWJ


def name_char_allowed(ch: str) -> bool:
    """Whether *ch* may appear in a resource name (see FORBIDDEN_NAME_CATEGORIES)."""
    if ch in "/\\":
        return False
    return (ch in ALLOWED_FORMAT_CHARS
            or unicodedata.category(ch) not in FORBIDDEN_NAME_CATEGORIES)


def validate_name(name: object) -> str:
    """Return *name* if it is safe as a single file name on any peer, else ManifestError.

    Rules: 1..255 chars and <= 255 UTF-8 bytes, no "/", "\\", NUL, control, surrogate,
    format (bidi controls, zero-width: see FORBIDDEN_NAME_CATEGORIES) or line separator
    chars, and not "." or "..". This is what stops path traversal through names, and names
    that display as something they are not.
    """
    if not isinstance(name, str):
        raise ManifestError(f"name must be a string, got {type(name).__name__}")
    if not 1 <= len(name) <= MAX_NAME_CHARS:
        raise ManifestError(f"name must be 1..{MAX_NAME_CHARS} characters, got {len(name)}")
    if name in (".", ".."):
        raise ManifestError(f"name {name!r} is not allowed")
    for ch in name:
        if not name_char_allowed(ch):
            raise ManifestError(f"name contains forbidden character U+{ord(ch):04X}")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise ManifestError(f"name must be at most {MAX_NAME_BYTES} bytes as UTF-8")
    return name
