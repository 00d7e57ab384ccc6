"""The model service with a real store, real signatures and a real training child process:
the trainer trains, publishes and runs its model; a model that is unsigned, forged, from an
unpaired device, oversize, malformed, too slow or worse than the fallback is refused; the CPU
budget stops a run and then stops training; a device with no model still predicts."""

from __future__ import annotations

import dataclasses
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agent.config import PredictConfig
from agent.control.listings import model_text
from agent.predict.gru import GRUModel
from agent.predict.registry import DEFAULT
from agent.security.identity import Identity
from agent.store import ContentStore
from agent.usage.aggregate import Aggregate, MeshCounts, merge
from agent.usage.modelcore import model_name
from agent.usage.models import ModelRejected, ModelService
from agent.usage.service import NotPaired

pytestmark = pytest.mark.timeout(120)
ME, PAIRED, STRANGER = Identity.generate(), Identity.generate(), Identity.generate()
CHAIN = [f"{i:032x}" for i in range(1, 21)]  # a reading order: 1, 2, ..., 20, 1, ...
OTHER = [f"{i:032x}" for i in range(100, 140)]


def chain_grams(names: list[str], count: int = 6) -> dict[tuple[str, ...], int]:
    n = len(names)
    grams: dict[tuple[str, ...], int] = {}
    for i in range(n):
        grams[(names[i], names[(i + 1) % n])] = count
        grams[(names[i], names[(i + 1) % n], names[(i + 2) % n])] = count
    return grams


def log_rows(names: list[str], n: int) -> list[tuple[str, float, int]]:
    return [(names[i % len(names)], 1000.0 + i, 100) for i in range(n)]


class Usage:
    def __init__(self, grams: dict[tuple[str, ...], int] | None = None,
                 rows: list[tuple[str, float, int]] | None = None,
                 mesh: dict[tuple[str, ...], int] | None = None) -> None:
        self.grams, self.rows, self.mesh = grams or {}, rows or [], mesh or {}

    def aggregate(self) -> Aggregate:
        return Aggregate(0.0, 1, 0.0, self.grams)

    def mesh_counts(self) -> MeshCounts:
        return merge([Aggregate(0.0, 1, 0.0, self.mesh)], top_n=8, max_contexts=2048)

    def recent(self, n: int) -> list[tuple[str, float, int]]:
        return self.rows[-n:]


class Trust:
    def __init__(self, *ids: Identity) -> None:
        self.ids = {i.device_id for i in ids}

    def is_trusted(self, device_id: bytes) -> bool:
        return device_id in self.ids


class NoConns:
    def live_connections(self) -> list[Any]:
        return []


@pytest.fixture
def store(tmp_path: Path):
    st = ContentStore(tmp_path / "store", avg_chunk_size=16 * 1024)
    yield st
    st.close()


def service(tmp_path: Path, store: ContentStore, usage: Usage, **cfg: Any) -> ModelService:
    fetched: list[str] = []

    async def fetch(rid: str) -> object:
        fetched.append(rid)
        return {}

    return ModelService(tmp_path / "model", PredictConfig(**({"train_epochs": 6} | cfg)),
                        device_id=ME.device_id.hex(), usage=usage, store=store, signer=ME,
                        connections=NoConns(), trust=Trust(PAIRED), fetch=fetch,
                        catalog_changed=lambda: None, power_root=tmp_path / "no-power")


@cache
def trained(names: tuple[str, ...]) -> bytes:
    """A small model of the chain *names*, trained in process (a second or so)."""
    from agent.predict.traces import Request
    from agent.predict.train import train_gru

    reqs = [Request(float(i), "d", names[i % len(names)], 1) for i in range(400)]
    return train_gru(reqs, vocab=64, dim=8, hidden=16, epochs=6, window=8).to_bytes()


def publish(store: ContentStore, tmp_path: Path, data: bytes, signer: Identity) -> Any:
    f = tmp_path / "m.bin"
    f.write_bytes(data)
    store.publish_file(f, name=model_name("gru"), signer=signer)
    return next(r for r in store.resources()
                if r.name == model_name("gru") and r.publisher == signer.device_id.hex())


