"""The authority service's on-disk state across identity changes, and how it names members."""


class _Store:
    """No resources held: these tests are about the cluster, not assignments."""

    def resources(self):
        return []


class _Load:
    def capacity_estimate(self):
        return None

    def queued(self, cls=None):
        return 0


def spawn(coro, name):
    coro.close()


def test_authority_state_of_another_device_id_is_dropped(tmp_path):
    """After the identity moves to device ID v2 (or a data dir is copied from another
    device), the stored Raft state names a member that is not us: found a fresh cluster."""
    import json

    from agent.authority.service import AuthorityService

    class _Conns:
        def live_connection(self, prefix):
            return None

        def live_connections(self):
            return []

    class _Trust:
        def is_trusted(self, peer_id):
            return False

    def make(me):
        return AuthorityService(me, "n", tmp_path, _Conns(), _Trust(), _Store(), _Load(), spawn)

    first = make("aa" * 32)
    cluster = first.cluster_id
    first.close()
    meta = json.loads((tmp_path / "raft" / "cluster.json").read_bytes())
    assert meta == {"cluster": cluster, "me": "aa" * 32}
    again = make("aa" * 32)
    assert again.cluster_id == cluster  # same device: its cluster is kept
    again.close()
    moved = make("bb" * 32)
    assert moved.cluster_id != cluster and not (tmp_path / "raft" / cluster).exists()
    moved.close()
    (tmp_path / "raft" / "cluster.json").write_text(
        json.dumps({"cluster": "../" * 10 + "xx", "me": "bb" * 32}))
    hostile = make("bb" * 32)  # a non-hex cluster id is never used as a path
    assert len(hostile.cluster_id) == 32 and tmp_path.exists()
    hostile.close()


def test_authority_shows_members_by_name_and_short_id_never_hex(tmp_path):
    """Regression: a voter we were no longer paired with (after an unpair) was shown as the
    first 12 hex digits of its ID. Members are ``name (SHORT-ID)``; one no longer paired is
    marked so, with its name if we still know one, else just its short ID."""
    import random
    from types import SimpleNamespace

    from agent.authority.raft.core import RaftNode
    from agent.authority.raft.storage import MemoryStorage
    from agent.authority.service import AuthorityService
    from agent.security.identity import Identity, short_device_id

    me, bee, gone = (Identity.generate().device_id for _ in range(3))
    paired = {bee: SimpleNamespace(device_id=bee.hex(), name="bee", role="member")}

    sessions: dict[str, SimpleNamespace] = {}

    class _Conns:
        def live_connection(self, prefix):
            return sessions.get(prefix)

        def live_connections(self):
            return []

    class _Trust:
        def get(self, peer_id):
            return paired.get(peer_id)

    svc = AuthorityService(me.hex(), "ant", tmp_path, _Conns(), _Trust(), _Store(), _Load(),
                           spawn)
    svc.raft = RaftNode(me.hex(), [me.hex(), bee.hex(), gone.hex()], MemoryStorage(),
                        random.Random(1))
    view = svc.describe()
    assert sorted(view["voters"]) == sorted([
        f"ant ({short_device_id(me)})", f"bee ({short_device_id(bee)})",
        f"unpaired {short_device_id(gone)}"])
    assert not any(gone.hex()[:8] in v for v in view["voters"])
    assert {m["name"]: m["paired"] for m in view["members"]} == {
        "ant": True, "bee": True, short_device_id(gone): False}
    del paired[bee]  # unpaired, still a voter here for a moment, its session still up
    sessions[bee.hex()] = SimpleNamespace(name="bee")
    assert f"bee ({short_device_id(bee)}, unpaired)" in svc.describe()["voters"]
    svc.close()
