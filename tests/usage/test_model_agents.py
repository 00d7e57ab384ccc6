"""Two real agent processes: the one that volunteers trains on the released aggregates of a
small generated log, publishes the model as a signed resource, and its paired peer (which
does not train) fetches, checks and runs it; the model resource stays out of the user's
listing unless asked for."""

from __future__ import annotations

from pathlib import Path

import pytest
from agents import LOOPBACK_ONLY, Agent, pair, seed_access_log, wait_until

pytestmark = pytest.mark.timeout(180)

CHAIN = [f"{i:032x}" for i in range(1, 21)]
CONFIG = LOOPBACK_ONLY + """
[usage]
flush_interval = 0.1
[predict]
share_k = 1
share_interval = 0.5
model_interval = 0.5
train_epochs = 4
"""


def test_the_trainer_publishes_and_the_paired_peer_runs_its_model(tmp_path: Path) -> None:
    a, b = Agent("alpha", tmp_path / "alpha"), Agent("bravo", tmp_path / "bravo")
    seed_access_log(a.data_dir, CHAIN, 200, requester=b"r" * 32, hit=True, source="local")
    # a few requests: too few to judge, enough for a state
    seed_access_log(b.data_dir, CHAIN, 12, requester=b"r" * 32, hit=True, source="local")
    a.config(CONFIG)
    b.config(CONFIG + "train = false\n")
    try:
        a.start()
        b.start()
        pair(a, b)
        alpha = a.json("id")["hex"]
        state = wait_until(lambda: (s := b.json("model"))["active"] and s, 120,
                           "bravo runs alpha's model")
        m = state["active"]
        assert m["publisher"] == alpha and m["version"] == 1 and m["kind"] == "gru"
        assert state["trainer"] == alpha and not state["is_trainer"]
        assert state["budget_s"] == 0 and state["counters"]["fetched"] >= 1
        assert m["cpu_us_per_prediction"] < 1000 and m["bytes"] <= 1024 * 1024
        assert state["predictor"] == "gru" and state["next"]
        assert state["next"][0]["resource"] == CHAIN[12 % 20]  # what follows bravo's last
        mine = a.json("model")
        assert mine["is_trainer"] and mine["last_training"]["ok"]
        assert 0 < mine["last_training"]["cpu_s"] < 60 and mine["spent_s"] > 0
        assert mine["active"]["version"] == 1
        # the model is a resource, but not the user's: hidden unless asked for
        assert [r["name"] for r in b.json("resources", "--local")["local"]] == []
        shown = b.json("resources", "--local", "--all")["local"]
        assert [r["name"] for r in shown] == [".shoal.model.gru"]
        text = b.cli("model").stdout
        assert f"model:      gru v1 by {alpha[:16]}" in text
        assert "this device: does not train" in text
    finally:
        a.stop(timeout=5)
        b.stop(timeout=5)


def test_a_peer_refuses_a_model_over_its_size_bound(tmp_path: Path) -> None:
    a, b = Agent("alpha", tmp_path / "alpha"), Agent("bravo", tmp_path / "bravo")
    seed_access_log(a.data_dir, CHAIN, 200, requester=b"r" * 32, hit=True, source="local")
    a.config(CONFIG)
    b.config(CONFIG + 'train = false\nmodel_max_bytes = "4KiB"\n')
    try:
        a.start()
        b.start()
        pair(a, b)
        state = wait_until(lambda: (s := b.json("model"))["rejected"] and s, 120,
                           "bravo refuses alpha's model")
        assert "over the 4096 allowed" in state["rejected"][0]["reason"]
        assert state["active"] is None and state["predictor"] == "fallback"
        assert b.json("resources", "--local", "--all")["local"] == []  # never stored
        assert a.json("model")["active"]["version"] == 1  # the trainer runs its own
    finally:
        a.stop(timeout=5)
        b.stop(timeout=5)
