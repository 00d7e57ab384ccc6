"""Unpairing is two-sided (real agents on loopback): the other device learns it over the
session at once, or at its next session if it was offline; trust lists, peers, status and the
authority group agree on both sides afterwards."""

from __future__ import annotations

from .agents import Agent, pair, wait_until


def _auth(a: Agent) -> dict:
    return a.json("authority")


def _paired_pair(agents) -> tuple[Agent, Agent]:
    a, b = agents("alpha"), agents("beta")
    pair(a, b)
    wait_until(lambda: all(len(_auth(x)["voters"]) == 2 for x in (a, b))
               and _auth(a)["cluster"] == _auth(b)["cluster"], 30, "one cluster of 2 voters")
    return a, b


def _alone(x: Agent) -> bool:
    """*x* has nobody in its trust store and is the only member of its authority group."""
    view = _auth(x)
    return (x.json("trust", "list") == [] and x.json("status")["paired"] == 0
            and len(view["voters"]) == 1 and view["learners"] == []
            and view["voters"][0].startswith(f"{x.name} (") and view["role"] == "leader")


def _row(x: Agent, name: str) -> dict | None:
    rows = [p for p in x.json("peers") if p["name"] == name]
    return rows[0] if rows else None


def test_unpair_reaches_the_other_side_at_once(agents):
    a, b = _paired_pair(agents)
    out = a.json("unpair", "beta")
    assert out["name"] == "beta" and out["notified"] is True
    # b heard it over the session: nothing left to wait for but the authority
    assert b.json("trust", "list") == []
    assert "unpaired by peer" in b.log()
    row = _row(b, "alpha")
    assert row is not None and not row["trusted"] and row["unpaired_by_peer"]
    assert isinstance(row["last_seen_s"], (int, float))
    row = _row(a, "beta")
    assert row is not None and not row["trusted"] and not row["unpaired_by_peer"]
    wait_until(lambda: _alone(a) and _alone(b), 30, "each side alone in its own group")
    assert _auth(a)["cluster"] != _auth(b)["cluster"]


def test_unpair_while_the_other_side_is_offline_is_learnt_at_the_next_session(agents):
    a, b = _paired_pair(agents)
    b.stop()
    out = a.json("unpair", "beta")
    assert out["notified"] is False  # nobody to tell now
    b.start()  # its next session with a (mDNS dials it at once) carries the notice
    b.cli("connect", a.address, check=False)  # (in case mDNS is slow: either will do)
    wait_until(lambda: b.json("trust", "list") == [], 15, "b to learn it was unpaired")
    assert "unpaired by peer" in b.log()
    row = _row(b, "alpha")
    assert row is not None and row["unpaired_by_peer"] and not row["trusted"]
    wait_until(lambda: _alone(a) and _alone(b), 30, "each side alone in its own group")
    # told once: a later session carries no notice (a has nothing owed any more)
    assert not (a.data_dir / "unpair-notices.json").exists() or \
        '"owed": {}' in (a.data_dir / "unpair-notices.json").read_text()
