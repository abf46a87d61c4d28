"""The layering is checked, not described: the import-linter contracts of pyproject.toml
([tool.importlinter]) hold, and neurocomp's modules import each other without a circle. Imports
inside functions count like any other (grimp reads every import statement of a module)."""
import os
import subprocess
import sys

import grimp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_import_linter_contracts_hold():
    """`lint-imports` (the command `make lint` runs), from the venv running the tests, on this checkout."""
    exe = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    assert os.path.exists(exe), f"{exe} is missing: install the test extra (pip install -e '.[test]')"
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([exe, "--no-cache", "--no-logo"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[r.stdout.find("Broken contracts"):] + r.stderr


def _cycles(adjacency: dict) -> list[list[str]]:
    """One circle of imports per strongly connected component of more than one module (or a module
    importing itself), as ``[a, b, ..., a]``; empty when the graph has none."""
    index, low, stack, on_stack, comps = {}, {}, [], set(), []
    counter = [0]

    def visit(v):                      # Tarjan, iterative enough for a few hundred modules
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(adjacency.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1 or v in adjacency.get(v, ()):
                comps.append(comp)

    for v in sorted(adjacency):
        if v not in index:
            visit(v)
    out = []
    for comp in comps:                 # a concrete circle through the component, by breadth-first search
        start = min(comp)
        prev, frontier, found = {start: None}, [start], None
        while frontier and found is None:
            nxt = []
            for v in frontier:
                for w in sorted(adjacency.get(v, ())):
                    if w == start:
                        found = v
                        break
                    if w in comp and w not in prev:
                        prev[w] = v
                        nxt.append(w)
                if found is not None:
                    break
            frontier = nxt
        path, v = [start], found
        while v is not None and v != start:
            path.append(v)
            v = prev[v]
        out.append([start] + path[1:][::-1] + [start])
    return sorted(out)


def test_the_cycle_finder_names_a_circle():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert _cycles(g) == [["a", "b", "c", "a"], ["e", "e"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycles_among_neurocomp_modules():
    graph = grimp.build_graph("neurocomp", include_external_packages=False, cache_dir=None)
    adjacency = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    # the graph counts imports inside functions: cli imports the API only inside its commands
    assert "neurocomp.api" in adjacency["neurocomp.cli"]
    circles = _cycles(adjacency)
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)
