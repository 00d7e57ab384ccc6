"""The `shoal` command: runs the agent and talks to it over the local control socket.

Errors are one clear line on stderr and a non-zero exit; `--json` gives machine output.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
import unicodedata
from pathlib import Path
from typing import Any

from agent import __version__
from agent.config import Config, ConfigError, load_config, render_defaults, with_overrides
from agent.control import ControlError, call, call_simple
from agent.fsutil import atomic_writer, user_file_mode
from agent.security.pairing import format_code, normalize_code
from radio.mesh import MESH_FORM, MESH_RE

EXIT_ERROR = 1
EXIT_USAGE = 2


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


#: What a terminal must never receive raw from a peer-supplied string: controls (escape
#: sequences), format characters (bidi overrides such as U+202E reorder what follows, zero
#: width ones hide), surrogates, line/paragraph separators, unassigned code points.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp", "Cn"})
_JOINERS = frozenset("\u200c\u200d")  # ZWNJ/ZWJ: scripts and emoji need them
_KEEP = _JOINERS | frozenset("\n\t")  # and our own layout, in text only


def _unsafe(ch: str, keep: frozenset[str] = _KEEP) -> bool:
    return ch not in keep and unicodedata.category(ch) in _UNSAFE_CATEGORIES


def display(text: str) -> str:
    """*text* with every unsafe character shown as an escape (``\\u202e``).

    Names of resources and devices come from peers: whatever the agent validated, the CLI
    is the boundary to the terminal and escapes again rather than trust every path there.
    """
    if not any(_unsafe(ch) for ch in text):
        return text
    return "".join((f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}")
                   if _unsafe(ch) else ch for ch in text)


def output_name(name: str) -> str:
    """A file name for a fetched resource: its last path component with every unsafe
    character replaced by its code point (``U+202E``), never used raw."""
    base = Path(name).name
    safe = "".join(f"U+{ord(ch):04X}" if _unsafe(ch, _JOINERS) else ch for ch in base)
    if safe in ("", ".", ".."):
        raise CliError(f"the resource name {display(name)!r} is not usable as a file name; "
                       "use -o PATH")
    return safe


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="shoal", description="Shoal: share, mirror and prefetch resources between nearby "
        "devices, with no internet or central server.")
    p.add_argument("--version", action="version", version=f"shoal {__version__}")
    p.add_argument("--config", type=Path, help="TOML config file (default: built-in defaults; "
                   "the service uses /etc/shoal/shoal.toml)")
    p.add_argument("--data-dir", type=Path, help="data directory (overrides node.data_dir)")
    p.add_argument("--log-level", default="info", help="debug, info, warning or error")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    r = sub.add_parser("run", help="run the agent in the foreground")
    r.add_argument("--port", type=int, help="LAN port (0 = any free port)")
    r.add_argument("--name", help="device name shown to peers")
    r.add_argument("--listen", help="address to listen on (default 0.0.0.0)")
    r.add_argument("--mesh", help="mesh ID: only agents of this mesh are discovered, dialled "
                   "and accepted (overrides node.mesh)")
    sub.add_parser("id", help="print this device's ID")
    sub.add_parser("status", help="show the agent's state")
    sub.add_parser("peers", help="list peers seen on any radio")
    pub = sub.add_parser("publish", help="share a file")
    pub.add_argument("path", type=Path)
    pub.add_argument("--name", help="resource name (default: file name)")
    pub.add_argument("--public", action="store_true", help="visible to unpaired devices too")
    rs = sub.add_parser("resources", help="list resources held here and offered by peers")
    rs.add_argument("--local", action="store_true", help="only resources held here")
    f = sub.add_parser("fetch", help="fetch a resource by name or ID")
    f.add_argument("resource")
    f.add_argument("-o", "--output", help="write the file here ('-' = stdout; default ./NAME)")
    f.add_argument("--from", dest="source", help="peer address HOST[:PORT] to fetch from")
    f.add_argument("--force", action="store_true", help="overwrite an existing output file")
    f.add_argument("--no-output", action="store_true", help="keep it in the store only")
    pa = sub.add_parser("pair", help="pair with a nearby device (numeric comparison)")
    pa.add_argument("address", nargs="?", help="the other agent's HOST[:PORT], or ble:NAME "
                    "for a device met over BLE; omit to wait for the other device to pair "
                    "with this one")
    pa.add_argument("--code", help="confirm without prompting if the code is this one")
    pa.add_argument("--open", action="store_true",
                    help="only open the pairing window and return")
    pa.add_argument("--close", action="store_true",
                    help="close the pairing window now (cancels unconfirmed incoming pairings)")
    pa.add_argument("--no-wait", action="store_true",
                    help="start pairing, print the code and return (confirm later with --code)")
    pa.add_argument("--pending", action="store_true", help="list pairings awaiting confirmation")
    pa.add_argument("--timeout", type=float, default=120.0, help="seconds to wait (default 120)")
    up = sub.add_parser("unpair", help="forget a paired device")
    up.add_argument("device", help="name or ID of the paired device")
    t = sub.add_parser("trust", help="paired devices")
    tsub = t.add_subparsers(dest="trust_command", metavar="SUBCOMMAND")
    tsub.required = True
    tsub.add_parser("list", help="list paired devices")
    c = sub.add_parser("config", help="configuration helpers")
    csub = c.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    csub.required = True
    csub.add_parser("defaults", help="print the default configuration as TOML")
    csub.add_parser("check", help="validate --config and print the effective values")
    au = sub.add_parser("authority", help="who serves each resource (replicated map)")
    au.add_argument("resource", nargs="?", help="only this resource (name or ID prefix)")
    sub.add_parser("stop", help="ask the running agent to stop")
    d = sub.add_parser("demo", help="start a 3-agent mesh on this machine, show it working, "
                       "clean up")
    d.add_argument("--size-mib", type=int, default=32, help="sample resource size (default 32)")
    d.add_argument("--keep", action="store_true", help="keep the demo directory and logs")
    return p


def resolve_config(args: argparse.Namespace) -> Config:
    cfg = load_config(args.config)
    node: dict[str, Any] = {}
    if args.data_dir:
        node["data_dir"] = args.data_dir.expanduser().resolve()
    if getattr(args, "name", None) and args.command == "run":
        node["name"] = args.name
    lan: dict[str, Any] = {}
    if args.command == "run":
        if args.port is not None:
            if not 0 <= args.port < 65536:
                raise ConfigError("--port", "a port number between 0 and 65535", args.port)
            lan["port"] = args.port
        if args.listen:
            lan["listen"] = args.listen
        if args.mesh is not None:
            if not MESH_RE.fullmatch(args.mesh):
                raise ConfigError("--mesh", MESH_FORM, args.mesh)
            node["mesh"] = args.mesh
    return with_overrides(cfg, node=node, lan=lan)


def _print(args: argparse.Namespace, value: Any, human: str) -> None:
    """JSON (non-ASCII escaped by json.dumps) or the human text, escaped for a terminal."""
    print(json.dumps(value, indent=2) if args.json else display(human))


def _size(n: int | float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


class ProgressLine:
    """A one-line progress bar on a terminal; silent otherwise."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self.shown = False

    def update(self, done: int, total: int, elapsed: float) -> None:
        if not self.enabled:
            return
        frac = done / total if total else 1.0
        rate = done / elapsed if elapsed > 0 else 0.0
        bar = "#" * int(frac * 30)
        sys.stderr.write(f"\r[{bar:<30}] {frac:6.1%} {_size(done)}/{_size(total)} "
                         f"{_size(rate)}/s   ")
        sys.stderr.flush()
        self.shown = True

    def finish(self) -> None:
        if self.shown:
            sys.stderr.write("\n")


