"""Live prefetch replay: agents in network namespaces replay a slice of a shared trace.

    .venv/bin/python bench/mesh_replay.py [--trace T --format clf|opendap|csv]
        [--offset 3000 --window 1000 --requests 1000 --others spread|drop] [--agents 5]
        [--speed 100 --max-gap 0.5] [--cap-kib 256] [--shape 40mbit|none] [--runs 5]
        [--modes off,on]
        [--phase mirror-move] [--phase follow-folder] [--agent-config FILE] [--json PATH]

Needs root (network namespaces; exits with a one-line reason otherwise). Everything it makes
(namespaces ``shl-*-XXXX`` with a random suffix, a bridge, veths, tbf qdiscs, a temp work dir,
agent processes) is removed on exit, so two runs can coexist (tests/netns/harness.py).

**Mesh.** ``--agents`` hosts (default 5) on one bridge, one agent each (default config, mDNS
on eth0, port 47474, a fresh mesh ID per run), every pair paired through the control API.
Every host's egress is tbf-shaped at ``--shape`` (40mbit, a Wi-Fi-class LAN; ``none``
to skip; TESTBED.md §1), so a 256 KiB miss costs tens of ms and prefetch traffic competes
with demand traffic on the same links.

**Slice and mapping rule.** The trace (default: the shared web log) is read with
agent/predict/traces.py; the slice is requests ``[--offset, --offset + --window)``. The
``agents - 1`` clients with the most requests in it (ties: first seen) get one device each,
h2, h3, ... in that order (busiest -> h2); with ``--others spread`` (default) every other
client of the window is mapped too, round-robin over h2.. in order of first appearance (a
device is then a small group of users, e.g. a shared tablet), with ``--others drop`` their
requests are left out (counted). The mapped requests in time order, at most ``--requests``,
are the replay. h1 is the *origin*: it stands for the server that wrote the log, publishes
every resource of the slice (one signed resource each, private to the paired mesh) and
requests nothing, so no device's hit is a trivial "I published it".

**Content.** Each resource is random bytes (incompressible, no dedupe between resources) of
its size in the slice's first request for it, clamped to 1 B .. ``--cap-kib`` (256 KiB, one
default chunk). Names are the trace path with ``/`` turned into ``_`` (the live agents'
models work on resource IDs; the names only help people read logs).

**Replay.** Time is compressed ``--speed`` x (100) and every gap between consecutive requests
of the slice is capped at ``--max-gap`` seconds after compression, so idle hours of a web log
do not idle the run. Each device issues its requests in order, one at a time (a request
waits for its slot and for the device's previous fetch), as the control-API ``fetch``
``{"resource": ID}`` through the device's control socket (agent/control/client.py; no CLI
process per request). Latency = issue to final reply, measured in this process.

**Per run (fresh copies of one template: the agents paired and the origin's store filled
once, then each run starts from a copy; caches and models start empty).**
  outcome    local (the reply says ``already_held``: served from the device's own store, a
             hit), mirror (most bytes from a mirror kept for this device: the reply's ``why``
             starts "mirror NAME first"), origin (most bytes from h1), peer (most bytes from
             another device, e.g. one that fetched it earlier), error (with its kind). Every
             request has exactly one outcome; hits + misses + errors = requests is checked.
  hit ratio  local / requests.
  latency    p50 / p95 of every request's latency (hits and misses; errors excluded).
  wasted     bytes of resources a device held at any poll (``resources`` local-only, every
             2 s and at the end) that it did not publish, never requested in the run, and
             never served bytes of to another device's request: prefetched and never used.
             Also as % of demand bytes (the offline harness's unit). If the agent has a
             ``prefetch`` command its reply is kept in the JSON and its ``stats`` summed
             over devices (``agent_wasted_bytes``, ``agent_prefetched``, ``agent_used``: the
             agent's own account, which counts only copies evicted before any use).
  access log after the agents stop, each device's access log (agent/usage/accesslog.py) is
             read: records by source kind (local / peer / mirror), a cross-check.
Modes: ``off`` writes ``[prefetch] enabled = false`` and ``on`` ``enabled = true`` -- but only
when the agent's config schema accepts that key (the Resource Mirror Manager adds it); until
then ``off`` runs with no such key (the agent does not prefetch) and ``on`` is skipped with a
note. ``--runs`` runs per mode, interleaved (off, on, off, on, ...); figures are the median
and min-max over runs.

**Offline harness on the same slice** (bench/prefetch.py, imported): the replayed requests,
clients renamed to their devices, train fraction 0 (caches and models start empty, as the
live agents do), every request measured; cache = the most distinct resources any device asks
for in the slice (``--cache`` to override), i.e. no eviction, the same as the live stores
(no quota). Reported: LRU only (what prefetch-off should match) and the agent's default
predictor (agent/predict/registry.py DEFAULT) at ``--depth`` (2) and ``--threshold`` (0.1).
Target (BENCHMARKS.md): live hit with prefetch on >= 0.9 x the offline predictor's; demand
p95 on <= 1.1 x off.

**Optional phases** (after the runs, on a fresh copy of the template, skipped with a message
when the agent lacks the command):
  mirror-move    needs ``shoal mirrors``: the origin publishes an index page and a big file
                 (8 MiB, more than the phase's prefetch ``device_budget``) and reads index ->
                 big itself (``--mirror-rounds`` times), so its released usage counts
                 predict the big file after the index; h2 and h3 read the index, then h4 and
                 h5 do
                 (h2, h3 go idle); ``shoal mirrors`` (the real CLI) of every device is
                 printed ``--mirror-wait`` s after each, i.e. before and after demand moves,
                 and the JSON keeps every reply. The phases' agents run with short manager
                 timers (``PHASE_TIMERS``: plan every 1 s, dwell 5 s, cold after 10 s) where
                 the schema has them, so a move fits in a minute (phase_mirror_move says why
                 this scenario: a device that fetched a resource needs no mirror of it).
  follow-folder  needs ``shoal follow`` and ``shoal publish DIR``: the origin's link shaped
                 (``--folder-shape``, 20mbit), the origin publishes a folder of three files,
                 h2-h4 follow it into a directory (``--to``), the origin rewrites 100 bytes
                 of one file, renames another and republishes; the time until each
                 follower's directory equals the origin's and the bytes every host's eth0
                 sent meanwhile (tc counters: an upper bound on the delta's bytes).
Benchmarks never assert; exit status 1 only when nothing could be measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    ROOT,
    agent_classes,
    check_code_unchanged,
    fmt_stat,
    machine,
    percentile,
    print_table,
    stats,
    write_json,
)

from agent.predict import traces

DEFAULT_TRACE = ROOT.parent / "shared" / "traces" / "apache_combined_2015-05.log"
PORT = 47474
ORIGIN = "h1"
FETCH_TIMEOUT = 120.0
POLL_HELD = 2.0
MAX_REQUESTS = 100_000


# --------------------------------------------------------------------------- pure: the slice


@dataclass(frozen=True)
class Item:
    """One request of the replay: when (compressed seconds from the start), which device,
    which trace resource, its (capped) size, and the original client."""

    at: float
    device: str
    resource: str
    size: int
    client: str
    t: float  # trace time


@dataclass
class Slice:
    """The replay: its requests in order, who maps to which device, and what was left out."""

    items: list[Item]
    mapping: dict[str, str]  # trace client -> device name
    dropped: int  # requests of the window by clients that got no device
    window: int  # requests in the window
    sizes: dict[str, int]  # resource -> synthetic size (first request, capped)
    span_s: float  # trace seconds covered by the replayed requests


def select(reqs: Sequence[traces.Request], *, offset: int, window: int, devices: int,
           max_requests: int, speed: float, max_gap: float, cap: int,
           others: str = "drop") -> Slice:
    """The mapping rule and the replay schedule (see the module doc); pure."""
    if devices < 1 or speed <= 0 or max_gap < 0 or cap < 1:
        raise ValueError("devices >= 1, speed > 0, max_gap >= 0 and cap >= 1 are required")
    win = list(reqs[offset:offset + window])
    counts = Counter(r.client for r in win)
    first = {}
    for i, r in enumerate(win):
        first.setdefault(r.client, i)
    ranked = sorted(counts, key=lambda c: (-counts[c], first[c]))
    mapping = {c: f"h{k + 2}" for k, c in enumerate(ranked[:devices])}
    if others == "spread":  # the rest by first appearance, round-robin over the devices
        rest = sorted(ranked[devices:], key=lambda c: first[c])
        mapping |= {c: f"h{k % devices + 2}" for k, c in enumerate(rest)}
    elif others != "drop":
        raise ValueError("others must be drop or spread")
    kept = [r for r in win if r.client in mapping][:max_requests]
    sizes: dict[str, int] = {}
    items: list[Item] = []
    at = 0.0
    prev: float | None = None
    for r in kept:
        if prev is not None:
            at += min(max(0.0, r.t - prev) / speed, max_gap)
        prev = r.t
        size = sizes.setdefault(r.resource, min(max(r.size, 1), cap))
        items.append(Item(at, mapping[r.client], r.resource, size, r.client, r.t))
    span = kept[-1].t - kept[0].t if kept else 0.0
    return Slice(items, mapping, sum(1 for r in win if r.client not in mapping), len(win),
                 sizes, span)


def resource_name(resource: str) -> str:
    """A store-valid name for a trace resource: ``/`` and ``\\`` become ``_``, the last 200
    UTF-8 bytes, plus 8 hex digits of its hash (two paths may sanitise alike); a name the
    store would refuse anyway (agent/store/manifest.py rules) becomes ``r.<hash>``."""
    from agent.store.manifest import ManifestError, validate_name

    base = resource.replace("/", "_").replace("\\", "_").strip("_. ") or "r"
    base = base.encode()[-200:].decode("utf-8", "ignore")
    digest = hashlib.blake2b(resource.encode(), digest_size=4).hexdigest()
    try:
        return validate_name(f"{base}.{digest}")
    except ManifestError:
        return f"r.{digest}"


# --------------------------------------------------------------------------- pure: accounting


@dataclass
class Outcome:
    """What one replayed request got."""

    index: int
    device: str
    resource: str
    issued: float  # seconds from the replay start
    latency: float | None  # None for an error
    kind: str  # local | origin | peer | error
    error: str = ""
    bytes_fetched: int = 0
    sources: dict[str, int] = field(default_factory=dict)  # device name -> bytes


def classify(result: dict[str, Any], origin: str = ORIGIN) -> tuple[str, dict[str, int]]:
    """local / mirror / origin / peer from a ``fetch`` reply, and bytes per source device.
    A fetch that tried a mirror kept for this device first says so in ``why`` ("mirror NAME
    first, ..."); it counts as mirror when that device gave the most bytes."""
    if result.get("already_held"):
        return "local", {}
    src = {str(k): int(v.get("bytes", 0)) for k, v in (result.get("sources") or {}).items()
           if isinstance(v, dict)}
    if not src:
        return "local", {}  # nothing moved: the copy was here
    top = max(src, key=lambda k: (src[k], k == origin))
    if top == origin:
        return "origin", src
    why = str(result.get("why") or "")
    return ("mirror" if why.startswith(f"mirror {top} ") else "peer"), src


def account(outcomes: Sequence[Outcome], sizes: dict[str, int],
            held: dict[str, dict[str, int]], published: dict[str, set[str]]) -> dict[str, Any]:
    """Hit ratio, latency percentiles, wasted bytes of one run (pure).

    *held*: device -> {resource: size} ever seen held there; *published*: device -> the
    resources it published. *sizes*: trace resource -> synthetic size.
    """
    kinds = Counter(o.kind for o in outcomes)
    n = len(outcomes)
    hits = kinds["local"]
    misses = kinds["origin"] + kinds["peer"] + kinds["mirror"]
    errors = kinds["error"]
    lat = [o.latency for o in outcomes if o.latency is not None]
    lat_hit = [o.latency for o in outcomes if o.latency is not None and o.kind == "local"]
    lat_miss = [o.latency for o in outcomes if o.latency is not None and o.kind != "local"]
    demanded: dict[str, set[str]] = {}
    served: dict[str, set[str]] = {}
    for o in outcomes:
        demanded.setdefault(o.device, set()).add(o.resource)
        for dev, b in o.sources.items():
            if b > 0 and dev != o.device:
                served.setdefault(dev, set()).add(o.resource)
    wasted = 0
    wasted_items = 0
    for dev, res in held.items():
        for r, size in res.items():
            if (r in published.get(dev, set()) or r in demanded.get(dev, set())
                    or r in served.get(dev, set())):
                continue
            wasted += size
            wasted_items += 1
    demand_bytes = sum(sizes.get(o.resource, 0) for o in outcomes)
    return {
        "requests": n, "hits": hits, "misses": misses, "errors": errors,
        "by_kind": dict(kinds),
        "accounted": hits + misses + errors == n,
        "hit_ratio": hits / n if n else 0.0,
        "p50_ms": _ms(percentile(lat, 50)), "p95_ms": _ms(percentile(lat, 95)),
        "hit_p50_ms": _ms(percentile(lat_hit, 50)), "miss_p50_ms": _ms(percentile(lat_miss, 50)),
        "miss_p95_ms": _ms(percentile(lat_miss, 95)),
        "bytes_fetched": sum(o.bytes_fetched for o in outcomes),
        "demand_bytes": demand_bytes,
        "wasted_bytes": wasted, "wasted_items": wasted_items,
        "wasted_pct": 100.0 * wasted / demand_bytes if demand_bytes else 0.0,
    }


def _ms(x: float | None) -> float | None:
    return None if x is None else x * 1000.0


# --------------------------------------------------------------------------- offline harness


def offline(sl: Slice, *, cache: int | None, depth: int, threshold: float) -> dict[str, Any]:
    """bench/prefetch.py's replay on exactly the replayed requests (see the module doc)."""
    import prefetch as pf

    from agent.predict.registry import DEFAULT, make

    reqs = [traces.Request(it.t, it.device, it.resource, it.size) for it in sl.items]
    trace = pf.intern(reqs, train_fraction=0.0)
    per_dev: dict[str, set[str]] = {}
    for it in sl.items:
        per_dev.setdefault(it.device, set()).add(it.resource)
    size = cache or max((len(s) for s in per_dev.values()), default=1)
    rec = pf.run_predictor(DEFAULT, make(DEFAULT), trace, 2 * depth + 8, fit=False)
    return {
        "cache": size, "depth": depth, "threshold": threshold, "predictor": DEFAULT,
        "lru_only": pf.simulate(trace, None, size, depth, 0.0),
        "predictor_point": pf.simulate(trace, rec, size, depth, threshold),
        "predictor_top1": pf.simulate(trace, rec, size, 1, 0.0, strict=True),
    }


# --------------------------------------------------------------------------- the mesh


async def ctl(agent: Any, cmd: str, args: dict[str, Any] | None = None,
              timeout: float = 10.0) -> Any:
    from agent.control import call_simple

    async with asyncio.timeout(timeout):
        return await call_simple(agent.socket_path, cmd, args)


async def has_command(agent: Any, cmd: str, args: dict[str, Any] | None = None) -> bool:
    """Whether the agent serves control command *cmd* (an unknown one is refused by name)."""
    from agent.control.errors import ControlError

    try:
        await ctl(agent, cmd, args)
    except ControlError as e:
        return "unknown command" not in str(e)
    return True


def prefetch_key_supported() -> bool:
    """The agent's config schema accepts ``[prefetch] enabled`` (strict schema: unknown
    sections and keys are refused)."""
    from agent.config import ConfigError, config_from_dict

    try:
        config_from_dict({"prefetch": {"enabled": True}})
    except ConfigError:
        return False
    return True


async def pair_ctl(a: Any, b: Any) -> None:
    """Scripted pairing through the control sockets (what ``shoal pair`` does on both)."""
    await ctl(b, "pair_open", {"seconds": 60})
    p = await ctl(a, "pair_start", {"address": b.address}, timeout=30)
    code = p["code"]
    deadline = time.monotonic() + 20
    while not any(x["code"] == code for x in await ctl(b, "pair_pending")):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{b.name} never saw the pairing from {a.name}")
        await asyncio.sleep(0.05)
    await ctl(a, "pair_confirm", {"code": code})
    done = await ctl(b, "pair_confirm", {"code": code})
    if not done["complete"]:
        done = await ctl(b, "pair_wait", {"pairing_id": done["pairing_id"], "timeout": 20},
                         timeout=30)
    if not done["complete"]:
        raise RuntimeError(f"pairing {a.name} - {b.name} failed: {done}")


async def wait_connected(agents: Sequence[Any], timeout: float = 60.0) -> float:
    """Until every agent has a session with every other; returns the seconds it took."""
    t0 = time.monotonic()
    want = len(agents) - 1
    while True:
        st = await asyncio.gather(*(ctl(a, "status") for a in agents))
        if all(s["connected"] >= want for s in st):
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            seen = [(a.name, s["connected"]) for a, s in zip(agents, st, strict=True)]
            raise RuntimeError(f"sessions not all up after {timeout:.0f} s: {seen}")
        await asyncio.sleep(0.2)


class Mesh:
    """The agents of one run, started on copies of the template data dirs."""

    def __init__(self, lan: Any, work: Path, cls: Any, n: int, config: str,
                 template: Path | None) -> None:
        self.agents: list[Any] = []
        for i in range(1, n + 1):
            h = lan.host(i)
            d = work / f"h{i}" / "data"
            if template is not None:
                shutil.copytree(template / f"h{i}" / "data", d, symlinks=True)
            a = cls(f"h{i}", d, netns=h.ns, host_addr=h.addr)
            a.config(config)
            self.agents.append(a)
        for a in self.agents:
            a.launch(port=PORT)
        for a in self.agents:
            a.wait_ready(timeout=60)

    def by_name(self, name: str) -> Any:
        return next(a for a in self.agents if a.name == name)

    def stop(self) -> None:
        for a in self.agents:
            with contextlib.suppress(Exception):
                a.stop(timeout=10)


def compressed_timers(speed: float) -> str:
    """The agents' config when ``--agent-config`` is not given: the timers that learn from
    usage run *speed* times faster, as the trace's time does (sharing every 600 s, a model
    round every 300 s, the log flushed every 5 s, each with a floor); the n-gram k-anonymity
    threshold is 1 because each replay device stands for dozens of trace clients (k counts
    devices; docs/privacy.md). No training: the default predictor needs none."""
    def scaled(seconds: float, floor: float) -> float:
        return round(max(floor, seconds / max(speed, 1.0)), 3)

    return ("[usage]\n"
            f"flush_interval = {scaled(5.0, 0.2)}\n"
            "[predict]\n"
            f"share_interval = {scaled(600.0, 5.0)}\n"
            f"model_interval = {scaled(300.0, 5.0)}\n"
            "share_k = 1\n"
            "train = false\n")


def with_prefetch_keys(extra: str, keys: dict[str, bool | float]) -> str:
    """*extra* (the ``--agent-config`` TOML) plus *keys* in its ``[prefetch]`` section (added
    after the header, or as a new section): a key *extra* sets itself is left as it is, so
    TOML never sees a section or key twice."""
    have = tomllib.loads(extra).get("prefetch", {})
    lines = "".join(f"{k} = {str(v).lower() if isinstance(v, bool) else v}\n"
                    for k, v in keys.items() if k not in have)
    if not lines:
        return extra
    header = re.search(r"^\[prefetch\][ \t]*(#.*)?$\n?", extra, re.M)
    if header is None:
        return extra + ("\n" if extra and not extra.endswith("\n") else "") \
            + f"[prefetch]\n{lines}"
    return extra[: header.end()] + ("" if header.group(0).endswith("\n") else "\n") + lines \
        + extra[header.end():]


def agent_config(mode: str | None, extra: str, timers: dict[str, float] | None = None) -> str:
    """The TOML each agent runs with: ``[prefetch] enabled`` only when the schema has it."""
    keys: dict[str, bool | float] = {}
    if mode is not None and prefetch_key_supported():
        keys["enabled"] = mode == "on"
    keys |= timers or {}
    return with_prefetch_keys(extra, keys)


def build_template(lan: Any, work: Path, cls: Any, n: int, sl: Slice, extra: str,
                   log: Any) -> tuple[dict[str, str], float]:
    """Start the agents, pair every pair, publish the slice's resources on the origin,
    stop; returns (trace resource -> resource ID, seconds)."""
    t0 = time.perf_counter()
    mesh = Mesh(lan, work, cls, n, agent_config(None, extra), None)
    try:
        async def pair_all() -> None:
            for i, a in enumerate(mesh.agents):
                for b in mesh.agents[i + 1:]:
                    await pair_ctl(a, b)
            await wait_connected(mesh.agents)

        asyncio.run(pair_all())
        log(f"  {n} agents paired in {time.perf_counter() - t0:.1f} s")
        files = work.parent / "files"
        files.mkdir(exist_ok=True)
        origin = mesh.by_name(ORIGIN)
        ids: dict[str, str] = {}
        for k, (res, size) in enumerate(sl.sizes.items()):
            path = files / f"r{k:05d}.bin"
            path.write_bytes(random.Random(k).randbytes(size))
            rid = origin.call("publish", {"path": str(path), "name": resource_name(res),
                                          "public": False})["resource_id"]
            ids[res] = rid
            path.unlink()
        log(f"  {len(ids)} resources published on {ORIGIN} "
            f"({sum(sl.sizes.values()) / 1e6:.1f} MB)")
    finally:
        mesh.stop()
    return ids, time.perf_counter() - t0


# --------------------------------------------------------------------------- one run


async def _fetch(agent: Any, rid: str) -> dict[str, Any]:
    from agent.control import call

    final: dict[str, Any] | None = None
    async with asyncio.timeout(FETCH_TIMEOUT):
        async for item in call(agent.socket_path, "fetch", {"resource": rid}):
            if isinstance(item, dict) and "ok" in item:
                final = item
    if final is None:
        raise RuntimeError("no final reply")
    if not final["ok"]:
        raise RuntimeError(f"{final.get('kind', 'error')}: {final.get('error')}")
    return dict(final.get("result") or {})


async def replay(mesh: Mesh, sl: Slice, ids: dict[str, str]) -> tuple[
        list[Outcome], dict[str, dict[str, int]], float]:
    """Issue every request at its slot; poll what each device holds meanwhile."""
    by_dev: dict[str, list[tuple[int, Item]]] = {}
    for i, it in enumerate(sl.items):
        by_dev.setdefault(it.device, []).append((i, it))
    rid_to_res = {v: k for k, v in ids.items()}
    outcomes: list[Outcome] = []
    held: dict[str, dict[str, int]] = {a.name: {} for a in mesh.agents}
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2

    async def device(name: str, reqs: list[tuple[int, Item]]) -> None:
        agent = mesh.by_name(name)
        for i, it in reqs:
            await asyncio.sleep(max(0.0, start + it.at - loop.time()))
            t0 = loop.time()
            try:
                res = await _fetch(agent, ids[it.resource])
            except Exception as e:  # recorded, never raised: every request gets an outcome
                outcomes.append(Outcome(i, name, it.resource, t0 - start, None, "error",
                                        f"{type(e).__name__}: {e}"[:300]))
                continue
            lat = loop.time() - t0
            kind, src = classify(res)
            outcomes.append(Outcome(i, name, it.resource, t0 - start, lat, kind,
                                    bytes_fetched=int(res.get("bytes_fetched") or 0),
                                    sources=src))

    async def poll_held() -> None:
        for a in mesh.agents:
            with contextlib.suppress(Exception):
                got = await ctl(a, "resources", {"local_only": True}, timeout=10)
                for e in got["local"]:
                    res = rid_to_res.get(str(e["resource_id"]))
                    if res is not None:
                        held[a.name][res] = int(e["size"])

    async def poller(stop: asyncio.Event) -> None:
        while not stop.is_set():
            await poll_held()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL_HELD)

    stop = asyncio.Event()
    poll_task = asyncio.create_task(poller(stop))
    await asyncio.gather(*(device(d, r) for d, r in by_dev.items()))
    took = loop.time() - start
    stop.set()
    await poll_task
    await poll_held()
    outcomes.sort(key=lambda o: o.index)
    return outcomes, held, took


