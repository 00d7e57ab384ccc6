"""The authority service's on-disk state across identity changes."""

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

    class _Store:
        def resources(self):
            return []

    class _Load:
        def capacity_estimate(self):
            return None

        def queued(self, cls=None):
            return 0

    def spawn(coro, name):
        coro.close()

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
