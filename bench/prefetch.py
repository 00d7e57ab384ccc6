"""Offline prefetch benchmark: every predictor on a request trace, per-device caches, one run.

    python bench/prefetch.py --trace ../shared/traces/apache_combined_2015-05.log --format clf
    python bench/prefetch.py --trace T.txt.gz --format opendap --json out.json --png curve.png
    python bench/prefetch.py --trace my.csv --format csv          # time,client,resource,size
    python bench/prefetch.py --quick                               # CI: a generated trace

Protocol (shared/traces/README.md, docs/BENCHMARKS.md): requests in time order, each client a
device with its own LRU cache of ``--cache`` objects; the first 70 % teach the models (batch
learners are fitted on them), the last 30 % are measured while every model keeps learning
online; caches start empty at the test part (as the reference figures in
shared/traces/README.md do: LRU-only 0.156 on the web log). After each demand request the
predictor ranks candidates for that device; the top ``--depth`` ones scoring at least a
threshold and not already cached are prefetched, arriving at once. Metrics over the test
part: hit ratio, byte hit ratio, prefetch precision (prefetched objects used before eviction /
prefetched), wasted bytes (prefetched bytes never used, as % of demand bytes), CPU per
prediction (median of 5 timing runs, min-max), training CPU, model memory.

Baselines in the same run: LRU only, decayed popularity, first-order Markov, PPM order 2 and a
next-request oracle. Markov-1 and PPM-2 are the traces README's: unbounded tables (not the
agent's bounded ones), ties to the successor seen first, and their "top-1" figure follows the
README's rule (the top candidate only, nothing when it is cached); bench/prefetch_reference.py
is the plain cross-check. Sweeps: cache size and prefetch depth; each predictor's threshold sweep is
its curve of hit ratio against wasted bytes (the PNG). It also compares one mesh-wide model
(with per-device context) against per-device-only learning, overall and for cold-start devices
(first request in the test part).

How it is cheap enough for 478k requests: a predictor learns only from demand requests, never
from the cache, so each predictor runs once over the trace and its ranked candidates (the top
``2 * max depth + 8``, without the cache as exclusion) are recorded; every (cache, depth,
threshold) point then replays the caches against that record, taking the top ones not
cached. Exits non-zero only when it could not measure (unreadable trace, nothing to test).
"""

from __future__ import annotations

import argparse
import copy
import gzip
import os
import random
import statistics
import sys
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# One BLAS thread: OpenBLAS worker threads spin while they wait, which more than doubles the
# training CPU on a shared machine (and a Pi trainer runs single-threaded anyway). Must be set
# before numpy is first imported (it is, lazily, by the GRU predictor).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agent.predict import traces  # noqa: E402
from agent.predict.base import Predictor  # noqa: E402
from agent.predict.ppm import PPM  # noqa: E402
from agent.predict.registry import PREDICTORS, make  # noqa: E402
from agent.predict.scope import PerDevice  # noqa: E402
from bench._common import fmt_stat, machine, print_table, stats, write_json  # noqa: E402

TRAIN_FRACTION = 0.7
THRESHOLDS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8)
TIMING_RUNS = 5
TIMING_SAMPLE = 2000


# --------------------------------------------------------------------------- the trace


@dataclass
class Trace:
    """A time-ordered trace with resources and devices interned to small integers."""

    devices: array[int]
    resources: array[int]
    sizes: array[int]
    times: array[float]
    names: list[str]  # resource id -> name
    device_names: list[str]
    split: int  # first test event
    first_size: array[int] = field(default_factory=lambda: array("q"))  # resource id -> size

    def __len__(self) -> int:
        return len(self.resources)


def intern(reqs: Sequence[traces.Request], train_fraction: float = TRAIN_FRACTION) -> Trace:
    rid: dict[str, int] = {}
    did: dict[str, int] = {}
    t = Trace(array("i"), array("i"), array("q"), array("d"), [], [], 0)
    for r in reqs:
        d = did.get(r.client)
        if d is None:
            d = did[r.client] = len(t.device_names)
            t.device_names.append(r.client)
        x = rid.get(r.resource)
        if x is None:
            x = rid[r.resource] = len(t.names)
            t.names.append(r.resource)
            t.first_size.append(r.size)
        t.devices.append(d)
        t.resources.append(x)
        t.sizes.append(r.size)
        t.times.append(r.t)
    t.split = int(len(reqs) * train_fraction)
    return t