def access_log_summary(data_dir: Path) -> dict[str, int]:
    """Records of a stopped agent's access log by source kind and hit flag (a cross-check)."""
    from agent.usage.accesslog import AccessLog
    from agent.usage.record import Source

    path = data_dir / "usage" / "log"
    if not path.is_dir():
        return {}
    log = AccessLog(path, max_bytes=1 << 40, max_age=1e12, segment_bytes=64 << 20,
                    clock=time.time)
    out: Counter[str] = Counter()
    for rec in log.records():
        out[f"{Source(rec.source).name.lower()}{'_hit' if rec.hit else ''}"] += 1
    return dict(out)


def one_run(lan: Any, work: Path, cls: Any, n: int, sl: Slice, ids: dict[str, str],
            mode: str, extra: str, template: Path) -> dict[str, Any]:
    mesh = Mesh(lan, work, cls, n, agent_config(mode, extra), template)
    try:
        connect_s = asyncio.run(wait_connected(mesh.agents))
        outcomes, held, took = asyncio.run(replay(mesh, sl, ids))

        async def extras() -> dict[str, Any]:
            out: dict[str, Any] = {}
            for a in mesh.agents:
                with contextlib.suppress(Exception):
                    out[a.name] = await ctl(a, "prefetch")
            return out

        agent_stats = asyncio.run(extras())
    finally:
        mesh.stop()
    logs = {a.name: access_log_summary(a.data_dir) for a in mesh.agents}
    own: dict[str, int] = Counter()
    for reply in agent_stats.values():
        st = reply.get("stats") if isinstance(reply, dict) else None
        for k in ("wasted_bytes", "prefetched", "used", "held_unused"):
            if isinstance(st, dict) and isinstance(st.get(k), int):
                own[f"agent_{k}"] += st[k]
    published = {ORIGIN: set(ids)}
    m = account(outcomes, sl.sizes, held, published)
    errors = [asdict(o) for o in outcomes if o.kind == "error"][:20]
    return {"mode": mode, "connect_s": connect_s, "replay_s": took, **m, **own,
            "access_log": logs, "agent_prefetch": agent_stats, "error_examples": errors,
            "per_device": {d: account([o for o in outcomes if o.device == d], sl.sizes, {}, {})
                           ["hit_ratio"] for d in sorted({o.device for o in outcomes})}}


