"""The model service: the prediction model's lifecycle in the live agent (issue 10 item 5).

Every ``[predict] model_interval`` it:

1. **asks each paired peer** (live LAN session, ``model`` request) what it advertises: CPU
   headroom, power, its training budget and the model it holds (:class:`Advert`);
2. **elects the trainer** with :func:`choose_trainer` over this device and those adverts
   (every device computes the same from the same adverts; hysteresis stops flapping);
3. on the trainer only, **trains when** :func:`should_retrain` says so (drift of the mesh
   counts, minimum interval, the CPU budget left today), in a niced child process under
   ``RLIMIT_CPU`` / ``RLIMIT_AS`` (:mod:`agent.usage.trainjob`), measuring the CPU it took
   (``RUSAGE_CHILDREN``) against the rolling daily budget; then **publishes** the model as an
   ordinary signed resource named ``.shoal.model.gru`` (versioned by the store);
4. **fetches** a newer model a paired peer advertises (the normal fetch path, prefetch class);
5. **chooses** the model to run (:func:`choose_model`), then loads it only if signed by
   this device or a paired one, within ``model_max_bytes``, parsing strictly (no pickle),
   within the inference budget (≤ 1 ms CPU per prediction, measured on load) and not
   worse than the fallback on this device's recent log; else it is rejected and logged.

Until a model passes, :meth:`predict` answers from the cold-start fallback (the registry's
PPM-2 over this device's recent log and the released mesh counts), so predictions always
exist. At most two models are in memory: the active one and the candidate being checked.

Training input is the released aggregates only (this device's own k-anonymous/DP release
and its paired peers'), never the raw log: the published model is post-processing of what
was already shared (docs/prediction-lifecycle.md, "Privacy").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource as rlimit
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from agent.errors import ErrorKind
from agent.fsutil import atomic_write_bytes
from agent.log import kv
from agent.peer.connection import Handler, PeerConnection, Refused
from agent.predict.registry import DEFAULT, make
from agent.usage.aggregate import Aggregate, MeshCounts, merge
from agent.usage.lifecycle import ModelOffer, choose_model, choose_trainer, drift, should_retrain
from agent.usage.modelcore import (
    Advert,
    AdvertError,
    TrainLedger,
    cpu_headroom,
    hit_ratio,
    judge,
    model_name,
    parse_advert,
    power_state,
    recent_requests,
    sequences_from_counts,
)
from agent.usage.service import NotPaired

if TYPE_CHECKING:
    from agent.config import PredictConfig
    from agent.peer import wire
    from agent.ports import ConnectionsPort, TrustView
    from agent.predict.base import Predictor
    from agent.predict.gru import GRUModel, GRUPredictor
    from agent.security.signing import Signer
    from agent.store.manifest import Manifest

log = logging.getLogger("shoal.model")

OP = "model"
KIND = "gru"
ADVERT_TIMEOUT = 5.0
TRANSPORT = "lan"
MAX_PREDICT_CPU_S = 0.001  # the inference budget, checked on load
BUDGET_PROBES = 50  # predictions timed on load
RECENT = 2000  # log records this device evaluates and predicts from
EVAL = 200  # of which the newest are the held-out evaluation
MIN_SEQS = 4  # released n-grams needed before a training run is worth it
MAX_FETCH_TRIES = 3  # a version that failed to fetch this often is given up
DEFAULT_COST_S = 10.0  # estimated cost of a first training run
POWER_ROOT = Path("/sys/class/power_supply")
# The training child runs at nice 19: it takes CPU nobody else wants, so a busy device may
# still train (slowly) and the mesh does not lose its only volunteer; an idle one ranks first.
HEADROOM_FLOOR = 0.05


class ModelRejected(ValueError):
    """A model that must not be run (unsigned, unpaired publisher, too large, malformed,
    too slow); the reason is logged and shown by ``shoal model``."""


class BadAdvert(Refused):
    kind = ErrorKind.INVALID


class ModelStore(Protocol):
    """What the service needs of the content store (agent.store.ContentStore)."""

    def resources(self) -> Sequence[Any]: ...

    def get_chunk(self, chunk_id_: bytes, *, verify: bool = True) -> bytes: ...

    def remove_resource(self, resource_id: str) -> None: ...

    def publish_file(self, path: Path | str, *, name: str | None = None,
                     public: bool = False, signer: Signer,
                     update: str | None = None) -> Manifest: ...


class UsageSource(Protocol):
    """What the service needs of the usage service: the releases and the local log."""

    def aggregate(self) -> Aggregate: ...

    def mesh_counts(self) -> MeshCounts: ...

    def recent(self, n: int) -> list[tuple[str, float, int]]: ...


Fetch = Callable[[str], Awaitable[object]]


@dataclass
class Loaded:
    """A model that passed every check, with its evaluation."""

    resource_id: str
    version: int
    publisher: str
    created: float
    size: int
    predictor: GRUPredictor
    cpu_s_per_prediction: float
    hits: tuple[int, int]
    fallback_hits: tuple[int, int]
    why: str
    fed_until: float = 0.0  # time of the newest request the predictor has read


def read_power(root: Path = POWER_ROOT) -> tuple[str, float, str]:
    """This device's power state from sysfs (small files, bounded reads)."""
    supplies: dict[str, dict[str, str]] = {}
    with contextlib.suppress(OSError):
        for d in sorted(root.iterdir())[:16]:
            vals: dict[str, str] = {}
            for f in ("type", "online", "status", "capacity"):
                with contextlib.suppress(OSError, UnicodeDecodeError), open(d / f, "rb") as fh:
                    vals[f] = fh.read(64).decode().strip()
            supplies[d.name[:32]] = vals
    return power_state(supplies)