async def test_the_trainer_trains_publishes_and_runs_its_model(tmp_path: Path, store) -> None:
    usage = Usage(chain_grams(CHAIN), log_rows(CHAIN, 60))
    svc = service(tmp_path, store, usage)
    await svc.step()
    assert svc.trainer == ME.device_id.hex()
    run = svc.last_training
    assert run is not None and run["ok"] and run["version"] == 1, run
    assert 0 < float(str(run["cpu_s"])) < 60 and svc.ledger.spent(1e12) == 0  # aged out
    rec = store.find(model_name("gru"))
    assert rec.manifest.signed and rec.publisher == ME.device_id.hex()
    rec.manifest.verify()
    assert rec.size <= 1024 * 1024
    a = svc.active
    assert a is not None and a.version == 1 and a.cpu_s_per_prediction < 0.001
    assert a.hits[1] >= 20 and a.hits[0] / a.hits[1] >= a.fallback_hits[0] / a.fallback_hits[1]
    used, ranked = svc.predict(3)
    assert used == "gru" and ranked and ranked[0][0] == CHAIN[0]  # after 20 comes 1
    # a second round: trained less than the minimum interval ago, nothing new
    await svc.step()
    assert store.find(model_name("gru")).version == 1 and svc.counters["trained"] == 1
    d = svc.describe()
    assert d["is_trainer"] and d["active"]["version"] == 1  # type: ignore[index]
    assert d["power"] == "mains" and "assumed mains" in str(d["power_note"])


async def test_a_device_that_does_not_train_never_trains(tmp_path: Path, store) -> None:
    svc = service(tmp_path, store, Usage(chain_grams(CHAIN)), train=False)
    await svc.step()
    assert svc.budget_s() == 0 and svc.trainer is None and svc.last_training is None
    assert svc.advert().budget_s == 0


async def test_a_device_with_no_model_still_predicts(tmp_path: Path, store) -> None:
    # a brand-new device: no log of its own, only what paired devices released
    svc = service(tmp_path, store, Usage(mesh=chain_grams(CHAIN)), train=False)
    await svc.step()
    assert svc.active is None
    used, ranked = svc.predict(3)
    assert used == "fallback" and ranked
    assert "model:      none yet: predicting with the fallback (ppm2" in model_text(
        svc.describe())
    # a device with its own log predicts from it, with the registry's default
    svc2 = service(tmp_path / "2", store, Usage(rows=log_rows(CHAIN, 45)), train=False)
    await svc2.step()
    used, ranked = svc2.predict(1)
    assert used == DEFAULT and ranked[0][0] == CHAIN[45 % 20]


async def test_each_own_request_moves_the_next_prediction_at_once(tmp_path: Path,
                                                                  store) -> None:
    svc = service(tmp_path, store, Usage(rows=log_rows(CHAIN, 45)), train=False)
    await svc.step()
    assert svc.predict(1)[1][0][0] == CHAIN[5]
    # between rounds: the device reads 12, then 13; a paired device's request (served by
    # us) and a replayed old record teach nothing about this device
    svc.observe_access(ME.device_id, CHAIN[12], 100, 2000.0)
    assert svc.predict(1)[1][0][0] == CHAIN[13]
    svc.observe_access(PAIRED.device_id, CHAIN[2], 100, 2001.0)
    svc.observe_access(ME.device_id, CHAIN[7], 100, 1999.0)
    assert svc.predict(1)[1][0][0] == CHAIN[13]
    svc.observe_access(ME.device_id, CHAIN[13], 100, 2002.0)
    assert svc.predict(1) == (DEFAULT, svc.online.predict("self", 1))
    assert svc.predict(1)[1][0][0] == CHAIN[14]


