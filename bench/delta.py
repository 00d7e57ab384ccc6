"""Delta sync: bytes on the wire and time for a follower to reach each new version, vs rsync.

    .venv/bin/python bench/delta.py [--runs 5] [--size-mib 256] [--json PATH]

Two agents on loopback (127.0.0.1, mDNS on lo only), paired through the control API. A
publishes a ``--size-mib`` file of random bytes; B runs ``follow NAME --to PATH`` (the first,
full fetch is not measured). Then, in each run, three edits from ../shared/docs/BENCHMARKS.md
are made one after the other to A's file and republished (``publish --update``):

  insert    1 byte inserted in the middle of the file
  append    1 MiB appended
  scattered 10 scattered 4 KiB rewrites (positions seeded by the run)

For each edit B (following) is told by A's announcement and fetches only what changed.

Shoal bytes: TCP payload bytes both ways on every socket between A's and B's peer ports,
read from the kernel (``ss -tin``: ``bytes_sent`` summed over both endpoints of each
connection: each byte is sent once) just before the publish and 0.2 s after B holds the new
version: the version announcement, the manifest, chunk requests and (delta) replies, B's
relay of the record, heartbeat pings; all inside the encrypted session. The agents run with
the authority and usage sharing off (:data:`QUIET`): their periodic messages are not part of
a sync.
Shoal time: from the ``publish`` call (A re-chunks the whole file) until B's ``follow``
listing shows the new version (control polls every 10 ms); ``sync`` is the part after the
publish returned; ``file`` is from the publish call until B's ``--to`` file was replaced
(B re-reads and verifies every chunk and writes, fsyncs and renames a whole new file: the
atomic replacement), after which it is checked to be byte-identical (``IDENTICAL``).

rsync reference, same edit, same run, same endpoints: ``rsync --daemon`` on 127.0.0.1
serving A's directory; B's side keeps its own copy of the previous version and runs
``rsync --stats --no-whole-file rsync://127.0.0.1:PORT/bench/FILE COPY`` (delta transfer, no
-z; ``--ignore-times``: a same-size edit must not be skipped by the quick check).
rsync bytes: "Total bytes sent" + "Total bytes received" from ``--stats`` (the client's
socket payload both ways). rsync time: the client's wall time.

Folder edit (one file changed, one renamed): measured only when ``shoal publish DIR``
exists (folder manifests, the `folders` branch); otherwise reported as skipped with the
reason. Results: median (min-max) over --runs; ratio = Shoal / rsync per run. Benchmarks
never assert; exit status 1 only when nothing could be measured.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    MIB,
    RsyncDaemon,
    agent_classes,
    fmt_stat,
    machine,
    print_table,
    stats,
    write_json,
)

EDITS = ("insert", "append", "scattered")
#: Background protocols off, so the socket counters bracket the sync alone (both would add
#: their periodic messages to whatever window is measured): the authority's Raft
#: heartbeats and reports, and usage-aggregate sharing. Heartbeat pings stay (1 per s).
QUIET = "[authority]\nenabled = false\n[predict]\nshare = false\n"
NAME = "delta.bin"


# --------------------------------------------------------------------------- edits
def apply_edit(path: Path, edit: str, rng: random.Random) -> None:
    """Edit the file in place as BENCHMARKS.md's delta-sync rows describe."""
    data = bytearray(path.read_bytes())
    if edit == "insert":
        mid = len(data) // 2
        data[mid:mid] = b"\x5a"
    elif edit == "append":
        data += rng.randbytes(MIB)
    elif edit == "scattered":
        for pos in sorted(rng.sample(range(0, len(data) - 4096, 4096), 10)):
            data[pos:pos + 4096] = rng.randbytes(4096)
    else:
        raise ValueError(edit)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(bytes(data))
    tmp.replace(path)


def folder_edit_supported() -> str | None:
    """None if `shoal publish DIR` exists on this branch, else why the folder edit is skipped.

    The hook for the `folders` branch: once `publish` takes a directory, add the folder edit
    (one file changed, one renamed) to :data:`EDITS` with its own publish/verify steps."""
    from agent.control.parser import build_parser

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):
        build_parser().parse_args(["publish", "--help"])
    own = buf.getvalue().split("global options")[0].lower()  # not --data-dir's "directory"
    if "director" not in own and "folder" not in own:
        return "needs `shoal publish DIR` (folder manifests, the `folders` branch)"
    return None


# --------------------------------------------------------------------------- socket bytes
_SS_PORTS = re.compile(r"\S+:(\d+)\s+\S+:(\d+)")
_SS_SENT = re.compile(r"bytes_sent:(\d+)")