async def _fetch(args: argparse.Namespace, sock: Path) -> int:
    """Fetch into the agent's store, then stream the verified bytes into an atomic file."""
    out = args.output
    progress = ProgressLine()
    result: dict[str, Any] | None = None
    target: Path | None = None
    writer_cm: Any = None
    sink: Any = None
    request = {"resource": args.resource, "source": args.source, "stream": not args.no_output}
    try:
        async for item in call(sock, "fetch", request):
            if isinstance(item, bytes):
                if sink is None:
                    raise CliError("the agent sent data before naming the resource")
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
                    raise CliError(f"{target} exists; use --force or -o PATH")
                # atomically (temp + rename), with the mode open(2) would give: the umask
                writer_cm = atomic_writer(target, user_file_mode())
                sink = writer_cm.__enter__()
            elif "event" in item:
                progress.update(item["done"], item["total"], item["elapsed"])
            elif not item["ok"]:
                raise CliError(item["error"])
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
        raise CliError("the agent ended the fetch without a result")
    if out == "-":
        return 0
    where = f" -> {target}" if target else " (kept in the store)"
    _print(args, result | {"output": str(target) if target else None},
           f"fetched {result['name']} v{result['version']} ({_size(result['size'])}){where}"
           f"\n  source: {result.get('why', '')}")
    return 0


