"""Footprint of an idle ``shoal run`` holding 1,000 resources with 5 connected peers.

    .venv/bin/python bench/footprint.py [--resources 1000] [--peers 5] [--starts 10]
        [--idle-runs 5] [--idle-seconds 30] [--settle 5] [--quick] [--paired]
        [--shared-loopback] [--json PATH]

Everything on loopback (mDNS on lo only, LOOPBACK_ONLY as in the tests), inside a private
network namespace when root can create one (``--shared-loopback`` to skip it): on the
machine's own loopback, agents of concurrent test runs were auto-dialled too (8 sessions
instead of 5 seen once). Once, a template data dir is filled by publishing --resources small
files (1-4 KiB, distinct) through the control API; each run starts the agent under test on a
fresh copy of it. --peers other agents (empty stores) run throughout; sessions come from mDNS
auto-dial (no pairing: each agent is alone in its own authority cluster). ``--paired`` pairs
all of them first (one Raft group; the leader heartbeats every 50 ms), the role of the agent
under test is printed.

  start to ready: process launch -> the control socket answers ``status`` (polled every
                  5 ms in-process); median of --starts launches.
  RSS:            VmRSS from /proc after the peers are connected and --settle seconds.
  idle CPU:       utime+stime delta over --idle-seconds, as % of one core; no control call is
                  made during the window. The peers' own idle CPU (0 resources, also 5
                  sessions each) over the same window is given for context.
Targets (BENCHMARKS.md): RSS <= 80 MB, idle CPU <= 0.5 %, start to ready <= 2 s.
Benchmarks never assert; exit status 1 only when nothing could be measured.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    agent_classes,
    check_code_unchanged,
    fmt_stat,
    machine,
    print_table,
    publish,
    stats,
    write_json,
)

MB = 1e6
# ``authority`` filtered on a name no resource has: cluster, leader and members without the
# 1,000 assignment rows, whose one-line reply would exceed the control client's 64 KiB line
# limit (agent/control.py MAX_LINE; `shoal authority` itself fails with a few hundred
# resources).
NO_ROWS = {"resource": "-no-such-resource-"}


def make_agent(cls: Any, name: str, data_dir: Path, ns: str | None, loopback_only: str) -> Any:
    """An agent on loopback; inside ``ns`` (a private namespace) when given, so that other
    agents on this machine's loopback (test runs, other benchmarks) cannot join the mesh."""
    agent = cls(name, data_dir, netns=ns)
    # LOOPBACK_ONLY puts every agent's dashboard on a free port: no peer takes the fixed one
    agent.config(loopback_only)
    return agent


def page_open(agent: Any, ns: str | None) -> Any:
    """A dashboard page held open on *agent* (bench/dashboard_reader.py, in its namespace)."""
    import subprocess

    url = agent.call("dashboard")["url"]
    prefix = ["ip", "netns", "exec", ns] if ns else []
    reader = Path(__file__).resolve().parent / "dashboard_reader.py"
    return subprocess.Popen([*prefix, sys.executable, str(reader), url],
                            stdout=subprocess.PIPE, text=True)


def make_template(cls: Any, work: Path, n: int, ns: str | None, loopback_only: str) -> Path:
    tpl = work / "template"
    agent = make_agent(cls, "fp-main", tpl / "data", ns, loopback_only)
    files = work / "files"
    files.mkdir()
    agent.start()
    t0 = time.perf_counter()
    try:
        for i in range(n):
            p = files / f"res-{i:04d}.txt"
            p.write_bytes(os.urandom(1024 + (i * 37) % 3072))
            publish(agent, p, p.name, public=i % 2 == 0)
        st = agent.call("status")
    finally:
        agent.stop()
    print(
        f"template: {st['resources']} resources, {st['store_used']} bytes, published in "
        f"{time.perf_counter() - t0:.1f} s"
    )
    for leftover in ("control.sock", "agent.lock"):
        with contextlib.suppress(OSError):
            (tpl / "data" / leftover).unlink()
    return tpl / "data"


def pair_mesh(cls: Any, tpl: Path, peers: list[Any], ns: str | None, loopback_only: str) -> None:
    """--paired: pair the template agent and the peers, every pair, and wait for one authority
    cluster of all of them, so that each run's agent is a Raft member (heartbeats every 50 ms
    over the sessions) as in a real household mesh."""
    from tests.integration.agents import pair

    t0 = time.perf_counter()
    main = make_agent(cls, "fp-main", tpl, ns, loopback_only)
    main.start()
    try:
        everyone = [main, *peers]
        for i, a in enumerate(everyone):
            for b in everyone[i + 1 :]:
                pair(a, b)
        deadline = time.monotonic() + 90
        while True:
            vs = [a.call("authority", NO_ROWS, timeout=5) for a in everyone]
            keys = {
                (v["cluster"], v["leader_id"], len(v["voters"]) + len(v["learners"])) for v in vs
            }
            if len(keys) == 1 and next(iter(keys))[2] == len(everyone) and vs[0]["leader_id"]:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"no single authority cluster of {len(everyone)}: {keys}")
            time.sleep(0.2)
        print(
            f"paired {len(everyone)} agents, one authority cluster ({len(vs[0]['voters'])} "
            f"voters, {len(vs[0]['learners'])} learners) in {time.perf_counter() - t0:.1f} s"
        )
    finally:
        main.stop()
    for leftover in ("control.sock", "agent.lock"):
        with contextlib.suppress(OSError):
            (tpl / leftover).unlink()


