"""The `shoal` command line: every subcommand with its description and an example.

Why a module of its own: what the command line accepts (and how it explains itself in
``--help``) is one job; running the commands (:mod:`agent.control.cli`) is another. Two
rules hold for every subcommand, so they live here once:

* the global options (``--json``, ``--config``, ``--data-dir``, ``--log-level``) are accepted
  before *or after* the subcommand: each subparser gets them again with a suppressed default,
  so a value given after the subcommand wins and an absent one never resets the global one;
* a usage error raises :class:`UsageError` instead of printing argparse's usage block and
  exiting: the CLI turns it into one line (or one JSON object with ``--json``).

To add a subcommand: call :func:`command` in :func:`build_parser` (help, description, example)
and add its handler to ``HANDLERS`` in :mod:`agent.control.cli`.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from typing import Any, NoReturn

from agent import __version__

LOG_LEVELS = ("debug", "info", "warning", "error")
DESCRIPTION_WIDTH = 78  # the raw formatter keeps our layout, so descriptions are wrapped here

#: The global options and their defaults (when given nowhere on the command line).
GLOBAL_DEFAULTS: dict[str, Any] = {"config": None, "data_dir": None, "log_level": "info",
                                   "json": False}


class UsageError(Exception):
    """The command line is wrong; ``prog`` is the (sub)command whose ``--help`` explains it."""

    def __init__(self, message: str, prog: str) -> None:
        super().__init__(message)
        self.prog = prog


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises :class:`UsageError` rather than printing and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, self.prog)


def _log_level(text: str) -> str:
    level = text.lower()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(LOG_LEVELS)}, "
                                         f"got {text!r}")
    return level


def add_global_options(p: argparse.ArgumentParser, *, top: bool) -> None:
    """The options every subcommand accepts, wherever they stand on the command line.

    On the top parser they carry the defaults; on subparsers the default is SUPPRESS, so the
    subparser sets the attribute only when the option is given after the subcommand.
    """
    def default(name: str) -> Any:
        return GLOBAL_DEFAULTS[name] if top else argparse.SUPPRESS

    g = p.add_argument_group("global options (before or after the subcommand)")
    g.add_argument("--json", action="store_true", default=default("json"),
                   help="machine-readable output; errors too, as one JSON object")
    g.add_argument("--config", type=Path, default=default("config"), metavar="PATH",
                   help="TOML config file (default: built-in defaults; the service uses "
                   "/etc/shoal/shoal.toml)")
    g.add_argument("--data-dir", type=Path, default=default("data_dir"), metavar="DIR",
                   help="data directory (overrides node.data_dir)")
    g.add_argument("--log-level", type=_log_level, default=default("log_level"),
                   metavar="LEVEL", help="debug, info, warning or error (default info)")


def command(sub: Any, name: str, *, help: str, description: str, example: str,
            ) -> argparse.ArgumentParser:
    """A subcommand with a description, an example in its epilog and the global options."""
    p: argparse.ArgumentParser = sub.add_parser(
        name, help=help, description=textwrap.fill(description, DESCRIPTION_WIDTH),
        epilog="example:\n" + "\n".join(f"  {line}" for line in example.strip().splitlines()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_global_options(p, top=False)
    return p


def _add_delegate(sub: Any) -> None:
    """`shoal delegate`: let a paired device publish new versions of one resource."""
    dg = command(sub, "delegate",
                 help="let a paired device publish new versions of one of your resources",
                 description="Sign a delegation that lets DEVICE publish new versions of "
                 "RESOURCE (`shoal publish PATH --update RESOURCE` there) until it expires. "
                 "It is handed over if DEVICE is connected, else printed: run `shoal delegate "
                 "--accept FILE` there.",
                 example="shoal delegate city-map kitchen-pi --days 7\n"
                 "shoal delegate --accept dlg.json")
    dg.add_argument("resource", nargs="?", metavar="NAME-or-ID", help="your resource")
    dg.add_argument("device", nargs="?", help="name or ID of the paired device")
    dg.add_argument("--days", type=float, help="how long it holds (default 30, at most 90)")
    dg.add_argument("--accept", metavar="FILE", help="on the delegate: keep the delegation "
                    "printed by `shoal delegate` on the publisher ('-' = stdin)")


def _add_follow(sub: Any) -> None:
    """`shoal versions`, `follow`, `unfollow`, `unpublish` ([8/13])."""
    v = command(sub, "versions", help="a resource's versions: here and at reachable holders",
                description="List the versions of a resource, newest first: when each was "
                "made, its size, chunks added/removed against the previous one, whether it "
                "is complete here and which reachable holders keep it. Holders keep the last "
                "5 versions; fetch one with `shoal fetch NAME --version N`.",
                example="shoal versions city-map\nshoal versions 3fa9c2 --json")
    v.add_argument("resource", metavar="NAME-or-ID")
    fo = command(sub, "follow", help="keep a copy at the newest version (or list followed)",
                 description="Follow a resource: it is fetched if not held, and each new "
                 "version is fetched as soon as a paired device announces it (and on "
                 "reconnect, and every 10 minutes), moving only what changed. With --to the "
                 "file at PATH is replaced atomically by each new version (the agent writes "
                 "it: PATH's directory must be writable by the agent). Without NAME: list "
                 "what is followed.",
                 example="shoal follow city-map --to /srv/maps/city.tiles\nshoal follow")
    fo.add_argument("resource", nargs="?", metavar="NAME-or-ID")
    fo.add_argument("--to", type=Path, metavar="PATH",
                    help="keep the newest version exported at this path")
    uf = command(sub, "unfollow", help="stop keeping a copy current",
                 description="Stop following a resource. The copy stays held (and the "
                 "exported file stays) at its current version.",
                 example="shoal unfollow city-map")
    uf.add_argument("resource", metavar="NAME-or-ID")
    up = command(sub, "unpublish", help="withdraw a resource you published",
                 description="Withdraw a resource this device published: a signed "
                 "withdrawal goes to paired devices (now, or when they next connect), which "
                 "stop following it and drop their copy (files exported with --to stay); "
                 "it is removed from this store.",
                 example="shoal unpublish city-map")
    up.add_argument("resource", metavar="NAME-or-ID")


def _add_service(sub: Any) -> None:
    """`shoal doctor` and `shoal service install | uninstall | status` ([10/13])."""
    command(sub, "doctor", help="check this machine for what Shoal needs, with fixes",
            description="Check what Shoal needs on this machine and explain each problem "
            "with a fix: the Bluetooth adapter and BlueZ (version, experimental features, "
            "D-Bus permissions), wpa_supplicant's P2P support and control socket, the "
            "interfaces mDNS uses and whether multicast works, a firewall dropping the "
            "agent's port, free disk, the clock and the service's own state. Uses the "
            "service's /etc/shoal/shoal.toml when it exists and no --config is given. Exits "
            "1 when something blocks normal operation (warnings do not).",
            example="shoal doctor\nsudo shoal doctor --json")
    sv = command(sub, "service", help="install, remove or inspect the systemd service",
                 description="Run the agent as a systemd service (as root): `install` adds "
                 "the unit, the shoal user (sysusers.d), its directories (tmpfiles.d) and a "
                 "default /etc/shoal/shoal.toml (an existing one is kept), then enables and "
                 "starts it; `uninstall` stops and removes them but keeps the data and the "
                 "config unless --purge; `status` shows the unit's state. The CLI then talks "
                 "to the service with no extra flags.",
                 example="sudo shoal service install\nshoal service status\n"
                 "sudo shoal service uninstall --purge")
    ssub = sv.add_subparsers(dest="service_command", metavar="SUBCOMMAND", parser_class=Parser)
    ssub.required = True
    si = command(ssub, "install", help="install, enable and start the service",
                 description="Install the unit, user, directories and default config; "
                 "reload systemd; enable and start the service.",
                 example="sudo shoal service install\nshoal service install --root /tmp/r "
                 "--no-start")
    su = command(ssub, "uninstall", help="stop and remove the service (data kept)",
                 description="Stop and disable the service and remove its unit files. The "
                 "data (/var/lib/shoal) and config (/etc/shoal) stay unless --purge.",
                 example="sudo shoal service uninstall\nsudo shoal service uninstall --purge")
    su.add_argument("--purge", action="store_true",
                    help="also delete /var/lib/shoal, /etc/shoal and the shoal user's files")
    st = command(ssub, "status", help="the service's state",
                 description="Whether the unit is installed, enabled and active, its "
                 "restarts, main PID, status line and control socket.",
                 example="shoal service status\nshoal service status --json")
    for p in (si, su, st):
        p.add_argument("--root", type=Path, metavar="DIR", help="operate on a filesystem "
                       "tree under DIR instead of / (packaging, tests); systemctl is not "
                       "run")
    si.add_argument("--no-start", action="store_true",
                    help="install and enable but do not start it now")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="shoal", description=textwrap.fill(
            "Shoal: share, mirror and prefetch resources between nearby devices, with no "
            "internet or central server.", DESCRIPTION_WIDTH),
        epilog="examples:\n  shoal run --port 0\n  shoal peers --json\n"
        "  shoal fetch report.pdf -o ~/report.pdf\n\n"
        "Every subcommand has its own help: shoal COMMAND --help",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"shoal {__version__}")
    add_global_options(p, top=True)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    r = command(sub, "run", help="run the agent in the foreground",
                description="Run the agent in the foreground until Ctrl-C or `shoal stop`. "
                "A second agent on one machine needs its own --data-dir and --port 0 "
                "(any free port); --local keeps it on this machine.",
                example="shoal run\n"
                "shoal run --local --data-dir /tmp/b --name b")
    r.add_argument("--port", type=int, help="LAN port (0 = any free port)")
    r.add_argument("--name", help="device name shown to peers")
    r.add_argument("--listen", help="address to listen on (default 0.0.0.0; 127.0.0.1 keeps "
                   "the agent on this machine)")
    r.add_argument("--mesh", help="mesh ID: only agents of this mesh are discovered, dialled "
                   "and accepted (overrides node.mesh)")
    r.add_argument("--local", action="store_true",
                   help="this machine only: listen on 127.0.0.1 (any free port unless --port), "
                   "discover on loopback only, BLE off; to try Shoal with several agents on "
                   "one machine")
    command(sub, "id", help="print this device's ID",
            description="Print this device's ID (works without a running agent).",
            example="shoal id\nshoal id --json")
    command(sub, "status", help="show the agent's state",
            description="Show the running agent's name, ID, port, mesh, peers and store usage.",
            example="shoal status\nshoal status --json")
    command(sub, "peers", help="list peers seen on any radio",
            description="List the devices this agent has seen (mDNS, sessions, BLE): how, "
            "where, their round-trip time, whether they are paired and when last seen.",
            example="shoal peers\nshoal peers --json")
    pub = command(sub, "publish", help="share a file or a folder",
                  description="Share a file or a folder (one resource listing its files): it "
                  "is chunked into the agent's store and offered to paired devices (to every "
                  "device with --public). With --watch the agent keeps publishing a new "
                  "version whenever the content changes.",
                  example="shoal publish ./report.pdf\n"
                  "shoal publish ./map.tiles --name city-map --public\n"
                  "shoal publish ./photos --watch\nshoal publish --watching")
    pub.add_argument("path", type=Path, nargs="?", help="a file or a directory")
    pub.add_argument("--name", help="resource name (default: file name)")
    pub.add_argument("--public", action="store_true", help="visible to unpaired devices too")
    pub.add_argument("--update", metavar="NAME-or-ID", help="publish PATH as the next version "
                     "of this held resource (yours, or one its publisher delegated to you)")
    pub.add_argument("--watch", action="store_true", help="keep watching PATH and publish a "
                     "new version after each change (until `shoal unwatch`; survives restarts)")
    pub.add_argument("--watching", action="store_true",
                     help="list the watched paths instead of publishing")
    rs = command(sub, "resources", help="list resources held here and offered by peers",
                 description="List each resource once: its publisher, newest version, size, "
                 "whether it is held here and which reachable peers hold it.",
                 example="shoal resources\nshoal resources --local --json")
    rs.add_argument("--local", action="store_true", help="only resources held here")
    rs.add_argument("--all", action="store_true",
                    help="also the agent's own resources (names starting .shoal., e.g. models)")
    f = command(sub, "fetch", help="fetch a resource by name or ID",
                description="Fetch a resource from the peers that hold it (several at once, "
                "its authority first), verify every chunk and write it to a file. An "
                "interrupted fetch resumes where it stopped.",
                example="shoal fetch report.pdf\nshoal fetch 3fa9c2 -o - | tar x\n"
                "shoal fetch city-map --from 192.168.1.20:7420 --no-output")
    f.add_argument("resource", help="name, ID or ID prefix (see: shoal resources)")
    f.add_argument("-o", "--output", help="write the file here ('-' = stdout; default ./NAME)")
    f.add_argument("--from", dest="source", help="peer address HOST[:PORT] to fetch from")
    f.add_argument("--force", action="store_true", help="overwrite an existing output file")
    f.add_argument("--no-output", action="store_true", help="keep it in the store only")
    f.add_argument("--to", metavar="DIR", help="a folder: write its files into DIR (created if "
                   "need be); run again to update DIR in place (your changes are kept)")
    f.add_argument("--progress", action="store_true",
                   help="show progress on stderr even when it is not a terminal")
    f.add_argument("--version", type=int, metavar="N", dest="at_version",
                   help="fetch this (older) version instead of the newest (see: shoal versions)")
    pa = command(sub, "pair", help="pair with a nearby device (numeric comparison)",
                 description="Pair with a nearby device: both screens show the same 6-digit "
                 "code; confirm on both. Without an address, wait for the other device to "
                 "pair with this one.",
                 example="shoal pair                      # on device B: wait\n"
                 "shoal pair 192.168.1.20:7420    # on device A\n"
                 "shoal pair --open; shoal pair --code 123456   # scripted")
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
    up = command(sub, "unpair", help="forget a paired device",
                 description="Forget a paired device: it loses access to private resources "
                 "and its session is closed.",
                 example="shoal unpair kitchen-pi\nshoal unpair R4VF-XC7D")
    up.add_argument("device", help="name or ID of the paired device")
    t = command(sub, "trust", help="paired devices",
                description="Paired devices (the trust store).",
                example="shoal trust list")
    tsub = t.add_subparsers(dest="trust_command", metavar="SUBCOMMAND", parser_class=Parser)
    tsub.required = True
    command(tsub, "list", help="list paired devices",
            description="List paired devices: name, role, ID and when they were paired.",
            example="shoal trust list\nshoal trust list --json")
    c = command(sub, "config", help="configuration helpers",
                description="Print the default configuration, or check a config file.",
                example="shoal config defaults > shoal.toml\n"
                "shoal config check --config shoal.toml")
    csub = c.add_subparsers(dest="config_command", metavar="SUBCOMMAND", parser_class=Parser)
    csub.required = True
    command(csub, "defaults", help="print the default configuration as TOML",
            description="Print every configuration key with its default, as TOML.",
            example="shoal config defaults > shoal.toml")
    command(csub, "check", help="validate --config and print the effective values",
            description="Validate a config file and print the effective values (JSON).",
            example="shoal config check --config /etc/shoal/shoal.toml")
    au = command(sub, "authority", help="who serves each resource (replicated map)",
                 description="The replicated authority map: which holder serves each "
                 "resource, in which Raft term and epoch, and each holder's reputation score "
                 "(0 to 1, higher is better; docs/authority.md, section 3).",
                 example="shoal authority\nshoal authority report.pdf")
    au.add_argument("resource", nargs="?", help="only this resource (name or ID prefix)")
    command(sub, "usage", help="access log, usage sharing and the hottest resources",
            description="The access log (size, records dropped or skipped as damaged), "
            "sharing of usage aggregates with paired devices (docs/privacy.md) and the "
            "hottest resources: temperature here and mesh-wide, and the prefetch budget it "
            "earns.",
            example="shoal usage\nshoal usage --json")
    command(sub, "model", help="the prediction model: trainer, version, age, hit ratio",
            description="The prediction model's lifecycle on this device "
            "(docs/prediction-lifecycle.md): which paired device trains, the model in use "
            "(version, publisher, age, hit ratio on this device's recent requests against "
            "the fallback), the last training run's CPU seconds and today's budget, and "
            "models rejected, with the reason.",
            example="shoal model\nshoal model --json")
    command(sub, "prefetch", help="predictions, temperature and prefetch hit statistics",
            description="What this device will likely ask for next (scores from the "
            "prediction model), the temperature of the hottest resources, and how prefetch "
            "did: prefetched copies used, wasted bytes, requests served here, by mirrors and "
            "by peers (from the access log). [prefetch] enabled = false turns it off.",
            example="shoal prefetch\nshoal prefetch --json")
    command(sub, "mirrors", help="mirrors this device uses and hosts",
            description="Mirrors: copies of predicted resources that paired devices keep "
            "for this one (its fetches try them first), and copies this device keeps for "
            "its peers: resource, mirror device, since when, why, requests served.",
            example="shoal mirrors\nshoal mirrors --json")
    dh = command(sub, "dht", help="the DHT: routing table, records, lookups",
                 description="The DHT that finds holders beyond the neighbours: contacts in "
                 "the routing table (paired devices only), how many are neighbours, provider "
                 "records held for others and keys this device announces, lookups run. With "
                 "--find, look a resource's holders up now.",
                 example="shoal dht\nshoal dht --find city-map\nshoal dht --json")
    dh.add_argument("--find", metavar="NAME-or-ID", help="look this resource's holders up")
    dh.add_argument("--network", action="store_true",
                    help="with --find: ask the network even when this device stores records "
                    "for the resource (what a lookup costs from afar)")
    _add_delegate(sub)
    rl = command(sub, "relay", help="reach a device through a paired neighbour",
                 description="Open a relayed session to DEVICE through the paired neighbour "
                 "RELAY: end-to-end encrypted, the relay sees only ciphertext, and DEVICE "
                 "applies its own trust to this device. Fetches then use it like any peer "
                 "(`shoal peers` shows it as relay). Without DEVICE: the circuits this "
                 "device holds and forwards, and the bytes it relayed.",
                 example="shoal relay kiosk-3 --via gateway\nshoal relay")
    rl.add_argument("device", nargs="?", metavar="DEVICE",
                    help="a paired device's name or ID, or any device's full ID")
    rl.add_argument("--via", metavar="RELAY", help="the paired neighbour to go through "
                    "(default: the one the DHT names, when it can)")
    uw = command(sub, "unwatch", help="stop republishing a watched file or folder",
                 description="Stop watching a path published with --watch (the resource and "
                 "its versions stay published).",
                 example="shoal unwatch ./photos\nshoal unwatch photos")
    uw.add_argument("target", metavar="PATH-or-NAME", help="the watched path, or the "
                    "resource's name or ID")
    _add_follow(sub)
    _add_service(sub)
    dash = command(sub, "dashboard", help="print (or open) the local web dashboard's URL",
                   description="Print the URL of the running agent's web dashboard, with the "
                   "token that signs the browser in (keep it private: it acts as you). "
                   "Configure it in [dashboard] (on, 127.0.0.1 only, by default).",
                   example="shoal dashboard\nshoal dashboard --open")
    dash.add_argument("--open", action="store_true", help="open it in the default browser")
    command(sub, "stop", help="ask the running agent to stop",
            description="Ask the running agent to stop (it finishes cleanly).",
            example="shoal stop\nshoal stop --data-dir /tmp/b")
    d = command(sub, "demo", help="start a 3-agent mesh on this machine, show it working, "
                "clean up",
                description="Start three agents on loopback, pair them, publish a sample and "
                "fetch it across them, print what happened and how fast, then clean up.",
                example="shoal demo\nshoal demo --size-mib 8 --keep")
    d.add_argument("--size-mib", type=int, default=32, help="sample resource size (default 32)")
    d.add_argument("--keep", action="store_true", help="keep the demo directory and logs")
    return p
