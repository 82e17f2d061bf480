"""The architecture as an import graph (issue 20): data/ and models/ import nothing of the rest, methods/ nothing
above models/, engine/ nothing of benchmarks/; inside benchmarks/ no module imports the command line, and there is
no cycle anywhere (lazy imports inside functions count too); the folders of benchmarks/ are layers (LAYERS)."""
import ast
import os

from conftest import ROOT

PKGS = ("benchmarks", "data", "models", "methods", "engine")
# what each package may import of the others (the arrows point one way)
ALLOWED = {"data": set(), "models": set(), "methods": {"models"}, "engine": {"data", "models", "methods"},
           "benchmarks": {"data", "models", "methods", "engine"}}


def _modules() -> dict[str, str]:
    out = {}
    for pkg in PKGS:
        for folder, _, files in os.walk(os.path.join(ROOT, pkg)):
            for f in files:
                if f.endswith(".py"):
                    rel = os.path.relpath(os.path.join(folder, f), ROOT)[:-3].replace(os.sep, ".")
                    out[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(folder, f)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph = {m: set() for m in mods}
    for m, path in mods.items():
        base = m if path.endswith("__init__.py") else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(open(path).read())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = base.split(".")
                    target = ".".join(parts[: len(parts) - (node.level - 1)] + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                names = [f"{target}.{a.name}" if f"{target}.{a.name}" in mods else target for a in node.names]
            for t in names:
                while t and t not in mods and "." in t:
                    t = t.rsplit(".", 1)[0]
                if t in mods and t != m:
                    graph[m].add(t)
    return graph


def test_packages_point_one_way():
    bad = [(m, t) for m, ts in _graph().items() for t in ts
           if t.split(".")[0] != m.split(".")[0] and t.split(".")[0] not in ALLOWED[m.split(".")[0]]]
    assert bad == []


# benchmarks/ by concern, lowest first: a module may import only from its own folder or one listed before it
LAYERS = ["errors", "cache", "plugins", "common", "targets", "run", "report", "perf", "nightly", "cli", "__main__"]


def test_benchmarks_folders_point_down():
    def part(m):
        return m.split(".")[1] if m.startswith("benchmarks.") else None

    assert {part(m) for m in _graph() if part(m)} <= set(LAYERS)
    bad = [(m, t) for m, ts in _graph().items() for t in ts
           if part(m) and part(t) and part(m) != part(t) and LAYERS.index(part(t)) > LAYERS.index(part(m))]
    assert bad == []


def test_nothing_imports_the_command_line():
    assert [m for m, ts in _graph().items() if "benchmarks.cli" in ts and m != "benchmarks.__main__"] == []


def test_no_import_cycle():
    graph, index, low, stack, on, cycles = _graph(), {}, {}, [], set(), []

    def visit(v, counter=[0]):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert cycles == []
