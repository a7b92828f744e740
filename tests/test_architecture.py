"""The import graph of probslot obeys its architecture (docs/architecture.md, "Layers").

Built with grimp from the source, so function-level (lazy) imports count as much as module-level
ones; ``if TYPE_CHECKING:`` imports do not (they never run). Three contracts:

(a) no import cycle between modules;
(b) model code, data and everything `probslot.load_model` needs never import Lightning, directly
    or through another probslot module (`probslot.data.datamodule` is the one data module that may);
(c) every module sits in one layer of `LAYERS` and imports only from its own layer or lower ones,
    and never sideways between the independent siblings of a layer.

Plus one run-time check: loading a saved run with `probslot.load_model` leaves Lightning unimported.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import grimp  # a dev dependency (pyproject.toml [dev], constraints.txt)

ROOT = "probslot"
LIGHTNING = ("lightning", "pytorch_lightning", "lightning_fabric")


@dataclass(frozen=True)
class Layer:
    """A layer of the architecture: module prefixes, lowest layer first in `LAYERS`.

    With ``independent=True`` the prefixes are siblings that must not import one another.
    """

    name: str
    members: tuple[str, ...]
    independent: bool = False


#: Lowest first. A module may import modules of its own layer or of lower ones. A member names a
#: module and everything under it; the longest matching member wins (so
#: `probslot.posterior.commands` sits above the rest of `probslot.posterior`), and `probslot`
#: itself means only the package's `__init__` (the public API). Keep in step with
#: docs/architecture.md.
LAYERS: tuple[Layer, ...] = (
    Layer(
        "foundation",
        (
            "probslot.validation",
            "probslot.registry",
            "probslot.atomic",
            "probslot.relevance",
            "probslot.typing",
            "probslot.layers",
            "probslot.clock",
        ),
    ),
    Layer("model parts", ("probslot.nn", "probslot.encoders", "probslot.decoders"), True),
    Layer("models", ("probslot.models",)),
    Layer("data and metrics", ("probslot.data", "probslot.metrics"), True),
    Layer("posterior", ("probslot.posterior",)),
    Layer("run config", ("probslot.config",)),
    Layer("run directories and public API", ("probslot.io", "probslot.runs", "probslot")),
    Layer(
        "reports and posterior commands", ("probslot.reports", "probslot.posterior.commands"), True
    ),
    Layer("applications", ("probslot.evaluation", "probslot.training"), True),
    Layer("studies", ("probslot.experiments",)),
    Layer("command line", ("probslot.cli",)),
)

#: Modules that must not reach Lightning (model code, data, and what `load_model` imports).
LIGHTNING_FREE: tuple[str, ...] = (
    "probslot.validation",
    "probslot.registry",
    "probslot.atomic",
    "probslot.relevance",
    "probslot.typing",
    "probslot.layers",
    "probslot.nn",
    "probslot.encoders",
    "probslot.decoders",
    "probslot.models",
    "probslot.posterior",
    "probslot.metrics",
    "probslot.data",
    "probslot.config",
    "probslot.io",
    "probslot",
)
#: The Lightning DataModule: the one data module that imports Lightning.
LIGHTNING_ALLOWED: tuple[str, ...] = ("probslot.data.datamodule",)


# --------------------------------------------------------------------------- graph helpers
@lru_cache(maxsize=1)
def _graph():
    return grimp.build_graph(
        ROOT, include_external_packages=True, exclude_type_checking_imports=True, cache_dir=None
    )


def _internal(graph, root: str = ROOT) -> list[str]:
    return sorted(m for m in graph.modules if m == root or m.startswith(root + "."))


def _imports(graph, module: str, root: str = ROOT) -> list[str]:
    internal = set(_internal(graph, root))
    return sorted(m for m in graph.find_modules_directly_imported_by(module) if m in internal)


def _where(graph, importer: str, imported: str) -> str:
    """``(file.py:line)`` of the first statement by which `importer` imports `imported`."""
    details = graph.get_import_details(importer=importer, imported=imported)
    if not details:
        return ""
    first = min(details, key=lambda d: d["line_number"])
    return f" (line {first['line_number']}: {first['line_contents'].strip()})"


def _matches(module: str, prefix: str) -> bool:
    if prefix == ROOT:
        return module == ROOT
    return module == prefix or module.startswith(prefix + ".")


def _layer_of(module: str) -> tuple[int, str] | None:
    """(layer index, member) of `module`: the longest member that contains it."""
    best: tuple[int, str] | None = None
    for index, layer in enumerate(LAYERS):
        for member in layer.members:
            if _matches(module, member) and (best is None or len(member) > len(best[1])):
                best = (index, member)
    return best


def _strongly_connected(nodes: list[str], edges: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative): the components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def _shortest_cycle(start: str, component: set[str], edges: dict[str, list[str]]) -> list[str]:
    """The shortest cycle start -> ... -> start inside `component` (breadth-first search)."""
    parent: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in edges[node]:
            if child not in component:
                continue
            if child == start:
                path = [node]
                while parent[path[-1]] is not None:
                    path.append(parent[path[-1]])  # type: ignore[arg-type]
                return [*reversed(path), start]
            if child not in parent:
                parent[child] = node
                queue.append(child)
    raise AssertionError(f"{start} is in a strongly connected component but on no cycle")


def find_cycles(graph, root: str = ROOT) -> list[str]:
    """One readable shortest cycle ``a -> b -> c -> a`` per group of mutually importing modules."""
    nodes = _internal(graph, root)
    edges = {m: _imports(graph, m, root) for m in nodes}
    chains = []
    for component in _strongly_connected(nodes, edges):
        members = set(component)
        cycle = _shortest_cycle(component[0], members, edges)
        steps = [f"{a} -> {b}{_where(graph, a, b)}" for a, b in zip(cycle, cycle[1:])]
        chains.append(
            " -> ".join(cycle)
            + f"\n    modules in this knot: {', '.join(component)}\n    "
            + "\n    ".join(steps)
        )
    return chains


# --------------------------------------------------------------------------- (a) cycles
def test_no_import_cycles() -> None:
    cycles = find_cycles(_graph())
    assert not cycles, (
        f"{len(cycles)} import cycle(s) in probslot (lazy imports count; break each by moving the "
        "shared piece into a lower module, see LAYERS):\n" + "\n".join(cycles)
    )


def test_cycle_finder_sees_function_level_imports(tmp_path: Path, monkeypatch) -> None:
    """A cycle closed by an import inside a function is reported as a readable chain."""
    package = tmp_path / "knot"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from knot import b\n")
    (package / "b.py").write_text("import knot.c\nimport knot.d\n")
    (package / "c.py").write_text("def late():\n    from knot.a import late\n")
    (package / "d.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = grimp.build_graph("knot", cache_dir=None)
    (chain,) = find_cycles(graph, root="knot")
    lines = chain.splitlines()
    assert lines[0] == "knot.a -> knot.b -> knot.c -> knot.a"
    assert "knot.c -> knot.a (line 2: from knot.a import late)" in chain


# --------------------------------------------------------------------------- (b) Lightning
def _lightning_free_modules(graph) -> list[str]:
    return [
        m
        for m in _internal(graph)
        if any(_matches(m, p) for p in LIGHTNING_FREE)
        and not any(_matches(m, p) for p in LIGHTNING_ALLOWED)
    ]


def test_model_code_and_data_never_import_lightning() -> None:
    graph = _graph()
    present = [name for name in LIGHTNING if name in graph.modules]
    # the check is not vacuous: grimp sees the training code's Lightning import
    assert "lightning" in present and graph.find_shortest_chain(
        importer="probslot.training.lit_module", imported="lightning"
    )
    problems = []
    for module in _lightning_free_modules(graph):
        for name in present:
            chain = graph.find_shortest_chain(importer=module, imported=name)
            if chain:
                steps = [f"{a} -> {b}{_where(graph, a, b)}" for a, b in zip(chain, chain[1:])]
                problems.append(" -> ".join(chain) + "\n    " + "\n    ".join(steps))
                break
    assert not problems, (
        "model code, data and load_model's modules must not import Lightning (only "
        f"{', '.join(LIGHTNING_ALLOWED)} and probslot.training may); found:\n" + "\n".join(problems)
    )


# --------------------------------------------------------------------------- (c) layers
def test_every_module_has_a_layer() -> None:
    missing = [m for m in _internal(_graph()) if _layer_of(m) is None]
    assert not missing, (
        f"modules outside every layer: {missing}. Add each to LAYERS in tests/test_architecture.py "
        "(and docs/architecture.md) at the lowest layer whose modules it needs"
    )


def test_imports_follow_the_layers() -> None:
    graph = _graph()
    problems = []
    for importer in _internal(graph):
        own = _layer_of(importer)
        if own is None:
            continue  # reported by test_every_module_has_a_layer
        for imported in _imports(graph, importer):
            other = _layer_of(imported)
            if other is None:
                continue
            if other[0] > own[0]:
                kind = "upward"
            elif other[0] == own[0] and other[1] != own[1] and LAYERS[own[0]].independent:
                kind = "sideways between independent siblings"
            else:
                continue
            problems.append(
                f"{importer} [{LAYERS[own[0]].name}] imports {imported} "
                f"[{LAYERS[other[0]].name}], {kind}{_where(graph, importer, imported)}"
            )
    assert not problems, (
        "imports against the layer order (lowest first: "
        + " < ".join(layer.name for layer in LAYERS)
        + "); move the shared code down a layer instead:\n"
        + "\n".join(problems)
    )


def test_layer_table_names_real_modules() -> None:
    modules = set(_internal(_graph()))
    stale = [
        member
        for layer in LAYERS
        for member in layer.members
        if not any(_matches(m, member) for m in modules)
    ]
    assert not stale, f"LAYERS names modules that do not exist: {stale}"


# --------------------------------------------------------------------------- run time
def test_load_model_does_not_import_lightning(tmp_path: Path) -> None:
    from probslot.config import RunConfig, dump_config
    from probslot.io import RunPaths, save_model_weights
    from probslot.models import build_model
    from tiny_runs import tiny_config

    cfg = RunConfig.from_dict(tiny_config())
    paths = RunPaths(tmp_path / "run")
    paths.root.mkdir()
    paths.config.write_text(dump_config(cfg))
    save_model_weights(build_model(cfg.model), paths.weights)

    code = textwrap.dedent(
        f"""
        import sys
        import probslot
        model = probslot.load_model({str(paths.root)!r})
        assert not model.training
        import probslot.data, probslot.decoders, probslot.encoders, probslot.metrics
        import probslot.models, probslot.nn, probslot.posterior
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {LIGHTNING!r})
        assert not loaded, f"Lightning was imported: {{loaded[:5]}}"
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