def load(path: Path, fmt: str, max_requests: int,
         keep_query: bool | None = None) -> tuple[list[traces.Request], traces.ReadStats]:
    st = traces.ReadStats()
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as gz:
            reqs = traces.read(traces.bounded_lines(gz), fmt, st, keep_query=keep_query,
                               max_requests=max_requests)
    else:
        with path.open("rb") as f:
            reqs = traces.read(traces.bounded_lines(f), fmt, st, keep_query=keep_query,
                               max_requests=max_requests)
    return reqs, st


def generate(n: int = 3000, seed: int = 7) -> list[traces.Request]:
    """A small synthetic trace for --quick: page visits (a page, then its embedded objects in
    a shuffled order) by devices sharing one site, plus noise requests."""
    rng = random.Random(seed)
    pages = [f"/page{i}" for i in range(40)]
    embeds = {p: [f"{p}/img{j}.png" for j in range(rng.randint(1, 5))] for p in pages}
    out: list[traces.Request] = []
    sizes: dict[str, int] = {}
    t = 1.4e9
    devices = [f"10.0.0.{i}" for i in range(60)]
    while len(out) < n:
        dev = rng.choice(devices)
        page = pages[min(len(pages) - 1, int(rng.expovariate(0.15)))]
        objs = list(embeds[page])
        rng.shuffle(objs)
        for name in [page, *objs]:
            t += rng.random() * 3
            size = sizes.setdefault(name, rng.randint(500, 50_000))
            out.append(traces.Request(t, dev, name, size))
        if rng.random() < 0.2:
            t += 1
            out.append(traces.Request(t, dev, f"/noise{rng.randint(0, 10_000)}", 500))
    return out[:n]


# --------------------------------------------------------------------------- predictor pass


@dataclass
class Record:
    """One predictor's ranked candidates after every request, and what they cost."""

    name: str
    offsets: array[int]
    ids: array[int]
    scores: array[float]
    fit_cpu_s: float = 0.0  # median of fit_cpu_runs
    fit_cpu_runs: list[float] = field(default_factory=list)
    predict_cpu_s: float = 0.0
    predictions: int = 0
    timing_us: dict[str, Any] = field(default_factory=dict)
    memory_bytes: int = 0
    context_bytes: int = 0
    stored_bytes: int | None = None  # the serialised model, for models that ship as bytes
    state_size: int = 0
    max_state: int = 0


# The reference baselines of shared/traces/README.md have unbounded tables (as
# bench/prefetch_reference.py does): the agent's bounded ppm2 (20,000 contexts) evicts most
# of a 93k-object server's scan transitions and would make a handicapped baseline. The bounds
# below are never reached by the traces; the agent's registry keeps its own.
UNBOUNDED = {"max_contexts": 10**8, "max_successors": 10**6, "max_devices": 10**7}
BASELINES: dict[str, Callable[[], Predictor]] = {
    "markov1": lambda: PPM(1, "fallback", name="markov1", ties="first", **UNBOUNDED),
    "ppm2": lambda: PPM(2, "fallback", name="ppm2", ties="first", **UNBOUNDED),
}


def make_bench(name: str) -> Predictor:
    """The registry's predictor *name*, except the reference baselines (unbounded)."""
    return BASELINES[name]() if name in BASELINES else make(name)


