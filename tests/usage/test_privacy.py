"""What leaves a device: the k-anonymity threshold, the DP release, and a reconstruction
attack that must fail (docs/privacy.md states the guarantees these tests pin down)."""

from __future__ import annotations

import hashlib
import math
import random

import pytest

from agent.usage.aggregate import merge, parse_aggregate, to_wire
from agent.usage.ngrams import (
    GramStats,
    SharePolicy,
    dp_threshold,
    release_dp,
    release_k,
    two_sided_geometric,
)
from agent.usage.record import AccessRecord, Source

T0 = 1_700_000_000.0


def rid(name: str) -> str:
    return hashlib.blake2b(name.encode(), digest_size=16).hexdigest()


def who(name: str) -> bytes:
    return hashlib.blake2b(name.encode(), digest_size=16).digest()


def records(seqs: dict[str, list[str]], *, epoch: int = 0, t0: float = T0,
            step: float = 10.0) -> list[AccessRecord]:
    """Interleaved in time, as a device would log them."""
    out = []
    for u, (user, seq) in enumerate(seqs.items()):
        for i, name in enumerate(seq):
            out.append(AccessRecord(t0 + i * step + u % 5, epoch, who(user),
                                    bytes.fromhex(rid(name)), 100, True, Source.LOCAL))
    return sorted(out, key=lambda r: r.time)


def stats_of(recs: list[AccessRecord], cap: int | None = None) -> GramStats:
    s = GramStats(session_gap=1800.0, half_life=3600.0, per_requester_cap=cap)
    for r in recs:
        s.add(r)
    return s


def test_an_ngram_is_shared_only_with_k_distinct_requesters() -> None:
    seq = ["home", "news", "sport"]
    s = stats_of(records({"u1": seq, "u2": seq, "u3": seq}))
    agg = release_k(s, SharePolicy(k=3), T0 + 100)
    h, n, sp = rid("home"), rid("news"), rid("sport")
    assert agg.grams == {(h,): 3, (n,): 3, (sp,): 3, (h, n): 3, (n, sp): 3, (h, n, sp): 3}
    assert set(agg.heat) == {h, n, sp}
    assert release_k(s, SharePolicy(k=4), T0 + 100).grams == {}


def test_repeats_by_one_requester_count_once() -> None:
    s = stats_of(records({"u1": ["a", "b"] * 50, "u2": ["a", "b"], "u3": ["a", "b"]}))
    assert release_k(s, SharePolicy(k=3), T0).grams[(rid("a"), rid("b"))] == 3


def test_one_requester_across_key_epochs_never_reaches_k() -> None:
    """Hashes of different epochs may be the same person: they are never added up."""
    recs = [r for e in range(5) for r in records({"u1": ["a", "b"]}, epoch=e,
                                                  t0=T0 + e * 86400)]
    s = stats_of(recs)
    assert s.distinct((rid("a"), rid("b"))) == 1
    assert release_k(s, SharePolicy(k=2), T0 + 5 * 86400).grams == {}


def test_a_pause_longer_than_the_session_gap_starts_a_new_sequence() -> None:
    seqs = {f"u{i}": ["a", "b"] for i in range(3)}
    s = stats_of(records(seqs, step=3600.0))
    grams = release_k(s, SharePolicy(k=3), T0).grams
    assert (rid("a"), rid("b")) not in grams and (rid("a"),) in grams


def _population(rng: random.Random) -> dict[str, list[str]]:
    """Twelve users browsing common pages; a victim with a path of their own through some
    common pages and some only they ever ask for."""
    common = ["home", "news", "weather", "sport", "mail", "maps"]
    seqs = {f"user{i}": [rng.choice(common) for _ in range(40)] for i in range(12)}
    for i in range(12):  # everybody shares a habit: home -> news -> weather
        seqs[f"user{i}"][:3] = ["home", "news", "weather"]
    seqs["victim"] = ["home", "clinic", "diagnosis-x", "pharmacy", "maps", "lawyer",
                      "divorce-forms", "home"]
    return seqs