async def test_training_stops_at_the_cpu_budget(tmp_path: Path, store) -> None:
    svc = service(tmp_path, store, Usage(), train_epochs=64, train_budget=1.0)
    seqs = [[OTHER[i % 40], OTHER[(i * 7) % 40], OTHER[(i * 13) % 40]] for i in range(20_000)]
    run = await svc.train(seqs, cpu_left_s=1.0)
    assert not run["ok"] and run["rc"] != 0  # killed by RLIMIT_CPU
    cpu = float(str(run["cpu_s"]))
    assert 0.8 <= cpu < 5  # measured by the kernel (RLIMIT_CPU has whole-second steps)
    assert svc.ledger.spent(svc.ledger.runs[-1][0]) == pytest.approx(cpu, abs=0.001)
    assert not any(r.name == model_name("gru") for r in store.resources())
    svc._usage = Usage(chain_grams(CHAIN))
    assert await svc.maybe_train() is None  # over today's budget: no run at all
    assert svc.counters["train_failed"] == 1


def test_models_from_paired_devices_load_others_do_not(tmp_path: Path, store) -> None:
    svc = service(tmp_path, store, Usage(rows=log_rows(CHAIN, 30)))
    good = publish(store, tmp_path, trained(tuple(CHAIN)), PAIRED)
    assert svc.load(good).version == 1
    stranger = publish(store, tmp_path, trained(tuple(CHAIN)), STRANGER)
    with pytest.raises(ModelRejected, match="not a paired device"):
        svc.load(stranger)
    unsigned = SimpleNamespace(manifest=good.manifest.with_signature(None))
    with pytest.raises(ModelRejected, match="not signed"):
        svc.load(unsigned)
    forged = SimpleNamespace(manifest=dataclasses.replace(
        good.manifest, created=good.manifest.created + 1).with_signature(
            good.manifest.signature))
    with pytest.raises(ModelRejected, match="does not verify"):
        svc.load(forged)
    # the unpaired one is not even on offer
    offers = {o.publisher: o.trusted for o, _ in svc.offers()}
    assert offers == {PAIRED.device_id.hex(): True, STRANGER.device_id.hex(): False}


def test_oversize_malformed_and_slow_models_are_refused(tmp_path: Path, store) -> None:
    small = service(tmp_path, store, Usage(), model_max_bytes=4096)
    big = publish(store, tmp_path, trained(tuple(CHAIN)), ME)
    assert big.size > 4096
    with pytest.raises(ModelRejected, match="over model_max_bytes"):
        small.load(big)
    assert not any(r.name == model_name("gru") for r in store.resources())  # dropped
    junk = bytearray(trained(tuple(CHAIN)))
    junk[-3:] = b"\x00\x00\x00" + b"x"  # one byte too many
    bad = publish(store, tmp_path, bytes(junk), ME)
    svc = service(tmp_path / "b", store, Usage())
    with pytest.raises(ModelRejected, match="does not parse"):
        svc.load(bad)
    assert GRUModel.from_bytes(trained(tuple(CHAIN)))  # the honest bytes parse

    class SlowDevice(ModelService):
        def _measure(self, model: GRUModel) -> float:
            return 0.004

    slow = SlowDevice(tmp_path / "s", PredictConfig(), device_id=ME.device_id.hex(),
                      usage=Usage(), store=store, signer=ME, connections=NoConns(),
                      trust=Trust(), fetch=lambda rid: None,  # type: ignore[arg-type,return-value]
                      catalog_changed=lambda: None)
    ok = publish(store, tmp_path, trained(tuple(CHAIN)), ME)
    with pytest.raises(ModelRejected, match="over the 1 ms budget"):
        slow.load(ok)


async def test_a_model_worse_than_the_fallback_here_is_not_used(tmp_path: Path, store) -> None:
    # the model learned another mesh's habits; this device reads CHAIN in order
    publish(store, tmp_path, trained(tuple(OTHER)), PAIRED)
    svc = service(tmp_path, store, Usage(rows=log_rows(CHAIN, 400)), train=False)
    await svc.step()
    assert svc.active is None and svc.counters["rejected"] == 1
    reasons = [r["reason"] for r in svc.describe()["rejected"]]  # type: ignore[attr-defined]
    assert any("worse than the fallback" in r for r in reasons)
    used, ranked = svc.predict(1)
    assert used == DEFAULT and ranked[0][0] == CHAIN[400 % 20]  # not the model
    await svc.step()  # a rejected version is not retried
    assert svc.counters["rejected"] == 1


