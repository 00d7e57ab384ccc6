"""The `shoal` command: runs the agent and talks to it over the local control socket.

What a user may rely on (README, "Using it" and "Errors"):

* the global options work before or after the subcommand (:mod:`agent.control.parser`);
* every failure, a usage mistake included, is one line ``shoal: error: ...; next step`` on
  stderr and a non-zero exit (2 for usage, 1 otherwise); with ``--json`` it is one object
  ``{"error": {"kind", "message", "hint"}}`` on stdout instead (:mod:`agent.control.render`);
* listings are tables with headers, every peer-supplied string escaped;
* output into a closed pipe (``shoal status | head -1``) ends quietly with status 141, as
  coreutils do when SIGPIPE kills them (128 + 13), never with a traceback.

To add a subcommand: declare it in :func:`agent.control.parser.build_parser` (with
``command(...)``: help, description, example) and add ``"name": handler`` to ``HANDLERS``
below; a handler is ``async def handler(args, sock) -> int`` and prints through ``_print``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import select
import shlex
import sys
import traceback
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from agent.config import Config, ConfigError, load_config, render_defaults, with_overrides
from agent.control import ControlError, call, call_simple
from agent.control.hints import HINTS, CliError, failure_of
from agent.control.listings import (
    authority_text,
    dht_find_text,
    dht_text,
    follow_table,
    mirrors_text,
    model_text,
    peers_table,
    pending_table,
    prefetch_text,
    resources_table,
    trust_table,
    usage_text,
    versions_table,
    watching_table,
)
from agent.control.parser import GLOBAL_DEFAULTS, UsageError, build_parser
from agent.control.progress import FetchProgress
from agent.control.render import (
    Failure,
    UnusableName,
    display,
    print_json,
    size,
)
from agent.control.render import output_name as _output_name
from agent.errors import ErrorKind, ShoalError
from agent.fsutil import atomic_writer, user_file_mode
from agent.security.pairing import format_code, normalize_code
from radio.mesh import MESH_FORM, MESH_RE

__all__ = ["EXIT_ERROR", "EXIT_PIPE", "EXIT_USAGE", "CliError", "build_parser", "display",
           "main", "output_name", "resolve_config"]

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
EXIT_PIPE = 141  # 128 + SIGPIPE: what a shell reports for `yes | head -1`'s `yes`

Handler = Callable[[argparse.Namespace, Path], Coroutine[Any, Any, int]]


def output_name(name: str) -> str:
    """A safe file name for a fetched resource (see :func:`agent.control.render.output_name`)."""
    try:
        return _output_name(name)
    except UnusableName as e:
        raise CliError(str(e)) from None


# ------------------------------------------------------------------------------ output

#: `run --local`: the TCP listener and mDNS on loopback only, so nothing leaves this machine
#: (what the demo and the tests use to keep agents on one machine).
LOCAL_LAN: dict[str, Any] = {"listen": "127.0.0.1", "interfaces": ("lo",),
                             "include_loopback": True}


def resolve_config(args: argparse.Namespace) -> Config:
    cfg = load_config(args.config)
    node: dict[str, Any] = {}
    if args.data_dir:
        node["data_dir"] = args.data_dir.expanduser().resolve()
    if getattr(args, "name", None) and args.command == "run":
        node["name"] = args.name
    lan: dict[str, Any] = {}
    ble: dict[str, Any] = {}
    if args.command == "run":
        if args.port is not None:
            if not 0 <= args.port < 65536:
                raise ConfigError("--port", "a port number between 0 and 65535", args.port)
            lan["port"] = args.port
        if args.listen:
            lan["listen"] = args.listen
        if args.local:
            if args.listen:
                raise CliError("--local listens on 127.0.0.1 only; drop --listen (or --local)")
            lan |= LOCAL_LAN | {"port": lan.get("port", 0)}
            ble["enabled"] = False
        if args.mesh is not None:
            if not MESH_RE.fullmatch(args.mesh):
                raise ConfigError("--mesh", MESH_FORM, args.mesh)
            node["mesh"] = args.mesh
    return with_overrides(cfg, node=node, lan=lan, ble=ble)


def _print(args: argparse.Namespace, value: Any, human: str) -> None:
    """JSON (non-ASCII escaped by json.dumps) or the human text, escaped for a terminal."""
    print(print_json(value) if args.json else display(human))


_size = size  # (the name the command bodies use)


# ------------------------------------------------------------------------------ fetch
def _progress_wanted(args: argparse.Namespace) -> FetchProgress:
    tty = sys.stderr.isatty()
    return FetchProgress(sys.stderr, enabled=tty or args.progress, redraw=tty)


async def _fetch(args: argparse.Namespace, sock: Path) -> int:
    """Fetch into the agent's store, then stream the verified bytes into an atomic file."""
    out = args.output
    progress = _progress_wanted(args)
    result: dict[str, Any] | None = None
    target: Path | None = None
    writer_cm: Any = None
    sink: Any = None
    to = str(Path(args.to).expanduser().resolve()) if args.to else None
    if to and (out or args.no_output):
        raise CliError("--to DIR writes a folder; drop -o/--no-output", "usage")
    request = {"resource": args.resource, "source": args.source,
               "stream": not args.no_output and not to, "to": to, "force": args.force}
    if getattr(args, "at_version", None) is not None:
        if args.at_version < 1:
            raise CliError("--version must be 1 or more (see: shoal versions NAME)", "usage")
        request["version"] = args.at_version
    try:
        async for item in call(sock, "fetch", request):
            if isinstance(item, bytes):
                if sink is None:
                    raise CliError("the agent sent data before naming the resource",
                                   "internal")
                sink.write(item)
            elif item.get("stage") == "export":
                progress.finish()
                if out == "-":
                    sink = sys.stdout.buffer
                    continue
                name = output_name(str(item["name"]))
                target = Path(out) if out else Path.cwd() / name
                if target.is_dir():
                    target = target / name
                if target.exists() and not args.force:
                    raise CliError(f"{target} exists", "conflict",
                                   "overwrite it with --force, or choose another with -o PATH")
                # atomically (temp + rename), with the mode open(2) would give: the umask
                writer_cm = atomic_writer(target, user_file_mode())
                sink = writer_cm.__enter__()
            elif "event" in item:
                progress.update(item)
            elif not item["ok"]:
                raise ControlError(str(item["error"]), item.get("kind"))
            else:
                result = item["result"]
    except BaseException:
        if writer_cm is not None:
            writer_cm.__exit__(*sys.exc_info())
        raise
    finally:
        progress.finish()
    if writer_cm is not None:
        writer_cm.__exit__(None, None, None)
    if result is None:
        raise CliError("the agent ended the fetch without a result", "internal")
    if out == "-":
        return 0
    if to:
        return _fetched_tree(args, result)
    where = f" -> {target}" if target else " (kept in the store)"
    held = int(result.get("size", 0)) - int(result.get("bytes_fetched", result.get("size", 0)))
    resumed = (f"\n  resumed: {_size(held)} of {_size(result['size'])} were already here"
               if held > 0 and not result.get("already_held") else "")
    _print(args, result | {"output": str(target) if target else None},
           f"fetched {result['name']} v{result['version']} ({_size(result['size'])}){where}"
           f"\n  source: {result.get('why') or 'held here already'}{resumed}")
    return 0