def run_predictor(name: str, pred: Predictor, trace: Trace, k: int, *,
                  fit: bool = True, fit_runs: int = 1) -> Record:
    """Replay *trace* through *pred*: fit on the train part (if it can), observe every
    request, record its top-*k* candidates after each."""
    rec = Record(name, array("q", [0]), array("i"), array("f"))
    names = trace.names
    index = {n: i for i, n in enumerate(names)}
    fit_fn = getattr(pred, "fit", None)
    if fit and fit_fn is not None:
        train = [traces.Request(trace.times[i], trace.device_names[trace.devices[i]],
                                names[trace.resources[i]], trace.sizes[i])
                 for i in range(trace.split)]
        for _ in range(max(1, fit_runs)):  # deterministic: every run fits the same model
            c0 = time.process_time()
            fit_fn(train)
            rec.fit_cpu_runs.append(time.process_time() - c0)
        rec.fit_cpu_s = statistics.median(rec.fit_cpu_runs)
    cpu = time.process_time
    pcpu = 0.0
    for i in range(len(trace)):
        dev = trace.device_names[trace.devices[i]]
        pred.observe(dev, names[trace.resources[i]], trace.times[i], trace.sizes[i])
        c0 = cpu()
        ranked = pred.predict(dev, k)
        if i >= trace.split:
            pcpu += cpu() - c0
        for res, score in ranked:
            # A name that never occurs in the trace (a stride past the end of a scan) may
            # still exist on a real server: it is kept as a phantom (-1) that the replay
            # counts as a prefetch never used, sized like the request it follows.
            rec.ids.append(index.get(res, -1))
            rec.scores.append(score)
        rec.offsets.append(len(rec.ids))
    rec.predict_cpu_s = pcpu
    rec.predictions = len(trace) - trace.split
    rec.memory_bytes = pred.memory_bytes()
    rec.context_bytes = pred.context_bytes()
    model = getattr(pred, "model", None)
    if model is not None and hasattr(model, "to_bytes"):
        rec.stored_bytes = len(model.to_bytes())
    rec.state_size = pred.state_size()
    rec.max_state = pred.max_state()
    rec.timing_us = time_predictions(pred, trace, k)
    return rec


def time_predictions(pred: Predictor, trace: Trace, k: int) -> dict[str, Any]:
    """CPU per prediction: TIMING_RUNS runs, each replaying the last TIMING_SAMPLE test
    requests on a copy of the final model (observe untimed, predict timed, as in the run:
    a model's per-device caches are invalidated by each observation); median and min-max of
    the per-run means, in microseconds."""
    start = max(trace.split, len(trace) - TIMING_SAMPLE)
    events = [(trace.device_names[trace.devices[i]], trace.names[trace.resources[i]],
               trace.times[i], trace.sizes[i]) for i in range(start, len(trace))]
    if not events:
        return stats([])
    runs = []
    for _ in range(TIMING_RUNS):
        model = copy.deepcopy(pred)
        spent = 0.0
        for dev, res, t, size in events:
            model.observe(dev, res, t, size)
            c0 = time.process_time()
            model.predict(dev, k)
            spent += time.process_time() - c0
        runs.append(spent / len(events) * 1e6)
    return stats(runs)


def oracle_record(trace: Trace, k: int) -> Record:
    """The next *k* distinct requests of the same device: the best any predictor could do."""
    rec = Record("oracle", array("q", [0]), array("i"), array("f"))
    upcoming: dict[int, list[int]] = {}
    nxt = [-1] * len(trace)
    last: dict[int, int] = {}
    for i in range(len(trace) - 1, -1, -1):
        d = trace.devices[i]
        nxt[i] = last.get(d, -1)
        last[d] = i
    del upcoming
    for i in range(len(trace)):
        j = nxt[i]
        got: list[int] = []
        while j != -1 and len(got) < k:
            r = trace.resources[j]
            if r not in got:
                got.append(r)
            j = nxt[j]
        for r in got:
            rec.ids.append(r)
            rec.scores.append(1.0)
        rec.offsets.append(len(rec.ids))
    return rec


# --------------------------------------------------------------------------- cache replay