def check_budget(model: GRUModel, probes: int = BUDGET_PROBES) -> float:
    """The model's measured CPU seconds per prediction: one step of the recurrent state
    and one ranking, as :meth:`ModelService.predict` costs."""
    from agent.predict.gru import GRUPredictor

    pred = GRUPredictor(model, max_devices=4)
    names = model.vocab[:probes] or ["0" * 32]
    start = time.thread_time()
    for i in range(probes):
        pred.observe("probe", names[i % len(names)], float(i), 0)
        pred.predict("probe", 4)
    return (time.thread_time() - start) / probes


class ModelService:
    """Trains (when elected), publishes, fetches, checks and runs the prediction model."""

    def __init__(self, directory: Path, cfg: PredictConfig, *, device_id: str,
                 usage: UsageSource, store: ModelStore, signer: Signer,
                 connections: ConnectionsPort, trust: TrustView, fetch: Fetch,
                 catalog_changed: Callable[[], None], clock: Callable[[], float] = time.time,
                 power_root: Path = POWER_ROOT) -> None:
        self.dir = directory
        self.cfg = cfg
        self.me = device_id
        self._usage = usage
        self._store = store
        self._signer = signer
        self._connections = connections
        self._trust = trust
        self._fetch = fetch
        self._catalog_changed = catalog_changed
        self._clock = clock
        self._power_root = power_root
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.ledger = self._load_ledger()
        self.adverts: dict[str, tuple[Advert, float]] = {}
        self.trainer: str | None = None
        self.active: Loaded | None = None
        self.fallback: Predictor = make("ppm2")
        self.fallback_hits: tuple[int, int] = (0, 0)
        # the registry's default, learning from each of this device's requests as it is
        # made (the fallback is rebuilt each round, so it lags a round behind the device)
        self.online: Predictor = make(DEFAULT)
        self._online_until = float("-inf")  # newest log time the online model has read
        self._heard: deque[tuple[str, float, int]] = deque(maxlen=256)  # newest own requests
        self._built_from: object = None  # what the last build of the predictors read
        self._trained_counts: MeshCounts | None = None
        self._rejected: dict[tuple[str, int], str] = {}  # (resource, version) -> why
        self._fetch_failures: dict[tuple[str, int], int] = {}
        self._recent: list[tuple[str, float, int]] = []
        self.last_training: dict[str, object] | None = None
        self.counters = {"trained": 0, "train_failed": 0, "published": 0, "fetched": 0,
                         "loaded": 0, "rejected": 0, "predictions": 0, "advert_failed": 0}
        self._predict_cpu = 0.0
        self._can_train = find_spec("autograd") is not None and find_spec("numpy") is not None
        self._can_run = find_spec("numpy") is not None
        self.power = read_power(power_root)

    # ----------------------------------------------------------------- what we advertise
    def budget_s(self) -> float:
        """CPU-s per day this device offers for training: 0 when it will not train."""
        return self.cfg.train_budget if self.cfg.train and self._can_train else 0.0

    def advert(self) -> Advert:
        power, battery, _ = self.power
        held = self.active
        model = (held.resource_id, held.version, held.publisher) if held else None
        if model is None:
            own = self._own_model()
            if own is not None:
                model = (own.resource_id, own.version, own.publisher)
        headroom = max(HEADROOM_FLOOR, cpu_headroom(os.getloadavg()[0], os.cpu_count() or 1))
        return Advert(headroom, power,
                      battery, self.budget_s(), model)

    def handlers(self) -> dict[str, Handler]:
        return {OP: self._on_model}

    async def _on_model(self, conn: PeerConnection, req: wire.Request) -> object:
        if not self._trust.is_trusted(conn.peer_id):
            raise NotPaired("model adverts are exchanged between paired devices only")
        return self.advert().to_obj()

    # ----------------------------------------------------------------- the loop
    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.model_interval)
            try:
                await self.step()
            except Exception:  # a bug here must not take the agent (its TaskGroup) down
                log.exception("model lifecycle step failed")

    async def step(self) -> None:
        """One round: adverts, election, training, fetching, choosing, refreshing."""
        self.power = await asyncio.to_thread(read_power, self._power_root)
        await self._collect_adverts()
        self.trainer = choose_trainer(
            [self.advert().candidate(self.me)]
            + [a.candidate(p) for p, (a, _) in self.adverts.items()], self.trainer)
        if self.trainer == self.me and self.budget_s() > 0:
            await self.maybe_train()
        await self._fetch_newer()
        self._recent = await asyncio.to_thread(self._read_recent)
        self._feed_active()
        await self._choose()
        built = await asyncio.to_thread(self._build_predictors)
        if built is not None:  # None: neither the counts nor the log changed since the last
            fb, hits, online, until = built
            self.fallback, self.fallback_hits = fb, hits
            self._swap_online(online, until)

    async def _collect_adverts(self) -> None:
        conns = [c for c in self._connections.live_connections()
                 if c.transport == TRANSPORT and self._trust.is_trusted(c.peer_id)]

        async def ask(peer: str, conn: Any) -> None:
            try:
                ans = await conn.request(OP, {}, timeout=ADVERT_TIMEOUT)
                self.adverts[peer] = (parse_advert(ans), self._clock())
            except AdvertError as e:
                self.counters["advert_failed"] += 1
                log.warning("model advert rejected", extra=kv(peer=conn.name, reason=e))
            except Exception as e:  # one peer's failure must not stop the others
                self.counters["advert_failed"] += 1
                log.debug("model advert not received", extra=kv(peer=conn.name, reason=e))

        await asyncio.gather(*(ask(c.peer_id.hex(), c) for c in conns))
        live = {c.peer_id.hex() for c in conns}
        for p in list(self.adverts):
            if p not in live or not self._trust.is_trusted(bytes.fromhex(p)):
                del self.adverts[p]

    # ----------------------------------------------------------------- training
    def _counts(self) -> tuple[MeshCounts, MeshCounts]:
        own = merge([self._usage.aggregate()], top_n=64, max_contexts=4096)
        return own, self._usage.mesh_counts()

    async def maybe_train(self) -> dict[str, object] | None:
        """Train and publish if :func:`should_retrain` agrees; the run's summary or None."""
        own, mesh = await asyncio.to_thread(self._counts)
        both = merge([Aggregate(0, 1, 0, {(*c, r): n for c, rows in m.next.items()
                                          for r, n in rows}) for m in (own, mesh)],
                     top_n=64, max_contexts=4096)
        now = self._clock()
        last = self.ledger.last()
        # a failed run counts too: a run that keeps failing waits the minimum interval
        since = None if last is None else now - last[0]
        d = drift(self._trained_counts, both) if self._trained_counts is not None else 1.0
        ok, why = should_retrain(
            drift_bits=d, since_last_s=since,
            budget_left_s=self.ledger.left(now, self.budget_s()),
            estimated_cost_s=last[1] if last else min(DEFAULT_COST_S, self.budget_s()),
            threshold=self.cfg.train_drift, min_interval_s=self.cfg.train_min_interval,
            max_age_s=self.cfg.train_max_age)
        if not ok:
            return None
        seqs = sequences_from_counts(both)
        if len(seqs) < MIN_SEQS:
            log.debug("not enough released counts to train", extra=kv(seqs=len(seqs)))
            return None
        log.info("training the model", extra=kv(reason=why, seqs=len(seqs)))
        result = await self.train(seqs, self.ledger.left(now, self.budget_s()))
        if result.get("ok"):
            self._trained_counts = both
        return result

    async def train(self, seqs: list[list[str]], cpu_left_s: float) -> dict[str, object]:
        """One bounded training run in a child process, then publish its model."""
        job = {"seqs": seqs, "params": {
            "vocab": 512, "dim": 16, "hidden": 32, "epochs": self.cfg.train_epochs,
            "window": 8, "max_windows": 5000}}
        work = self.dir / "train"
        work.mkdir(exist_ok=True, mode=0o700)
        src, dst = work / "in.json", work / "model.bin"
        await asyncio.to_thread(
            lambda: atomic_write_bytes(src, json.dumps(job).encode(), mode=0o600))
        with contextlib.suppress(FileNotFoundError):
            dst.unlink()
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
                   MKL_NUM_THREADS="1")
        before = rlimit.getrusage(rlimit.RUSAGE_CHILDREN)
        started = self._clock()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent.usage.trainjob", str(src), str(dst),
            str(max(1, int(cpu_left_s))), str(self.cfg.train_memory),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
        try:
            out, err = await asyncio.wait_for(proc.communicate(),
                                              timeout=max(30.0, 10 * cpu_left_s))
        except TimeoutError:
            proc.kill()
            out, err = await proc.communicate()
        after = rlimit.getrusage(rlimit.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        now = self._clock()
        self.ledger.charge(now, cpu)
        await asyncio.to_thread(self._save_ledger)
        summary: dict[str, object] = {"at": now, "cpu_s": round(cpu, 3),
                                      "wall_s": round(now - started, 3),
                                      "rc": proc.returncode, "seqs": len(seqs), "ok": False}
        self.last_training = summary
        if proc.returncode != 0 or not dst.exists():
            self.counters["train_failed"] += 1
            reason = err.decode(errors="replace").strip().splitlines()[-1:] or ["killed"]
            summary["error"] = reason[0][:200]
            log.warning("model training failed", extra=kv(
                rc=proc.returncode, cpu_s=round(cpu, 3), reason=summary["error"]))
            return summary
        self.counters["trained"] += 1
        try:
            manifest = await asyncio.to_thread(
                self._store.publish_file, dst, name=model_name(KIND), signer=self._signer)
        except Exception as e:
            self.counters["train_failed"] += 1
            summary["error"] = f"publish failed: {e}"[:200]
            log.warning("model publish failed", extra=kv(reason=e))
            return summary
        self.counters["published"] += 1
        self._catalog_changed()
        summary |= {"ok": True, "version": manifest.version, "bytes": manifest.size}
        log.info("model published", extra=kv(
            version=manifest.version, size=manifest.size, cpu_s=round(cpu, 3),
            out=out.decode(errors="replace").strip()[:200]))
        return summary

    def _load_ledger(self) -> TrainLedger:
        with contextlib.suppress(OSError, ValueError):
            path = self.dir / "training.json"
            if path.stat().st_size <= 64 * 1024:
                return TrainLedger.from_obj(json.loads(path.read_bytes()))
        return TrainLedger([])

    def _save_ledger(self) -> None:
        try:
            atomic_write_bytes(self.dir / "training.json",
                               json.dumps(self.ledger.to_obj()).encode(), mode=0o600)
        except OSError as e:
            log.warning("cannot keep the training ledger", extra=kv(reason=e.strerror or e))

    # ----------------------------------------------------------------- offers
    def _models(self) -> list[Any]:
        return [r for r in self._store.resources() if r.name == model_name(KIND)]

    def _own_model(self) -> Any | None:
        return next((r for r in self._models() if r.publisher == self.me), None)

    def _trusted(self, publisher: str) -> bool:
        if publisher == self.me:
            return True
        try:
            return self._trust.is_trusted(bytes.fromhex(publisher))
        except ValueError:
            return False

    async def _fetch_newer(self) -> None:
        """Fetch each model a paired peer advertises that is newer than the one held."""
        held = {r.resource_id: r.version for r in self._models()}
        for peer, (a, _) in list(self.adverts.items()):
            if a.model is None:
                continue
            rid, version, publisher = a.model
            if (not self._trusted(publisher) or held.get(rid, 0) >= version
                    or (rid, version) in self._rejected):
                continue
            try:
                await self._fetch(rid)
            except Exception as e:  # an oversize model is refused by the fetch itself
                key = (rid, version)
                self._fetch_failures[key] = self._fetch_failures.get(key, 0) + 1
                if self._fetch_failures[key] >= MAX_FETCH_TRIES:  # not a passing outage
                    self._rejected[key] = f"not fetched: {e}"[:300]
                    self._trim_rejected()
                    del self._fetch_failures[key]
                log.warning("model not fetched", extra=kv(peer=peer[:16], reason=e))
                continue
            self.counters["fetched"] += 1

    def _trim_rejected(self) -> None:
        while len(self._rejected) > 32:
            self._rejected.pop(next(iter(self._rejected)))

    def offers(self) -> list[tuple[ModelOffer, Any]]:
        return [(ModelOffer(r.version, r.publisher, self._trusted(r.publisher)), r)
                for r in self._models()]

    async def _choose(self) -> None:
        offers = self.offers()
        pick = choose_model([o for o, _ in offers], self.trainer)
        a = self.active
        if a is not None and not self._trusted(a.publisher):  # its publisher was unpaired
            self.active = None
            log.info("model dropped: its publisher is no longer paired", extra=kv(
                version=a.version, publisher=a.publisher[:16]))
        if pick is None:
            return
        rec = next(r for o, r in offers if o is pick)
        a = self.active
        key = (rec.resource_id, rec.version)
        if (a is not None and (a.resource_id, a.version) == key) or key in self._rejected:
            return
        try:
            cand = await asyncio.to_thread(self.load, rec)
        except ModelRejected as e:
            self._rejected[key] = str(e)
            self._trim_rejected()
            self.counters["rejected"] += 1
            log.warning("model rejected", extra=kv(
                resource=rec.resource_id, version=rec.version, publisher=rec.publisher[:16],
                reason=e))
            return
        self.active = cand  # the old active model is released here: at most two were held
        self.counters["loaded"] += 1
        log.info("model loaded", extra=kv(
            version=cand.version, publisher=cand.publisher[:16], why=cand.why,
            cpu_us=round(cand.cpu_s_per_prediction * 1e6, 1)))

    # ----------------------------------------------------------------- checking a model
    def load(self, rec: Any) -> Loaded:
        """Every check a model passes before it runs (in a worker thread); ModelRejected
        with the reason otherwise."""
        if not self._can_run:
            raise ModelRejected("numpy is not installed (the [model] extra)")
        m = rec.manifest
        if not self._trusted(m.publisher):
            raise ModelRejected("publisher is not a paired device")
        if not m.signed:
            raise ModelRejected("model is not signed")
        try:
            m.verify()
        except Exception as e:
            raise ModelRejected(f"signature does not verify: {e}") from None
        if m.size > self.cfg.model_max_bytes:
            self._drop(rec)
            raise ModelRejected(f"model is {m.size} bytes, over model_max_bytes "
                                f"({self.cfg.model_max_bytes})")
        data = b"".join(self._store.get_chunk(c.chunk_id) for c in m.chunks)
        if len(data) != m.size:
            raise ModelRejected("model bytes do not match the manifest size")
        from agent.predict.gru import GRUModel, GRUPredictor, ModelError

        try:
            model = GRUModel.from_bytes(data)
        except (ModelError, ValueError) as e:
            raise ModelRejected(f"model does not parse: {e}") from None
        per = self._measure(model)
        if per > MAX_PREDICT_CPU_S:
            raise ModelRejected(f"inference takes {per * 1e3:.2f} ms CPU per prediction, "
                                f"over the {MAX_PREDICT_CPU_S * 1e3:.0f} ms budget")
        hits, fb = self._evaluate(GRUPredictor(model, max_devices=4))
        ok, why = judge(hits, fb)
        if not ok:
            raise ModelRejected(why)
        loaded = Loaded(m.resource_id, m.version, m.publisher, m.created, m.size,
                        GRUPredictor(model, max_devices=4), per, hits, fb, why)
        for r, t, s in self._recent[-64:]:  # the device's current session
            loaded.predictor.observe("self", r, t, s)
            loaded.fed_until = t
        return loaded

    def _measure(self, model: GRUModel) -> float:
        """CPU seconds per prediction (a method so a test can stand in a slow device)."""
        return check_budget(model)

    def _feed_active(self) -> None:
        """The running model reads this device's requests since it last did (its hidden
        state is the device's current session)."""
        a = self.active
        if a is None:
            return
        for r, t, s in self._recent:
            if t > a.fed_until:
                a.predictor.observe("self", r, t, s)
                a.fed_until = t

    def observe_access(self, requester: bytes, resource_id: str, size: int,
                       t: float) -> None:
        """One access as it is recorded (the usage service's listener): this device's own
        requests teach the online predictor at once, so the next prediction follows it."""
        if requester.hex() != self.me or t <= self._online_until:
            return
        self.online.observe("self", resource_id, t, size)
        self._online_until = t
        self._heard.append((resource_id, t, size))

    def _drop(self, rec: Any) -> None:
        with contextlib.suppress(Exception):
            self._store.remove_resource(rec.resource_id)

    def _evaluate(self, pred: Predictor) -> tuple[tuple[int, int], tuple[int, int]]:
        """(model, fallback) hits on the newest :data:`EVAL` records of this device's log;
        the fallback learned from the records before them (as it does when running)."""
        rows = self._recent
        warm, held_out = rows[:-EVAL], rows[-EVAL:]
        fb = make("ppm2")
        for r, t, s in warm:
            fb.observe("self", r, t, s)
        return (hit_ratio(pred, recent_requests(held_out)),
                hit_ratio(fb, recent_requests(held_out)))

    # ----------------------------------------------------------------- predicting
    def _read_recent(self) -> list[tuple[str, float, int]]:
        own = {r.resource_id for r in self._models()}
        return [row for row in self._usage.recent(RECENT) if row[0] not in own]

    def _build_predictors(
            self) -> tuple[Predictor, tuple[int, int], Predictor, float] | None:
        """The cold-start predictor: PPM-2 over the released mesh counts (so a device that
        has seen nothing yet still predicts), then this device's own recent log; and the
        online predictor rebuilt the same way (one table for the mesh's transitions, this
        device's requests as its context), with the newest log time it read. None when
        neither input changed since the last build (a build costs ~1.5 CPU-s: an idle
        device must not pay it every round). Runs in a worker thread: it reads only (the
        loop swaps the results in)."""
        counts = self._usage.mesh_counts()
        inputs = (hash(frozenset(counts.next.items())), len(self._recent),
                  self._recent[-1] if self._recent else None)
        if inputs == self._built_from:
            return None
        self._built_from = inputs
        fb = make("ppm2")
        online = make(DEFAULT)
        mesh = sequences_from_counts(counts, max_seqs=2000, max_repeat=4)
        t = 0.0
        for seq in mesh:
            for r in seq:
                fb.observe("mesh", r, t, 0)
                online.observe("mesh", r, t, 0)
                t += 1.0
        until = float("-inf")
        for r, ts, s in self._recent:
            fb.observe("self", r, ts, s)
            online.observe("self", r, ts, s)
            until = max(until, ts)
        rows = self._recent
        probe = make("ppm2")
        for r, ts, s in rows[:-EVAL]:
            probe.observe("self", r, ts, s)
        return fb, hit_ratio(probe, recent_requests(rows[-EVAL:])), online, until

    def _swap_online(self, online: Predictor, until: float) -> None:
        """Replace the online predictor by *online*, which has read the log up to *until*;
        requests the listener saw after that are replayed into it (the log is flushed
        periodically, so the newest ones may not have been in what it read)."""
        for r, t, s in self._heard:
            if t > until:
                online.observe("self", r, t, s)
                until = t
        self.online, self._online_until = online, until

    def predict(self, k: int = 4) -> tuple[str, list[tuple[str, float]]]:
        """What this device will likely ask for next, and which predictor said so; CPU
        time per prediction is measured."""
        start = time.thread_time()
        name, ranked = "fallback", []
        if self.active is not None:
            ranked = self.active.predictor.predict("self", k)
            name = KIND
        if not ranked:
            name, ranked = DEFAULT, self.online.predict("self", k)
        if not ranked:
            name, ranked = "fallback", self.fallback.predict("self", k)
            if not ranked:
                ranked = self.fallback.predict("mesh", k)
        self._predict_cpu += time.thread_time() - start
        self.counters["predictions"] += 1
        return name, ranked

    # ----------------------------------------------------------------- reporting
    def describe(self) -> dict[str, object]:
        now = self._clock()
        a = self.active
        n = self.counters["predictions"]
        fh, fn = self.fallback_hits
        power, battery, note = self.power
        used, ranked = self.predict(4)
        return {
            "train": self.cfg.train, "can_train": self._can_train,
            "trainer": self.trainer, "me": self.me, "is_trainer": self.trainer == self.me,
            "power": power, "battery": battery, "power_note": note,
            "budget_s": self.budget_s(), "spent_s": round(self.ledger.spent(now), 3),
            "last_training": self.last_training,
            "active": None if a is None else {
                "kind": KIND, "resource_id": a.resource_id, "version": a.version,
                "publisher": a.publisher, "age_s": round(max(0.0, now - a.created), 1),
                "bytes": a.size, "hit_ratio": _ratio(a.hits),
                "fallback_hit_ratio": _ratio(a.fallback_hits), "evaluated": a.hits[1],
                "cpu_us_per_prediction": round(a.cpu_s_per_prediction * 1e6, 1),
                "why": a.why},
            "fallback": {"predictor": "ppm2", "hit_ratio": round(fh / fn, 4) if fn else None,
                         "evaluated": fn},
            "predictor": used, "next": [{"resource": r, "score": round(s, 4)}
                                        for r, s in ranked],
            "peers": [{"peer": p[:16], "headroom": round(ad.headroom, 3), "power": ad.power,
                       "budget_s": ad.budget_s,
                       "model_version": ad.model[1] if ad.model else None}
                      for p, (ad, _) in self.adverts.items()],
            "rejected": [{"resource": r, "version": v, "reason": why}
                         for (r, v), why in list(self._rejected.items())[-5:]],
            "cpu_us_per_prediction": round(self._predict_cpu / n * 1e6, 1) if n else None,
            "counters": dict(self.counters),
        }


def _ratio(hn: tuple[int, int]) -> float | None:
    return round(hn[0] / hn[1], 4) if hn[1] else None