def _fetched_tree(args: argparse.Namespace, result: dict[str, Any]) -> int:
    """`fetch --to DIR`: what was written, moved, removed, and which files were kept."""
    t = result["tree"]
    _print(args, result,
           f"fetched {result['name']}/ v{result['version']} ({result.get('files')} files, "
           f"{_size(result['size'])}) -> {result['to']}\n"
           f"  files: {t['written']} written, {t['moved']} moved, {t['deleted']} removed, "
           f"{t['unchanged']} unchanged ({_size(t['bytes_written'])} written)"
           f"\n  source: {result.get('why') or 'held here already'}")
    if t["kept_count"] and not args.json:
        kept = "; ".join(f"{k['path']} ({k['why']})" for k in t["kept"][:10])
        more = t["kept_count"] - min(10, len(t["kept"]))
        print(display(f"shoal: warning: kept {t['kept_count']} local file(s): {kept}"
                      + (f" and {more} more" if more > 0 else "")
                      + "; use --force to replace changed files"), file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------ pair
async def _pair(args: argparse.Namespace, sock: Path) -> int:
    if args.pending:
        pend = await call_simple(sock, "pair_pending")
        print(print_json(pend) if args.json else pending_table(pend))
        return 0
    if args.close:
        if args.open or args.address or args.code or args.pending:
            raise CliError("--close takes no other pairing option; run `shoal pair --close` "
                           "on its own")
        res = await call_simple(sock, "pair_close")
        state = "pairing window closed" if res["was_open"] else "pairing window was not open"
        extra = f"; {res['cancelled']} unconfirmed pairing(s) cancelled" \
            if res["cancelled"] else ""
        _print(args, res, state + extra)
        return 0
    if args.open:
        res = await call_simple(sock, "pair_open", {"seconds": args.timeout})
        _print(args, res, f"pairing window open for {res['seconds']:.0f} s\n{_pair_here(res)}")
        return 0
    code = normalize_code(args.code) if args.code else None
    if args.address:
        p = await call_simple(sock, "pair_start", {"address": args.address})
    elif code is not None:
        pend = await call_simple(sock, "pair_pending")
        matching = [x for x in pend if x["code"] == code]
        if matching:
            p = matching[0]
        elif args.no_wait:
            raise CliError(f"no pending pairing shows code {format_code(code)}")
        else:
            p = await _wait_for_request(args, sock, code)
    else:
        p = await _wait_for_request(args, sock, None)
    shown = format_code(p["code"])
    print(display(f"Pairing with {p['peer_name']}: code {shown}"), file=sys.stderr)
    if args.no_wait and code is None:
        _print(args, p, shown)
        return 0
    if code is not None:
        if code != p["code"]:
            await _decline(sock, p)
            raise CliError(f"code mismatch: this device shows {shown}, not {format_code(code)}; "
                           "pairing cancelled on both devices")
    else:
        if not sys.stdin.isatty():
            raise CliError("cannot ask for confirmation without a terminal; pass --code")
        try:
            answer = input(display(f"Does {p['peer_name']} show the code {shown}? [y/N] "))
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            await _decline(sock, p)
            raise CliError("pairing declined and cancelled on both devices; run `shoal pair` "
                           "again to start over")
    p = await call_simple(sock, "pair_confirm", {"code": p["code"]})
    if not p["complete"]:
        if args.no_wait:
            _print(args, p, "confirmed here; waiting for the other device to confirm")
            return 0
        print("Confirmed here; waiting for the other device...", file=sys.stderr)
        p = await call_simple(sock, "pair_wait", {"pairing_id": p["pairing_id"],
                                                  "timeout": args.timeout})
    if not p["complete"]:
        raise CliError(f"pairing failed: {p['cancelled']}")
    _print(args, p, f"paired with {p['peer_name']}")
    return 0


async def _wait_for_request(args: argparse.Namespace, sock: Path, code: str | None
                            ) -> dict[str, Any]:
    """Open the window, say where to pair with this agent, and wait for a request that
    arrives from now on (an older one still pending is not the one the user expects)."""
    opened = await call_simple(sock, "pair_open", {"seconds": args.timeout})
    print(f"Waiting up to {args.timeout:.0f} s for a device to pair with this one.",
          file=sys.stderr)
    print(_pair_here(opened), file=sys.stderr)
    p: dict[str, Any] = await call_simple(sock, "pair_wait", {
        "timeout": args.timeout, "after": opened.get("after", 0), "code": code})
    return p


def _pair_here(opened: dict[str, Any]) -> str:
    """"On the other device run: shoal pair HOST:PORT" with this agent's real addresses."""
    addresses = [str(a) for a in opened.get("addresses") or []]
    if not addresses:
        return "This agent has no LAN listener or BLE link to pair over ([lan], [ble])."
    first, *more = addresses
    return display("\n".join([f"On the other device run: shoal pair {first}",
                               *(f"                     or: shoal pair {a}" for a in more)]))


async def _decline(sock: Path, p: dict[str, Any]) -> None:
    """Tell the agent the user said no: the pairing leaves `--pending` on both devices."""
    with contextlib.suppress(ControlError):
        await call_simple(sock, "pair_decline", {"pairing_id": p["pairing_id"]})



# ------------------------------------------------------------------------------ commands
async def _id(args: argparse.Namespace, sock: Path) -> int:
    try:
        res = await call_simple(sock, "id")
    except ControlError:  # no agent running: the identity on disk (created if need be)
        from agent.security.identity import load_or_create_identity

        cfg = resolve_config(args)
        ident, _ = load_or_create_identity(cfg.node.data_dir)
        res = {"display_id": ident.display_id, "hex": ident.hex_id, "name": cfg.node.name}
    _print(args, res, res["display_id"])
    return 0


async def _status(args: argparse.Namespace, sock: Path) -> int:
    s = await call_simple(sock, "status")
    quota = _size(s["store_quota"]) if s["store_quota"] else "unlimited"
    _print(args, s, "\n".join([
        f"name:       {s['name']}", f"device id:  {s['display_id']}",
        f"uptime:     {s['uptime_s']} s", f"lan port:   {s['lan_port']}",
        f"mesh:       {s.get('mesh', '?')}",
        f"peers:      {s['peers']} seen, {s['connected']} connected, {s['paired']} paired",
        f"resources:  {s['resources']} ({_size(s['store_used'])} used of {quota})",
        f"data dir:   {s['data_dir']}",
    ]))
    return 0


def _listing(op: str, render: Callable[[Any], str],
             params: Callable[[argparse.Namespace], dict[str, Any]] | None = None) -> Handler:
    """A command that asks the agent for one listing and prints it as a table (or JSON)."""
    async def handler(args: argparse.Namespace, sock: Path) -> int:
        r = await call_simple(sock, op, params(args) if params else None)
        print(print_json(r) if args.json else render(r))
        return 0
    return handler


_peers = _listing("peers", peers_table)


async def _publish(args: argparse.Namespace, sock: Path) -> int:
    if args.watching:
        if args.path or args.watch:
            raise CliError("--watching lists the watched paths and takes no PATH", "usage")
        r = await call_simple(sock, "watching")
        print(print_json(r) if args.json else watching_table(r))
        return 0
    if args.path is None:
        raise CliError("publish needs a PATH (a file or a directory)", "usage")
    path = args.path.expanduser().resolve()
    r = await call_simple(sock, "publish", {"path": str(path), "name": args.name,
                                            "public": args.public,
                                            "update": getattr(args, "update", None),
                                            "watch": args.watch})
    files = r.get("files")
    what = (f"{files} file{'' if files == 1 else 's'}, " if isinstance(files, int) else "")
    human = (f"published {r['name']}{'/' if files is not None else ''} v{r['version']} "
             f"({what}{_size(r['size'])}, {r['chunks']} chunk{'' if r['chunks'] == 1 else 's'}"
             f"{', public' if r['public'] else ''}) id {r['resource_id']}")
    if r.get("watch"):
        human += f"\n  watching {path}: a change becomes the next version"
    _print(args, r, human)
    skipped = r.get("skipped") or []
    if skipped and not args.json:
        more = int(r.get("skipped_count", len(skipped))) - len(skipped)
        print(display(f"shoal: warning: skipped {', '.join(map(str, skipped))}"
                      + (f" and {more} more" if more > 0 else "")), file=sys.stderr)
    return 0


async def _unwatch(args: argparse.Namespace, sock: Path) -> int:
    target = args.target
    local = Path(target).expanduser()
    try:  # a path here (as it was published: absolute), else a resource name or ID
        r = await call_simple(sock, "unwatch", {"target": str(local.resolve())})
    except ControlError as e:
        if e.error_kind is not ErrorKind.NOT_FOUND or "/" in target:
            raise
        r = await call_simple(sock, "unwatch", {"target": target})
    _print(args, r, "\n".join(f"stopped watching {x['path']} ({x['name']})" for x in r))
    return 0


_resources = _listing("resources", resources_table,
                      lambda a: {"local_only": a.local, "all": a.all})


async def _unpair(args: argparse.Namespace, sock: Path) -> int:
    r = await call_simple(sock, "unpair", {"device": args.device})
    _print(args, r, f"unpaired {r['name']} ({r['display_id']})" + (
        "" if r.get("notified") else "; it will be told when it next connects"))
    return 0


_trust = _listing("trust_list", trust_table)


async def _authority(args: argparse.Namespace, sock: Path) -> int:
    r = await call_simple(sock, "authority", {"resource": args.resource})
    if args.resource and not r["assignments"]:
        raise CliError(f"no authority assignment for {args.resource!r} (no such resource, or "
                       "none assigned yet)", "not_found")
    print(print_json(r) if args.json else authority_text(r))
    return 0


def _show(op: str, render: Callable[[Any], str]) -> Handler:
    """A command that asks the agent for one report and prints it (JSON with --json)."""
    async def show(args: argparse.Namespace, sock: Path) -> int:
        r = await call_simple(sock, op)
        print(print_json(r) if args.json else render(r))
        return 0
    return show


async def _dashboard(args: argparse.Namespace, sock: Path) -> int:
    """`shoal dashboard [--open]`: the URL with the token, from the agent itself."""
    r = await call_simple(sock, "dashboard")
    if not r.get("serving"):
        raise ControlError(f"the dashboard is not serving: {r.get('reason')}",
                           ErrorKind.UNAVAILABLE)
    if args.open:
        import webbrowser

        if not webbrowser.open(str(r["url"])):
            raise ControlError(f"no browser could be opened here; open {r['url']} yourself",
                               ErrorKind.UNAVAILABLE)
    _print(args, r, str(r["url"]))
    return 0


async def _stop(args: argparse.Namespace, sock: Path) -> int:
    _print(args, await call_simple(sock, "stop"), "agent stopping")
    return 0


async def _delegate(args: argparse.Namespace, sock: Path) -> int:
    """`shoal delegate RESOURCE DEVICE` on the publisher; `--accept FILE` on the delegate."""
    import time

    if args.accept:
        if args.resource or args.device:
            raise CliError("--accept FILE takes no resource or device", "usage")
        text = sys.stdin.read(65536) if args.accept == "-" else Path(args.accept).read_text()
        try:
            obj = json.loads(text)
        except ValueError:
            raise CliError(f"{args.accept}: not a delegation (JSON expected)") from None
        if isinstance(obj, dict) and isinstance(obj.get("delegation"), dict):
            obj = obj["delegation"]  # the whole `shoal --json delegate` answer
        r = await call_simple(sock, "delegation_accept", {"delegation": obj})
        until = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["expires"]))
        _print(args, r, f"delegation kept: you may publish new versions of "
               f"{r['resource_id'][:12]} (by {r['publisher_short']}) until {until}")
        return 0
    if not args.resource or not args.device:
        raise CliError("delegate needs NAME-or-ID and DEVICE (or --accept FILE on the "
                       "delegate)", "usage")
    r = await call_simple(sock, "delegate", {"resource": args.resource,
                                             "device": args.device, "days": args.days})
    until = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["expires"]))
    if r["delivered"]:
        human = (f"{r['delegate']} may publish new versions of {r['name']} until {until} "
                 f"(there: shoal publish PATH --update {r['resource_id'][:12]})")
    else:
        human = (f"not delivered ({r['reason']}); save the next line to a file and run "
                 f"`shoal delegate --accept FILE` on {r['delegate']} (valid until {until}):\n"
                 + json.dumps(r["delegation"], separators=(",", ":")))
    _print(args, r, human)
    return 0


