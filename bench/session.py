"""Micro-benchmark of the session layer (agent/session).

    .venv/bin/python bench/session.py [--runs 5] [--tcp-mib 128] [--json PATH]

Measures, each as the median of --runs runs with min and max:
  * handshakes/s: complete Noise_XX handshakes through two sans-I/O SecureConnections
    (both sides' CPU on one core);
  * sans-I/O records/s and MB/s: send_message() on one connection, receive_data()/next_event()
    on its peer, for 1 KiB and 64 KiB messages and for one full record (65518 B payload); the
    reference in the same run is bare ChaCha20-Poly1305 encrypt+decrypt of the same sizes;
  * loopback TCP MB/s: SecureChannel vs raw asyncio streams moving the same bytes in the same
    run (both ends in one event loop), and their ratio.

Figures are for comparison within one run; the machine is shared and noisy. Never asserts;
exits non-zero only if it could not measure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cryptography
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from agent.security.session import SecureConnection, open_channel
from agent.security.session.records import MAX_RECORD_SIZE

CHUNK = MAX_RECORD_SIZE - 17  # payload bytes of one full record
MB = 1e6


def stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def repeat(runs: int, fn: Callable[[], float]) -> dict[str, float]:
    fn()  # warm-up
    return stats([fn() for _ in range(runs)])


# --------------------------------------------------------------------------- sans-I/O


def make_open_pair() -> tuple[SecureConnection, SecureConnection]:
    i = SecureConnection(X25519PrivateKey.generate(), initiator=True, local_payload=b"i" * 64)
    r = SecureConnection(X25519PrivateKey.generate(), initiator=False, local_payload=b"r" * 64)
    i.initiate()
    r.receive_data(i.data_to_send())
    i.receive_data(r.data_to_send())
    r.receive_data(i.data_to_send())
    assert i.next_event() is not None and r.next_event() is not None
    return i, r


def bench_handshakes(count: int) -> float:
    ki, kr = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    start = time.perf_counter()
    for _ in range(count):
        i = SecureConnection(ki, initiator=True, local_payload=b"i" * 64)
        r = SecureConnection(kr, initiator=False, local_payload=b"r" * 64)
        i.initiate()
        r.receive_data(i.data_to_send())
        i.receive_data(r.data_to_send())
        r.receive_data(i.data_to_send())
        i.next_event()
        r.next_event()
    return count / (time.perf_counter() - start)


def bench_sansio(size: int, total_bytes: int) -> float:
    """Seconds per message round trip (encrypt on i, decrypt on r); returns MB/s."""
    i, r = make_open_pair()
    payload = os.urandom(size)
    count = max(200, total_bytes // max(size, 1))
    send, drain, feed, nxt = i.send_message, i.data_to_send, r.receive_data, r.next_event
    start = time.perf_counter()
    for _ in range(count):
        send(payload)
        feed(drain())
        nxt()
    elapsed = time.perf_counter() - start
    return size * count / elapsed / MB


def bench_aead(size: int, total_bytes: int) -> float:
    """Reference: bare ChaCha20-Poly1305 encrypt + decrypt of one record of this size."""
    aead = ChaCha20Poly1305(ChaCha20Poly1305.generate_key())
    payload = os.urandom(size + 1)  # + flag byte, as in a record
    nonce = bytes(12)
    count = max(200, total_bytes // max(size, 1))
    start = time.perf_counter()
    for _ in range(count):
        aead.decrypt(nonce, aead.encrypt(nonce, payload, None), None)
    return size * count / (time.perf_counter() - start) / MB


# --------------------------------------------------------------------------- TCP


async def _tcp_run(secure: bool, total: int, msg_size: int) -> float:
    """MB/s moving ``total`` bytes client -> server over 127.0.0.1 in ``msg_size`` writes."""
    count = total // msg_size
    payload = os.urandom(msg_size)
    done: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    limit = 1024 * 1024
    server_key, client_key = X25519PrivateKey.generate(), X25519PrivateKey.generate()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            received = 0
            if secure:
                ch = await open_channel(reader, writer, server_key, initiator=False)
                for _ in range(count):
                    received += len(await ch.recv())
            else:
                while received < count * msg_size:
                    data = await reader.read(256 * 1024)
                    if not data:
                        break
                    received += len(data)
            done.set_result(time.perf_counter())
        except Exception as exc:  # pragma: no cover - reported by the caller
            done.set_exception(exc)
        finally:
            writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0, limit=limit)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=limit)
        if secure:
            ch = await open_channel(reader, writer, client_key, initiator=True)
            start = time.perf_counter()
            for _ in range(count):
                await ch.send(payload)
        else:
            start = time.perf_counter()
            for _ in range(count):
                writer.write(payload)
                await writer.drain()
        end = await asyncio.wait_for(done, 120)
        writer.close()
        return count * msg_size / (end - start) / MB
    finally:
        server.close()
        await server.wait_closed()


def bench_tcp(runs: int, total: int, msg_size: int) -> dict[str, object]:
    raw: list[float] = []
    sec: list[float] = []
    asyncio.run(_tcp_run(False, total // 4, msg_size))  # warm-up
    asyncio.run(_tcp_run(True, total // 4, msg_size))
    for _ in range(runs):  # interleaved so drift hits both equally
        raw.append(asyncio.run(_tcp_run(False, total, msg_size)))
        sec.append(asyncio.run(_tcp_run(True, total, msg_size)))
    ratios = [s / r for s, r in zip(sec, raw, strict=True)]
    return {
        "raw_MBps": stats(raw),
        "secure_MBps": stats(sec),
        "ratio": stats(ratios),
        "bytes": total,
        "msg_size": msg_size,
    }


# --------------------------------------------------------------------------- main


def machine() -> dict[str, object]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def fmt(s: dict[str, float], unit: str = "", digits: int = 0) -> str:
    return f"{s['median']:>10,.{digits}f}{unit}  ({s['min']:,.{digits}f} .. {s['max']:,.{digits}f})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", type=Path, help="write results as JSON to this path")
    ap.add_argument("--sansio-mib", type=int, default=256, help="bytes per sans-I/O run (MiB)")
    ap.add_argument("--tcp-mib", type=int, default=128, help="bytes per TCP run (MiB)")
    ap.add_argument("--handshakes", type=int, default=300, help="handshakes per run")
    args = ap.parse_args(argv)
    runs = max(1, args.runs)
    total = args.sansio_mib * 1024 * 1024

    results: dict[str, object] = {"machine": machine(), "runs": runs}
    print(f"session layer benchmark: median of {runs} runs (min .. max)")
    print(f"machine: {results['machine']}")
    print()

    hs = repeat(runs, lambda: bench_handshakes(args.handshakes))
    results["handshakes_per_s"] = hs
    print(f"{'handshakes/s (both sides, one core)':<40}{fmt(hs)}")
    print()

    header = (
        "sans-I/O encrypt+decrypt",
        "MB/s median (min .. max)",
        "records/s",
        "msgs/s",
        "bare AEAD MB/s",
        "ratio",
    )
    print(
        f"{header[0]:<26}{header[1]:>30}{header[2]:>12}{header[3]:>12}{header[4]:>16}{header[5]:>7}"
    )
    sansio = {}
    cases = (("1 KiB messages", 1024), ("64 KiB messages", 65536), ("full records 65518 B", CHUNK))
    for label, size in cases:
        records = max(1, -(-size // CHUNK))
        volume = total if size > 4096 else total // 8
        mbps = repeat(runs, lambda size=size, volume=volume: bench_sansio(size, volume))
        ref = repeat(runs, lambda size=size, volume=volume: bench_aead(size, volume))
        msgs = {k: v * MB / size for k, v in mbps.items()}
        recs = {k: v * records for k, v in msgs.items()}
        ratio = mbps["median"] / ref["median"]
        sansio[label] = {
            "payload_bytes": size,
            "records_per_message": records,
            "MBps": mbps,
            "messages_per_s": msgs,
            "records_per_s": recs,
            "bare_aead_MBps": ref,
            "ratio_vs_bare_aead": ratio,
        }
        rng = f"{mbps['median']:,.0f} ({mbps['min']:,.0f} .. {mbps['max']:,.0f})"
        print(
            f"{label:<26}{rng:>30}{recs['median']:>12,.0f}{msgs['median']:>12,.0f}"
            f"{ref['median']:>16,.0f}{ratio:>7.2f}"
        )
    results["sansio"] = sansio
    print()

    tcp = bench_tcp(runs, args.tcp_mib * 1024 * 1024, 65536)
    results["tcp_loopback_64KiB"] = tcp
    print(f"loopback TCP, {args.tcp_mib} MiB in 64 KiB messages (one event loop for both ends)")
    print(f"{'  raw asyncio streams MB/s':<40}{fmt(tcp['raw_MBps'])}")
    print(f"{'  SecureChannel MB/s':<40}{fmt(tcp['secure_MBps'])}")
    print(f"{'  ratio secure / raw':<40}{fmt(tcp['ratio'], digits=2)}")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
