"""Whole-cluster deterministic simulation: thousands of seeds, invariants after every step."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from agent.authority import sim
from agent.authority.raft import log as raft_log
from agent.authority.sim import (
    InvariantViolation,
    LivenessViolation,
    SimConfig,
    run_parallel,
    run_seed,
)

N_SEEDS = int(os.environ.get("SHOAL_SIM_SEEDS", "2000"))


def test_seeds_hold_every_invariant() -> None:
    """~2,000 seeds (SHOAL_SIM_SEEDS to change) across all cores; ~10 s on 2 cores."""
    failures = run_parallel(range(N_SEEDS))
    if failures:
        pytest.fail(
            f"{len(failures)} of {N_SEEDS} seeds failed. First failures:\n\n"
            + "\n\n".join(failures[:3])
        )


def test_seeds_with_wire_codec() -> None:
    """Every message round-trips through encode()/decode() on the way."""
    cfg = SimConfig(codec=True)
    for seed in range(40):
        run_seed(seed, cfg)


def test_replay_is_exact() -> None:
    a, b = run_seed(12345), run_seed(12345)
    assert a == b
    traced = run_seed(12345, SimConfig(trace=True))
    assert replace(traced, trace=[]) == a and traced.trace


def test_a_seed_exercises_the_faults() -> None:
    totals: dict[str, int] = {}
    for seed in range(60):
        r = run_seed(seed)
        for k, v in vars(r).items():
            if isinstance(v, int):
                totals[k] = totals.get(k, 0) + v
    for key in (
        "crashes",
        "torn_persists",
        "snapshots_installed",
        "compactions",
        "conf_changes",
        "transfers",
        "accepted",
        "rejected",
        "dropped",
    ):
        assert totals[key] > 0, key
    assert totals["leaders"] > 60  # leadership changes happen, not just the first election


def test_injected_bug_is_caught_and_reported_with_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    # Grant votes regardless of log freshness: breaks Leader Completeness.
    monkeypatch.setattr(raft_log.RaftLog, "is_up_to_date", lambda self, i, t: True)
    with pytest.raises(InvariantViolation) as exc:
        for seed in range(200):
            run_seed(seed)
    text = str(exc.value)
    assert f"seed {exc.value.seed}:" in text
    assert f"python -m agent.authority.sim --seed {exc.value.seed}" in text


def test_commit_rule_violation_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.authority.raft import core

    def count_any_term(self: core.RaftNode) -> bool:
        matches = sorted((self._prs[v].match for v in self._voters), reverse=True)
        mci = matches[len(self._voters) // 2]
        if mci > self.log.committed:
            self.log.commit_to(mci)
            return True
        return False

    monkeypatch.setattr(core.RaftNode, "_maybe_commit", count_any_term)
    with pytest.raises(InvariantViolation, match="commit rule"):
        for seed in range(200):
            run_seed(seed)


def test_liveness_failure_is_reported() -> None:
    with pytest.raises(LivenessViolation, match="no progress"):
        run_seed(1, SimConfig(quiet_ticks=1))


def test_cli_replays_a_seed(capsys: pytest.CaptureFixture[str]) -> None:
    assert sim.main(["--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "SimResult(seed=3" in out and "0 failures" in out