async def _dht(args: argparse.Namespace, sock: Path) -> int:
    """`shoal dht` (the DHT's state) or `shoal dht --find NAME` (a lookup now)."""
    if args.find:
        r = await call_simple(sock, "dht-find", {"resource": args.find,
                                                 "network": bool(args.network)})
        print(print_json(r) if args.json else dht_find_text(r))
    else:
        r = await call_simple(sock, "dht")
        print(print_json(r) if args.json else dht_text(r))
    return 0


async def _versions(args: argparse.Namespace, sock: Path) -> int:
    r = await call_simple(sock, "versions", {"resource": args.resource})
    print(print_json(r) if args.json else versions_table(r))
    return 0


async def _follow(args: argparse.Namespace, sock: Path) -> int:
    """`shoal follow NAME [--to PATH]`, or `shoal follow` alone: the followed list."""
    if not args.resource:
        if args.to:
            raise CliError("--to needs NAME-or-ID: shoal follow NAME --to PATH", "usage")
        r = await call_simple(sock, "follow_list")
        print(print_json(r) if args.json else follow_table(r))
        return 0
    to = str(args.to.expanduser().resolve()) if args.to else None
    r = await call_simple(sock, "follow", {"resource": args.resource, "to": to})
    _print(args, r, f"following {r['name']} (v{r['version']} held"
           + (f", kept at {r['to']}" if r.get("to") else "") + "): new versions are "
           "fetched as they are announced")
    return 0