async def _pair(args: argparse.Namespace, sock: Path) -> int:
    if args.pending:
        pend = await call_simple(sock, "pair_pending")
        lines = [f"{p['code_display']}  {p['peer_name']}  "
                 f"{'incoming' if p['incoming'] else 'outgoing'}" for p in pend]
        _print(args, pend, "\n".join(lines) or "no pairing in progress")
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
        _print(args, res, f"pairing window open for {res['seconds']:.0f} s")
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
            await call_simple(sock, "pair_open", {"seconds": args.timeout})
            p = await call_simple(sock, "pair_wait", {"timeout": args.timeout})
    else:
        await call_simple(sock, "pair_open", {"seconds": args.timeout})
        print(f"Waiting up to {args.timeout:.0f} s for a device to pair "
              "(run `shoal pair THIS-HOST` on it)...", file=sys.stderr)
        p = await call_simple(sock, "pair_wait", {"timeout": args.timeout})
    shown = format_code(p["code"])
    print(display(f"Pairing with {p['peer_name']}: code {shown}"), file=sys.stderr)
    if args.no_wait and code is None:
        _print(args, p, shown)
        return 0
    if code is not None:
        if code != p["code"]:
            raise CliError(f"code mismatch: this device shows {shown}, not {format_code(code)}; "
                           "pairing not confirmed")
    else:
        if not sys.stdin.isatty():
            raise CliError("cannot ask for confirmation without a terminal; pass --code")
        answer = input(display(f"Does {p['peer_name']} show the code {shown}? [y/N] "))
        if answer.strip().lower() not in ("y", "yes"):
            raise CliError("pairing not confirmed")
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


def _print_peers(args: argparse.Namespace, peers: list[dict[str, Any]]) -> None:
    rows = []
    for x in peers:
        state = "reachable" if x["reachable"] else "unreachable"
        rtt = f"{x['rtt_ms']} ms" if x["rtt_ms"] is not None else "-"
        rssi = f"{x['rssi']} dBm" if x.get("rssi") is not None else "-"
        rows.append(f"{x['name']:<20} {x['short_id']}  {'paired' if x['trusted'] else 'unpaired':8}"
                    f" {state:11} {','.join(x['sources']):10} {rtt:>9} {rssi:>8}  "
                    f"{' '.join(x['addresses'])}")
    _print(args, peers, "\n".join(rows) or "no peers seen yet")


