"""Bulk transfer: Shoal fetch vs raw TCP and an rsync daemon, same bytes, same endpoints, same run.

    .venv/bin/python bench/transfer.py [--runs 5] [--quick] [--cases loopback,100mbit,20mbit]
        [--size-mib-loopback 512] [--size-mib-100mbit 48] [--size-mib-20mbit 16] [--json PATH]

Needs root for the shaped cases (network namespaces + tbf; skipped with a reason otherwise) and
rsync. Agent A publishes a resource (``--public``, so no pairing), agent B fetches it through
the control API (``fetch`` with ``--from A``, kept in the store, i.e. ``shoal fetch --no-output``)
with encryption, lz4 and hash checks on (defaults). Every repetition uses a fresh agent B with
an empty data dir, so every fetch moves every chunk.

Cases (BENCHMARKS.md "bulk transfer"):
  loopback   both agents on 127.0.0.1 (mDNS on lo only); one mixed file, first half log-like
             text (lz4 ratio ~0.26), second half random.  Target: Shoal >= 0.5 x raw.
  100mbit    two namespaces on a bridge, A's egress shaped by tbf at 100 Mbit/s;
  20mbit     same at 20 Mbit/s. Random and text files reported separately.
             Targets: random >= 0.95 x raw; text > 1.0 x raw (lz4 on the wire).

References measured in the same repetition, in rotating order with Shoal:
  raw    asyncio TCP, no crypto: sender reads the file in 256 KiB blocks and writes them to the
         socket; receiver writes what arrives to a file (bench/_common.py raw-serve/raw-fetch,
         run in the namespaces of A and B). Time: connect -> EOF, measured by the receiver.
  rsync  ``rsync --daemon --no-detach`` on A's address; B runs ``rsync --whole-file
         rsync://A/bench/FILE DIR/`` (no -z). Time: the client process's wall time.
Shoal time: wall time of the control-API fetch call (offer round trip + transfer + commit);
the agent's own ``seconds`` field is kept in the JSON.

CPU-seconds per GiB: utime+stime deltas from /proc/PID/stat over the fetch, for Shoal's
sender (A) and receiver (B) and for the raw sender/receiver. Results are medians over --runs
with min and max; ratios are per repetition (Shoal and the reference of the same repetition).
Benchmarks never assert; exit status 1 only when nothing could be measured.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    GIB,
    MB,
    MIB,
    RawServer,
    RsyncDaemon,
    agent_classes,
    check_code_unchanged,
    drop_written,
    fmt_stat,
    generate,
    lz4_ratio,
    machine,
    print_table,
    publish,
    stats,
    write_json,
)

METHODS = ("shoal", "raw", "rsync")
TARGETS = {
    ("loopback", "mixed"): (0.5, ">="),
    ("shaped", "random"): (0.95, ">="),
    ("shaped", "text"): (1.0, ">"),
}


def target_for(case: str, kind: str) -> tuple[float, str]:
    return TARGETS[("loopback" if case.startswith("loopback") else "shaped", kind)]


class Case:
    """Endpoints of one case: agent A (+ raw server + rsync daemon) and a factory for B."""

    def __init__(
        self, name: str, work: Path, files: dict[str, Path], lan: Any = None, a_config: str = ""
    ) -> None:
        self.name = name
        self.a_config = a_config
        self.work = work
        self.files = files  # kind -> file in work/src
        self.lan = lan
        self.host_a = lan.host(1) if lan else None
        self.host_b = lan.host(2) if lan else None
        self.addr_a = self.host_a.addr if lan else "127.0.0.1"
        self.agent_cls, self.loopback_only = agent_classes()
        self.a: Any = None
        self.raw: RawServer | None = None
        self.rsync: RsyncDaemon | None = None
        self.names: dict[str, str] = {}
        self.b: Any = None
        self.b_index = 0

    def setup(self) -> None:
        ns_a = self.host_a.ns if self.host_a else None
        self.a = self.agent_cls(
            f"bench-a-{self.name}", self.work / "a" / "data", netns=ns_a, host_addr=self.addr_a
        )
        if self.a_config:
            self.a.config(("" if self.lan else self.loopback_only) + self.a_config)
        self.a.start()
        for kind, path in self.files.items():
            t0 = time.perf_counter()
            r = publish(self.a, path, path.name, public=True)
            self.names[kind] = r["name"]
            print(
                f"  [{self.name}] A published {path.name} ({r['chunks']} chunks) in "
                f"{time.perf_counter() - t0:.1f} s"
            )
        self.raw = RawServer(self.work / "src", self.addr_a, self.host_a)
        self.rsync = RsyncDaemon(self.work / "src", self.addr_a, self.host_a)

    def fresh_b(self) -> Any:
        self.stop_b()
        self.b_index += 1
        ns_b = self.host_b.ns if self.host_b else None
        self.b = self.agent_cls(
            f"bench-b-{self.name}-{self.b_index}",
            self.work / f"b{self.b_index}" / "data",
            netns=ns_b,
            host_addr=self.host_b.addr if self.host_b else "127.0.0.1",
        )
        self.b.start()
        # Let B's start-up settle (mDNS probing, the automatic session to A) before timing.
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            peers = self.b.call("peers", timeout=5)
            if any(p.get("connected") for p in peers):
                break
            time.sleep(0.1)
        time.sleep(0.5)
        return self.b

    def stop_b(self) -> None:
        if self.b is not None:
            self.b.stop()
            drop_written([self.b.data_dir])
            self.b = None

    # -- one measurement each ---------------------------------------------------------
    def run_shoal(self, kind: str) -> dict[str, Any]:
        assert self.b is not None and self.a is not None
        size = self.files[kind].stat().st_size
        ca, cb = self.a.cpu(), self.b.cpu()
        t0 = time.perf_counter()
        res = self.b.call(
            "fetch",
            {
                "resource": self.names[kind],
                "source": f"{self.addr_a}:{self.a.port}",
                "stream": False,
            },
        )
        wall = time.perf_counter() - t0
        cpu_a, cpu_b = self.a.cpu() - ca, self.b.cpu() - cb
        if res.get("size") != size or res.get("already_held"):
            raise RuntimeError(f"unexpected fetch result: {res}")
        return {
            "seconds": wall,
            "agent_seconds": res.get("seconds"),
            "bytes": size,
            "bytes_fetched": res.get("bytes_fetched"),
            "sender_cpu_s": cpu_a,
            "receiver_cpu_s": cpu_b,
            "MBps": size / wall / MB,
        }

    def run_raw(self, kind: str) -> dict[str, Any]:
        assert self.raw is not None
        from _common import raw_fetch

        out = self.work / "out-raw"
        try:
            r = raw_fetch(self.raw, self.files[kind].name, out, self.host_b)
        finally:
            drop_written([out])
        size = self.files[kind].stat().st_size
        if r["bytes"] != size:
            raise RuntimeError(f"raw copy moved {r['bytes']} of {size} bytes")
        return {
            "seconds": r["seconds"],
            "bytes": size,
            "sender_cpu_s": r["sender_cpu_s"],
            "receiver_cpu_s": r["cpu_s"],
            "MBps": size / r["seconds"] / MB,
        }

    def run_rsync(self, kind: str) -> dict[str, Any]:
        assert self.rsync is not None
        out = self.work / "out-rsync"
        try:
            r = self.rsync.fetch(self.files[kind].name, out, self.host_b)
        finally:
            drop_written([out])
        size = self.files[kind].stat().st_size
        if r["bytes"] != size:
            raise RuntimeError(f"rsync moved {r['bytes']} of {size} bytes")
        return {
            "seconds": r["seconds"],
            "bytes": size,
            "receiver_cpu_s": r["cpu_s"],
            "MBps": size / r["seconds"] / MB,
        }

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop_b()
        for thing in (self.raw, self.rsync):
            if thing is not None:
                with contextlib.suppress(Exception):
                    thing.close()
        if self.a is not None:
            with contextlib.suppress(Exception):
                self.a.stop()


def run_case(
    name: str, rate: str | None, size_mib: int, kinds: list[str], runs: int, work: Path
) -> dict[str, Any]:
    work.mkdir(parents=True)
    src = work / "src"
    src.mkdir()
    files = {}
    seed = {"100mbit": 20, "20mbit": 30}.get(name, 10)
    for i, kind in enumerate(kinds):
        files[kind] = generate(src / f"{kind}-{size_mib}MiB.bin", size_mib, kind, seed + i)
    ratios = {k: lz4_ratio(p) for k, p in files.items()}
    print(
        f"\n== case {name}: {size_mib} MiB per file, data {', '.join(kinds)} "
        f"(lz4 ratio {', '.join(f'{k} {v:.2f}' for k, v in ratios.items())})"
    )

    lan_cm: Any = contextlib.nullcontext(None)
    if rate is not None:
        from tests.netns.harness import Lan

        lan_cm = Lan(hosts=2)
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {
        k: {m: [] for m in METHODS} for k in kinds
    }
    errors: list[str] = []
    with lan_cm as lan:
        if lan is not None:
            lan.shape(1, rate=rate)
        a_config = "[transfer]\ncompress = false\n" if name.endswith("-nolz4") else ""
        case = Case(name, work, files, lan, a_config)
        try:
            case.setup()
            for rep in range(runs):
                case.fresh_b()
                order = METHODS[rep % 3 :] + METHODS[: rep % 3]  # rotate: drift hits all alike
                for kind in kinds:
                    line = []
                    for method in order:
                        try:
                            s = getattr(case, f"run_{method}")(kind)
                        except Exception as e:
                            errors.append(f"rep {rep + 1} {kind} {method}: {e}")
                            print(f"  ! {errors[-1]}")
                            continue
                        s["rep"] = rep
                        samples[kind][method].append(s)
                        line.append(f"{method} {s['MBps']:.1f}")
                    print(f"  rep {rep + 1}/{runs} {kind:6}: MB/s " + ", ".join(line))
        finally:
            case.close()
    return {
        "case": name,
        "rate": rate,
        "size_mib": size_mib,
        "lz4_ratio": ratios,
        "samples": samples,
        "errors": errors,
        "summary": summarize(name, samples),
    }


def summarize(case: str, samples: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind, by_m in samples.items():
        per_rep = {m: {s["rep"]: s for s in by_m[m]} for m in METHODS}
        shoal = per_rep["shoal"]
        r_raw = [shoal[r]["MBps"] / per_rep["raw"][r]["MBps"] for r in shoal if r in per_rep["raw"]]
        r_rsync = [
            shoal[r]["MBps"] / per_rep["rsync"][r]["MBps"] for r in shoal if r in per_rep["rsync"]
        ]

        def cpu(m: str, key: str, by_m: Any = by_m) -> dict[str, Any]:
            return stats([s[key] / (s["bytes"] / GIB) for s in by_m[m] if key in s])

        tgt, op = target_for(case, kind)
        ratio = stats(r_raw)
        met = None
        if ratio["median"] is not None:
            met = ratio["median"] >= tgt if op == ">=" else ratio["median"] > tgt
        out[kind] = {
            "bytes": by_m["shoal"][0]["bytes"] if by_m["shoal"] else None,
            "MBps": {m: stats([s["MBps"] for s in by_m[m]]) for m in METHODS},
            "ratio_shoal_raw": ratio,
            "ratio_shoal_rsync": stats(r_rsync),
            "cpu_s_per_GiB": {
                "shoal_sender": cpu("shoal", "sender_cpu_s"),
                "shoal_receiver": cpu("shoal", "receiver_cpu_s"),
                "raw_sender": cpu("raw", "sender_cpu_s"),
                "raw_receiver": cpu("raw", "receiver_cpu_s"),
                "rsync_client": cpu("rsync", "receiver_cpu_s"),
            },
            "target": f"Shoal/raw {op} {tgt}",
            "target_met": met,
        }
    return out


def print_summary(results: list[dict[str, Any]], runs: int) -> None:
    print(
        f"\nBulk transfer: median (min-max) over {runs} runs; MB/s = 10^6 B/s; "
        "ratios per repetition"
    )
    rows = []
    cpu_rows = []
    for res in results:
        for kind, s in res["summary"].items():
            size = f"{(s['bytes'] or 0) / MIB:.0f} MiB"
            met = {True: "yes", False: "NO", None: "?"}[s["target_met"]]
            rows.append(
                [
                    res["case"],
                    kind,
                    size,
                    fmt_stat(s["MBps"]["shoal"]),
                    fmt_stat(s["MBps"]["raw"]),
                    fmt_stat(s["MBps"]["rsync"]),
                    fmt_stat(s["ratio_shoal_raw"], 2),
                    fmt_stat(s["ratio_shoal_rsync"], 2),
                    f"{s['target']}: {met}",
                ]
            )
            c = s["cpu_s_per_GiB"]
            cpu_rows.append(
                [
                    res["case"],
                    kind,
                    fmt_stat(c["shoal_sender"], 2),
                    fmt_stat(c["shoal_receiver"], 2),
                    fmt_stat(c["raw_sender"], 2),
                    fmt_stat(c["raw_receiver"], 2),
                    fmt_stat(c["rsync_client"], 2),
                ]
            )
    print_table(
        [
            "case",
            "data",
            "bytes",
            "Shoal MB/s",
            "raw MB/s",
            "rsync MB/s",
            "Shoal/raw",
            "Shoal/rsync",
            "target",
        ],
        rows,
    )
    print("\nCPU-seconds per GiB moved: median (min-max)")
    print_table(
        [
            "case",
            "data",
            "Shoal sender",
            "Shoal receiver",
            "raw sender",
            "raw receiver",
            "rsync client",
        ],
        cpu_rows,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="3 runs, 128/16/4 MiB (a smoke run, not for the record)",
    )
    ap.add_argument(
        "--cases",
        default="loopback,100mbit,20mbit",
        help="comma-separated; also: loopback-nolz4 (A with transfer.compress = "
        "false, a diagnostic row)",
    )
    ap.add_argument("--size-mib-loopback", type=int, default=None, help="default 512")
    ap.add_argument("--size-mib-100mbit", type=int, default=None, help="default 48")
    ap.add_argument("--size-mib-20mbit", type=int, default=None, help="default 16")
    ap.add_argument("--json", type=Path, help="write all samples and summaries here")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (agent logs)")
    args = ap.parse_args(argv)
    runs = 3 if args.quick and args.runs == 5 else max(1, args.runs)
    sizes = {
        "loopback": 128 if args.quick else 512,
        "100mbit": 16 if args.quick else 48,
        "20mbit": 4 if args.quick else 16,
    }
    sizes["loopback-nolz4"] = sizes["loopback"]
    for k, v in (
        ("loopback", args.size_mib_loopback),
        ("100mbit", args.size_mib_100mbit),
        ("20mbit", args.size_mib_20mbit),
    ):
        if v is not None:
            sizes[k] = max(2, v)
            if k == "loopback":
                sizes["loopback-nolz4"] = sizes[k]
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = set(cases) - set(sizes)
    if unknown:
        ap.error(f"unknown case(s): {', '.join(sorted(unknown))}")

    info = machine()
    print(f"bulk transfer benchmark; machine: {info}")
    work = Path(tempfile.mkdtemp(prefix="shoal-bench-transfer-"))
    results: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    t_start = time.perf_counter()
    try:
        for name in cases:
            rate = None if name.startswith("loopback") else name
            kinds = ["mixed"] if rate is None else ["random", "text"]
            if rate is not None:
                from tests.netns.harness import netns_available, tool_missing

                reason = netns_available() or tool_missing("tc")
                if reason:
                    skipped[name] = reason
                    print(f"\n== case {name}: skipped ({reason})")
                    continue
            try:
                results.append(run_case(name, rate, sizes[name], kinds, runs, work / name))
            except Exception as e:
                skipped[name] = f"failed: {e}"
                traceback.print_exc()
    finally:
        if args.keep:
            print(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    elapsed = time.perf_counter() - t_start
    if results:
        print_summary(results, runs)
    for name, why in skipped.items():
        print(f"case {name}: {why}")
    print(f"\ntotal time {elapsed:.0f} s")
    info["agent_code_unchanged"] = check_code_unchanged(info["agent_code"])
    write_json(
        args.json,
        {
            "benchmark": "transfer",
            "machine": info,
            "runs": runs,
            "argv": sys.argv,
            "elapsed_s": elapsed,
            "results": results,
            "skipped": skipped,
        },
    )
    measured = any(s["MBps"]["shoal"]["n"] for r in results for s in r["summary"].values())
    return 0 if measured else 1


if __name__ == "__main__":
    raise SystemExit(main())
