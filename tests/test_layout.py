"""The shape of the code is part of its contract: the README's code map, and who imports whom."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "findme"
# Modules of findme/routes that hold no routes: what every route module may share.
ROUTE_HELPERS = {"findme.routes.common", "findme.routes.files"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def _code_map() -> set[str]:
    """The module paths listed in the README's "Code map" tree."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Code map", 1)[1]
    tree = section.split("```", 2)[1]
    listed: set[str] = set()
    folders: list[str] = []
    for line in tree.splitlines():
        found = re.match(r"^(?P<indent>[│ ├└─]*)(?P<name>[\w./]+)", line)
        if not found or not found["name"].strip():
            continue
        depth = len(found["indent"]) // 4
        name = found["name"]
        folders = folders[:depth]
        if name.endswith("/"):
            folders.append(name.rstrip("/"))
        elif name.endswith(".py"):
            listed.add("/".join([*folders, name]))
    return listed


def test_the_readme_code_map_lists_every_module_and_no_other() -> None:
    modules = {
        str(path.relative_to(ROOT)) for path in PACKAGE.rglob("*.py") if path.name != "__init__.py"
    }
    listed = _code_map()
    assert modules - listed == set(), "modules missing from the README's code map"
    assert listed - modules == set(), "the README's code map lists modules that do not exist"


def test_no_route_module_imports_another() -> None:
    for path in (PACKAGE / "routes").glob("*.py"):
        name = _module_name(path)
        others = {
            imported
            for imported in _imports(path)
            if imported.startswith("findme.routes.")
            and imported.rsplit(".", 1)[0] not in ROUTE_HELPERS
            and imported not in ROUTE_HELPERS
        }
        assert others == set(), f"{name} imports route modules {sorted(others)}"


def test_routes_domain_and_services_never_ask_which_engine_or_storage_runs() -> None:
    engine_specific = re.compile(r"findme\.(engines|storage)\.(local|rekognition|database|s3)")
    for folder in ("routes", "domain"):
        for path in (PACKAGE / folder).glob("*.py"):
            specific = {name for name in _imports(path) if engine_specific.match(name)}
            assert specific == set(), f"{_module_name(path)} imports {sorted(specific)}"
    specific = {name for name in _imports(PACKAGE / "services.py") if engine_specific.match(name)}
    assert specific == set()
    for path in [
        PACKAGE / "services.py",
        PACKAGE / "app.py",
        *(PACKAGE / "routes").glob("*.py"),
        *(PACKAGE / "domain").glob("*.py"),
    ]:
        source = path.read_text(encoding="utf-8")
        assert "settings.recognizer ==" not in source, path
        assert "settings.storage ==" not in source, path
