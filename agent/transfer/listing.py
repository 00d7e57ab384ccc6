"""Signed listings: what a peer's ``list`` answer may claim, and how the receiver checks it.

A session proves who relays, not who wrote (docs/protocol.md): a peer's ``list`` used to be a
list of bare claims, so an unpaired device could list a forged "v999" under a paired
publisher's ID and ``shoal resources`` showed it. Now every entry carries the publisher's
(or its delegate's) signature over the compact **version record** (resource_id, version,
name, publisher, manifest hash, size, public; see Manifest.version_record): the chunk list
stays out, so an entry is ~600 bytes whatever the resource's size, and a mirror relays the
signature unchanged, as it relays the manifest's.

The receiver (:func:`verified_entries`) keeps an entry only if the signature verifies
against the publisher's ID (a delegate's only with a valid delegation), and a private entry
only from a paired peer; it rebuilds each entry from the verified fields alone, so nothing
unsigned a peer adds reaches the CLI. :func:`rank` puts entries from paired holders first:
an unpaired entry never outranks a paired one. Sizes are bounded on both sides
(:data:`MAX_LIST_ENTRIES`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from blake3 import blake3

from agent.log import kv
from agent.security.delegation import SignedDelegation
from agent.security.signing import (
    RECORD_DOMAIN,
    MalformedSignature,
    PublisherSignature,
    SignatureError,
    verify_digest,
)
from agent.store import ManifestError, validate_name
from agent.store import _schema as s
from agent.store.manifest import version_record
from agent.store.tree import MAX_FILES
from agent.transfer.catalog import publisher_label, resource_entry

if TYPE_CHECKING:
    from agent.store import ResourceRecord

log = logging.getLogger("shoal.transfer")

#: Entries one `list` answer carries and one receiver checks (~600 bytes each, ~1.5 MB).
MAX_LIST_ENTRIES = 2048
_MAX_SIZE = 2**53 - 1


def listing_entry(rec: ResourceRecord) -> dict[str, object] | None:
    """How a held resource is offered to a peer: the description plus the signature of its
    version record; None if it has none (held from before version records: not listed, a
    receiver could not check it)."""
    m = rec.manifest
    if m.signature is None or m.record_sig is None:
        return None
    entry = resource_entry(rec)
    entry["public"] = m.public  # the flag the publisher signed
    entry["seal"] = {"x25519": m.signature.x25519.hex(), "ed25519": m.signature.ed25519.hex(),
                     "vsig": m.record_sig.hex()}
    if m.delegation is not None:
        entry["dlg"] = m.delegation.to_obj()
    return entry


def _folder_files(e: dict[str, Any]) -> int | None:
    """A folder entry's signed file count (None: a single file)."""
    n = e.get("files")
    return None if n is None else s.check_int(n, "files", 1, MAX_FILES)


def _fields(e: Any) -> tuple[str, int, str, str, str, int, bool]:
    """The signed fields of an entry, strictly typed (ManifestError if not)."""
    if not isinstance(e, dict):
        raise ManifestError("entry is not an object")
    rid = s.check_hex(e.get("resource_id"), "resource_id", length=32)
    version = s.check_int(e.get("version"), "version", 1, _MAX_SIZE)
    name = validate_name(e.get("name"))
    publisher = s.check_hex(e.get("publisher"), "publisher", length=64)
    mhash = s.check_hex(e.get("manifest"), "manifest", length=64)
    size = s.check_int(e.get("size"), "size", 0, _MAX_SIZE)
    public = s.check_bool(e.get("public"), "public")
    return rid, version, name, publisher, mhash, size, public


def verify_entry(e: object, now: float | None = None) -> dict[str, object]:
    """One peer entry, checked: the signed fields, rebuilt (nothing else kept).

    Raises ManifestError (malformed) or a SignatureError (forged, someone else's key, a
    delegation that does not hold).
    """
    rid, version, name, publisher, mhash, size, public = _fields(e)
    assert isinstance(e, dict)
    seal = e.get("seal")
    if not isinstance(seal, dict) or set(seal) != {"x25519", "ed25519", "vsig"}:
        raise MalformedSignature("entry carries no version record signature")
    sig = PublisherSignature.from_obj({"x25519": seal["x25519"], "ed25519": seal["ed25519"],
                                       "sig": seal["vsig"]})
    signer = publisher
    dlg = None
    if e.get("dlg") is not None:
        dlg = SignedDelegation.from_obj(e["dlg"])
        dlg.check(publisher, rid, sig, now)
        signer = dlg.delegation.delegate
    files = _folder_files(e)
    digest = blake3(s.canonical_json(
        version_record(rid, version, name, publisher, mhash, size, public, files))).digest()
    verify_digest(signer, digest, sig, f"listed version {version} of {name!r}", RECORD_DOMAIN)
    return {"resource_id": rid, "name": name, "version": version, "size": size,
            "public": public, "manifest": mhash, "publisher": publisher,
            "publisher_short": publisher_label(publisher), "delegated": dlg is not None,
            "files": files}


def verified_entries(answer: object, holder: str, trusted: bool,
                     now: float | None = None) -> tuple[list[dict[str, object]], int]:
    """The entries of one peer's ``list`` answer that verify, marked with the holder and
    whether it is paired; and how many were dropped (forged, unsigned, malformed, or private
    from an unpaired peer; each logged at debug level, the count at warning)."""
    if not isinstance(answer, list):
        return [], 0
    good: list[dict[str, object]] = []
    dropped = max(0, len(answer) - MAX_LIST_ENTRIES)
    for raw in answer[:MAX_LIST_ENTRIES]:
        try:
            entry = verify_entry(raw, now)
        except (ManifestError, SignatureError) as err:
            dropped += 1
            log.debug("listed entry dropped", extra=kv(holder=holder, reason=err))
            continue
        if not entry["public"] and not trusted:
            dropped += 1
            log.debug("private entry from an unpaired peer dropped", extra=kv(holder=holder))
            continue
        good.append(entry | {"holder": holder, "holder_trusted": trusted})
    if dropped:
        log.warning("listed entries dropped", extra=kv(holder=holder, dropped=dropped))
    return good, dropped


def rank(entries: Iterable[dict[str, object]]) -> list[dict[str, object]]:
    """Entries from paired holders first (an unpaired entry never outranks a paired one),
    then by name, newest version first."""
    def key(e: dict[str, object]) -> tuple[bool, str, int, str]:
        v = e.get("version")
        return (not e.get("holder_trusted"), str(e.get("name")),
                -(v if isinstance(v, int) else 0), str(e.get("holder")))
    return sorted(entries, key=key)