async def test_adverts_are_for_paired_devices_only(tmp_path: Path, store) -> None:
    from agent.usage.modelcore import parse_advert

    svc = service(tmp_path, store, Usage())
    paired = SimpleNamespace(peer_id=PAIRED.device_id, name="p")
    ad = parse_advert(await svc._on_model(paired, None))  # type: ignore[arg-type]
    assert ad.budget_s == 120.0 and ad.power == "mains" and ad.model is None
    with pytest.raises(NotPaired):
        await svc._on_model(SimpleNamespace(peer_id=STRANGER.device_id, name="s"),  # type: ignore[arg-type]
                            None)  # type: ignore[arg-type]


async def test_a_model_stops_running_when_its_publisher_is_unpaired(tmp_path: Path,
                                                                    store) -> None:
    publish(store, tmp_path, trained(tuple(CHAIN)), PAIRED)
    svc = service(tmp_path, store, Usage(rows=log_rows(CHAIN, 10)), train=False)
    await svc.step()
    assert svc.active is not None and svc.predict(1)[0] == "gru"
    svc._trust = Trust()  # unpaired
    await svc.step()
    assert svc.active is None and svc.predict(1)[0] == "fallback"


def test_power_is_read_from_sysfs(tmp_path: Path) -> None:
    from agent.usage.models import read_power

    bat = tmp_path / "BAT0"
    bat.mkdir()
    for name, value in {"type": "Battery", "status": "Discharging", "capacity": "55"}.items():
        (bat / name).write_text(value + "\n")
    assert read_power(tmp_path)[:2] == ("battery", 0.55)
    ac = tmp_path / "AC"
    ac.mkdir()
    (ac / "type").write_text("Mains\n")
    (ac / "online").write_text("1\n")
    assert read_power(tmp_path)[:2] == ("mains", 0.55)
    assert read_power(tmp_path / "absent")[0] == "mains"


async def test_a_failed_run_waits_the_minimum_interval_too(tmp_path: Path, store) -> None:
    import time

    svc = service(tmp_path, store, Usage(chain_grams(CHAIN)))
    svc.ledger.charge(time.time(), 0.5)  # a run that failed a moment ago
    assert await svc.maybe_train() is None and svc.counters["trained"] == 0
    svc.ledger.runs.clear()
    run = await svc.maybe_train()
    assert run is not None and run["ok"]


async def test_a_device_predicts_what_only_the_mesh_has_read(tmp_path: Path, store) -> None:
    """The online predictor's table holds the mesh's released transitions: after reading
    CHAIN[3] (its own log has never seen CHAIN[4]) the device is told CHAIN[4] comes next,
    which is what a prefetch needs; its own requests still move the prediction at once."""
    svc = service(tmp_path, store, Usage(mesh=chain_grams(CHAIN), rows=log_rows(OTHER, 30)),
                  train=False)
    await svc.step()
    svc.observe_access(ME.device_id, CHAIN[3], 100, 5000.0)
    used, ranked = svc.predict(1)
    assert used == DEFAULT and ranked[0][0] == CHAIN[4]
    svc.observe_access(ME.device_id, CHAIN[9], 100, 5001.0)
    assert svc.predict(1)[1][0][0] == CHAIN[10]
    await svc.step()  # rebuilt from the log (which lacks the two requests): still current
    assert svc.predict(1)[1][0][0] == CHAIN[10]


async def test_an_idle_round_does_not_rebuild_the_predictors(tmp_path: Path, store) -> None:
    usage = Usage(mesh=chain_grams(CHAIN), rows=log_rows(OTHER, 30))
    svc = service(tmp_path, store, usage, train=False)
    await svc.step()
    online, fallback = svc.online, svc.fallback
    await svc.step()  # nothing new: the same objects (a build costs CPU an idle device lacks)
    assert svc.online is online and svc.fallback is fallback
    usage.rows = log_rows(OTHER, 31)  # one new request in the log
    await svc.step()
    assert svc.online is not online and svc.fallback is not fallback