def wait_connected(agent: Any, n: int, timeout: float = 20.0) -> float | None:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        st = agent.call("status", timeout=5)
        if st["connected"] >= n:
            return time.perf_counter() - t0
        time.sleep(0.1)
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--resources", type=int, default=1000)
    ap.add_argument("--peers", type=int, default=5)
    ap.add_argument("--starts", type=int, default=10, help="start-to-ready launches (10)")
    ap.add_argument("--idle-runs", type=int, default=5, help="RSS/idle-CPU runs (5)")
    ap.add_argument("--idle-seconds", type=float, default=30.0)
    ap.add_argument(
        "--settle",
        type=float,
        default=5.0,
        help="seconds after the peers are connected before measuring",
    )
    ap.add_argument("--quick", action="store_true", help="3 idle runs of 10 s, 5 starts")
    ap.add_argument(
        "--paired",
        action="store_true",
        help="pair all agents (one authority cluster: Raft heartbeats between them); default: "
        "unpaired peers, each agent alone in its own cluster",
    )
    ap.add_argument(
        "--shared-loopback",
        action="store_true",
        help="run on the machine's loopback instead of a private namespace (then agents of "
        "other runs on this machine can join the mesh)",
    )
    ap.add_argument(
        "--dashboard",
        action="store_true",
        help="after each idle window, a second one with a dashboard page open (its live "
        "stream read as a browser reads it): the CPU and RSS the open page adds",
    )
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.quick:
        args.idle_runs, args.idle_seconds, args.starts = 3, 10.0, 5
    args.starts = max(args.starts, args.idle_runs)

    info = machine()
    print(f"footprint benchmark; machine: {info}")
    cls, loopback_only = agent_classes()
    work = Path(tempfile.mkdtemp(prefix="shoal-bench-footprint-"))
    peers: list[Any] = []
    main_agent: Any = None
    ready: list[float] = []
    runs: list[dict[str, Any]] = []
    lan: Any = None
    ns: str | None = None
    if not args.shared_loopback:
        from tests.netns.harness import Lan, netns_available

        reason = netns_available()
        if reason is None:
            lan = Lan(hosts=1).__enter__()
            ns = lan.host(1).ns
        else:
            print(f"note: no private namespace ({reason}); agents use the shared loopback")
    info["isolation"] = f"private network namespace {ns}" if ns else "shared loopback"
    info["paired"] = args.paired
    try:
        tpl = make_template(cls, work, args.resources, ns, loopback_only)
        for i in range(args.peers):
            p = make_agent(
                cls, f"fp-peer{i + 1}", work / f"peer{i + 1}" / "data", ns, loopback_only
            )
            p.start()
            peers.append(p)
        if args.paired:
            pair_mesh(cls, tpl, peers, ns, loopback_only)
        for i in range(args.starts):
            run_dir = work / f"run{i}"
            shutil.copytree(tpl, run_dir / "data", symlinks=True)
            main_agent = make_agent(cls, "fp-main", run_dir / "data", ns, loopback_only)
            main_agent.launch()
            ready.append(main_agent.wait_ready(poll=0.005))
            row: dict[str, Any] = {"ready_s": ready[-1]}
            if i < args.idle_runs:
                row["connect_s"] = wait_connected(main_agent, args.peers)
                time.sleep(args.settle)
                st = main_agent.call("status")
                row["connected"] = st["connected"]
                row["resources"] = st["resources"]
                with contextlib.suppress(Exception):
                    v = main_agent.call("authority", NO_ROWS, timeout=5)
                    row["raft_role"] = v["role"]
                    row["raft_voters"] = len(v["voters"])
                    row["raft_learners"] = len(v["learners"])
                rss0 = main_agent.rss()
                c0 = main_agent.cpu()
                pc0 = [p.cpu() for p in peers]
                t0 = time.perf_counter()
                time.sleep(args.idle_seconds)
                dt = time.perf_counter() - t0
                c1 = main_agent.cpu()
                pc1 = [p.cpu() for p in peers]
                row["rss_bytes"] = max(rss0, main_agent.rss())
                row["idle_cpu_pct"] = (c1 - c0) / dt * 100
                row["peer_idle_cpu_pct"] = statistics.median(
                    (b - a) / dt * 100 for a, b in zip(pc0, pc1, strict=True)
                )
                row["peer_rss_bytes"] = statistics.median(p.rss() for p in peers)
                if args.dashboard:
                    reader = page_open(main_agent, ns)
                    time.sleep(args.settle)
                    c0, t0 = main_agent.cpu(), time.perf_counter()
                    time.sleep(args.idle_seconds)
                    dt = time.perf_counter() - t0
                    row["page_cpu_pct"] = (main_agent.cpu() - c0) / dt * 100
                    row["page_rss_bytes"] = main_agent.rss()
                    reader.terminate()
                    out, _ = reader.communicate(timeout=10)
                    row["page_events"] = int(out.split()[-1]) if out.split() else 0
                    row["page_cpu_delta_pp"] = row["page_cpu_pct"] - row["idle_cpu_pct"]
                    row["page_rss_delta_MB"] = (row["page_rss_bytes"] - row["rss_bytes"]) / MB
                    print(f"  run {i + 1} with a dashboard page open: CPU "
                          f"{row['page_cpu_pct']:.2f} % ({row['page_cpu_delta_pp']:+.2f} pp), "
                          f"RSS {row['page_rss_bytes'] / MB:.1f} MB "
                          f"({row['page_rss_delta_MB']:+.1f} MB), {row['page_events']} events")
                role = f" as Raft {row.get('raft_role')}" if args.paired else ""
                print(
                    f"  run {i + 1}: ready {row['ready_s']:.3f} s, {row['connected']} "
                    f"sessions, {row['resources']} resources, RSS {row['rss_bytes'] / MB:.1f}"
                    f" MB, idle CPU {row['idle_cpu_pct']:.2f} %"
                    f"{role}"
                    " (peers: "
                    f"{row['peer_idle_cpu_pct']:.2f} %, RSS {row['peer_rss_bytes'] / MB:.1f}"
                    " MB)"
                )
            else:
                print(f"  start {i + 1}: ready {row['ready_s']:.3f} s")
            runs.append(row)
            main_agent.stop()
            main_agent = None
            shutil.rmtree(run_dir, ignore_errors=True)
    finally:
        for ag in [main_agent, *peers]:
            if ag is not None:
                with contextlib.suppress(Exception):
                    ag.stop()
        if lan is not None:
            lan.close()
        shutil.rmtree(work, ignore_errors=True)

    idle = [r for r in runs if "idle_cpu_pct" in r]
    summary = {
        "start_to_ready_s": stats(ready),
        "rss_MB": stats([r["rss_bytes"] / MB for r in idle]),
        "idle_cpu_pct": stats([r["idle_cpu_pct"] for r in idle]),
        "peer_idle_cpu_pct": stats([r["peer_idle_cpu_pct"] for r in idle]),
        "peer_rss_MB": stats([r["peer_rss_bytes"] / MB for r in idle]),
    }
    targets = {"start_to_ready_s": 2.0, "rss_MB": 80.0, "idle_cpu_pct": 0.5}
    figures = [
        ("start_to_ready_s", "start to ready (s)", 3),
        ("rss_MB", "RSS (MB)", 1),
        ("idle_cpu_pct", f"idle CPU over {args.idle_seconds:.0f} s (% of a core)", 2),
        ("peer_rss_MB", "  context: a peer's RSS, 0 resources (MB)", 1),
        ("peer_idle_cpu_pct", "  context: a peer's idle CPU (%)", 2),
    ]
    if args.dashboard:
        page = [r for r in idle if "page_cpu_pct" in r]
        summary["page_cpu_delta_pp"] = stats([r["page_cpu_delta_pp"] for r in page])
        summary["page_rss_delta_MB"] = stats([r["page_rss_delta_MB"] for r in page])
        targets |= {"page_cpu_delta_pp": 1.0, "page_rss_delta_MB": 10.0}
        figures += [("page_cpu_delta_pp", "dashboard page open: CPU added (pp)", 2),
                    ("page_rss_delta_MB", "dashboard page open: RSS added (MB)", 1)]
    rows = []
    for key, label, digits in figures:
        s = summary[key]
        tgt = targets.get(key)
        met = "-" if tgt is None or s["median"] is None else ("yes" if s["median"] <= tgt else "NO")
        rows.append([label, str(s["n"]), fmt_stat(s, digits), f"<= {tgt:g}" if tgt else "-", met])
    print(
        f"\nFootprint: {args.resources} resources, {args.peers} peers on loopback; median (min-max)"
    )
    print_table(["figure", "n", "median (min-max)", "target", "met"], rows)
    info["agent_code_unchanged"] = check_code_unchanged(info["agent_code"])
    write_json(
        args.json,
        {
            "benchmark": "footprint",
            "machine": info,
            "argv": sys.argv,
            "runs": runs,
            "summary": summary,
            "targets": targets,
        },
    )
    return 0 if ready else 1


if __name__ == "__main__":
    raise SystemExit(main())
