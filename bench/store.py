"""Micro-benchmark of the content store: publish (chunk+hash+store), republish, export.

Usage: .venv/bin/python bench/store.py [--size-mib 256] [--avg-kib 256] [--dir DIR]
                                       [--json PATH]

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

from agent.store import ContentStore, chunk_file

MIB = 1024 * 1024
PUBLISHER = "be" * 16
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


def run(size_mib: int, avg_kib: int, workdir: Path) -> dict[str, Any]:
    src = workdir / "input.bin"
    generate(src, size_mib)
    nbytes = src.stat().st_size
    avg = avg_kib * 1024

    def rate(seconds: float) -> float:
        return round(nbytes / seconds / 1e6, 1)

    t_chunk, nchunks = timed(lambda: sum(1 for _ in chunk_file(src, avg)))
    with ContentStore(workdir / "store", avg_chunk_size=avg) as st:
        t_pub, m = timed(lambda: st.publish_file(src, publisher=PUBLISHER))
        t_repub, _ = timed(lambda: st.publish_file(src, publisher=PUBLISHER))
        t_exp, _ = timed(lambda: st.export(m, workdir / "export.bin"))
        t_ver, report = timed(st.verify)
    same = _same(src, workdir / "export.bin")
    return {
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
    ap.add_argument("--json", type=Path, default=None, help="also write results here")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="shoal-bench-", dir=args.dir))
    try:
        res = run(args.size_mib, args.avg_kib, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"store bench: {res['size_mib']} MiB, avg chunk {res['avg_chunk_size'] // 1024} KiB, "
          f"{res['chunks']} chunks (mean {res['mean_chunk_size'] // 1024} KiB)")
    for label, key in (("chunk+hash only", "chunk_hash_mb_s"),
                       ("publish (chunk+hash+store)", "publish_mb_s"),
                       ("republish (all dedup)", "republish_dedup_mb_s"),
                       ("export (verified)", "export_mb_s"),
                       ("verify (scrub)", "verify_mb_s")):
        print(f"  {label:<28}{res[key]:8.1f} MB/s")
    print(f"  export identical={res['export_identical']} verify_ok={res['verify_ok']} "
          f"peak_rss={res['peak_rss_mib']} MiB")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
