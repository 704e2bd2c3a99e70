"""Imports follow the data flow (data_prep → pipeline → launch/evaluation): no cycle between the top-level
packages, none between modules of `pipeline.config` (or any other first-party modules), and importing the
config layer imports no torch.

The graph is read from the source (every `import`, function-level ones included: they hide a cycle, they do
not remove it; `if TYPE_CHECKING:` blocks excluded: they never run). Importing `a.b.c` also imports the
packages `a` and `a.b`, so those count as edges too, except for the importer's own parent packages (Python
has already imported them).
"""

import ast
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO

PACKAGES = ("pipeline", "data_prep", "launch")


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _runtime_nodes(tree: ast.AST):
    """Every node except those under `if TYPE_CHECKING:`."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in (child, *_runtime_nodes(child)))
            continue
        yield node
        yield from _runtime_nodes(node)


def import_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    """module → first-party modules it imports (anywhere in the file), with implied parent packages."""
    files = {_module_name(p, root): p for pkg in packages for p in (root / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_pkg = path.name == "__init__.py"
        targets: set[str] = set()
        for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the importer's package
                    pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                    pkg = pkg[: len(pkg) - node.level + 1]
                    base = ".".join(pkg + ([base] if base else []))
                targets.add(base)
                targets.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import module`
        own = set(_parents(name))
        edges = set()
        for t in targets:
            for m in (*_parents(t), t):
                if m in files and m != name and m not in own:
                    edges.add(m)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    top = lambda m: m.split(".")[0]  # noqa: E731
    out: dict[str, set[str]] = {}
    for a, targets in graph.items():
        out.setdefault(top(a), set()).update(top(b) for b in targets if top(b) != top(a))
    return out


GRAPH = import_graph(REPO, PACKAGES)


def test_the_cycle_check_finds_a_cycle_hidden_in_a_function(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import f\n")
    (pkg / "b.py").write_text("def f():\n    from pkg.a import g\n")
    (pkg / "c.py").write_text("import pkg.a\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.b\n")
    graph = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.c"] == {"pkg.a"} and graph["pkg.b"] == {"pkg.a"}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.a"]


def test_no_cycle_between_top_level_packages():
    packages = package_graph(GRAPH)
    assert find_cycle(packages) is None, find_cycle(packages)


def test_data_prep_does_not_import_pipeline():
    """data_prep is upstream: run configs are resolved by launch.data, which hands it a PrepareConfig."""
    offenders = sorted(m for m, targets in GRAPH.items() if m.startswith("data_prep")
                       and any(t.startswith("pipeline") for t in targets))
    assert not offenders, offenders


def test_no_cycle_between_modules_of_pipeline_config():
    config = {m: {t for t in ts if t.startswith("pipeline.config")} for m, ts in GRAPH.items()
              if m.startswith("pipeline.config")}
    assert len(config) >= 4 and find_cycle(config) is None, find_cycle(config)


def test_no_cycle_between_first_party_modules():
    assert find_cycle(GRAPH) is None, find_cycle(GRAPH)


def test_config_and_norm_registry_import_no_torch():
    code = ("import sys; from pipeline.config import load_config; from pipeline.norms import get_spec; "
            "cfg = load_config('tiny_dyt', ['model.norm.type=derf']); assert get_spec('derf').has_alpha; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'megatron', 'deepspeed'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "[]"