def wire_bytes(ports: set[int]) -> int:
    """Payload bytes sent so far on every established TCP socket touching *ports* (both
    endpoints of each loopback connection appear; each byte is sent by exactly one)."""
    out = subprocess.run(["ss", "-tinH", "state", "established"], capture_output=True,
                         text=True, check=True).stdout
    total = 0
    lines = out.splitlines()
    i = 0
    while i < len(lines):
        m = _SS_PORTS.search(lines[i])
        info = lines[i + 1] if i + 1 < len(lines) and lines[i + 1].startswith(("\t", " ")) \
            else ""
        if info:
            i += 1
        i += 1
        if m is None or not ({int(m.group(1)), int(m.group(2))} & ports):
            continue
        s = _SS_SENT.search(info) or _SS_SENT.search(lines[i - 1])
        if s is not None:
            total += int(s.group(1))
    return total


def rsync_pull(daemon: RsyncDaemon, dest: Path) -> dict[str, float]:
    # --ignore-times: an edit that keeps the size (scattered rewrites) must not be skipped
    # by the quick check; the delta algorithm still decides what moves
    argv = ["rsync", "--stats", "--no-whole-file", "--ignore-times",
            f"rsync://{daemon.host}:{daemon.port}/bench/{NAME}", str(dest)]
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=True)
    seconds = time.perf_counter() - t0
    sent = int(re.search(r"Total bytes sent: ([\d,]+)", r.stdout).group(1).replace(",", ""))  # type: ignore[union-attr]
    recv = int(re.search(r"Total bytes received: ([\d,]+)", r.stdout).group(1).replace(",", ""))  # type: ignore[union-attr]
    return {"bytes": float(sent + recv), "seconds": seconds}


# --------------------------------------------------------------------------- agents
def pair(a: Any, b: Any) -> None:
    b.call("pair_open", {"seconds": 30})
    started = a.call("pair_start", {"address": f"127.0.0.1:{b.port}"})
    pending = b.call("pair_pending")
    a.call("pair_confirm", {"code": started["code"]})
    b.call("pair_confirm", {"code": started["code"]})
    done = b.call("pair_wait", {"pairing_id": pending[0]["pairing_id"], "timeout": 10})
    if not done.get("complete"):
        raise RuntimeError(f"pairing failed: {done}")


