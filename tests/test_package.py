"""The package's shape: its public API, no import cycles, a CLI that holds no computation."""

from __future__ import annotations

import ast
from pathlib import Path

import kernelviz

PACKAGE = Path(kernelviz.__file__).parent


def test_public_api_is_listed_and_reachable():
    assert dir(kernelviz) == sorted(kernelviz.__all__)
    for name in kernelviz.__all__:
        assert getattr(kernelviz, name) is not None, name
    assert callable(kernelviz.visualize) and callable(kernelviz.heatmap) and callable(kernelviz.atlas)
    assert "gradcam" in kernelviz.METHODS


def _imports() -> dict[str, set[str]]:
    """Module -> the package modules it imports (at module level or inside functions)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                found |= {target} | {f"{target}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        graph[name] = {t for t in found if t in modules and t != name}
    return graph


def test_no_import_cycles():
    graph = _imports()
    for start in graph:
        if start.endswith("__init__") or start == "kernelviz":
            continue
        seen, todo = set(), [t for t in graph[start] if modules_only(t, graph)]
        while todo:
            node = todo.pop()
            assert node != start, f"import cycle through {start}"
            if node not in seen:
                seen.add(node)
                todo.extend(t for t in graph[node] if modules_only(t, graph))


def modules_only(name: str, graph: dict[str, set[str]]) -> bool:
    """Package ``__init__`` files only re-export; cycles are looked for among modules."""
    return name in graph and not (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists()


def test_cli_holds_no_computation():
    """The CLI imports no tensor library and reaches the library only through jobs, sets and settings."""
    allowed = {"kernelviz.jobs", "kernelviz.sets", "kernelviz.serve", "kernelviz.errors", "kernelviz.optvis.settings"}
    for path in (PACKAGE / "cli").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                assert not any(a.name.split(".")[0] in ("torch", "numpy") for a in node.names), path
            if isinstance(node, ast.ImportFrom) and node.level == 2 and node.module:
                target = f"kernelviz.{node.module}"
                assert any(target == a or target.startswith(a + ".") for a in allowed) or target in (
                    "kernelviz.core.models",  # load_model
                    "kernelviz.explain.heatmaps",  # check_methods: a typo fails before the model loads
                    "kernelviz.explain.baselines",  # BASELINES, the choices of --baseline (no torch import)
                ), (path.name, target)
