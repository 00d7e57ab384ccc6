"""Two and three real agents on one machine: pairing, authorization, fetch, shutdown."""

from __future__ import annotations

import hashlib
import os
import signal

import pytest

from .agents import pair


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def sample(tmp_path):
    p = tmp_path / "dataset.bin"
    p.write_bytes(os.urandom(3 * 1024 * 1024) + b"text line\n" * 100_000)
    return p


def test_id_works_without_a_running_agent(tmp_path):
    from .agents import Agent

    a = Agent("solo", tmp_path / "solo")
    first = a.cli("id").stdout.strip()
    assert first == a.cli("id").stdout.strip()
    assert len(first.split("-")) == 9


def test_pair_then_fetch_private_resource(agents, tmp_path, sample):
    a, b = agents("alpha"), agents("beta")
    a.json("publish", str(sample), "--name", "dataset")
    # before pairing: refused with a clear message
    res = b.cli("fetch", "dataset", "--from", a.address, "-o", str(tmp_path / "x"), check=False)
    assert res.returncode == 1
    assert "only public resources are shared before pairing" in res.stderr
    assert res.stderr.startswith("shoal: error:") and res.stderr.count("\n") == 1
    pair(a, b)
    assert [d["name"] for d in a.json("trust", "list")] == ["beta"]
    assert [d["name"] for d in b.json("trust", "list")] == ["alpha"]
    out = tmp_path / "fetched.bin"
    r = b.json("fetch", "dataset", "--from", a.address, "-o", str(out))
    assert r["name"] == "dataset" and r["size"] == sample.stat().st_size
    assert _sha(out) == _sha(sample)
    # the peer table knows the other side as paired and reachable
    peers = b.json("peers")
    assert any(p["name"] == "alpha" and p["trusted"] and p["reachable"] for p in peers)


def test_unpaired_agent_sees_only_public(agents, tmp_path, sample):
    a, c = agents("alpha"), agents("gamma")
    pub = tmp_path / "readme.txt"
    pub.write_text("hello mesh\n" * 1000)
    a.json("publish", str(pub), "--public")
    a.json("publish", str(sample), "--name", "secret")
    out = tmp_path / "readme.out"
    c.json("fetch", "readme.txt", "--from", a.address, "-o", str(out))
    assert out.read_text() == pub.read_text()
    res = c.cli("fetch", "secret", "--from", a.address, "--no-output", check=False)
    assert res.returncode == 1 and "pair" in res.stderr


def test_wrong_code_does_not_pair(agents):
    a, b = agents("alpha"), agents("beta")
    b.cli("pair", "--open")
    code = a.json("pair", b.address, "--no-wait")["code"]
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    res = a.cli("pair", "--code", wrong, "--no-wait", check=False)
    assert res.returncode == 1 and "no pending pairing" in res.stderr
    assert a.json("trust", "list") == [] and b.json("trust", "list") == []


def test_unpair_revokes_access(agents, tmp_path, sample):
    a, b = agents("alpha"), agents("beta")
    a.json("publish", str(sample), "--name", "dataset")
    pair(a, b)
    a.json("unpair", "beta")
    res = b.cli("fetch", "dataset", "--from", a.address, "--no-output", check=False)
    assert res.returncode == 1


def test_sigterm_is_orderly(agents):
    a = agents("alpha")
    a.signal(signal.SIGTERM)
    assert a.proc.wait(10) == 0
    assert "agent stopped" in a.log()
    assert not (a.data_dir / "control.sock").exists()


def test_second_agent_on_same_data_dir_refused(agents):
    a = agents("alpha")
    res = a.cli("run", "--port", "0", "--listen", "127.0.0.1", check=False, timeout=20)
    assert res.returncode == 1
    assert "another agent is already running" in res.stderr
    assert a.json("status")["name"] == "alpha"  # the first agent is unharmed


def test_agent_sigkilled_mid_publish_restarts_consistent(agents, tmp_path):
    """SIGKILL lands while the publish is storing chunks (proved: some, not all, of the
    file's bytes are in packs and the CLI never got an answer); after a restart the half
    publish is invisible and publishing again completes."""
    import subprocess

    from .agents import PY, wait_until

    a = agents("alpha")
    big = tmp_path / "big.bin"
    size = 96 * 1024 * 1024
    big.write_bytes(os.urandom(size))
    chunks = a.data_dir / "store" / "chunks"

    def stored() -> int:
        return sum(p.stat().st_size for p in chunks.glob("pack-*.shp")) if chunks.is_dir() else 0

    proc = subprocess.Popen([PY, "-m", "agent", "--data-dir", str(a.data_dir), "publish",
                             str(big)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_until(lambda: stored() >= 8 * 1024 * 1024 or proc.poll() is not None, 60,
               "the publish to start storing chunks")
    a.kill()
    at_kill = stored()
    proc.communicate(timeout=30)
    assert proc.returncode != 0, "the publish finished before the kill: not a mid-publish test"
    assert 0 < at_kill < size, at_kill  # the kill landed between the first and last chunk
    a.start()
    assert a.json("resources", "--local")["local"] == []  # a half publish is never listed
    r = a.json("publish", str(big))  # publishing again works and is complete
    assert r["size"] == size
    out = tmp_path / "round.bin"
    other = agents("beta")
    pair(a, other)
    other.json("fetch", r["name"], "-o", str(out))
    assert _sha(out) == _sha(big)


def test_flipped_byte_in_a_served_chunk_is_detected(agents, tmp_path):
    a, b = agents("alpha"), agents("beta")
    data = tmp_path / "d.bin"
    data.write_bytes(os.urandom(512 * 1024))
    a.json("publish", str(data), "--public")
    a.stop()
    packs = sorted((a.data_dir / "store" / "chunks").glob("pack-*.shp"))
    raw = bytearray(packs[0].read_bytes())
    raw[200] ^= 0xFF  # inside the first record's payload (header is 52 bytes)
    packs[0].write_bytes(bytes(raw))
    a.start()
    res = b.cli("fetch", "d.bin", "--from", a.address, "--no-output", check=False)
    assert res.returncode == 1
    assert "quarantined" in a.log() or "corrupt" in a.log().lower()
