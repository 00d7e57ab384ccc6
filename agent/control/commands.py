"""The control commands: a table from command name to a handler over the agent's services.

Why here and not in the node: the node composes subsystems and owns their lifetimes; what a
command *does* (validate its arguments, call a service, shape the answer for the CLI) is the
control API's job. Each handler receives the services it needs through
:class:`CommandContext`, so commands are tested with small fakes and adding one touches this
table, not the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from agent import __version__
from agent.control import folders
from agent.control.errors import ControlError
from agent.control.server import Command, Reply
from agent.folders.exports import ExportLog
from agent.peer.connections import SelfConnection
from agent.peer.hello import DEFAULT_PORT, parse_address
from agent.security.delegation import DEFAULT_DAYS, MAX_DAYS, SignedDelegation, issue
from agent.security.identity import format_device_id, parse_device_id
from agent.security.pairing import format_code, normalize_code
from agent.security.signing import SignatureError
from agent.security.trust import TrustError
from agent.transfer.catalog import lookup, publisher_label, resource_entry
from agent.transfer.listing import rank, verified_entries
from agent.transfer.service import FetchService
from agent.usage.modelcore import is_reserved

if TYPE_CHECKING:
    from agent.config import Config
    from agent.peer.connection import PeerConnection
    from agent.peer.connections import Connections
    from agent.peer.pairing import PairingService
    from agent.peer.table import PeerTable
    from agent.security.identity import Identity
    from agent.security.trust import TrustedDevice, TrustStore
    from agent.store import ContentStore, Manifest, ResourceRecord

Args = dict[str, object]
MAX_WAIT = 3600.0  # seconds any command may be asked to wait
LIST_TIMEOUT = 3.0


class BleControl(Protocol):
    """What the commands need of the BLE link (present only with [ble] enabled)."""

    def status(self) -> dict[str, object]: ...

    def find_connection(self, target: str) -> PeerConnection: ...


class UnpairControl(Protocol):
    """Unpairing on both sides (agent/peer/unpair.py)."""

    async def unpair(self, device: TrustedDevice) -> dict[str, object]: ...


class AuthorityControl(Protocol):
    def describe(self, resource: str | None = None) -> dict[str, object]: ...


class UsageControl(Protocol):
    def describe(self) -> dict[str, object]: ...


class ModelControl(Protocol):
    def describe(self) -> dict[str, object]: ...


class MirrorControl(Protocol):
    async def describe_prefetch(self) -> dict[str, object]: ...

    async def describe_mirrors(self) -> dict[str, object]: ...
class DhtControl(Protocol):
    """The DHT (agent/dht/service.py): its state, and a lookup on demand."""

    def stats(self) -> dict[str, object]: ...

    async def find(self, resource: str, *, network: bool = False) -> dict[str, object]: ...


class FollowControl(Protocol):
    """Followed copies, announcements and withdrawals (agent/transfer/follow/service.py)."""

    async def follow(self, resource: str, to: str | None) -> dict[str, object]: ...

    async def unfollow(self, resource: str) -> dict[str, object]: ...

    def list(self) -> list[dict[str, object]]: ...

    async def unpublish(self, resource: str) -> dict[str, object]: ...

    def published(self, rec: ResourceRecord) -> None: ...


class VersionControl(Protocol):
    """A resource's versions and fetching an older one (agent/transfer/versions.py)."""

    async def versions(self, resource: str) -> dict[str, object]: ...

    async def fetch_version(self, resource: str, version: int,
                            export: _StreamExport | None) -> dict[str, object]: ...


class RelayControl(Protocol):
    """Multi-hop circuits (agent/relay/service.py)."""

    def stats(self) -> dict[str, object]: ...

    async def open(self, target: bytes, via: bytes | None = None) -> PeerConnection: ...


class DashboardControl(Protocol):
    """The local web dashboard (agent/dashboard): where it serves, with the token."""

    def describe(self) -> dict[str, object]: ...


class _StreamExport:
    """``fetch --stream``: the fetched resource goes to the CLI as data events."""

    def __init__(self, reply: Reply) -> None:
        self._reply = reply

    async def start(self, manifest: Manifest) -> None:
        folders.refuse_folder_stream(manifest)
        await self._reply.event(stage="export", name=manifest.name, size=manifest.size)

    async def data(self, chunk: bytes) -> None:
        await self._reply.data(chunk)


