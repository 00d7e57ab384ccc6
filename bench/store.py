"""Micro-benchmark of the content store: publish (chunk+hash+store), republish, export.

Also measures the per-chunk hot path used by transfers (put_chunk / get_chunk of distinct
256 KiB chunks, hash included, as a peer delivers or requests them) and how long opening a
store holding many small chunks takes (index load).

Usage: .venv/bin/python bench/store.py [--size-mib 256] [--avg-kib 256] [--dir DIR]
                                       [--open-chunks 100000] [--json PATH]

The input is generated (half text-like lines, half random bytes) and written in 1 MiB
blocks, so the benchmark itself stays within the Pi memory budget. The file is in the
page cache when timing starts: numbers are CPU + write path, not cold-read speed.
MB/s means 10^6 bytes per second. Benchmarks never assert.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.security.identity import Identity
from agent.store import ContentStore, chunk_file, chunk_id

MIB = 1024 * 1024
SIGNER = Identity.generate()
WORDS = [
    "the", "a", "shoal", "mesh", "chunk", "node", "peer", "radio", "device", "file", "share",
    "local", "cache", "data", "sync", "version", "manifest", "resource", "public", "hash",
    "store", "edge", "link", "packet", "route", "river", "stone", "lorem", "ipsum", "dolor",
    "sit", "amet", "consectetur", "adipiscing", "elit", "sed", "do", "eiusmod",
]


def generate(path: Path, size_mib: int, seed: int = 1) -> None:
    """Write size_mib MiB: first half text-like lines, second half random bytes."""
    rng = random.Random(seed)
    lines = [" ".join(rng.choices(WORDS, k=rng.randint(4, 16))) + "\n" for _ in range(20_000)]
    text_mib = size_mib // 2
    with open(path, "wb") as f:
        for _ in range(text_mib):
            block = "".join(rng.choices(lines, k=14_000)).encode()
            while len(block) < MIB:
                block += block[: MIB - len(block)]
            f.write(block[:MIB])
        for _ in range(size_mib - text_mib):
            f.write(rng.randbytes(MIB))


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def bench_chunks(size_mib: int, workdir: Path, chunk_kib: int = 256) -> dict[str, Any]:
    """put_chunk then (after reopen) get_chunk of size_mib MiB of distinct chunks."""
    csize = chunk_kib * 1024
    n = max(1, size_mib * MIB // csize)
    rng = random.Random(7)
    base = rng.randbytes(csize)
    root = workdir / "chunkstore"
    ids: list[bytes] = []
    t_put = 0.0
    with ContentStore(root) as st:
        for start in range(0, n, 64):  # build 64 chunks untimed, then time their puts
            batch = [(i.to_bytes(8, "little") + base[8:]) for i in range(start, min(n, start + 64))]
            bids = [chunk_id(d) for d in batch]
            t0 = time.perf_counter()
            for cid, d in zip(bids, batch, strict=True):
                st.put_chunk(cid, d)
            t_put += time.perf_counter() - t0
            ids.extend(bids)
    rng.shuffle(ids)
    t_hash, _ = timed(lambda: [chunk_id(base) for _ in range(n)])  # floor for put/get
    st = ContentStore(root)
    with st:
        t_get, got = timed(lambda: sum(len(st.get_chunk(c)) for c in ids))
    assert got == n * csize
    shutil.rmtree(root, ignore_errors=True)
    return {
        "chunk_ops": n,
        "op_chunk_size": csize,
        "put_chunk_mb_s": round(n * csize / t_put / 1e6, 1),
        "put_chunk_us": round(t_put / n * 1e6, 1),
        "get_chunk_mb_s": round(n * csize / t_get / 1e6, 1),
        "get_chunk_us": round(t_get / n * 1e6, 1),
        "hash_only_mb_s": round(n * csize / t_hash / 1e6, 1),
        "hash_only_us": round(t_hash / n * 1e6, 1),
    }


def bench_open(nchunks: int, workdir: Path, chunk_size: int = 1024) -> dict[str, Any]:
    """Time to open a store holding *nchunks* small chunks (index load / directory scan)."""
    if nchunks <= 0:
        return {"open_chunks": 0, "open_ms": 0.0}
    root = workdir / "openstore"
    pad = bytes(chunk_size - 8)
    with ContentStore(root) as st:
        for i in range(nchunks):
            d = i.to_bytes(8, "little") + pad
            st.put_chunk(chunk_id(d), d)
    t_open, st = timed(lambda: ContentStore(root))
    st.close()
    shutil.rmtree(root, ignore_errors=True)
    return {"open_chunks": nchunks, "open_ms": round(t_open * 1e3, 1)}


def run(size_mib: int, avg_kib: int, workdir: Path, open_chunks: int = 0) -> dict[str, Any]:
    src = workdir / "input.bin"
    generate(src, size_mib)
    nbytes = src.stat().st_size
    avg = avg_kib * 1024

    def rate(seconds: float) -> float:
        return round(nbytes / seconds / 1e6, 1)

    t_chunk, nchunks = timed(lambda: sum(1 for _ in chunk_file(src, avg)))
    with ContentStore(workdir / "store", avg_chunk_size=avg) as st:
        t_pub, m = timed(lambda: st.publish_file(src, signer=SIGNER))
        t_repub, _ = timed(lambda: st.publish_file(src, signer=SIGNER))
        t_exp, _ = timed(lambda: st.export(m, workdir / "export.bin"))
        t_ver, report = timed(st.verify)
    same = _same(src, workdir / "export.bin")
    ops = bench_chunks(size_mib, workdir)
    opening = bench_open(open_chunks, workdir)
    return {
        **ops,
        **opening,
        "size_mib": size_mib,
        "avg_chunk_size": avg,
        "chunks": nchunks,
        "mean_chunk_size": round(nbytes / max(nchunks, 1)),
        "chunk_hash_mb_s": rate(t_chunk),
        "publish_mb_s": rate(t_pub),
        "republish_dedup_mb_s": rate(t_repub),
        "export_mb_s": rate(t_exp),
        "verify_mb_s": rate(t_ver),
        "export_identical": same,
        "verify_ok": report.ok,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def _same(a: Path, b: Path) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(MIB), fb.read(MIB)
            if x != y:
                return False
            if not x:
                return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--avg-kib", type=int, default=256)
    ap.add_argument("--dir", type=Path, default=None,
                    help="work directory (default: a temp dir, removed afterwards)")
    ap.add_argument("--open-chunks", type=int, default=100_000,
                    help="chunks (1 KiB) in the store whose open time is measured; 0 = skip")
    ap.add_argument("--json", type=Path, default=None, help="also write results here")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="shoal-bench-", dir=args.dir))
    try:
        res = run(args.size_mib, args.avg_kib, work, args.open_chunks)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"store bench: {res['size_mib']} MiB, avg chunk {res['avg_chunk_size'] // 1024} KiB, "
          f"{res['chunks']} chunks (mean {res['mean_chunk_size'] // 1024} KiB)")
    for label, key in (("chunk+hash only", "chunk_hash_mb_s"),
                       ("publish (chunk+hash+store)", "publish_mb_s"),
                       ("republish (all dedup)", "republish_dedup_mb_s"),
                       ("export (verified)", "export_mb_s"),
                       ("verify (scrub)", "verify_mb_s")):
        print(f"  {label:<32}{res[key]:8.1f} MB/s")
    kib = res["op_chunk_size"] // 1024
    for label, key in ((f"put_chunk ({kib} KiB, hashed)", "put_chunk"),
                       (f"get_chunk ({kib} KiB, verified)", "get_chunk"),
                       (f"BLAKE3 only ({kib} KiB)", "hash_only")):
        print(f"  {label:<32}{res[key + '_mb_s']:8.1f} MB/s {res[key + '_us']:9.1f} us/op")
    if res["open_chunks"]:
        print(f"  {'open with ' + str(res['open_chunks']) + ' chunks':<32}"
              f"{res['open_ms']:8.1f} ms")
    print(f"  export identical={res['export_identical']} verify_ok={res['verify_ok']} "
          f"peak_rss={res['peak_rss_mib']} MiB")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