async def _unfollow(args: argparse.Namespace, sock: Path) -> int:
    r = await call_simple(sock, "unfollow", {"resource": args.resource})
    _print(args, r, f"no longer following {r['name']} (the copy here stays as it is)")
    return 0


async def _unpublish(args: argparse.Namespace, sock: Path) -> int:
    r = await call_simple(sock, "unpublish", {"resource": args.resource})
    _print(args, r, f"unpublished {r['name']}: withdrawal sent to {r['told']} connected paired "
           "device(s) (others learn it when they next connect)")
    return 0


async def _relay(args: argparse.Namespace, sock: Path) -> int:
    if args.device is None:
        if args.via:
            raise CliError("--via needs a DEVICE to reach", "usage")
        r = await call_simple(sock, "relay")
        _print(args, r, (f"circuits:   {r['circuits']} ({r['forwarding']} forwarded for "
                         f"others, {r['ends']} ending here)\n"
                         f"relayed:    {_size(r['forwarded_bytes'])}\n"
                         f"refused:    {r['refused']} opens, {r['closed_bad_frames']} "
                         "circuits closed for bad frames"))
        return 0
    r = await call_simple(sock, "relay", {"device": args.device, "via": args.via})
    _print(args, r, f"relayed session to {r['name']} ({r['display_id']}): "
           f"{'paired' if r['trusted'] else 'not paired'}, rtt {r['rtt_ms']} ms")
    return 0


