"""Discovery and small-fetch latency between real agents in two network namespaces.

    .venv/bin/python bench/discovery.py [--trials 20] [--fetches 50] [--json PATH]

Needs root (network namespaces; skipped with a reason otherwise). Agent A runs in host 1 of a
fresh two-host bridge (default config: mDNS on eth0); for each trial a new agent B (fresh data
dir, so a new identity the LAN has never seen, on a new port) is launched in host 2. B's key is
created before launch and drawn so that B has the smaller short ID in even trials and the
larger one in odd trials: the result would otherwise depend on A's random ID.

(a) peer visible: from launching B's process (``ip netns exec ... shoal run``; Python start-up
    included) until A's ``peers`` (control API) lists B as reachable, and until B's lists A.
    Polled every 10 ms through the control sockets. B's own start-to-ready (``status``
    answers) is reported for context. Trials are split by which agent has the smaller short
    ID: that one dials, the other waits up to 1.5 s for it (agent/node.py ``_maybe_dial``).
(b) 4 KiB fetch once the session exists: B fetches a fresh 4 KiB public resource from A
    (a new one each time, nothing cached) by name, as ``shoal fetch NAME --no-output`` does:
    - control-API wall time (bench process -> B's socket -> A -> back; no process spawn),
    - the fetch result's ``seconds`` (agent/transfer Fetch.run: manifest store, chunk round
      trip, commit; excludes the offer round trip),
    - CLI wall time: ``.venv/bin/shoal --json fetch NAME --no-output`` as a process.
Targets (BENCHMARKS.md): visible <= 1.5 s after start; 4 KiB fetch <= 20 ms after the session
exists. Benchmarks never assert; exit status 1 only when nothing could be measured.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    ROOT,
    agent_classes,
    check_code_unchanged,
    machine,
    percentile,
    print_table,
    publish,
    write_json,
)

POLL = 0.01


def _peer_state(agent: Any, name: str) -> bool:
    try:
        peers = agent.try_call("peers", timeout=1.0)
    except Exception:
        return False
    return any(p["name"] == name and p["reachable"] for p in peers)


def identity_with_order(data_dir: Path, a_id: str, b_smaller: bool) -> str:
    """Create B's identity in ``data_dir`` before launch, drawing keys until B's short ID
    sorts on the requested side of A's (the smaller one dials at once, the other waits)."""
    from agent.security.identity import load_or_create_identity

    for _ in range(200):
        shutil.rmtree(data_dir, ignore_errors=True)
        ident, _created = load_or_create_identity(data_dir)
        sid = ident.hex_id[:16]
        if (sid < a_id) == b_smaller:
            return sid
    raise RuntimeError("could not draw an identity on the requested side")


def visibility_trial(
    cls: Any, a: Any, a_id: str, host_b: Any, work: Path, i: int, timeout: float = 15.0
) -> dict[str, Any]:
    name = f"disc-b{i:02d}"
    b = cls(name, work / name / "data", netns=host_b.ns, host_addr=host_b.addr)
    b_smaller = i % 2 == 0  # alternate: half the trials each way round
    b_id = identity_with_order(b.data_dir, a_id, b_smaller)
    t_a = t_b = t_ready = None
    # A new port per trial: a stale mDNS record of an earlier B must not point at this one
    # (see the report: agent/node.py _dial closes the new device's session in that case).
    b.launch(port=47500 + i)
    t0 = b.launched_at
    try:
        while time.perf_counter() - t0 < timeout and (t_a is None or t_b is None):
            if t_a is None and _peer_state(a, name):
                t_a = time.perf_counter() - t0
            if t_b is None and _peer_state(b, a.name):
                t_b = time.perf_counter() - t0
            if t_ready is None and b.socket_path.exists():
                with contextlib.suppress(Exception):
                    b.try_call("status", timeout=1.0)
                    t_ready = time.perf_counter() - t0
            if b.proc.poll() is not None:
                raise RuntimeError(f"agent {name} exited: {b.log()}")
            time.sleep(POLL)
        time.sleep(1.5)  # let B finish registering, so its goodbye reaches A on stop
    finally:
        b.stop()
        shutil.rmtree(b.data_dir, ignore_errors=True)
    return {
        "a_sees_b_s": t_a,
        "b_sees_a_s": t_b,
        "b_ready_s": t_ready,
        "b_id": b_id,
        "b_dials": b_smaller,
    }