def wait_version(b: Any, rid: str, version: int, timeout: float = 300.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for row in b.call("follow_list"):
            if row.get("resource_id") == rid and row.get("version") == version:
                return time.perf_counter()
        time.sleep(0.01)
    raise RuntimeError(f"B did not reach v{version} within {timeout} s: {b.log()[-2000:]}")


def inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def wait_export(path: Path, old_inode: int | None, want: bytes,
                timeout: float = 120.0) -> float | None:
    """When the followed file was replaced (a new inode: the agent renames a complete temp
    file over it), as perf_counter; None if it never was or differs from *want*. Polls
    stat() only, so the check does not compete with the agent for the CPU."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if inode(path) not in (None, old_inode):
            t = time.perf_counter()
            return t if path.read_bytes() == want else None
        time.sleep(0.005)
    return None


def one_run(run: int, size_mib: int, base: Path) -> dict[str, Any]:
    BenchAgent, loopback = agent_classes()
    rng = random.Random(run)
    root = Path(tempfile.mkdtemp(prefix=f"shoal-delta-{run}-", dir=base))
    a_dir, b_dir = root / "a-files", root / "b-files"
    a_dir.mkdir()
    b_dir.mkdir()
    src = a_dir / NAME
    with open(src, "wb") as f:
        for _ in range(size_mib):
            f.write(rng.randbytes(MIB))
    a = BenchAgent("a", root / "a")
    b = BenchAgent("b", root / "b")
    for x in (a, b):  # the counters should see the sync, not Raft heartbeats or usage shares
        x.config(loopback + QUIET)
    daemon = None
    out: dict[str, Any] = {"run": run, "edits": {}}
    try:
        a.start()
        b.start()
        pair(a, b)
        pub = a.call("publish", {"path": str(src), "name": NAME})
        rid = pub["resource_id"]
        followed = b_dir / "followed.bin"
        b.call("follow", {"resource": rid, "to": str(followed)}, timeout=900)
        mirror = b_dir / "rsync-copy.bin"  # rsync's own previous version
        shutil.copyfile(src, mirror)
        daemon = RsyncDaemon(a_dir, "127.0.0.1")
        ports = {a.port, b.port}
        version = pub["version"]
        for edit in EDITS:
            apply_edit(src, edit, rng)
            time.sleep(0.3)  # heartbeats settle; the counters below bracket the sync only
            w0 = wire_bytes(ports)
            ino = inode(followed)
            t0 = time.perf_counter()
            r = a.call("publish", {"path": str(src), "update": rid})
            t_pub = time.perf_counter()
            version = r["version"]
            t1 = wait_version(b, rid, version)
            time.sleep(0.2)  # B's relay of the record to A (a few hundred bytes) lands
            shoal_bytes = wire_bytes(ports) - w0
            t_exp = wait_export(followed, ino, src.read_bytes())  # replaced after the commit
            ok = t_exp is not None
            rs = rsync_pull(daemon, mirror)
            out["edits"][edit] = {
                "shoal_bytes": shoal_bytes, "shoal_seconds": t1 - t0,
                "shoal_sync_seconds": t1 - t_pub, "publish_seconds": t_pub - t0,
                "export_seconds": None if t_exp is None else t_exp - t0,
                "rsync_bytes": rs["bytes"], "rsync_seconds": rs["seconds"],
                "export_identical": ok and mirror.read_bytes() == src.read_bytes(),
                "last": next((x.get("last") for x in b.call("follow_list")), None),
            }
            print(f"  run {run} {edit:9s}: shoal {shoal_bytes / 1024:.1f} KiB in "
                  f"{t1 - t0:.2f} s (sync {t1 - t_pub:.2f} s); rsync "
                  f"{rs['bytes'] / 1024:.1f} KiB in {rs['seconds']:.2f} s", flush=True)
        reason = folder_edit_supported()
        out["folder"] = {"skipped": reason or "publish DIR exists: add the folder edit here"}
    finally:
        if daemon is not None:
            daemon.close()
        for x in (b, a):
            try:
                x.call("stop", timeout=5)
                if x.proc is not None:
                    x.proc.wait(15)
            except Exception:
                if x.proc is not None:
                    x.proc.kill()
        shutil.rmtree(root, ignore_errors=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--tmp", type=Path, default=None, help="scratch directory (default /tmp)")
    args = ap.parse_args()
    if shutil.which("rsync") is None or shutil.which("ss") is None:
        print("needs rsync and ss (apt-get install -y rsync iproute2)")
        return 1
    runs = []
    for i in range(args.runs):
        try:
            runs.append(one_run(i + 1, args.size_mib, args.tmp or Path(tempfile.gettempdir())))
        except Exception as e:  # a failed run is reported, the others still count
            print(f"run {i + 1} failed: {type(e).__name__}: {e}")
    if not runs:
        return 1
    rows = []
    summary: dict[str, Any] = {}
    for edit in EDITS:
        got = [r["edits"][edit] for r in runs if edit in r["edits"]]
        sb = stats([g["shoal_bytes"] / 1024 for g in got])
        rb = stats([g["rsync_bytes"] / 1024 for g in got])
        ratio = stats([g["shoal_bytes"] / g["rsync_bytes"] for g in got])
        st = stats([g["shoal_seconds"] for g in got])
        ss_ = stats([g["shoal_sync_seconds"] for g in got])
        rt = stats([g["rsync_seconds"] for g in got])
        fe = stats([g["export_seconds"] for g in got if g["export_seconds"] is not None])
        summary[edit] = {"shoal_kib": sb, "rsync_kib": rb, "bytes_ratio": ratio,
                         "shoal_s": st, "shoal_sync_s": ss_, "rsync_s": rt, "shoal_file_s": fe,
                         "identical": all(g["export_identical"] for g in got)}
        rows.append([edit, fmt_stat(sb), fmt_stat(rb), fmt_stat(ratio, 3), fmt_stat(st, 2),
                     fmt_stat(ss_, 2), fmt_stat(fe, 2), fmt_stat(rt, 2),
                     "yes" if summary[edit]["identical"] else "NO"])
    print(f"\nDelta sync, {args.size_mib} MiB, {len(runs)} run(s), loopback; "
          "median (min-max)")
    print_table(["EDIT", "SHOAL KiB", "RSYNC KiB", "BYTES SHOAL/RSYNC", "SHOAL s (publish+sync)",
                 "SHOAL SYNC s", "SHOAL FILE s", "RSYNC s", "IDENTICAL"], rows)
    print(f"folder edit: skipped ({runs[0]['folder']['skipped']})")
    write_json(args.json, {"machine": machine(), "size_mib": args.size_mib, "runs": runs,
                           "summary": summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
