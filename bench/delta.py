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

Folder edit (one file changed, one renamed; ``--folder-files`` files of ``--folder-mib``
MiB each, half of them in a subdirectory): A publishes the directory (``publish DIR``), B
runs ``follow NAME --to DIR`` (the agent writes and keeps the tree). Per run, one 4 KiB
block of the first file is rewritten (position seeded by the run) and the second file is
renamed in place; A republishes the directory under the same name (the next version). Shoal
bytes as above, from the publish call until B's directory matches A's (same relative
paths, sizes and bytes) + 0.2 s; Shoal time: from the publish call until B's directory
matched (polled: paths and sizes, and the edited file replaced, then every file hashed).
rsync: the plain common invocation ``rsync -a --delete --stats rsync://.../bench/tree/
COPY/`` into B's own copy of the previous tree (made by the same command, not measured).
Without ``--fuzzy`` rsync has no rename detection: the renamed file is sent whole.
Measured only when ``shoal publish DIR`` exists; otherwise reported as skipped with the
reason. ``--cases`` picks the file edits, the folder edit or both. Results: median
(min-max) over --runs; ratio = Shoal / rsync per run. Benchmarks never assert; exit status
1 only when nothing could be measured.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
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
FOLDER = "delta-folder"


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


# --------------------------------------------------------------------------- folder edit
def make_tree(tree: Path, rng: random.Random, files: int, mib: int) -> None:
    """*files* random files of *mib* MiB, the second half in ``sub/``."""
    (tree / "sub").mkdir(parents=True)
    for i in range(files):
        where = tree / "sub" if i >= files // 2 else tree
        with open(where / f"part-{i:02d}.bin", "wb") as f:
            for _ in range(mib):
                f.write(rng.randbytes(MIB))


def folder_edit(tree: Path, rng: random.Random) -> tuple[str, str, str]:
    """One 4 KiB block of the first file rewritten in place, the second file renamed in
    its directory; returns (changed, renamed from, renamed to) as relative paths."""
    changed = tree / "part-00.bin"
    size = changed.stat().st_size
    with open(changed, "r+b") as f:
        f.seek(rng.randrange(0, size - 4096, 4096))
        f.write(rng.randbytes(4096))
    old, new = tree / "part-01.bin", tree / "part-01-renamed.bin"
    old.rename(new)
    return (changed.name, old.name, new.name)


def tree_files(root: Path) -> dict[str, int]:
    """Relative path -> size of every regular file under *root* (hidden ones too: a
    temp file the agent is still writing means the tree does not match yet)."""
    out: dict[str, int] = {}
    for d, _dirs, names in os.walk(root):
        for n in names:
            p = Path(d) / n
            with contextlib.suppress(FileNotFoundError):
                out[str(p.relative_to(root))] = p.stat().st_size
    return out


def tree_digests(root: Path) -> dict[str, str]:
    out = {}
    for rel in sorted(tree_files(root)):
        h = hashlib.blake2b()
        with open(root / rel, "rb") as f:
            while block := f.read(MIB):
                h.update(block)
        out[rel] = h.hexdigest()
    return out


def file_stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns)