#: Subcommand -> what runs it against the agent's control socket (see the module docstring).
HANDLERS: dict[str, Handler] = {
    "id": _id, "status": _status, "dashboard": _dashboard, "peers": _peers, "publish": _publish,
    "resources": _resources, "fetch": _fetch, "pair": _pair, "unpair": _unpair,
    "trust": _trust, "authority": _authority, "stop": _stop, "delegate": _delegate,
    "unwatch": _unwatch, "versions": _versions, "dht": _dht, "follow": _follow,
    "unfollow": _unfollow, "unpublish": _unpublish, "relay": _relay,
    "usage": _show("usage", usage_text), "model": _show("model", model_text),
    "prefetch": _show("prefetch", prefetch_text), "mirrors": _show("mirrors", mirrors_text),
}


def local_banner(data_dir: Path, port: int | None) -> str:
    """What `run --local` prints once it listens: how to reach it from this machine."""
    d = shlex.quote(str(data_dir))
    return (f"Local mode: this agent listens on 127.0.0.1:{port} only and discovers agents "
            "on this machine only (BLE off).\n"
            f"  talk to it:  shoal --data-dir {d} status\n"
            f"  pair with it from another local agent:  shoal --data-dir OTHER-DIR pair "
            f"127.0.0.1:{port}")