def simulate(trace: Trace, rec: Record | None, cache_size: int, depth: int,
             threshold: float, *, devices: set[int] | None = None,
             strict: bool = False) -> dict[str, float]:
    """Replay per-device LRU caches with *rec*'s prefetches; metrics over the test part
    (only for *devices* when given). The top *depth* candidates scoring at least *threshold*
    and not cached are prefetched; with *strict* (the traces README's top-1 rule) only the
    first *depth* candidates are looked at, and a cached one is skipped, not replaced by the
    next."""
    caches: dict[int, OrderedDict[int, int]] = {}
    size_of: dict[int, int] = {}
    split = trace.split
    req = hits = 0
    dbytes = hbytes = 0
    issued = used = 0
    wasted = 0
    phantoms = 0
    res_a, dev_a, sz_a = trace.resources, trace.devices, trace.sizes
    offs = rec.offsets if rec else None
    ids = rec.ids if rec else None
    scs = rec.scores if rec else None
    for i in range(len(trace)):
        d, r, s = dev_a[i], res_a[i], sz_a[i]
        size_of[r] = s
        if i < split:
            continue  # caches start empty at the test part, as in the reference figures
        cache = caches.get(d)
        if cache is None:
            cache = caches[d] = OrderedDict()
        counted = devices is None or d in devices
        flag = cache.get(r)
        if counted:
            req += 1
            dbytes += s
        if flag is not None:
            if counted:
                hits += 1
                hbytes += s
            if flag == 2:
                used += 1
            cache.move_to_end(r)
            cache[r] = 0
        else:
            cache[r] = 0
            if len(cache) > cache_size:
                old, oflag = cache.popitem(last=False)
                if oflag == 2:
                    wasted += size_of.get(old, 0)
        if offs is None or ids is None or scs is None:
            continue
        taken = 0
        for j in range(offs[i], offs[i + 1]):
            if taken >= depth or scs[j] < threshold:
                break
            if strict:
                taken += 1  # the candidate's place is used up, cached or not
            x = ids[j]
            if x == -1:
                phantoms += 1
                x = -phantoms  # a unique key: it takes a cache slot and is never asked for
                size_of[x] = s
            if x in cache:
                continue
            if not strict:
                taken += 1
            mark = 2 if counted else 1
            cache[x] = mark
            if mark == 2:
                issued += 1
            if x not in size_of:  # never requested yet (oracle, stride): its real size
                size_of[x] = trace.first_size[x]
            if len(cache) > cache_size:
                old, oflag = cache.popitem(last=False)
                if oflag == 2:
                    wasted += size_of.get(old, 0)
    for cache in caches.values():
        for x, f in cache.items():
            if f == 2:
                wasted += size_of.get(x, 0)
    return {
        "requests": req,
        "hit_ratio": hits / req if req else 0.0,
        "byte_hit_ratio": hbytes / dbytes if dbytes else 0.0,
        "precision": used / issued if issued else 0.0,
        "prefetched": issued,
        "wasted_pct": 100.0 * wasted / dbytes if dbytes else 0.0,
    }


# --------------------------------------------------------------------------- the run


