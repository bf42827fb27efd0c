"""The shape of the code: no import circles (counting imports inside functions), config as a leaf,
a loop that names no method, no side effects on import."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "atlens"


def module_imports() -> dict[str, set[str]]:
    """Every atlens module and the atlens modules it imports, at the top or inside functions."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base])
                names = [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for target in names:
                resolved = resolve(target) if target.startswith("atlens") else None
                if resolved and resolved != name and not name.startswith(resolved + "."):
                    targets.add(resolved)
        edges[name] = targets
    return edges


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles_counting_imports_inside_functions():
    assert circles(module_imports()) == []


def test_config_imports_nothing_of_atlens_but_errors_and_the_outside_code_importer():
    assert module_imports()["atlens.config"] == {"atlens.errors", "atlens.plugins"}
    assert module_imports()["atlens.plugins"] == {"atlens.errors"}


def test_the_loop_is_short_and_names_no_method():
    loop = (PACKAGE / "training" / "loop.py").read_text()
    assert len(loop.splitlines()) <= 170  # steps, epochs, and where a signal stopped an epoch
    names = r"\b(standard|pgd_at|trades|fast_at|mart|awp|rwp|swa|iswa|ema|kd|tfkd|label_smoothing|cas)\b"
    code = "\n".join(line for line in loop.splitlines() if not line.lstrip().startswith("#"))
    assert not re.findall(names, code.lower().split('"""', 2)[-1])


def test_importing_atlens_switches_no_matplotlib_backend():
    script = ("import matplotlib; matplotlib.use('svg'); import atlens, atlens.analysis, atlens.evaluation.suite, "
              "atlens.report, atlens.theory.report; import atlens.training.run; print(matplotlib.get_backend())")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "svg"


def test_a_clone_folder_beside_a_script_does_not_shadow_the_installed_package(tmp_path):
    """A script run from the folder that holds the clone sees a directory named atlens with no __init__.py at its
    top; with the README's install (editable_mode=compat) the installed package still wins."""
    (tmp_path / "atlens").mkdir()
    (tmp_path / "atlens" / "README.md").write_text("the clone's top folder\n")
    done = subprocess.run([sys.executable, "-c", "import atlens; print(callable(getattr(atlens, 'load_model', None)))"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert done.stdout.strip() == "True", ("import atlens found the clone folder: install with the README's command "
                                           "(pip install -e . --config-settings editable_mode=compat)")