@dataclass
class CommandContext:
    """The services the commands act on; built by the node."""

    cfg: Config
    identity: Identity
    started: float  # monotonic
    store: ContentStore
    trust: TrustStore
    peers: PeerTable
    connections: Connections
    pairing: PairingService
    fetcher: FetchService
    catalog_changed: Callable[[], None]
    stop: Callable[[], None]
    unpairing: UnpairControl
    ble: BleControl | None = None
    authority: AuthorityControl | None = None
    usage: UsageControl | None = None
    models: ModelControl | None = None
    mirrors: MirrorControl | None = None
    dht: DhtControl | None = None
    watch: folders.WatchControl | None = None
    exports: ExportLog | None = None
    follow: FollowControl | None = None
    versions: VersionControl | None = None
    relay: RelayControl | None = None
    dashboard: DashboardControl | None = None


def _unseen_paired(d: TrustedDevice) -> dict[str, object]:
    """A ``peers`` row for a paired device the peer table has not seen (yet)."""
    return {"peer_id": d.device_id, "display_id": d.display_id, "short_id": d.display_id[:9],
            "name": d.name, "addresses": [], "sources": [], "connected": False,
            "transport": None, "reachable": False, "trusted": True, "unpaired_by_peer": False,
            "last_seen_s": None, "last_seen_at": None, "rtt_ms": None, "rssi": None}


def _seconds(value: object, default: float, what: str) -> float:
    """A duration from the CLI: finite, positive and bounded (never inf/nan/negative)."""
    if value is None or value == "":
        return default
    try:
        if isinstance(value, bool):  # JSON true is not a duration (float(True) == 1.0)
            raise TypeError
        s = float(value)  # type: ignore[arg-type]  # validated just below
    except (TypeError, ValueError):
        raise ControlError(f"{what} must be a number of seconds, not {value!r}") from None
    if not math.isfinite(s) or not 0 < s <= MAX_WAIT:
        raise ControlError(f"{what} must be between 0 and {MAX_WAIT:.0f} seconds, not {value!r}")
    return s


def _days(value: object) -> float:
    """A delegation's lifetime in days from the CLI: finite, > 0, at most MAX_DAYS."""
    if value is None or value == "":
        return float(DEFAULT_DAYS)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ControlError(f"days must be a number, not {value!r}")
    try:
        days = float(value)
    except ValueError:
        raise ControlError(f"days must be a number, not {value!r}") from None
    if not math.isfinite(days) or not 0 < days <= MAX_DAYS:
        raise ControlError(f"days must be more than 0 and at most {MAX_DAYS}")
    return days


def _device_id(c: CommandContext, text: object) -> bytes:
    """A paired device by name or ID; else any device by its hex ID, or by its display ID
    when the peer table has seen it (a relay may reach an unpaired device, which then serves
    this one what it serves strangers)."""
    t = str(text or "").strip()
    try:
        return bytes.fromhex(c.trust.resolve(t).device_id)
    except TrustError:
        pass
    if len(t) == 64:
        with contextlib.suppress(ValueError):
            return bytes.fromhex(t)
    try:
        prefix = parse_device_id(t)
    except ValueError:
        prefix = b""
    seen = [p.peer_id for p in c.peers.all() if prefix and p.peer_id.startswith(prefix)]
    if len(seen) != 1:
        raise ControlError(f"no device matches {t!r}: give a paired device's name, or the "
                           "device's full ID (`shoal id --json` on it: hex)")
    return seen[0]


def _held_resource(c: CommandContext, resource: object) -> ResourceRecord:
    """A resource held here by name, ID, ID prefix or manifest hash (ControlError if not)."""
    rec = lookup(c.store, str(resource or ""), c.fetcher.trusted_publisher)
    if rec is None:
        raise ControlError(f"no resource {str(resource)[:80]!r} is held here (see: shoal "
                           "resources --local; fetch it first to update it)")
    return rec


