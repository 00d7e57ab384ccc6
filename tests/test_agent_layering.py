"""Architecture rules for agent/: its import graph is acyclic and only ever points down.

The graph is read from the source with ``ast`` and holds *every* import: top-level ones,
lazy ones inside functions, and the ones under ``if TYPE_CHECKING:``. A lazy or type-only
import still couples the two modules for a reader and for a refactoring, so it counts.

Rules (each has a test below, and each test has a self-test that feeds it a bad graph):

(a) No import cycle among agent modules, within a package or across packages.
(b) No upward import: a module may import modules of its own layer and of lower ranks only.
    The layers, bottom up (``LAYERS``):

    0 foundation   agent (the package itself), agent.errors, agent.log, agent.fsutil,
                   agent.config, agent.ports, agent.daemon
    1 security     agent.security.*  (identity, signing, trust, pairing book, sessions)
                   predict  agent.predict.*  (pure predictors and trace readers: no I/O)
                   dht  agent.dht.*  (Kademlia core and its simulation: no I/O)
    2 store        agent.store.*  (manifests are signed: store uses security)
                   bandwidth  agent.bandwidth
                   usage  agent.usage.* (access log, n-grams, temperature: pure cores)
    3 peer         agent.peer.*
    4 transfer     agent.transfer.*        authority  agent.authority.*   links  agent.links.*
                   usage-service  agent.usage.service (sharing over peer sessions),
                                  agent.usage.models (the model lifecycle)
                   folders  agent.folders.* (watched publishes, exported trees)
                   relay  agent.relay.* (multi-hop circuits over peer sessions)
                   prefetch, mirrors  (names reserved for the coming services)
                   dht-service  agent.dht.service (the DHT over peer sessions)
    5 control      agent.control.* except the CLI's own modules below
    6 doctor       agent.doctor.* (`shoal doctor`: probes and pure checks)
                   service  agent.service.* (`shoal service`: unit files and systemctl)
    7 dashboard    agent.dashboard.* (the local web UI over the control commands; shows
                   doctor's findings)
    8 node         agent.node (the composition root)
    9 entry        agent.control.cli (and its parser, render, progress, listings, hints,
                   servicecli: terminal output the agent itself never produces), agent.demo,
                   agent.__main__

    Sideways: two *different* layers of the same rank never import each other (store does
    not import bandwidth, links does not import transfer, authority does not import
    transfer). Siblings meet through a port (:mod:`agent.ports`) that the node wires, or a
    shared type moves down to the layer both already import. Inside one layer (one package,
    or the foundation modules among themselves) any import is fine as long as it is acyclic.
    ``radio/`` sits beneath the whole agent: any agent layer may import it.
(c) Every agent module belongs to a layer: a new package or a new top-level module fails
    here until it is placed in ``LAYERS`` on purpose. (A new module inside a placed package,
    e.g. ``agent/authority/policy.py``, belongs to that package's layer.)
(d) radio/ never imports agent/.
(e) Only the entry points import agent.node: no subsystem reaches into the node, it
    receives its ports instead.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

Graph = Mapping[str, Mapping[str, int]]  # module -> {imported module: first line}


@dataclass(frozen=True)
class Layer:
    name: str
    rank: int
    modules: tuple[str, ...] = ()  # exactly these modules
    packages: tuple[str, ...] = ()  # these packages and everything beneath them


LAYERS: tuple[Layer, ...] = (
    Layer("foundation", 0, modules=("agent", "agent.errors", "agent.log", "agent.fsutil",
                                    "agent.config", "agent.ports", "agent.daemon")),
    Layer("security", 1, packages=("agent.security",)),
    Layer("predict", 1, packages=("agent.predict",)),
    Layer("dht", 1, packages=("agent.dht",)),
    Layer("store", 2, packages=("agent.store",)),
    Layer("bandwidth", 2, modules=("agent.bandwidth",)),
    Layer("usage", 2, packages=("agent.usage",)),
    Layer("peer", 3, packages=("agent.peer",)),
    Layer("transfer", 4, packages=("agent.transfer",)),
    Layer("authority", 4, packages=("agent.authority",)),
    Layer("links", 4, packages=("agent.links",)),
    Layer("usage-service", 4, modules=("agent.usage.service", "agent.usage.models")),
    Layer("dht-service", 4, modules=("agent.dht.service",)),
    Layer("prefetch", 4, packages=("agent.prefetch",)),
    Layer("folders", 4, packages=("agent.folders",)),
    Layer("mirrors", 4, packages=("agent.mirrors",)),
    Layer("relay", 4, packages=("agent.relay",)),
    Layer("control", 5, packages=("agent.control",)),
    Layer("dashboard", 7, packages=("agent.dashboard",)),
    Layer("node", 8, modules=("agent.node",)),
    Layer("doctor", 6, packages=("agent.doctor",)),
    Layer("service", 6, packages=("agent.service",)),
    Layer("entry", 9, modules=("agent.control.cli", "agent.control.parser",
                               "agent.control.render", "agent.control.progress",
                               "agent.control.listings", "agent.control.hints",
                               "agent.control.servicecli", "agent.demo",
                               "agent.__main__")),
)
NODE = "agent.node"


# ------------------------------------------------------------------------- reading the graph
def discover(root: Path, package: str) -> dict[str, Path]:
    """Module name -> file, for every .py file beneath *root*/*package*."""
    out: dict[str, Path] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(name: str, known: set[str]) -> str | None:
    """The longest known module that *name* is, or lies in (``agent.store.ContentStore`` ->
    ``agent.store``); None for anything outside the tree (stdlib, third party)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, path: Path, source: str, known: Iterable[str]) -> dict[str, int]:
    """Every module of *known* that *module* imports, with the first line that does: top-level,
    inside functions and classes, under ``if TYPE_CHECKING:``, absolute and relative."""
    known = set(known)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            # `from pkg import sub` imports the submodule pkg.sub when there is one
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                     for a in node.names]
        else:
            continue
        for name in names:
            target = _resolve(name, known)
            if target is not None and target != module:  # ast.walk is breadth-first
                found[target] = min(node.lineno, found.get(target, node.lineno))
    return found


def build_graph(root: Path, packages: Iterable[str]) -> tuple[dict[str, dict[str, int]],
                                                                dict[str, Path]]:
    files: dict[str, Path] = {}
    for package in packages:
        files.update(discover(root, package))
    graph = {m: imports_of(m, p, p.read_text(encoding="utf-8"), files)
             for m, p in files.items()}
    return graph, files


# ------------------------------------------------------------------------- the rules
def layer_of(module: str) -> Layer | None:
    """The layer placing *module*: an exact module entry wins over a package entry, and a
    deeper package over a shallower one."""
    for layer in LAYERS:
        if module in layer.modules:
            return layer
    best: tuple[int, Layer] | None = None
    for layer in LAYERS:
        for pkg in layer.packages:
            if (module == pkg or module.startswith(pkg + ".")) and (
                    best is None or len(pkg) > best[0]):
                best = (len(pkg), layer)
    return best[1] if best else None


def _agent(module: str) -> bool:
    return module == "agent" or module.startswith("agent.")


def find_cycles(graph: Graph) -> list[list[str]]:
    """One concrete cycle (first module repeated at the end, in import order) per strongly
    connected component of more than one module: the shortest one in that component."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:  # Tarjan; the graph is ~100 modules, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, {})):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp: set[str] = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(_cycle_path(graph, comp) for comp in components)


def _cycle_path(graph: Graph, comp: set[str]) -> list[str]:
    """The shortest cycle inside *comp* (ties: the alphabetically first)."""
    return min((_shortest_cycle_through(graph, comp, v) for v in comp),
               key=lambda path: (len(path), path))


def _shortest_cycle_through(graph: Graph, comp: set[str], start: str) -> list[str]:
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt: list[str] = []
        for v in frontier:
            for w in sorted(graph.get(v, {})):
                if w not in comp:
                    continue
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start} in {sorted(comp)}")  # pragma: no cover


def _edges(graph: Graph) -> Iterable[tuple[str, str, int]]:
    for src in sorted(graph):
        for dst, line in sorted(graph[src].items()):
            yield src, dst, line


def unplaced_modules(modules: Iterable[str]) -> list[str]:
    return sorted(m for m in modules if _agent(m) and layer_of(m) is None)


def upward_imports(graph: Graph) -> list[str]:
    out = []
    for src, dst, line in _edges(graph):
        a, b = layer_of(src), layer_of(dst)
        if _agent(src) and _agent(dst) and a and b and b.rank > a.rank:
            out.append(f"{src}:{line} imports {dst} ({a.name} rank {a.rank} -> "
                       f"{b.name} rank {b.rank})")
    return out


def sideways_imports(graph: Graph) -> list[str]:
    out = []
    for src, dst, line in _edges(graph):
        a, b = layer_of(src), layer_of(dst)
        if _agent(src) and _agent(dst) and a and b and a.rank == b.rank and a != b:
            out.append(f"{src}:{line} imports {dst} ({a.name} -> {b.name}, both rank {a.rank})")
    return out


def node_importers(graph: Graph) -> list[str]:
    """Imports of the node from anything but a layer above it (the entry points)."""
    node = layer_of(NODE)
    assert node is not None
    out = []
    for src, dst, line in _edges(graph):
        layer = layer_of(src)
        if dst == NODE and _agent(src) and (layer is None or layer.rank <= node.rank):
            out.append(f"{src}:{line} imports {NODE}")
    return out


def radio_imports_of_agent(graph: Graph) -> list[str]:
    return [f"{src}:{line} imports {dst}" for src, dst, line in _edges(graph)
            if src.startswith("radio") and _agent(dst)]


# ------------------------------------------------------------------------- the tree
@pytest.fixture(scope="module")
def tree() -> tuple[dict[str, dict[str, int]], dict[str, Path]]:
    return build_graph(ROOT, ["agent", "radio"])


def test_the_graph_is_read(tree: tuple[dict[str, dict[str, int]], dict[str, Path]]) -> None:
    graph, files = tree
    assert "agent.node" in files and "radio.base" in files
    assert "agent.ports" in graph["agent.peer.connections"]  # sanity: edges are found


def test_every_agent_module_has_a_layer(
        tree: tuple[dict[str, dict[str, int]], dict[str, Path]]) -> None:
    _, files = tree
    assert unplaced_modules(files) == [], "place new modules in LAYERS (see the docstring)"


def test_no_import_cycles(tree: tuple[dict[str, dict[str, int]], dict[str, Path]]) -> None:
    graph, _ = tree
    assert [" -> ".join(c) for c in find_cycles(graph)] == []


def test_no_upward_imports(tree: tuple[dict[str, dict[str, int]], dict[str, Path]]) -> None:
    graph, _ = tree
    assert upward_imports(graph) == []


def test_no_sideways_imports_between_layers_of_one_rank(
        tree: tuple[dict[str, dict[str, int]], dict[str, Path]]) -> None:
    graph, _ = tree
    assert sideways_imports(graph) == []


def test_radio_never_imports_agent(
        tree: tuple[dict[str, dict[str, int]], dict[str, Path]]) -> None:
    graph, _ = tree
    assert radio_imports_of_agent(graph) == []


def test_only_entry_points_import_the_node(
        tree: tuple[dict[str, dict[str, int]], dict[str, Path]]) -> None:
    graph, _ = tree
    assert node_importers(graph) == []
    assert "agent.node" in graph["agent.control.cli"]  # the rule does see the real importer


# ------------------------------------------------------------------------- self-tests
def test_parser_sees_lazy_type_checking_and_relative_imports(tmp_path: Path) -> None:
    known = {"agent", "agent.node", "agent.peer", "agent.peer.wire", "agent.peer.table",
             "agent.store", "agent.errors", "agent.log"}
    source = (
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "import json\n"
        "from . import wire\n"  # relative, a submodule
        "from ..store import ContentStore\n"  # relative two levels, a name in a package
        "if TYPE_CHECKING:\n"
        "    from agent.node import Node\n"
        "def later() -> None:\n"
        "    import agent.errors as errors\n"
        "class C:\n"
        "    def m(self) -> None:\n"
        "        from agent import log\n"
        "        from agent.peer.table import PeerTable\n"
        "import agent.log\n"  # top-level, seen first by ast.walk: the earlier line still wins
    )
    found = imports_of("agent.peer.table", tmp_path / "table.py", source, known)
    assert found == {"agent.peer.wire": 4, "agent.store": 5, "agent.node": 7,
                     "agent.errors": 9, "agent.log": 12}  # not itself, not json


def test_a_cycle_is_reported_with_its_path() -> None:
    graph = {"agent.peer.a": {"agent.peer.b": 1}, "agent.peer.b": {"agent.peer.c": 1},
             "agent.peer.c": {"agent.peer.a": 1, "agent.log": 1},
             "agent.peer.d": {"agent.peer.a": 1}, "agent.log": {}}
    assert find_cycles(graph) == [
        ["agent.peer.a", "agent.peer.b", "agent.peer.c", "agent.peer.a"]]
    assert find_cycles({"x": {"y": 1}, "y": {"x": 1}, "z": {"z": 1}}) == [["x", "y", "x"]]
    assert find_cycles({"x": {"y": 1}, "y": {}}) == []


def test_an_upward_import_is_reported() -> None:
    graph = {"agent.peer.wire": {"agent.transfer.planner": 7, "agent.errors": 3},
             "agent.store.store": {"agent.fsutil": 1}}
    assert upward_imports(graph) == [
        "agent.peer.wire:7 imports agent.transfer.planner (peer rank 3 -> transfer rank 4)"]


def test_a_sideways_import_is_reported_but_not_one_inside_a_layer() -> None:
    graph = {"agent.links.ble.link": {"agent.transfer.fetcher": 4, "agent.links.ble.tag": 5},
             "agent.daemon": {"agent.errors": 1}}
    assert sideways_imports(graph) == [
        "agent.links.ble.link:4 imports agent.transfer.fetcher (links -> transfer, both rank 4)"]


def test_an_unplaced_module_is_reported() -> None:
    assert unplaced_modules(["agent.node", "agent.authority.policy", "agent.gossip",
                             "agent.gossip.core", "radio.base"]) == [
        "agent.gossip", "agent.gossip.core"]


def test_layers_resolve_exact_names_before_packages() -> None:
    cli, commands = layer_of("agent.control.cli"), layer_of("agent.control.commands")
    assert cli is not None and commands is not None
    assert (cli.name, commands.name) == ("entry", "control")
    assert layer_of("agent") is not None and layer_of("agentx") is None


def test_node_importers_and_radio_importing_agent_are_reported() -> None:
    graph = {"agent.transfer.service": {"agent.node": 12}, "agent.control.cli": {"agent.node": 3},
             "radio.sim": {"agent.errors": 9, "radio.base": 1}}
    assert node_importers(graph) == ["agent.transfer.service:12 imports agent.node"]
    assert upward_imports(graph) == [
        "agent.transfer.service:12 imports agent.node (transfer rank 4 -> node rank 8)"]
    assert radio_imports_of_agent(graph) == ["radio.sim:9 imports agent.errors"]