def _run_agent(cfg: Config, level: str, local: bool = False) -> int:
    from agent.daemon import StartupError
    from agent.log import setup_logging
    from agent.node import Node

    setup_logging(level)

    async def serve(node: Node) -> None:
        async def announce() -> None:
            await node.ready.wait()
            print(local_banner(cfg.node.data_dir, node.connections.lan_port), file=sys.stderr,
                  flush=True)

        shown = asyncio.create_task(announce()) if local else None
        try:
            await node.run()
        finally:
            if shown is not None:
                shown.cancel()

    try:
        asyncio.run(serve(Node(cfg)))
    except StartupError as e:  # port in use, data dir busy...: one line, never a traceback
        raise CliError(str(e)) from None
    return 0


def control_socket(args: argparse.Namespace, cfg: Config) -> Path:
    """The agent's control socket: the configured one, else the installed service's when
    this user runs no agent of its own (so `sudo shoal status` reaches the service)."""
    from agent.daemon import SERVICE_CONTROL_SOCKET

    sock = cfg.node.control_socket_path
    chosen = (args.config or args.data_dir or cfg.node.control_socket
              or os.environ.get("SHOAL_CONTROL_SOCKET") or os.environ.get("SHOAL_DATA_DIR"))
    if chosen or sock.exists():
        return sock
    try:
        service = SERVICE_CONTROL_SOCKET.exists()
    except PermissionError:  # /run/shoal is the service's (0750): only root may look in
        raise CliError(f"permission denied on {SERVICE_CONTROL_SOCKET} (the service's "
                       f"control socket): run it as root: sudo shoal {args.command}",
                       "refused") from None
    return SERVICE_CONTROL_SOCKET if service else sock