# --------------------------------------------------------------------------- phases


def cli(agent: Any, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The real CLI against one agent (for the tables people read)."""
    return subprocess.run([sys.executable, "-m", "agent", "--data-dir", str(agent.data_dir),
                           *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


PHASE_TIMERS: dict[str, float] = {
    "interval": 1.0, "mirror_dwell": 5.0, "mirror_cold_after": 10.0,
    # idle this long: the device acts on nothing, so a mirror it no longer needs goes cold
    "active_window": 10.0,
    # the phase's big resource (MIRROR_BIG) must not fit a prefetch: a mirror is the copy
    # for what is predicted here but is not (and cannot be) held here (policy.py)
    "device_budget": 1024 * 1024,
}
MIRROR_BIG = 8 * 1024 * 1024
MIRROR_INDEX = 16 * 1024


def phase_timers() -> dict[str, float]:
    """``[prefetch]`` timers short enough for a mirror to be made and moved within a minute
    (the defaults plan every 10 s and keep a mirror >= 300 s), only the keys the agent's
    schema accepts."""
    from agent.config import ConfigError, config_from_dict

    keys = {}
    for k, v in PHASE_TIMERS.items():
        with contextlib.suppress(ConfigError):
            config_from_dict({"prefetch": {k: v}})
            keys[k] = v
    return keys


def _mirror_rows(view: Any) -> list[dict[str, Any]]:
    """The mirror rows of one ``mirrors`` reply (role ``using``: this device's mirrors;
    ``hosting``: the copies it keeps for others), reduced to who, what and why."""
    rows = view.get("mirrors") if isinstance(view, dict) else None
    return [{k: r.get(k) for k in ("role", "resource", "name", "reason", "served",
                                   "requesters")}
            for r in rows or [] if isinstance(r, dict)]


def phase_mirror_move(mesh: Mesh, work: Path, rounds: int, wait: float,
                      log: Any) -> dict[str, Any]:
    """A hot resource's mirror made for the devices that want it, and moved when demand
    moves to other devices.

    The scenario the manager's rules act on (agent/mirrors/policy.py): a mirror is the copy
    of something predicted or hot *here* that is not held here and cannot be prefetched
    (a device that fetched a resource holds it, and needs no mirror of it). The origin
    publishes an index page and a big file (``MIRROR_BIG``, more than the phase's prefetch
    ``device_budget``), and reads index -> big ``rounds`` times itself: its released usage
    counts teach the mesh that the big file follows the index. Then h2 and h3 read the index
    (once each): each predicts the big file, cannot prefetch it, and asks the best paired
    device to mirror it. ``--mirror-wait`` s later demand moves: h2 and h3 go
    idle (their mirrors cool: discarded after ``mirror_cold_after``), h4 and h5 read the
    index. ``shoal mirrors`` of every device is printed after each phase."""
    origin = mesh.by_name(ORIGIN)
    if not asyncio.run(has_command(origin, "mirrors")):
        msg = ("skipped: this agent has no `shoal mirrors` (the Resource Mirror Manager of "
               "[8/13] has not landed on this branch)")
        log(f"  mirror-move {msg}")
        return {"skipped": msg}
    files = work / "mirror-files"
    files.mkdir(parents=True, exist_ok=True)
    rng = random.Random(11)
    ids = {}
    for name, size in (("index.html", MIRROR_INDEX), ("big.bin", MIRROR_BIG)):
        (files / name).write_bytes(rng.randbytes(size))
        ids[name] = str(origin.call("publish", {"path": str(files / name),
                                                "name": f"phase-{name}"})["resource_id"])
    devices = [a for a in mesh.agents if a.name != ORIGIN]
    first, second = devices[: len(devices) // 2], devices[len(devices) // 2:]
    out: dict[str, Any] = {"resource": "phase-big.bin", "resource_id": ids["big.bin"],
                           "size": MIRROR_BIG, "views": {}, "rows": {}}

    async def train() -> None:
        for _ in range(rounds):
            for name in ("index.html", "big.bin"):
                await _fetch(origin, ids[name])
            await asyncio.sleep(0.3)

    async def demand(group: list[Any]) -> list[float]:
        # once each: a device reading the index again and again would teach its own model
        # (and, released, the mesh's) index -> index, diluting the big file's score below
        # the mirror threshold (create_score 0.5): a first run here saw 0.44
        lat = []
        for a in group:
            t0 = time.perf_counter()
            await _fetch(a, ids["index.html"])
            lat.append(time.perf_counter() - t0)
        return lat

    async def views() -> dict[str, Any]:
        return {a.name: await ctl(a, "mirrors") for a in mesh.agents}

    async def prefetch_views() -> dict[str, Any]:
        return {a.name: await ctl(a, "prefetch") for a in mesh.agents}

    asyncio.run(train())
    share = 6.0  # the released counts reach the peers (share_interval, 5 s floor, + slack)
    log(f"  mirror-move: the origin read index -> big {rounds} times; {share:g} s for its "
        "usage counts to reach the devices")
    time.sleep(share)
    settle = PHASE_TIMERS["active_window"] + PHASE_TIMERS["mirror_cold_after"]
    for label, group in (("before", first), ("after", second), ("settled", [])):
        if group:
            out[f"{label}_group"] = [a.name for a in group]
            out[f"{label}_latency_ms"] = [x * 1000 for x in asyncio.run(demand(group))]
            time.sleep(wait)  # planning rounds: let the manager adapt
        else:  # h4, h5 idle too: every mirror cools and is discarded
            time.sleep(settle)
        v = asyncio.run(views())
        out["views"][label] = v
        out["rows"][label] = {n: _mirror_rows(x) for n, x in v.items()}
        out.setdefault("prefetch", {})[label] = asyncio.run(prefetch_views())
        log(f"  {label}: demand from {', '.join(a.name for a in group)}, then {wait:g} s; "
            "`shoal mirrors` on each device:" if group else
            f"  {label}: {settle:g} s more with no demand; `shoal mirrors` on each device:")
        for a in mesh.agents:
            table = cli(a, "mirrors")
            log(f"    [{a.name}]")
            for line in (table.stdout or table.stderr).splitlines():
                log(f"      {line}")
    return out


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


FOLDER_FOLLOWERS = ("h2", "h3", "h4")


def phase_follow_folder(lan: Any, mesh: Mesh, work: Path, rate: str,
                        log: Any) -> dict[str, Any]:
    """A folder followed into a directory on three devices while the origin edits it over
    a shaped link: the origin (its egress tbf-shaped at *rate*) publishes a folder of three
    512 KiB files, h2-h4 ``follow NAME --to DIR``; the origin rewrites 100 bytes of one
    file, renames another and republishes the directory (same name: the next version).
    Reported: the time from the publish until each follower's directory equals the
    origin's, the bytes every host's eth0 sent meanwhile (tc counters, read when the last
    directory matched: everything, heartbeats included; an upper bound on the sync's bytes)
    and each follower's own account of the sync."""
    origin = mesh.by_name(ORIGIN)
    followers = [mesh.by_name(n) for n in FOLDER_FOLLOWERS if n in
                 {a.name for a in mesh.agents}]
    folder = work / "folder"
    folder.mkdir(exist_ok=True)
    rng = random.Random(7)
    for k in range(3):
        (folder / f"file{k}.bin").write_bytes(rng.randbytes(512 * 1024))
    from agent.control.errors import ControlError

    if not followers or not asyncio.run(has_command(followers[0], "follow", {})):
        msg = "skipped: this agent has no `shoal follow` (the follow work of [8/13])"
        log(f"  follow-folder {msg}")
        return {"skipped": msg}
    try:
        pub = origin.call("publish", {"path": str(folder), "name": "replay-folder"})
    except ControlError as e:
        msg = f"skipped: this agent cannot `shoal publish DIR` yet ({e})"
        log(f"  follow-folder {msg}")
        return {"skipped": msg}
    lan.shape(1, rate=rate)
    rid = str(pub["resource_id"])
    dests = {f.name: work / f"{f.name}-folder" for f in followers}
    for f in followers:
        f.call("follow", {"resource": rid, "to": str(dests[f.name])}, timeout=120)
    first = _tree(folder)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(
            not d.exists() or _tree(d) != first for d in dests.values()):
        time.sleep(0.1)
    time.sleep(2.0)  # the first check after following is done
    hosts = range(1, len(mesh.agents) + 1)
    sent0 = {i: tc_sent_bytes(lan.host(i).ns) for i in hosts}
    data = bytearray((folder / "file1.bin").read_bytes())
    data[1000:1100] = rng.randbytes(100)
    (folder / "file1.bin").write_bytes(bytes(data))
    (folder / "file2.bin").rename(folder / "file2-renamed.bin")
    want = _tree(folder)
    t0 = time.perf_counter()
    new = origin.call("publish", {"path": str(folder), "name": "replay-folder"})
    version = int(new["version"])
    took: dict[str, float | None] = {n: None for n in dests}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and any(v is None for v in took.values()):
        for n, d in dests.items():
            if took[n] is None and _tree(d) == want:
                took[n] = time.perf_counter() - t0
        time.sleep(0.05)
    sent = {f"h{i}": tc_sent_bytes(lan.host(i).ns) - sent0[i] for i in hosts}
    syncs = {}  # each follower's own account of the sync (`shoal follow`)
    for f in followers:
        row = next((r for r in f.call("follow_list") if r.get("resource_id") == rid), {})
        last = row.get("last") or {}
        syncs[f.name] = {k: last.get(k) for k in ("why", "bytes_fetched", "deltas",
                                                  "delta_bytes_saved")}
    size = sum(len(v) for v in want.values())
    ok = all(v is not None for v in took.values())
    log(f"  follow-folder over a {rate} link (origin's egress): v{version} (100 bytes of one "
        f"file rewritten, one file renamed; folder {size / 1e3:.0f} KB) in "
        + ", ".join(f"{n}'s directory " + (f"{v:.2f} s" if v is not None else "NOT updated")
                    for n, v in took.items())
        + f" after the publish; bytes sent meanwhile: origin {sent['h1'] / 1e3:.1f} KB, all "
        f"hosts {sum(sent.values()) / 1e3:.1f} KB (heartbeats included); the followers' "
        "own account (new chunk bytes / of which rebuilt from a delta): "
        + ", ".join(f"{n} {(v['bytes_fetched'] or 0) / 1e3:.0f} KB / "
                    f"{(v['delta_bytes_saved'] or 0) / 1e3:.0f} KB ({v['why']})"
                    for n, v in syncs.items()))
    return {"rate": rate, "version": version, "updated": ok, "seconds": took, "syncs": syncs,
            "sent_bytes": sent, "origin_sent_bytes": sent["h1"], "folder_bytes": size,
            "followers": list(dests)}


def tc_sent_bytes(ns: str) -> int:
    """Bytes sent through eth0's root qdisc of namespace *ns* (``tc -s``: "Sent N bytes")."""
    out = subprocess.run(["ip", "netns", "exec", ns, "tc", "-s", "qdisc", "show", "dev",
                          "eth0"], capture_output=True, text=True, timeout=10).stdout
    m = re.search(r"Sent (\d+) bytes", out)
    return int(m.group(1)) if m else 0


# --------------------------------------------------------------------------- report


def summarise(runs: list[dict[str, Any]], modes: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in modes:
        rs = [r for r in runs if r["mode"] == mode]
        if not rs:
            continue
        out[mode] = {k: stats([r[k] for r in rs if r.get(k) is not None])
                     for k in ("hit_ratio", "p50_ms", "p95_ms", "miss_p50_ms", "miss_p95_ms",
                               "hit_p50_ms", "wasted_bytes", "wasted_pct", "errors",
                               "replay_s", "agent_wasted_bytes", "agent_prefetched",
                               "agent_used")}
        out[mode]["runs"] = len(rs)
        out[mode]["all_accounted"] = all(r["accounted"] for r in rs)
    return out


def report(summary: dict[str, Any], off: dict[str, Any], log: Any) -> None:
    rows = []
    for mode, s in summary.items():
        rows.append([mode, str(s["runs"]), fmt_stat(s["hit_ratio"], 3),
                     fmt_stat(s["p50_ms"], 1), fmt_stat(s["p95_ms"], 1),
                     fmt_stat(s["miss_p95_ms"], 1), fmt_stat(s["wasted_bytes"], 0, 1e-3),
                     fmt_stat(s["wasted_pct"], 1), fmt_stat(s["errors"], 0)])
    print_table(["prefetch", "runs", "hit ratio", "p50 ms", "p95 ms", "miss p95 ms",
                 "wasted KB", "wasted %", "errors"], rows)
    for mode, s in summary.items():
        if s["agent_prefetched"]["median"] is not None:
            log(f"prefetch {mode}, the agents' own account (`shoal prefetch` stats, summed): "
                f"prefetched {fmt_stat(s['agent_prefetched'], 0)}, used "
                f"{fmt_stat(s['agent_used'], 0)}, wasted KB "
                f"{fmt_stat(s['agent_wasted_bytes'], 0, 1e-3)}")
    lru, pt = off["lru_only"], off["predictor_point"]
    log(f"offline (bench/prefetch.py, same requests, cache {off['cache']}, no eviction): "
        f"LRU only hit {lru['hit_ratio']:.3f}; {off['predictor']} depth {off['depth']} "
        f"threshold {off['threshold']} hit {pt['hit_ratio']:.3f} (waste "
        f"{pt['wasted_pct']:.1f} %, precision {pt['precision']:.2f}); top-1 hit "
        f"{off['predictor_top1']['hit_ratio']:.3f}")
    for mode, ref, label in (("off", lru, "LRU only"), ("on", pt, off["predictor"])):
        s = summary.get(mode)
        if s and s["hit_ratio"]["median"] is not None and ref["hit_ratio"]:
            log(f"live {mode} / offline {label}: "
                f"{s['hit_ratio']['median'] / ref['hit_ratio']:.2f} (target for on: >= 0.9)")
    if "on" in summary and "off" in summary and summary["off"]["p95_ms"]["median"]:
        r = summary["on"]["p95_ms"]["median"] / summary["off"]["p95_ms"]["median"]
        log(f"demand p95 on / off: {r:.2f} (target <= 1.1)")


# --------------------------------------------------------------------------- main


def load_trace(path: Path, fmt: str, limit: int) -> list[traces.Request]:
    import prefetch as pf

    reqs, _st = pf.load(path, fmt, limit)
    return reqs


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds the finally blocks: agents stopped, netns removed


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", type=Path, default=DEFAULT_TRACE)
    ap.add_argument("--format", choices=traces.FORMATS, default="clf")
    ap.add_argument("--offset", type=int, default=3000, help="first request of the window")
    ap.add_argument("--window", type=int, default=1000, help="requests in the window")
    ap.add_argument("--requests", type=int, default=1000, help="at most this many replayed")
    ap.add_argument("--others", choices=("spread", "drop"), default="spread",
                    help="clients beyond the busiest: spread over the devices, or drop")
    ap.add_argument("--agents", type=int, default=5, help="agents (h1 = origin), >= 2")
    ap.add_argument("--speed", type=float, default=100.0, help="time compression")
    ap.add_argument("--max-gap", type=float, default=0.5, help="cap of a compressed gap, s")
    ap.add_argument("--cap-kib", type=int, default=256, help="cap of a resource's size")
    ap.add_argument("--shape", default="40mbit",
                    help="tbf rate on every host's egress (40mbit); none: unshaped")
    ap.add_argument("--runs", type=int, default=5, help="runs per mode")
    ap.add_argument("--modes", default="off,on")
    ap.add_argument("--cache", type=int, default=0, help="offline cache (0: no eviction)")
    ap.add_argument("--depth", type=int, default=2, help="offline prefetch depth")
    ap.add_argument("--threshold", type=float, default=0.1, help="offline score threshold")
    ap.add_argument("--phase", action="append", default=[],
                    choices=("mirror-move", "follow-folder"))
    ap.add_argument("--mirror-rounds", type=int, default=5,
                    help="mirror-move: times the origin reads index -> big first")
    ap.add_argument("--mirror-wait", type=float, default=8.0,
                    help="mirror-move: seconds after each demand phase")
    ap.add_argument("--folder-shape", default="20mbit")
    ap.add_argument("--agent-config", type=Path, help="TOML appended to every agent's config")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep", action="store_true", help="keep the work dir (agent logs)")
    args = ap.parse_args(argv)
    if args.shape == "none":
        args.shape = ""
    modes = [m for m in args.modes.split(",") if m]
    if any(m not in ("off", "on") for m in modes) or not modes:
        ap.error("--modes takes off and/or on")
    if args.agents < 2 or args.runs < 1 or args.requests < 1:
        ap.error("--agents >= 2, --runs >= 1 and --requests >= 1")
    return run(args, modes)


def run(args: argparse.Namespace, modes: list[str]) -> int:
    from tests.netns.harness import Lan, netns_available, tool_missing

    def log(msg: str) -> None:
        print(msg, flush=True)

    info = machine()
    result: dict[str, Any] = {"benchmark": "mesh_replay", "machine": info, "argv": sys.argv}
    reason = netns_available() or (tool_missing("tc") if args.shape else None)
    if reason:
        log(f"skipped: {reason}")
        write_json(args.json, result | {"skipped": reason})
        return 1
    try:
        reqs = load_trace(args.trace, args.format, MAX_REQUESTS)
        extra = args.agent_config.read_text() if args.agent_config else ""
        parsed = tomllib.loads(extra)
    except OSError as e:
        log(f"error: cannot read {e.filename}: {e.strerror}; check the path")
        return 1
    except tomllib.TOMLDecodeError as e:
        log(f"error: --agent-config is not valid TOML ({e}); fix the file")
        return 1
    if "enabled" in parsed.get("prefetch", {}):
        log("error: --agent-config sets [prefetch] enabled, which --modes decides; remove it")
        return 1
    sl = select(reqs, offset=args.offset, window=args.window, devices=args.agents - 1,
                max_requests=args.requests, speed=args.speed, max_gap=args.max_gap,
                cap=args.cap_kib * 1024, others=args.others)
    if not sl.items:
        log("error: the slice is empty; check --offset/--window against the trace")
        return 1
    compression = sl.span_s / sl.items[-1].at if sl.items[-1].at > 0 else 1.0
    if not args.agent_config:  # the learning timers compressed like the trace's time
        extra = compressed_timers(compression)
    on_ok = prefetch_key_supported()
    if "on" in modes and not on_ok:
        log("prefetch on: skipped (the agent's config has no [prefetch] enabled key yet: the "
            "Resource Mirror Manager of [8/13] has not landed); running prefetch off only")
        modes = [m for m in modes if m != "on"]
    result["prefetch_key_supported"] = on_ok
    log(f"slice of {args.trace.name}: window {args.offset}..{args.offset + args.window} "
        f"({sl.window} requests, {sl.dropped} by other clients dropped), {len(sl.items)} "
        f"replayed, {len(sl.sizes)} resources ({sum(sl.sizes.values()) / 1e6:.1f} MB, "
        f"capped at {args.cap_kib} KiB), trace span {sl.span_s / 3600:.1f} h -> "
        f"{sl.items[-1].at:.0f} s at {args.speed:g}x, gaps <= {args.max_gap} s "
        f"({compression:.0f}x in all)" + ("" if args.agent_config else
                                         f"; agents' learning timers {compression:.0f}x faster"))
    busiest = list(sl.mapping.items())[: args.agents - 1]
    log("devices: " + ", ".join(
        f"{d} <- {c} + {sum(1 for x in sl.mapping.values() if x == d) - 1} other clients "
        f"({sum(1 for i in sl.items if i.device == d)} requests)" for c, d in busiest)
        + f"; {ORIGIN} = origin")
    off = offline(sl, cache=args.cache or None, depth=args.depth, threshold=args.threshold)
    result |= {"slice": {"offset": args.offset, "window": args.window,
                         "replayed": len(sl.items), "dropped": sl.dropped,
                         "resources": len(sl.sizes), "bytes": sum(sl.sizes.values()),
                         "mapping": sl.mapping, "compressed_s": sl.items[-1].at},
               "offline": off}
    cls, _ = agent_classes()
    work = Path(tempfile.mkdtemp(prefix="shoal-bench-replay-"))
    runs: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    try:
        with Lan(hosts=args.agents) as lan:
            if args.shape:
                for i in range(1, args.agents + 1):
                    lan.shape(i, rate=args.shape)
            log(f"template: {args.agents} hosts {lan.subnet}.0/24 "
                f"({'tbf ' + args.shape if args.shape else 'unshaped'})")
            ids, secs = build_template(lan, work / "template", cls, args.agents, sl,
                                       extra, log)
            result["template_s"] = secs
            order = [m for _ in range(args.runs) for m in modes]
            for k, mode in enumerate(order):
                rdir = work / f"run{k}"
                try:
                    r = one_run(lan, rdir, cls, args.agents, sl, ids, mode, extra,
                                work / "template")
                except Exception as e:
                    log(f"  run {k + 1} ({mode}): ERROR {type(e).__name__}: {e}"[:500])
                    result.setdefault("run_errors", []).append(f"{mode}: {e}"[:2000])
                    continue
                finally:
                    if not args.keep:
                        shutil.rmtree(rdir, ignore_errors=True)
                runs.append(r)
                log(f"  run {k + 1}/{len(order)} prefetch {mode}: hit {r['hit_ratio']:.3f} "
                    f"({r['hits']} local, {r['by_kind'].get('mirror', 0)} mirror, "
                    f"{r['by_kind'].get('origin', 0)} origin, "
                    f"{r['by_kind'].get('peer', 0)} peer, {r['errors']} errors; "
                    f"accounted {r['accounted']}), p50 {r['p50_ms']:.0f} ms p95 "
                    f"{r['p95_ms']:.0f} ms, wasted {r['wasted_bytes'] / 1e3:.0f} KB, replay "
                    f"{r['replay_s']:.0f} s")
            if args.phase:
                timers = phase_timers()
                cfg = agent_config("on" if on_ok else None, extra, timers)
                if timers:
                    log("phases: [prefetch] " + ", ".join(f"{k} = {v}"
                                                          for k, v in timers.items()))
                mesh = Mesh(lan, work / "phases", cls, args.agents, cfg, work / "template")
                try:
                    asyncio.run(wait_connected(mesh.agents))
                    # the folder first: after the mirror phase the devices' models still
                    # predict its big file, and a follow makes a device active again, so
                    # mirror fetches (8 MiB over the origin's shaped link) would share
                    # the folder's window (seen in a run)
                    if "follow-folder" in args.phase:
                        result["follow_folder"] = phase_follow_folder(
                            lan, mesh, work / "phases", args.folder_shape, log)
                    if "mirror-move" in args.phase:
                        result["mirror_move"] = phase_mirror_move(
                            mesh, work / "phases", args.mirror_rounds, args.mirror_wait, log)
                finally:
                    mesh.stop()
    finally:
        if args.keep:
            log(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    summary = summarise(runs, modes)
    if summary:
        print()
        report(summary, off, log)
    log(f"run time {time.perf_counter() - t_start:.0f} s")
    info["agent_code_unchanged"] = check_code_unchanged(info["agent_code"])
    write_json(args.json, result | {"summary": summary, "runs": runs})
    return 0 if runs else 1


if __name__ == "__main__":
    raise SystemExit(main())
