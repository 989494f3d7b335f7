"""The package installs as `reasonpipe.<folder>` only, and its import graph is layered and acyclic."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("pipeline", "filters", "trimming", "tokenizer", "trainer")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(["reasonpipe", *parts])


def project_modules() -> dict[str, Path]:
    files = [p for p in ROOT.glob("*.py")] + [p for part in PARTS for p in (ROOT / part).glob("*.py")]
    return {module_name(p): p for p in files}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Every project module `path` imports, at module level or inside functions (lazy imports count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != "reasonpipe":
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    mods = project_modules()
    return {m: imports_of(p, set(mods)) - {m} for m, p in mods.items()}


def test_no_top_level_generic_modules_and_imports_from_anywhere(tmp_path: Path) -> None:
    code = (
        "import importlib.util as u, reasonpipe.trainer.model, reasonpipe.pipeline.cli\n"
        f"assert [n for n in {PARTS!r} if u.find_spec(n)] == [], 'a generic top-level module is installed'\n"
        "print(reasonpipe.__version__)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    params = [sys.executable, "-m", "reasonpipe.trainer.params", "tiny"]
    proc = subprocess.run(params, cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_sources_import_only_the_namespaced_names() -> None:
    """A bare `import pipeline` would load a second copy of a module from the repository root."""
    files = [*project_modules().values(), *(ROOT / "tests").glob("*.py"), *(ROOT / "bench").glob("*.py")]
    bad = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            bad += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in PARTS]
    assert bad == []


def test_import_graph_has_no_cycles() -> None:
    g = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(g):
        if v not in index:
            visit(v)
    assert cycles == []


def test_layering() -> None:
    """pipeline -> filters, trimming, tokenizer; trainer -> tokenizer only; the shared types import nothing."""
    allowed = {
        "sample": set(),
        "segments": set(),
        "docio": set(),
        "trimming": {"segments"},
        "tokenizer": {"segments", "sample", "docio", "trimming"},
        "filters": {"segments", "sample", "docio", "tokenizer", "trimming"},
        "trainer": {"segments", "tokenizer"},
        "pipeline": {"segments", "sample", "docio", "trimming", "tokenizer", "filters", "trainer"},
    }
    wrong = []
    for mod, deps in graph().items():
        part = mod.split(".")[1] if mod.count(".") else "reasonpipe"
        for dep in deps:
            other = dep.split(".")[1]
            if other != part and other not in allowed.get(part, set()):
                wrong.append(f"{mod} imports {dep}")
    assert wrong == []