async def _client(args: argparse.Namespace, cfg: Config) -> int:
    sock = cfg.node.control_socket_path
    cmd = args.command
    if cmd == "id":
        try:
            res = await call_simple(sock, "id")
        except ControlError:
            from agent.security.identity import load_or_create_identity

            ident, _ = load_or_create_identity(cfg.node.data_dir)
            res = {"display_id": ident.display_id, "hex": ident.hex_id, "name": cfg.node.name}
        _print(args, res, res["display_id"])
    elif cmd == "status":
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
    elif cmd == "peers":
        _print_peers(args, await call_simple(sock, "peers"))
    elif cmd == "publish":
        path = args.path.expanduser().resolve()
        r = await call_simple(sock, "publish", {"path": str(path), "name": args.name,
                                                "public": args.public})
        _print(args, r, f"published {r['name']} v{r['version']} ({_size(r['size'])}, "
               f"{r['chunks']} chunks{', public' if r['public'] else ''}) id {r['resource_id']}")
    elif cmd == "resources":
        r = await call_simple(sock, "resources", {"local_only": args.local})
        # "by XXXX-XXXX": the publisher's short ID, so two same-named resources by
        # different devices are never confused
        lines = [f"{x['resource_id'][:12]}  v{x['version']:<3} {_size(x['size']):>10}  "
                 f"{'public ' if x['public'] else 'private'}  {x['name']}  "
                 f"by {x.get('publisher_short', '?')}"
                 f"{'' if x.get('signed', True) else ' (unsigned)'}  (here)"
                 for x in r["local"]]
        lines += [f"{x['resource_id'][:12]}  v{x['version']:<3} {_size(x['size']):>10}  "
                  f"{'public ' if x['public'] else 'private'}  {x['name']}  "
                  f"by {x.get('publisher_short', '?')}  @ {x['holder']}"
                  for x in r.get("remote", [])]
        _print(args, r, "\n".join(lines) or "no resources")
    elif cmd == "fetch":
        return await _fetch(args, sock)
    elif cmd == "pair":
        return await _pair(args, sock)
    elif cmd == "unpair":
        r = await call_simple(sock, "unpair", {"device": args.device})
        _print(args, r, f"unpaired {r['name']} ({r['display_id']})" + (
            "" if r.get("notified") else "; it will be told when it next connects"))
    elif cmd == "trust":
        r = await call_simple(sock, "trust_list")
        lines = [f"{d['name']:<20} {d['role']:<7} {d['display_id']}  paired "
                 f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(d['paired_at']))}" for d in r]
        _print(args, r, "\n".join(lines) or "no paired devices")
    elif cmd == "authority":
        r = await call_simple(sock, "authority", {"resource": args.resource})
        head = (f"cluster {r['cluster'][:8]}  term {r['term']}  role {r['role']}  "
                f"leader {r['leader']}\nvoters: {', '.join(r['voters'])}"
                + (f"\nlearners: {', '.join(r['learners'])}" if r["learners"] else ""))
        rows = [f"{x['name'] or x['resource_id'][:12]:<24} {x['holder']:<16} term {x['term']:<4}"
                f" epoch {x['epoch']:<4} "
                + " ".join(f"{h}={s}" for h, s in x["scores"].items())
                for x in r["assignments"]]
        _print(args, r, head + "\n" + ("\n".join(rows) or "no assignments yet"))
    elif cmd == "stop":
        _print(args, await call_simple(sock, "stop"), "agent stopping")
    return 0


def _run_agent(cfg: Config, level: str) -> int:
    from agent.log import setup_logging
    from agent.node import Node

    setup_logging(level)
    node = Node(cfg)
    asyncio.run(node.run())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "config" and args.config_command == "defaults":
            print(render_defaults(), end="")
            return 0
        cfg = resolve_config(args)
        if args.command == "config":
            print(json.dumps(_jsonable(cfg), indent=2))
            return 0
        if args.command == "run":
            return _run_agent(cfg, args.log_level)
        if args.command == "demo":
            from agent.demo import run_demo

            return asyncio.run(run_demo(args.size_mib, args.keep))
        return asyncio.run(_client(args, cfg))
    except (CliError, ConfigError, ControlError, ValueError, OSError) as e:
        print(display(f"shoal: error: {e}"), file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("shoal: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # the agent's own exceptions still get one line
        from agent.security.identity import IdentityError
        from agent.security.trust import TrustError
        from agent.store import StoreError

        if isinstance(e, (IdentityError, StoreError, TrustError)):
            print(display(f"shoal: error: {e}"), file=sys.stderr)
            return EXIT_ERROR
        raise


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
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
    os._exit(1)