def _dispatch(args: argparse.Namespace) -> int:
    if args.command in ("doctor", "service"):
        from agent.control import servicecli

        return servicecli.doctor(args) if args.command == "doctor" else \
            servicecli.service(args)
    if args.command == "config" and args.config_command == "defaults":
        print(render_defaults(), end="")
        return 0
    cfg = resolve_config(args)
    if args.command == "config":
        print(json.dumps(_jsonable(cfg), indent=2))
        return 0
    if args.command == "run":
        return _run_agent(cfg, args.log_level, local=args.local)
    if args.command == "demo":
        from agent.demo import run_demo

        return asyncio.run(run_demo(args.size_mib, args.keep))
    return asyncio.run(HANDLERS[args.command](args, control_socket(args, cfg)))


# ------------------------------------------------------------------------------ main
def _json_requested(argv: Sequence[str]) -> bool:
    """``--json`` anywhere before a ``--``: known even when the rest does not parse."""
    head = argv[: list(argv).index("--")] if "--" in argv else argv
    return "--json" in head


def _pipe_closed(fd: int) -> bool:
    """The reader of *fd* is gone (POLLERR on a pipe's write end)."""
    try:
        p = select.poll()
        p.register(fd, select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in p.poll(0))
    except (OSError, ValueError):
        return False


def _quiet_broken_pipe() -> int | None:
    """Output into a closed pipe: point stdout/stderr at /dev/null (so the interpreter's
    final flush cannot complain) and end with 141, like a coreutils tool killed by SIGPIPE.
    None when neither stdout nor stderr is the closed pipe (then it was the agent's socket)."""
    closed = [fd for fd in (1, 2) if _pipe_closed(fd)]
    if not closed:
        return None
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in closed:
        os.dup2(devnull, fd)
    os.close(devnull)
    return EXIT_PIPE


def _report(f: Failure, as_json: bool) -> None:
    with contextlib.suppress(OSError):  # a closed stderr/stdout: nothing left to tell
        if as_json:
            print(f.as_json(), flush=True)
        else:
            print(f.as_line(), file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = _json_requested(argv)
    command: str | None = None
    debug = False
    try:
        args = build_parser().parse_args(argv)
        for name, default in GLOBAL_DEFAULTS.items():  # (a parser built elsewhere)
            if not hasattr(args, name):
                setattr(args, name, default)
        as_json, command, debug = args.json, args.command, args.log_level == "debug"
        return _dispatch(args)
    except UsageError as e:
        _report(Failure("usage", str(e), f"see: {e.prog} --help"), as_json)
        return EXIT_USAGE
    except BrokenPipeError as e:
        code = _quiet_broken_pipe()
        if code is not None:
            return code
        _report(failure_of(ControlError(f"lost the connection to the agent ({e})",
                                        "gone"), command), as_json)
        return EXIT_ERROR
    except KeyboardInterrupt:
        _report(Failure("interrupted", "interrupted", HINTS["interrupted"]), as_json)
        return EXIT_INTERRUPTED
    except (CliError, ConfigError, ShoalError, ValueError, OSError) as e:
        # (ShoalError: the agent's own typed failures, e.g. a trust store or identity read
        # directly by `shoal id` without an agent)
        f = failure_of(e, command)
        _report(f, as_json)
        return EXIT_USAGE if f.kind == "usage" else EXIT_ERROR
    except Exception as e:  # the last boundary: still one line (or one JSON object)
        leaf = _only_leaf(e)
        if leaf is not e and isinstance(leaf, (ShoalError, ValueError, OSError)):
            f = failure_of(leaf, command)  # a task group's single failure, e.g. at start-up
        else:
            f = Failure("internal", f"internal error: {type(leaf).__name__}: {leaf}",
                        "this is a bug: run again with --log-level debug for the traceback "
                        "and report it")
            if debug:
                traceback.print_exception(e, file=sys.stderr)
        _report(f, as_json)
        return EXIT_ERROR


def _only_leaf(exc: BaseException) -> BaseException:
    """The one exception inside nested single-member exception groups (asyncio's TaskGroup
    wraps a start-up failure so), else *exc* itself."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _jsonable(obj: Any) -> Any:
    import dataclasses

    if dataclasses.is_dataclass(obj):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (Path,)):
        return str(obj)
    if isinstance(obj, tuple):
        return list(obj)
    return obj


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