def _sequence(value: object) -> int:
    """``after`` from the CLI: a pairing sequence number (a non-negative whole number)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
        raise ControlError(f"after must be a pairing sequence number, not {value!r}")
    return value


def pairing_addresses(listen: str, port: int | None,
                      endpoints: list[tuple[str, int]]) -> list[str]:
    """``HOST:PORT`` strings another device can pair with: the listen address itself, or
    (listening on every interface) every non-loopback address, loopback only when that
    is all there is. Empty when the LAN listener is off."""
    if port is None:
        return []
    try:
        family = ipaddress.ip_address(listen).version
    except ValueError:
        family = 4
    if listen not in ("0.0.0.0", "::"):
        hosts = [listen]
    else:
        hosts = [a for a, _ in endpoints if ipaddress.ip_address(a).version == family]
        outside = [a for a in hosts if not ipaddress.ip_address(a).is_loopback]
        hosts = outside or hosts or ["127.0.0.1" if family == 4 else "::1"]
    return [f"[{h}]:{port}" if ":" in h else f"{h}:{port}" for h in dict.fromkeys(hosts)]


class Commands:
    """Every control command; :meth:`table` is what the control server serves."""

    def __init__(self, ctx: CommandContext) -> None:
        self.ctx = ctx

    def table(self) -> dict[str, Command]:
        return {
            "id": self.id, "status": self.status, "peers": self.peers,
            "publish": self.publish, "resources": self.resources, "fetch": self.fetch,
            "pair_start": self.pair_start, "pair_open": self.pair_open,
            "pair_close": self.pair_close, "pair_decline": self.pair_decline,
            "pair_confirm": self.pair_confirm, "pair_pending": self.pair_pending,
            "pair_wait": self.pair_wait, "unpair": self.unpair, "trust_list": self.trust_list,
            "connect": self.connect, "stop": self.stop, "authority": self.authority,
            "usage": self.usage, "model": self.model,
            "prefetch": self.prefetch, "mirrors": self.mirrors,
            "delegate": self.delegate, "delegation_accept": self.delegation_accept,
            "relay": self.relay,
            "watching": lambda a, r: folders.watching(self.ctx, a),
            "unwatch": lambda a, r: folders.unwatch(self.ctx, a),
            "versions": self.versions, "follow": self.follow, "unfollow": self.unfollow,
            "follow_list": self.follow_list, "unpublish": self.unpublish,
            "dht": self.dht, "dht-find": self.dht_find, "dashboard": self.dashboard,
        }

    async def id(self, args: Args, reply: Reply) -> object:
        c = self.ctx
        return {"display_id": c.identity.display_id, "hex": c.identity.hex_id,
                "name": c.cfg.node.name}

    async def status(self, args: Args, reply: Reply) -> object:
        c = self.ctx
        used, quota = c.store.usage()
        return {
            "name": c.cfg.node.name, "display_id": c.identity.display_id,
            "version": __version__, "uptime_s": round(time.monotonic() - c.started, 1),
            "lan_port": c.connections.lan_port, "mesh": c.cfg.node.mesh,
            "data_dir": str(c.cfg.node.data_dir),
            "peers": len(c.peers.all()), "connected": c.connections.count(),
            "paired": len(c.trust.list()), "resources": len(c.store.resources()),
            "store_used": used, "store_quota": quota,
            "pairing_window_open": c.pairing.window_open(),
            "ble": c.ble.status() if c.ble is not None else None,
            "relay": c.relay.stats() if c.relay is not None else None,
        }

    async def peers(self, args: Args, reply: Reply) -> object:
        """Every device in the peer table, plus paired devices not seen since the agent
        started (offline, ``last_seen_s`` None). ``last_seen_s``: seconds since last seen;
        ``connected``: a session is up (else offline); ``unpaired_by_peer``: it withdrew
        its trust."""
        c = self.ctx
        rows = [c.peers.summary(p) for p in c.peers.all()]
        listed = {r["peer_id"] for r in rows}
        for d in c.trust.list():
            if d.device_id not in listed:
                rows.append(_unseen_paired(d))
        return rows

    async def publish(self, args: Args, reply: Reply) -> object:
        c = self.ctx
        path = Path(str(args.get("path", "")))
        if not path.is_absolute():
            raise ControlError("publish needs an absolute path")
        if path.is_dir() and not path.is_symlink():
            update = _held_resource(c, args.get("update")) if args.get("update") else None
            name = args.get("name")
            entry = await folders.publish_folder(
                c, path, str(name) if name else None, bool(args.get("public", False)),
                update.resource_id if update else None)
            if c.follow is not None:  # followers fetch it now, as for a file
                c.follow.published(c.store.find(str(entry["resource_id"])))
            if args.get("watch"):
                folders.watch_after_publish(c, path, entry)
            return entry
        if not path.is_file():
            raise ControlError(f"{path}: not a readable regular file")
        if not os.access(path, os.R_OK):
            raise ControlError(f"{path}: the agent (uid {os.getuid()}) cannot read it")
        update = _held_resource(c, args.get("update")) if args.get("update") else None
        name = args.get("name") or (None if update else path.name)
        public = bool(args.get("public", False))
        m = await asyncio.to_thread(c.store.publish_file, path,
                                    name=str(name) if name else None, public=public,
                                    signer=c.identity,
                                    update=update.resource_id if update else None)
        c.catalog_changed()
        rec = c.store.find(m.resource_id)
        if c.follow is not None:
            c.follow.published(rec)  # followers fetch it now, not at their next check
        entry = resource_entry(rec)
        if args.get("watch"):
            folders.watch_after_publish(c, path, entry)
        return entry

    async def resources(self, args: Args, reply: Reply) -> object:
        """Resources held here and, unless local_only, what reachable peers offer us."""
        c = self.ctx
        shown = bool(args.get("all"))  # the agent's own (models) only when asked
        local = [resource_entry(r) for r in c.store.resources()
                 if shown or not is_reserved(r.name)]
        remote: list[dict[str, object]] = []
        if not args.get("local_only"):
            conns = c.connections.live_connections()
            answers = await asyncio.gather(
                *(x.request("list", {}, timeout=LIST_TIMEOUT) for x in conns),
                return_exceptions=True)
            for conn, ans in zip(conns, answers, strict=True):
                # each entry's signed version record is checked; private ones count only
                # from paired peers, and paired holders rank first (agent/transfer/listing)
                entries, _dropped = verified_entries(ans, conn.name,
                                                     c.trust.is_trusted(conn.peer_id))
                remote.extend(e for e in entries if shown or not is_reserved(str(e["name"])))
        return {"local": local, "remote": rank(remote)}

    async def fetch(self, args: Args, reply: Reply) -> object:
        c = self.ctx
        resource = str(args.get("resource", ""))
        if not resource:
            raise ControlError("fetch needs a resource name or ID")

        async def progress(p: dict[str, object]) -> None:
            await reply.event(**p)

        source = args.get("source")
        version = args.get("version")
        to = args.get("to")
        if version is not None:
            if (isinstance(version, bool) or not isinstance(version, int)
                    or not 1 <= version < 2**53):
                raise ControlError(f"version must be a whole number >= 1, not {version!r}")
            if source:
                raise ControlError("--version asks every reachable holder; drop --from")
            if to:
                raise ControlError("--version writes one file; drop --to (or fetch the "
                                   "newest version into the folder)")
            return await self._versions().fetch_version(
                resource, version, _StreamExport(reply) if args.get("stream") else None)
        result = await c.fetcher.fetch(
            resource, source=str(source) if source else None, progress=progress,
            export=_StreamExport(reply) if args.get("stream") and not to else None)
        if to:  # a folder, written (or updated in place) by the agent: fetch --to DIR
            result |= await folders.write_folder(c, result, args)
        return result

    async def delegate(self, args: Args, reply: Reply) -> object:
        """Let a paired device make new versions of one of our resources for some days;
        hand it the delegation over its session if it is connected (else the CLI prints it
        for `shoal delegate --accept`)."""
        c = self.ctx
        rec = _held_resource(c, args.get("resource"))
        if rec.publisher != c.identity.hex_id:
            raise ControlError(f"only the publisher of {rec.name!r} can delegate it "
                               f"(published by {publisher_label(rec.publisher)})")
        dev = c.trust.resolve(str(args.get("device", "")))
        if dev.signing_key is None:
            raise ControlError(f"{dev.name} was paired before signing keys; it must connect "
                               "once with a current agent first")
        days = _days(args.get("days"))
        dlg = issue(c.identity, rec.resource_id, bytes.fromhex(dev.public_key),
                    bytes.fromhex(dev.signing_key), days=days)
        conn = next((x for x in c.connections.live_connections()
                     if x.peer_id.hex() == dev.device_id), None)
        reason = "" if conn is not None else f"{dev.name} is not connected"
        if conn is not None:
            try:
                await conn.request("delegation", {"d": dlg.to_obj()}, timeout=LIST_TIMEOUT)
            except Exception as e:  # delivery is best effort: the text is returned anyway
                reason = str(e) or type(e).__name__
        return {"resource_id": rec.resource_id, "name": rec.name, "delegate": dev.name,
                "display_id": dev.display_id, "expires": dlg.delegation.expires,
                "delivered": not reason, "reason": reason, "delegation": dlg.to_obj()}

    async def delegation_accept(self, args: Args, reply: Reply) -> object:
        """Keep a delegation given to this device out of band (the text `delegate` printed)."""
        c = self.ctx
        try:
            dlg = SignedDelegation.from_obj(args.get("delegation"))
            await asyncio.to_thread(c.store.save_delegation, dlg, c.identity)
        except SignatureError as e:
            raise ControlError(f"delegation refused: {e}") from None
        d = dlg.delegation
        return {"resource_id": d.resource_id, "publisher_short": publisher_label(d.publisher),
                "expires": d.expires}

    async def connect(self, args: Args, reply: Reply) -> object:
        c = self.ctx
        conn = await c.connections.connect(parse_address(str(args.get("address", "")),
                                                         DEFAULT_PORT))
        rtt = await conn.ping()
        return {"name": conn.name, "display_id": format_device_id(conn.peer_id),
                "trusted": c.trust.is_trusted(conn.peer_id), "rtt_ms": round(rtt * 1000, 2)}

    async def relay(self, args: Args, reply: Reply) -> object:
        """Without ``device``: the relay's counters. With it: open (or reuse) a session to
        that device through the paired neighbour ``via``."""
        c = self.ctx
        if c.relay is None:
            raise ControlError("relaying is not available in this agent")
        if not args.get("device"):
            return c.relay.stats()
        target = _device_id(c, args.get("device"))
        via = _device_id(c, args["via"]) if args.get("via") else None
        conn = await c.relay.open(target, via)
        t0 = time.monotonic()
        await conn.request("ping", {"t": time.time()})
        return {"name": conn.name, "display_id": format_device_id(conn.peer_id),
                "transport": conn.transport, "trusted": c.trust.is_trusted(conn.peer_id),
                "rtt_ms": round((time.monotonic() - t0) * 1000, 2)}

    async def pair_start(self, args: Args, reply: Reply) -> object:
        c = self.ctx
        address = str(args.get("address", ""))
        if address.startswith("ble:"):  # a device met over BLE: pair over that session
            if c.ble is None:
                raise ControlError("BLE is not running on this agent (see [ble] in the config)")
            conn = c.ble.find_connection(address[4:])
        else:
            try:
                conn = await c.connections.connect(parse_address(address, DEFAULT_PORT))
            except SelfConnection:
                raise ControlError(
                    f"cannot pair with {address}: that is this agent; give the other "
                    "device's address (`shoal pair` run there prints it)") from None
        return await c.pairing.start(conn)

    async def pair_open(self, args: Args, reply: Reply) -> object:
        """Open the window. ``after`` is the newest pairing so far, for ``pair_wait``;
        ``addresses`` is where the other device reaches this one."""
        c = self.ctx
        seconds = _seconds(args.get("seconds"), c.cfg.pairing.window_seconds, "seconds")
        after = c.pairing.last_seq()
        until = c.pairing.open_window(seconds)
        addresses = pairing_addresses(c.cfg.lan.listen, c.connections.lan_port,
                                      c.connections.lan_endpoints())
        if c.ble is not None:
            addresses.append(f"ble:{c.identity.short_id}")
        return {"open_until": until, "seconds": seconds, "after": after,
                "addresses": addresses}

    async def pair_close(self, args: Args, reply: Reply) -> object:
        """Close the pairing window before its time (see PairingService.close_window)."""
        return await self.ctx.pairing.close_window()

    async def pair_confirm(self, args: Args, reply: Reply) -> object:
        return await self.ctx.pairing.confirm(str(args.get("code", "")))

    async def pair_decline(self, args: Args, reply: Reply) -> object:
        """End a pairing the user did not confirm (here and on the other device)."""
        pid = args.get("pairing_id")
        if not isinstance(pid, str) or not 0 < len(pid) <= 64:
            raise ControlError("pair_decline needs the pairing_id of a pending pairing")
        return await self.ctx.pairing.decline(pid)

    async def pair_pending(self, args: Args, reply: Reply) -> object:
        return [p.summary() | {"code_display": format_code(p.code)}
                for p in self.ctx.pairing.pending()]

    async def pair_wait(self, args: Args, reply: Reply) -> object:
        pid = args.get("pairing_id")
        timeout = _seconds(args.get("timeout"), 120.0, "timeout")
        after = _sequence(args.get("after"))
        code_arg = args.get("code")
        try:
            code = normalize_code(str(code_arg)) if code_arg else None
        except ValueError as e:
            raise ControlError(str(e)) from None
        try:
            return await self.ctx.pairing.wait(str(pid) if pid else None, timeout,
                                               after=after, code=code)
        except TimeoutError:
            raise ControlError(f"no pairing happened within {timeout:.0f} s; "
                               "start again with: shoal pair") from None

    async def unpair(self, args: Args, reply: Reply) -> object:
        """Forget a paired device and tell it (now if a session is up, else at its next
        session): ``notified`` says whether it acknowledged already."""
        c = self.ctx
        dev = c.trust.resolve(str(args.get("device", "")))
        return await c.unpairing.unpair(dev)

    async def trust_list(self, args: Args, reply: Reply) -> object:
        return [{"name": d.name, "display_id": d.display_id, "role": d.role,
                 "paired_at": d.paired_at} for d in self.ctx.trust.list()]

    async def authority(self, args: Args, reply: Reply) -> object:
        c = self.ctx
        if c.authority is None:
            raise ControlError("authority is disabled ([authority] enabled = false)")
        resource = args.get("resource")
        return c.authority.describe(str(resource) if resource else None)

    async def usage(self, args: Args, reply: Reply) -> object:
        if self.ctx.usage is None:
            raise ControlError("the access log is disabled ([usage] enabled = false)")
        return self.ctx.usage.describe()

    async def model(self, args: Args, reply: Reply) -> object:
        if self.ctx.models is None:
            raise ControlError("the prediction model needs the access log ([usage] enabled "
                               "= true)")
        return self.ctx.models.describe()

    def _mirrors(self) -> MirrorControl:
        m = self.ctx.mirrors
        if m is None:
            why = ("[prefetch] enabled = false" if not self.ctx.cfg.prefetch.enabled
                   else "it needs the access log: [usage] enabled = true")
            raise ControlError(f"prefetch and mirrors are off on this agent ({why})")
        return m

    async def prefetch(self, args: Args, reply: Reply) -> object:
        return await self._mirrors().describe_prefetch()

    async def mirrors(self, args: Args, reply: Reply) -> object:
        return await self._mirrors().describe_mirrors()
    def _follow(self) -> FollowControl:
        if self.ctx.follow is None:
            raise ControlError("following is not available on this agent")
        return self.ctx.follow

    def _versions(self) -> VersionControl:
        if self.ctx.versions is None:
            raise ControlError("versions are not available on this agent")
        return self.ctx.versions

    def _dht(self) -> DhtControl:
        if self.ctx.dht is None:
            raise ControlError("the DHT is off on this agent ([dht] enabled = false)")
        return self.ctx.dht

    async def dht(self, args: Args, reply: Reply) -> object:
        """Routing table, records held and announced, lookups."""
        return self._dht().stats()

    async def dht_find(self, args: Args, reply: Reply) -> object:
        """Look a resource's holders up in the DHT now."""
        resource = args.get("resource")
        if not isinstance(resource, str) or not 0 < len(resource) <= 255:
            raise ControlError("dht-find needs a resource name or ID (1-255 characters)")
        network = args.get("network", False)
        if not isinstance(network, bool):
            raise ControlError("dht-find: network must be true or false")
        return await self._dht().find(resource, network=network)

    async def versions(self, args: Args, reply: Reply) -> object:
        """Every version of a resource known here or at reachable holders."""
        resource = str(args.get("resource") or "")
        if not resource:
            raise ControlError("versions needs a resource name or ID")
        return await self._versions().versions(resource)

    async def follow(self, args: Args, reply: Reply) -> object:
        """Keep a copy at the newest version (fetched first if not held)."""
        resource = str(args.get("resource") or "")
        if not resource:
            raise ControlError("follow needs a resource name or ID")
        to = args.get("to")
        if to is not None and (not isinstance(to, str) or not to.startswith("/")):
            raise ControlError("--to needs an absolute path")
        return await self._follow().follow(resource, to)

    async def unfollow(self, args: Args, reply: Reply) -> object:
        return await self._follow().unfollow(str(args.get("resource") or ""))

    async def follow_list(self, args: Args, reply: Reply) -> object:
        return self._follow().list()

    async def unpublish(self, args: Args, reply: Reply) -> object:
        """Withdraw a resource this device publishes (signed tombstone to paired holders)."""
        resource = str(args.get("resource") or "")
        if not resource:
            raise ControlError("unpublish needs a resource name or ID")
        return await self._follow().unpublish(resource)

    async def dashboard(self, args: Args, reply: Reply) -> object:
        """The dashboard's URL with its token: only for whoever may use this socket."""
        if self.ctx.dashboard is None:
            return {"serving": False, "url": None,
                    "reason": "the dashboard is off ([dashboard] enabled = false)"}
        return self.ctx.dashboard.describe()

    async def stop(self, args: Args, reply: Reply) -> object:
        asyncio.get_running_loop().call_later(0.05, self.ctx.stop)
        return {"stopping": True}