def wait_tree(dest: Path, want: dict[str, str], sizes: dict[str, int], changed: str,
              old_stamp: tuple[int, int] | None, timeout: float = 300.0) -> float | None:
    """When *dest* first matched *want* (paths and sizes equal and the edited file touched,
    then every file's hash), as perf_counter; None if it never did. The time is taken when
    the cheap check passed; the hashing only confirms it (or polling goes on)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if tree_files(dest) == sizes and file_stamp(dest / changed) != old_stamp:
            t = time.perf_counter()
            if tree_digests(dest) == want:
                return t
        time.sleep(0.005)
    return None


def rsync_tree(daemon: RsyncDaemon, dest: Path) -> dict[str, float]:
    """The plain common invocation (no --fuzzy: a renamed file is sent whole)."""
    argv = ["rsync", "-a", "--delete", "--stats",
            f"rsync://{daemon.host}:{daemon.port}/bench/tree/", f"{dest}/"]
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=True)
    seconds = time.perf_counter() - t0
    sent = int(re.search(r"Total bytes sent: ([\d,]+)", r.stdout).group(1).replace(",", ""))  # type: ignore[union-attr]
    recv = int(re.search(r"Total bytes received: ([\d,]+)", r.stdout).group(1).replace(",", ""))  # type: ignore[union-attr]
    return {"bytes": float(sent + recv), "seconds": seconds}


def folder_case(a: Any, b: Any, a_dir: Path, b_dir: Path, daemon: RsyncDaemon,
                rng: random.Random, files: int, mib: int) -> dict[str, Any]:
    tree = a_dir / "tree"
    make_tree(tree, rng, files, mib)
    written = time.time()
    pub = a.call("publish", {"path": str(tree), "name": FOLDER}, timeout=900)
    rid = pub["resource_id"]
    dest = b_dir / "followed-tree"
    b.call("follow", {"resource": rid, "to": str(dest)}, timeout=900)
    copy = b_dir / "rsync-tree"
    copy.mkdir()
    rsync_tree(daemon, copy)  # rsync's own previous tree, by the same command
    first = tree_digests(tree)
    if wait_tree(dest, first, tree_files(tree), "part-00.bin", None) is None:
        raise RuntimeError(f"B never wrote v{pub['version']} of the folder: {b.log()[-2000:]}")
    # rsync's quick check compares whole-second mtimes: an edit in the second the tree was
    # written would be skipped (and rsync's bytes understated), so it comes later
    time.sleep(max(0.0, written + 1.5 - time.time()))
    changed, moved_from, moved_to = folder_edit(tree, rng)
    want, sizes = tree_digests(tree), tree_files(tree)
    stamp = file_stamp(dest / changed)
    time.sleep(0.3)  # heartbeats settle
    ports = {a.port, b.port}
    w0 = wire_bytes(ports)
    t0 = time.perf_counter()
    r = a.call("publish", {"path": str(tree), "name": FOLDER}, timeout=900)
    t_pub = time.perf_counter()
    t_done = wait_tree(dest, want, sizes, changed, stamp)
    time.sleep(0.2)  # B's relay of the record lands
    shoal_bytes = wire_bytes(ports) - w0
    rs = rsync_tree(daemon, copy)
    return {
        "shoal_bytes": shoal_bytes,
        "shoal_seconds": None if t_done is None else t_done - t0,
        "shoal_sync_seconds": None if t_done is None else t_done - t_pub,
        "publish_seconds": t_pub - t0, "version": r["version"],
        "rsync_bytes": rs["bytes"], "rsync_seconds": rs["seconds"],
        "identical": t_done is not None, "rsync_identical": tree_digests(copy) == want,
        "changed": changed, "renamed": [moved_from, moved_to],
        "tree": b.call("follow_list"),
    }


# --------------------------------------------------------------------------- runs
def one_run(run: int, size_mib: int, base: Path, cases: set[str],
            folder_files: int, folder_mib: int) -> dict[str, Any]:
    BenchAgent, loopback = agent_classes()
    rng = random.Random(run)
    root = Path(tempfile.mkdtemp(prefix=f"shoal-delta-{run}-", dir=base))
    a_dir, b_dir = root / "a-files", root / "b-files"
    a_dir.mkdir()
    b_dir.mkdir()
    src = a_dir / NAME
    if "files" in cases:
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
        daemon = RsyncDaemon(a_dir, "127.0.0.1")
        if "files" in cases:
            file_edits(a, b, src, b_dir, daemon, rng, out)
        reason = folder_edit_supported()
        if reason is not None:
            out["folder"] = {"skipped": reason}
        elif "folder" in cases:
            g = folder_case(a, b, a_dir, b_dir, daemon, rng, folder_files, folder_mib)
            out["folder"] = g
            print(f"  run {run} folder   : shoal {g['shoal_bytes'] / 1024:.1f} KiB in "
                  f"{g['shoal_seconds'] or float('nan'):.2f} s; rsync "
                  f"{g['rsync_bytes'] / 1024:.1f} KiB in {g['rsync_seconds']:.2f} s", flush=True)
        else:
            out["folder"] = {"skipped": "not asked for (--cases)"}
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


def file_edits(a: Any, b: Any, src: Path, b_dir: Path, daemon: RsyncDaemon,
               rng: random.Random, out: dict[str, Any]) -> None:
    run = out["run"]
    pub = a.call("publish", {"path": str(src), "name": NAME})
    rid = pub["resource_id"]
    followed = b_dir / "followed.bin"
    b.call("follow", {"resource": rid, "to": str(followed)}, timeout=900)
    mirror = b_dir / "rsync-copy.bin"  # rsync's own previous version
    shutil.copyfile(src, mirror)
    ports = {a.port, b.port}
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--tmp", type=Path, default=None, help="scratch directory (default /tmp)")
    ap.add_argument("--cases", default="files,folder",
                    help="comma-separated: files (the three edits), folder (default both)")
    ap.add_argument("--folder-files", type=int, default=8)
    ap.add_argument("--folder-mib", type=int, default=8, help="MiB per folder file")
    args = ap.parse_args()
    if shutil.which("rsync") is None or shutil.which("ss") is None:
        print("needs rsync and ss (apt-get install -y rsync iproute2)")
        return 1
    cases = {c.strip() for c in args.cases.split(",") if c.strip()}
    if not cases or not cases <= {"files", "folder"} or args.folder_files < 2 \
            or args.folder_mib < 1:
        print("--cases takes files and/or folder; --folder-files >= 2, --folder-mib >= 1")
        return 2
    runs = []
    for i in range(args.runs):
        try:
            runs.append(one_run(i + 1, args.size_mib, args.tmp or Path(tempfile.gettempdir()),
                                cases, args.folder_files, args.folder_mib))
        except Exception as e:  # a failed run is reported, the others still count
            print(f"run {i + 1} failed: {type(e).__name__}: {e}")
    if not runs:
        return 1
    rows = []
    summary: dict[str, Any] = {}
    for edit in EDITS:
        got = [r["edits"][edit] for r in runs if edit in r["edits"]]
        if not got:
            continue
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
    got = [r["folder"] for r in runs if "shoal_bytes" in r.get("folder", {})]
    if got:
        sb = stats([g["shoal_bytes"] / 1024 for g in got])
        rb = stats([g["rsync_bytes"] / 1024 for g in got])
        ratio = stats([g["shoal_bytes"] / g["rsync_bytes"] for g in got])
        st = stats([g["shoal_seconds"] for g in got if g["shoal_seconds"] is not None])
        ss_ = stats([g["shoal_sync_seconds"] for g in got
                     if g["shoal_sync_seconds"] is not None])
        rt = stats([g["rsync_seconds"] for g in got])
        ident = all(g["identical"] and g["rsync_identical"] for g in got)
        summary["folder"] = {"shoal_kib": sb, "rsync_kib": rb, "bytes_ratio": ratio,
                             "shoal_s": st, "shoal_sync_s": ss_, "rsync_s": rt,
                             "identical": ident}
        rows.append(["folder", fmt_stat(sb), fmt_stat(rb), fmt_stat(ratio, 3), fmt_stat(st, 2),
                     fmt_stat(ss_, 2), "-", fmt_stat(rt, 2), "yes" if ident else "NO"])
    print(f"\nDelta sync, {args.size_mib} MiB file, folder {args.folder_files} x "
          f"{args.folder_mib} MiB, {len(runs)} run(s), loopback; median (min-max); "
          "folder: SHOAL s = publish -> B's directory matches")
    print_table(["EDIT", "SHOAL KiB", "RSYNC KiB", "BYTES SHOAL/RSYNC", "SHOAL s (publish+sync)",
                 "SHOAL SYNC s", "SHOAL FILE s", "RSYNC s", "IDENTICAL"], rows)
    skipped = runs[0].get("folder", {}).get("skipped")
    if skipped:
        print(f"folder edit: skipped ({skipped})")
    write_json(args.json, {"machine": machine(), "size_mib": args.size_mib,
                           "folder_files": args.folder_files, "folder_mib": args.folder_mib,
                           "runs": runs,
                           "summary": summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