def fetch_latency(a: Any, b: Any, work: Path, n: int) -> dict[str, Any]:
    src = work / "small"
    src.mkdir()
    names = []
    for i in range(2 * n + 2):
        p = src / f"small-{i:03d}.bin"
        p.write_bytes(os.urandom(4096))
        names.append(publish(a, p, p.name, public=True)["name"])
    api, agent_s, cli = [], [], []
    # one warm-up each (not counted)
    b.call("fetch", {"resource": names[0], "stream": False})
    shoal = str(ROOT / ".venv" / "bin" / "shoal")
    if not Path(shoal).exists():
        shoal = ""
    base = [shoal] if shoal else [sys.executable, "-m", "agent"]
    base += ["--data-dir", str(b.data_dir), "--json"]
    subprocess.run(
        [*base, "fetch", names[1], "--no-output"], check=True, capture_output=True, cwd=ROOT
    )
    for i in range(n):
        t0 = time.perf_counter()
        res = b.call("fetch", {"resource": names[2 + i], "stream": False})
        api.append(time.perf_counter() - t0)
        if res.get("already_held") or res.get("size") != 4096:
            raise RuntimeError(f"unexpected fetch result {res}")
        agent_s.append(float(res["seconds"]))
    for i in range(n):
        t0 = time.perf_counter()
        subprocess.run(
            [*base, "fetch", names[2 + n + i], "--no-output"],
            check=True,
            capture_output=True,
            cwd=ROOT,
        )
        cli.append(time.perf_counter() - t0)

    def summary(v: list[float]) -> dict[str, Any]:
        return {
            "p50": percentile(v, 50),
            "p95": percentile(v, 95),
            "min": min(v),
            "max": max(v),
            "n": len(v),
            "samples": v,
        }

    return {
        "control_api_wall_s": summary(api),
        "agent_seconds_field_s": summary(agent_s),
        "cli_process_wall_s": summary(cli),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--trials", type=int, default=20, help="visibility trials (default 20)")
    ap.add_argument("--fetches", type=int, default=50, help="4 KiB fetches per method (50)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep", action="store_true", help="keep the work dir (agent logs)")
    args = ap.parse_args(argv)

    from tests.netns.harness import Lan, netns_available

    info = machine()
    print(f"discovery benchmark; machine: {info}")
    reason = netns_available()
    if reason:
        print(f"skipped: {reason}")
        write_json(args.json, {"benchmark": "discovery", "machine": info, "skipped": reason})
        return 1
    cls, _ = agent_classes()
    work = Path(tempfile.mkdtemp(prefix="shoal-bench-discovery-"))
    trials: list[dict[str, Any]] = []
    fetch: dict[str, Any] | None = None
    a = b = None
    try:
        with Lan(hosts=2) as lan:
            h1, h2 = lan.host(1), lan.host(2)
            a = cls("disc-a", work / "a" / "data", netns=h1.ns, host_addr=h1.addr)
            a.launch(port=47474)
            a.wait_ready()
            a_id = a.try_call("id")["hex"][:16]
            time.sleep(2.0)  # A's own mDNS registration (probing) is done
            for i in range(args.trials):
                t = visibility_trial(cls, a, a_id, h2, work, i)
                trials.append(t)
                print(
                    f"  trial {i + 1:2}/{args.trials}: A sees B {_s(t['a_sees_b_s'])}, "
                    f"B sees A {_s(t['b_sees_a_s'])}, B ready {_s(t['b_ready_s'])}, "
                    f"{'B' if t['b_dials'] else 'A'} has the smaller ID"
                )
                time.sleep(0.3)
            # (b): a B whose session with A is up
            b = cls("disc-fetch", work / "bf" / "data", netns=h2.ns, host_addr=h2.addr)
            b.launch(port=47499)
            b.wait_ready()
            deadline = time.monotonic() + 10
            while not _peer_state(b, a.name) and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.0)
            fetch = fetch_latency(a, b, work, args.fetches)
            b.stop()
            b = None
            a.stop()
            a = None
    finally:
        for ag in (b, a):
            if ag is not None:
                with contextlib.suppress(Exception):
                    ag.stop()
        if args.keep:
            print(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    def col(key: str, sel: Any = None) -> list[float]:
        return [t[key] for t in trials if t[key] is not None and (sel is None or sel(t))]

    rows = []
    for label, sel in (
        ("all", None),
        ("B has smaller ID (B dials)", lambda t: t["b_dials"]),
        ("A has smaller ID (A dials)", lambda t: not t["b_dials"]),
    ):
        for key, what in (
            ("a_sees_b_s", "A lists B reachable"),
            ("b_sees_a_s", "B lists A reachable"),
            ("b_ready_s", "B control socket answers"),
        ):
            v = col(key, sel)
            if not v:
                continue
            within = sum(x <= 1.5 for x in v)
            rows.append(
                [
                    label,
                    what,
                    str(len(v)),
                    f"{percentile(v, 50):.3f}",
                    f"{percentile(v, 95):.3f}",
                    f"{max(v):.3f}",
                    f"{within}/{len(v)}" if key != "b_ready_s" else "-",
                ]
            )
    missing = sum(1 for t in trials if t["a_sees_b_s"] is None or t["b_sees_a_s"] is None)
    print(
        f"\n(a) peer visible after launching B's process ({len(trials)} trials; "
        f"{missing} never visible within 15 s); seconds"
    )
    print_table(["trials", "event", "n", "p50", "p95", "max", "<= 1.5 s"], rows)

    def both_visible(sel: Any = None) -> list[float]:
        return [
            max(t["a_sees_b_s"], t["b_sees_a_s"])
            for t in trials
            if t["a_sees_b_s"] is not None
            and t["b_sees_a_s"] is not None
            and (sel is None or sel(t))
        ]

    result_a: dict[str, Any] = {}
    for key, sel in (
        ("all", None),
        ("b_dials", lambda t: t["b_dials"]),
        ("a_dials", lambda t: not t["b_dials"]),
    ):
        v = both_visible(sel)
        result_a[key] = {
            "n": len(v),
            "p50": percentile(v, 50),
            "p95": percentile(v, 95),
            "max": max(v) if v else None,
            "within_1_5_s": sum(x <= 1.5 for x in v),
            "target_met": bool(v) and percentile(v, 50) <= 1.5,
        }
        if v:
            r = result_a[key]
            print(
                f"both visible ({key}): p50 {r['p50']:.3f} s, p95 {r['p95']:.3f} s, max "
                f"{r['max']:.3f} s, {r['within_1_5_s']}/{len(v)} within 1.5 s; target "
                f"{'met' if r['target_met'] else 'NOT met'}"
            )
    if fetch:
        print(
            f"\n(b) 4 KiB fetch of a fresh public resource once the session exists "
            f"({args.fetches} each); milliseconds"
        )
        frows = []
        for key, what in (
            ("control_api_wall_s", "control-API call, wall"),
            ("agent_seconds_field_s", "fetch result 'seconds' (agent)"),
            ("cli_process_wall_s", "`shoal fetch --no-output` process, wall"),
        ):
            s = fetch[key]
            frows.append(
                [
                    what,
                    f"{s['p50'] * 1e3:.1f}",
                    f"{s['p95'] * 1e3:.1f}",
                    f"{s['min'] * 1e3:.1f}",
                    f"{s['max'] * 1e3:.1f}",
                ]
            )
        print_table(["measure", "p50", "p95", "min", "max"], frows)
        api50 = fetch["control_api_wall_s"]["p50"]
        fetch["target_met"] = api50 <= 0.020
        print(f"target <= 20 ms (control-API p50): {'yes' if fetch['target_met'] else 'NO'}")
    info["agent_code_unchanged"] = check_code_unchanged(info["agent_code"])
    write_json(
        args.json,
        {
            "benchmark": "discovery",
            "machine": info,
            "argv": sys.argv,
            "trials": trials,
            "visibility": result_a,
            "fetch_4k": fetch,
        },
    )
    return 0 if trials or fetch else 1


def _s(v: float | None) -> str:
    return "never" if v is None else f"{v:.3f} s"


if __name__ == "__main__":
    raise SystemExit(main())
