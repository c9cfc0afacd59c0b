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
                    "kernelviz.core.install",  # says when torch and torchvision do not go together (no import)
                ), (path.name, target)


#: The layers of the design in the README's order: a folder imports only folders before it (and errors.py,
#: zoo.py, which import no folder of the package).
LAYERS = ("core", "files", "data", "optvis", "explain", "units", "plot", "sets", "jobs", "serve", "cli")


def test_each_folder_imports_only_folders_before_it():
    rank = {name: i for i, name in enumerate(LAYERS)}
    for module, targets in _imports().items():
        parts = module.split(".")
        if len(parts) < 2 or parts[1] not in rank:
            continue
        for target in targets:
            folder = target.split(".")[1] if target.count(".") else None
            if folder in rank:
                assert rank[folder] <= rank[parts[1]], f"{module} imports {target}: {folder} comes after {parts[1]}"


def test_docstrings_list_the_layers_in_the_readme_order():
    readme = (PACKAGE.parent / "README.md").read_text()
    tree = readme[readme.index("```text\nkernelviz/") : readme.index("```", readme.index("```text\nkernelviz/") + 3)]
    in_readme = [
        line.split()[0].rstrip("/")
        for line in tree.splitlines()
        if line.startswith("  ") and line.split()[0].endswith("/")
    ]
    assert in_readme == list(LAYERS)
    package = kernelviz.__doc__ or ""
    positions = [package.index(f"``{name}``") for name in LAYERS]
    assert positions == sorted(positions), "kernelviz/__init__.py lists the layers out of order"


def test_each_subpackage_docstring_names_each_of_its_modules():
    """A reader learns a folder's modules and their jobs from its ``__init__``: every module is named there."""
    for init in PACKAGE.rglob("__init__.py"):
        folder = init.parent
        if folder == PACKAGE:
            continue
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        for module in folder.glob("*.py"):
            if module.name != "__init__.py":
                assert f"``{module.stem}``" in doc, f"{folder.name}/__init__.py does not name {module.stem}"


def test_no_private_name_is_imported_across_modules():
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                assert not private, f"{path.relative_to(PACKAGE)} imports {private} from {node.module}"


def test_the_explorers_web_side_computes_nothing_with_torch():
    """Only the worker's tasks touch the model, and they are library calls: no module of ``serve`` imports torch
    or numpy but for type hints (``if TYPE_CHECKING``)."""
    for path in (PACKAGE / "serve").glob("*.py"):
        tree = ast.parse(path.read_text())
        hinted = {
            id(n)
            for block in ast.walk(tree)
            if isinstance(block, ast.If) and getattr(block.test, "id", "") == "TYPE_CHECKING"
            for n in ast.walk(block)
        }
        for node in ast.walk(tree):
            if id(node) in hinted:
                continue
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            assert not any(n.split(".")[0] in ("torch", "numpy") for n in names), path.name
