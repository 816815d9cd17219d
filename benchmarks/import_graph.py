"""The import graph of fwlab/: which fwlab modules each module imports (at module level, and inside
functions, marked `lazy`), any cycle among them, and the arrows that point up a layer.

    python benchmarks/import_graph.py

Layers, bottom up (DESIGN.md): errors/utils/records -> config/schedule/model/hardware -> data ->
checkpoint -> evaluate -> train -> throughput/export/prepare; runs (the one reader of run and sweep
directories; the sweep uses its readers) -> forecast -> plan -> claims -> report -> sweep's demo /
cli. Exit status 1 on a cycle or an upward arrow.
"""
import ast
import sys
from pathlib import Path

FWLAB = Path(__file__).resolve().parents[1] / "fwlab"
LAYER = {"__init__": 0, "errors": 0, "utils": 0, "records": 1, "schedule": 1, "config": 1,
         "model": 1, "hardware": 2, "data": 2, "checkpoint": 3, "runs": 3, "train": 4,
         "throughput": 5, "evaluate": 3.5, "export": 5, "prepare": 5, "forecast": 5, "sweep": 5,
         "prior": 5.5, "plan": 6, "claims": 7, "report": 8, "demo": 9, "importers": 5,
         "cli": 10, "__main__": 11}
# the main job still lives in sweep.py (main_demo) and imports the report from inside it
ALLOWED_UP = {("sweep", "report"), ("sweep", "prepare")}


def imports(path: Path):
    tree = ast.parse(path.read_text())
    top = set(id(n) for n in tree.body)
    out = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fwlab"):
            if node.module == "fwlab":
                names = [a.name for a in node.names]
            else:
                names = [node.module.split(".")[1]]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[1] for a in node.names if a.name.startswith("fwlab.")]
        for n in names:
            if (FWLAB / f"{n}.py").is_file():
                out.append((n, id(node) not in top))
    return out


def main() -> int:
    graph = {}
    for p in sorted(FWLAB.glob("*.py")):
        graph[p.stem] = imports(p)
    bad = 0
    for m, deps in graph.items():
        shown = sorted({f"{d}{' (lazy)' if lazy else ''}" for d, lazy in deps if d != m})
        print(f"{m:>11} -> {', '.join(shown) or '-'}")
    # cycles over all arrows (lazy ones too: a cycle through a function-level import is still one)
    edges = {m: {d for d, _ in deps if d != m} for m, deps in graph.items()}
    state, stack = {}, []

    def visit(m):
        nonlocal bad
        state[m] = 1
        stack.append(m)
        for d in sorted(edges.get(m, ())):
            if state.get(d) == 1:
                print("CYCLE: " + " -> ".join(stack[stack.index(d):] + [d]))
                bad += 1
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    for m, ds in edges.items():
        for d in ds:
            if LAYER.get(d, 0) > LAYER.get(m, 0) and (m, d) not in ALLOWED_UP:
                print(f"UPWARD: {m} (layer {LAYER.get(m)}) -> {d} (layer {LAYER.get(d)})")
                bad += 1
    print("no cycle, no upward arrow" if not bad else f"{bad} problem(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