def pareto(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Points not beaten on both hit ratio and waste, by waste ascending."""
    best: list[dict[str, Any]] = []
    for p in sorted(points, key=lambda p: (p["wasted_pct"], -p["hit_ratio"])):
        if not best or p["hit_ratio"] > best[-1]["hit_ratio"]:
            best.append(p)
    return best


def best_at(points: list[dict[str, Any]], max_waste: float,
            min_precision: float = 0.0) -> dict[str, Any] | None:
    ok = [p for p in points if p["wasted_pct"] <= max_waste + 1e-9
          and (p["precision"] >= min_precision or p["prefetched"] == 0)]
    return max(ok, key=lambda p: (p["hit_ratio"], -p["wasted_pct"])) if ok else None


def run(trace: Trace, names: Sequence[str], *, cache_sizes: Sequence[int],
        depths: Sequence[int], cache: int, depth: int, thresholds: Sequence[float],
        compare: Sequence[str], log: Callable[[str], None],
        fit_runs: int = 1) -> dict[str, Any]:
    kmax = 2 * max(depths) + 8
    records: dict[str, Record] = {}
    for name in names:
        log(f"predictor {name}")
        records[name] = run_predictor(name, make_bench(name), trace, kmax, fit_runs=fit_runs)
    records["oracle"] = oracle_record(trace, max(depths))
    out: dict[str, Any] = {"predictors": {}, "lru_only": {}, "sweeps": {}, "scope": {}}
    # The default operating point, every predictor, threshold sweep = its curve.
    out["lru_only"] = simulate(trace, None, cache, depth, 0.0)
    # The full threshold x depth grid on small traces; on large ones (a replay of 100k+ test
    # requests costs seconds) the thresholds at depth 1, the default and the deepest.
    big = len(trace) > 100_000
    grid_depths = sorted({1, depth, max(depths)} if big else {1, depth, *depths})
    thresholds = thresholds[::2] if big else thresholds
    for name, rec in records.items():
        curve = []
        for th in thresholds if name != "oracle" else (0.0,):
            for dp in grid_depths:
                m = simulate(trace, rec, cache, dp, th)
                curve.append({"threshold": th, "depth": dp, **m})
        # the reference figures' point: the top-1 candidate only, nothing if it is cached
        top1 = {"threshold": 0.0, "depth": 1, "strict": True,
                **simulate(trace, rec, cache, 1, 0.0, strict=True)}
        curve.append(top1)
        out["predictors"][name] = {
            "top1": top1,
            "curve": curve,
            "pareto": pareto(curve),
            "fit_cpu_s": rec.fit_cpu_s,
            "fit_cpu": stats(rec.fit_cpu_runs),
            "predict_us": rec.timing_us,
            "predict_us_in_run": rec.predict_cpu_s / rec.predictions * 1e6
            if rec.predictions else None,
            "memory_bytes": rec.memory_bytes,
            "context_bytes": rec.context_bytes,
            "stored_bytes": rec.stored_bytes,
            "state_size": rec.state_size,
            "max_state": rec.max_state,
        }
    # Sweeps of cache size and depth at each predictor's best threshold at the default point.
    for name, rec in records.items():
        sweep: dict[str, Any] = {"cache": [], "depth": []}
        th = 0.0 if name == "oracle" else _chosen_threshold(out, name, depth)
        for cs in cache_sizes:
            sweep["cache"].append({"cache": cs, "threshold": th,
                                   **simulate(trace, rec, cs, depth, th)})
        for dp in depths:
            sweep["depth"].append({"depth": dp, "threshold": th,
                                   **simulate(trace, rec, cache, dp, th)})
        out["sweeps"][name] = sweep
    out["lru_sweep"] = [{"cache": cs, **simulate(trace, None, cs, 1, 0.0)} for cs in cache_sizes]
    # One mesh-wide model vs per-device-only learning, overall and for cold-start devices.
    seen_train = {trace.devices[i] for i in range(trace.split)}
    cold = {trace.devices[i] for i in range(trace.split, len(trace))} - seen_train
    out["cold_devices"] = len(cold)
    for name in compare:
        if name not in PREDICTORS:
            continue
        per_model = (PerDevice(BASELINES[name], max_devices=4096) if name in BASELINES
                     else make(name, per_device=True))
        per = run_predictor(f"{name}@device", per_model, trace, kmax)
        mesh = records.get(name) or run_predictor(name, make_bench(name), trace, kmax)
        th = _chosen_threshold(out, name, depth) if name in out["predictors"] else 0.0
        out["scope"][name] = {
            "threshold": th,
            "mesh": simulate(trace, mesh, cache, depth, th),
            "per_device": simulate(trace, per, cache, depth, th),
            "mesh_cold": simulate(trace, mesh, cache, depth, th, devices=cold),
            "per_device_cold": simulate(trace, per, cache, depth, th, devices=cold),
            "per_device_memory_bytes": per.memory_bytes,
        }
    return out


def gains(out: dict[str, Any], ref: str = "ppm2") -> dict[str, Any]:
    """Each predictor's best hit ratio at no more waste than *ref*'s operating points, and
    the relative gain: at ref's top-1 point (the reference figures' setting) and at ref's best
    point with precision >= 0.55 and waste <= 10 % (the web-log target's constraints)."""
    if ref not in out["predictors"]:
        return {}
    curve = out["predictors"][ref]["curve"]
    anchors = {"top1": out["predictors"][ref]["top1"], "target": best_at(curve, 10.0, 0.55)}
    result: dict[str, Any] = {}
    for label, anchor in anchors.items():
        if anchor is None:
            continue
        rows = {}
        for name, p in out["predictors"].items():
            best = best_at(p["curve"], anchor["wasted_pct"])
            if best is None:
                continue
            gain = best["hit_ratio"] / anchor["hit_ratio"] - 1 if anchor["hit_ratio"] else None
            rows[name] = {"point": best, "gain": gain}
        result[label] = {"anchor": anchor, "predictors": rows}
    return result


def _chosen_threshold(out: dict[str, Any], name: str, depth: int) -> float:
    """The threshold of the predictor's best point at the default depth with precision
    >= 0.55 and waste <= 10 % (the web-log target's constraints), else the smallest-waste."""
    pts = [p for p in out["predictors"][name]["curve"] if p["depth"] == depth]
    best = best_at(pts, 10.0, 0.55)
    if best is None:
        best = min(pts, key=lambda p: p["wasted_pct"])
    return float(best["threshold"])


# --------------------------------------------------------------------------- output


def summary_rows(out: dict[str, Any], ref: str = "ppm2") -> list[list[str]]:
    rows = []
    lru = out["lru_only"]
    rows.append(["lru-only", "-", "-", f"{lru['hit_ratio']:.3f}", f"{lru['byte_hit_ratio']:.3f}",
                 "-", "0.0", "-", "-", "-", "-", "-"])
    ref_top1 = out["predictors"].get(ref, {}).get("top1")
    for name, p in out["predictors"].items():
        t = p["top1"]
        at = best_at(p["curve"], ref_top1["wasted_pct"]) if ref_top1 else None
        rows.append([
            name,
            f"{t['hit_ratio']:.3f}",
            f"{t['precision']:.2f}",
            f"{at['hit_ratio']:.3f} (d{at['depth']} t{at['threshold']})" if at else "-",
            f"{at['byte_hit_ratio']:.3f}" if at else "-",
            f"{at['precision']:.2f}" if at else "-",
            f"{at['wasted_pct']:.1f}" if at else "-",
            fmt_stat(p["predict_us"], 1) if p["predict_us"].get("median") is not None else "-",
            fmt_stat(p["fit_cpu"], 1) if p["fit_cpu"].get("median") is not None else "-",
            f"{p['memory_bytes'] / 1024:.0f}",
            f"{p['context_bytes'] / 1024:.0f}",
            f"{p['state_size']}/{p['max_state']}",
        ])
    return rows


SUMMARY_HEADERS = ["predictor", "hit top-1", "prec top-1", "hit @<=ref waste", "byte hit",
                   "precision", "waste %", "CPU us/pred med (min-max)", "train CPU s med (min-max)",
                   "model KiB", "contexts KiB", "entries/bound"]


def plot(out: dict[str, Any], path: Path, title: str) -> str:
    """Hit ratio against wasted bytes (Pareto curve per predictor) as a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib missing: install the bench extra (pip install -e '.[bench]')"
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for name, p in out["predictors"].items():
        pts = p["pareto"]
        ax.plot([q["wasted_pct"] for q in pts], [q["hit_ratio"] for q in pts],
                marker="o" if name != "oracle" else "*", markersize=3, label=name)
    ax.axhline(out["lru_only"]["hit_ratio"], color="grey", linestyle=":", label="LRU only")
    ax.set_xlabel("wasted bytes (% of demand bytes)")
    ax.set_ylabel("hit ratio")
    ax.set_title(title, fontsize=9)
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(left=0.0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return f"PNG written to {path}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", type=Path, help="trace file (.gz is read transparently)")
    ap.add_argument("--format", choices=traces.FORMATS, default="clf")
    ap.add_argument("--quick", action="store_true", help="small generated trace (CI) or a "
                    "short prefix of --trace, fewer sweep points")
    ap.add_argument("--predictors", default=",".join(PREDICTORS),
                    help=f"comma-separated, from: {', '.join(PREDICTORS)}")
    ap.add_argument("--cache", type=int, default=100, help="objects per device cache")
    ap.add_argument("--depth", type=int, default=2, help="default prefetch depth")
    ap.add_argument("--caches", default="10,30,100,300,1000")
    ap.add_argument("--depths", default="1,2,3,5")
    ap.add_argument("--compare", default="ppm2,lookahead",
                    help="predictors run mesh-wide and per-device-only")
    ap.add_argument("--max-requests", type=int, default=2_000_000)
    ap.add_argument("--fit-runs", type=int, default=1,
                    help="fit trained models this many times; training CPU is their median")
    ap.add_argument("--query", choices=("default", "keep", "strip"), default="default",
                    help="query strings: the format's default (strip for clf, keep for "
                    "opendap/csv), or force; the OPeNDAP reference figures strip them")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--png", type=Path)
    args = ap.parse_args(argv)
    try:
        names = [n for n in args.predictors.split(",") if n]
        unknown = [n for n in names if n not in PREDICTORS]
        if unknown:
            raise ValueError(f"unknown predictor {unknown[0]!r}: use --predictors from "
                             f"{', '.join(PREDICTORS)}")
        cache_sizes = [int(x) for x in args.caches.split(",") if x]
        depths = [int(x) for x in args.depths.split(",") if x]
        if min(cache_sizes + depths + [args.cache, args.depth]) < 1:
            raise ValueError("cache sizes and depths must be >= 1")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    info = machine()
    if args.trace is None:
        if not args.quick:
            print("error: give --trace PATH --format clf|opendap|csv, or --quick for a "
                  "generated trace", file=sys.stderr)
            return 2
        reqs, st = generate(), traces.ReadStats(kept=3000)
        label = "generated (--quick)"
    else:
        try:
            limit = 20_000 if args.quick else args.max_requests
            keep = {"default": None, "keep": True, "strip": False}[args.query]
            reqs, st = load(args.trace, args.format, limit, keep)
        except OSError as e:
            print(f"error: cannot read {args.trace}: {e.strerror}; check the path",
                  file=sys.stderr)
            return 2
        label = args.trace.name
    if args.quick:
        cache_sizes, depths = cache_sizes[:3], depths[:3]
    trace = intern(reqs)
    if trace.split >= len(trace) or not len(trace):
        print(f"error: no requests to test ({st.kept} kept, {st.bad} bad lines, "
              f"{st.filtered} filtered); check --format", file=sys.stderr)
        return 1
    print(f"trace {label}: {len(trace)} requests, {len(trace.device_names)} devices, "
          f"{len(trace.names)} resources; {st.bad} bad lines skipped, {st.filtered} "
          f"non-2xx filtered; train {trace.split}, test {len(trace) - trace.split}")
    thresholds = THRESHOLDS[::3] if args.quick else THRESHOLDS
    c0 = time.process_time()
    out = run(trace, names, cache_sizes=cache_sizes, depths=depths, cache=args.cache,
              depth=args.depth, thresholds=thresholds,
              compare=[c for c in args.compare.split(",") if c in names],
              log=lambda m: print(f"  ... {m}", flush=True), fit_runs=args.fit_runs)
    print()
    print(f"cache {args.cache} objects/device; 'hit @<=ref waste' = best point of the "
          f"threshold x depth sweep wasting no more than PPM-2 top-1")
    print_table(SUMMARY_HEADERS, summary_rows(out))
    o = out["predictors"]["oracle"]["top1"]
    print(f"oracle next-request top-1: hit {o['hit_ratio']:.3f}")
    print()
    print("mesh-wide model vs per-device-only learning (default depth, chosen threshold); "
          f"{out['cold_devices']} cold-start devices")
    rows = []
    for name, s in out["scope"].items():
        for scope in ("mesh", "per_device", "mesh_cold", "per_device_cold"):
            m = s[scope]
            rows.append([name, scope, str(m["requests"]), f"{m['hit_ratio']:.3f}",
                         f"{m['precision']:.2f}", f"{m['wasted_pct']:.1f}"])
    print_table(["predictor", "learning", "requests", "hit", "precision", "waste %"], rows)
    print()
    print(f"cache-size sweep (depth {args.depth}, hit ratio; LRU-only: " + ", ".join(
        f"{p['cache']}:{p['hit_ratio']:.3f}" for p in out["lru_sweep"]) + ")")
    rows = [[n, *(f"{p['hit_ratio']:.3f}/{p['wasted_pct']:.1f}%" for p in s["cache"])]
            for n, s in out["sweeps"].items()]
    print_table(["predictor", *(f"cache {c}" for c in cache_sizes)], rows)
    rows = [[n, *(f"{p['hit_ratio']:.3f}/{p['wasted_pct']:.1f}%" for p in s["depth"])]
            for n, s in out["sweeps"].items()]
    print_table(["predictor", *(f"depth {d}" for d in depths)], rows)
    out["gains"] = gains(out)
    for anchor_name, g in out["gains"].items():
        a = g["anchor"]
        print()
        print(f"gain over PPM-2 at no more waste than its {anchor_name} point "
              f"(hit {a['hit_ratio']:.3f}, precision {a['precision']:.2f}, "
              f"waste {a['wasted_pct']:.1f} %, depth {a['depth']}, threshold {a['threshold']})")
        rows = [[n, f"{r['point']['hit_ratio']:.3f}", f"{r['point']['precision']:.2f}",
                 f"{r['point']['wasted_pct']:.1f}", f"d{r['point']['depth']} "
                 f"t{r['point']['threshold']}",
                 "-" if r["gain"] is None else f"{100 * r['gain']:+.1f} %"]
                for n, r in g["predictors"].items()]
        print_table(["predictor", "hit", "precision", "waste %", "point", "gain"], rows)
    out["total_cpu_s"] = time.process_time() - c0
    out["machine"] = info
    out["trace"] = {"label": label, "format": args.format, "requests": len(trace),
                    "devices": len(trace.device_names), "resources": len(trace.names),
                    "bad_lines": st.bad, "filtered": st.filtered, "split": trace.split}
    out["command"] = " ".join(["bench/prefetch.py", *(argv if argv is not None else sys.argv[1:])])
    if args.png:
        print(plot(out, args.png, f"{label}: hit ratio vs wasted bytes (cache {args.cache})"))
    write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