def test_a_peer_cannot_rebuild_one_users_sequence_from_the_aggregate() -> None:
    rng = random.Random(7)
    seqs = _population(rng)
    victim = [rid(x) for x in seqs["victim"]]
    s = stats_of(records(seqs))
    # what the peer receives, through the wire format and the strict parser
    received = parse_aggregate(to_wire(release_k(s, SharePolicy(k=3), T0 + 1000)))
    assert received.grams, "the population's common habits are shared"
    # 1. nothing only the victim asked for appears at all
    private = {rid(x) for x in ("clinic", "diagnosis-x", "pharmacy", "lawyer",
                                "divorce-forms")}
    assert not any(set(g) & private for g in received.grams)
    assert not set(received.heat) & private
    # 2. none of the victim's n-grams that others did not also produce (>= k of them)
    victim_grams = {tuple(victim[i:i + n]) for n in (2, 3) for i in range(len(victim) - n + 1)}
    for g in victim_grams & set(received.grams):
        assert s.distinct(g) >= 3  # shared only because >= 3 requesters produced it
    # 3. the attack: start from the victim's first request, follow the likeliest next
    # resource; the rebuilt path must not be the victim's and must miss every private step
    model = merge([received], top_n=8, max_contexts=4096)
    path = [victim[0]]
    for _ in range(len(victim) - 1):
        guess = model.predict(tuple(path[-2:]), 1)
        if not guess:
            break
        path.append(guess[0][0])
    assert path != victim
    assert not set(path) & private
    # and no candidate at any step names the victim's next private resource
    for i in range(1, len(victim)):
        if victim[i] in private:
            cands = {r for r, _ in model.predict(tuple(victim[max(0, i - 2):i]), 8)}
            assert victim[i] not in cands


def test_a_unique_sequence_alone_produces_nothing() -> None:
    s = stats_of(records({"solo": ["x", "y", "z", "w"]}))
    assert release_k(s, SharePolicy(k=2), T0).grams == {}
    assert release_k(s, SharePolicy(k=2), T0).heat == {}


# ----------------------------------------------------------------------- differential privacy
def test_dp_threshold_known_values_and_its_defining_inequality() -> None:
    assert dp_threshold(3, 1.0, 1e-6, 16) == 258
    assert dp_threshold(3, 1.0, 1e-6, 1) == 17
    for k, eps, delta, m in [(3, 1.0, 1e-6, 16), (5, 0.5, 1e-9, 4), (1, 2.0, 1e-3, 1)]:
        tau = dp_threshold(k, eps, delta, m)
        alpha = math.exp(-eps / m)
        assert m * alpha ** (tau - k) / (1 + alpha) <= delta
        assert tau - k == 1 or m * alpha ** (tau - k - 1) / (1 + alpha) > delta


def test_two_sided_geometric_has_the_stated_distribution() -> None:
    rng = random.Random(1)
    alpha = math.exp(-0.5)
    draws = [two_sided_geometric(alpha, rng) for _ in range(40_000)]
    p0 = (1 - alpha) / (1 + alpha)
    assert abs(draws.count(0) / len(draws) - p0) < 0.01
    assert abs(sum(draws) / len(draws)) < 0.05
    assert abs(draws.count(3) / len(draws) - p0 * alpha**3) < 0.005


def test_dp_release_counts_are_noisy_and_thresholded() -> None:
    policy = SharePolicy(k=3, epsilon=1.0, delta=1e-6, max_grams_per_requester=1)
    tau = dp_threshold(3, 1.0, 1e-6, 1)  # 17
    crowd = {f"u{i}": ["popular"] for i in range(60)}
    few = {f"v{i}": ["niche"] for i in range(3)}
    recs = records(crowd | few | {"solo": ["mine"]})
    s = stats_of(recs, cap=1)
    agg = release_dp(s, policy, 0, T0 + 86400, random.Random(3))
    assert set(agg.grams) == {(rid("popular"),)}  # niche (3 < tau) and mine (1 < k) not
    assert abs(agg.grams[(rid("popular"),)] - 60) < 20 and agg.epsilon == 1.0
    assert agg.at == T0 + 86400 and tau == 17


def test_dp_contribution_is_capped_per_requester() -> None:
    s = stats_of(records({"u": ["a", "b", "c", "d"]}), cap=2)
    assert len(s.counts()) == 2
    with pytest.raises(ValueError):
        release_dp(stats_of([]), SharePolicy(epsilon=1.0), 0, T0, random.Random(0))


def test_a_full_table_forgets_singletons_and_keeps_what_is_common() -> None:
    common = {f"u{i}": ["a", "b"] for i in range(3)}
    noise = {f"n{i}": [f"rare{i}"] for i in range(50)}
    s = GramStats(session_gap=1800.0, half_life=3600.0, max_tracked=8)
    for r in records(noise, t0=T0 - 100) + records(common):  # the noise fills it first
        s.add(r)
    assert s.overflow > 0 and len(s.counts()) <= 8
    grams = release_k(s, SharePolicy(k=3), T0).grams
    assert grams == {(rid("a"),): 3, (rid("b"),): 3, (rid("a"), rid("b")): 3}


def test_dp_stats_never_forget_an_ngram_of_a_tracked_requester() -> None:
    """Which n-grams count must not depend on other requesters' data (DP sensitivity)."""
    s = GramStats(session_gap=1800.0, half_life=3600.0, per_requester_cap=2,
                  max_tracked=1, max_requesters=100)
    for r in records({f"u{i}": [f"x{i}", f"y{i}", f"z{i}"] for i in range(50)}):
        s.add(r)
    assert s.overflow == 0 and len(s.counts()) == 100  # 2 per requester, none forgotten
