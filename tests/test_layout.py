"""The house's layout, read from the code: no import cycles, every import from a floor below its own (each
subpackage's docstring says `Floor N`), few modules on the ground floor, and one installed top-level package."""
from __future__ import annotations

import ast
import configparser
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"archfamily": "archfamily", "cli": "archfamily.cli", "zoo": "archfamily.zoo"}  # folder -> package


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = [p for p in path.relative_to(ROOT / folder).with_suffix("").parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """The archfamily modules `path` imports, at any depth (a function's lazy import counts too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("archfamily"):
            names |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                      for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith("archfamily")}
    return {n for n in names if n in MODULES}


GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def _floor_of(package: str) -> int:
    doc = ast.get_docstring(ast.parse(MODULES[package].read_text())) or ""
    found = re.search(r"Floor (\d+)", doc)
    assert found, f"{MODULES[package]}: its docstring names no floor"
    return int(found.group(1))


def _package(module: str) -> str:
    """The subpackage a module belongs to (`archfamily.latency` for `archfamily.latency.model`), or `archfamily`
    for the ground floor's modules."""
    parts = module.split(".")
    if parts[:2] in (["archfamily", "cli"], ["archfamily", "zoo"]) or \
            (len(parts) > 2 and MODULES[".".join(parts[:2])].name == "__init__.py"):
        return ".".join(parts[:2])
    if len(parts) == 2 and MODULES[module].name == "__init__.py":
        return module
    return "archfamily"


def test_no_import_cycles() -> None:
    seen: dict[str, int] = {}  # 1: on the path being walked, 2: finished

    def walk(name: str, path: list[str]) -> None:
        seen[name] = 1
        for dep in sorted(GRAPH[name]):
            assert seen.get(dep) != 1, "import cycle: " + " -> ".join(path[path.index(dep):] + [dep])
            if dep not in seen:
                walk(dep, path + [dep])
        seen[name] = 2

    for name in sorted(GRAPH):
        if name not in seen:
            walk(name, [name])


def test_every_import_is_from_a_lower_floor() -> None:
    packages = {_package(m) for m in MODULES} - {"archfamily"}
    floors = {p: _floor_of(p) for p in packages} | {"archfamily": 1}
    upward = [f"{a} (floor {floors[_package(a)]}) imports {b} (floor {floors[_package(b)]})"
              for a, deps in GRAPH.items() for b in deps
              if _package(a) != _package(b) and floors[_package(b)] >= floors[_package(a)]
              and a != "archfamily.__main__"]
    assert upward == []


def test_the_ground_floor_holds_at_most_twelve_modules() -> None:
    ground = sorted(p.name for p in (ROOT / "archfamily").glob("*.py"))
    assert len(ground) <= 12, ground


def test_one_top_level_package_is_installed_and_every_subpackage_is_listed() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    listed = set(config["options"]["packages"].split())
    mapping = dict(line.split(" = ") for line in config["options"]["package_dir"].strip().splitlines())
    assert {name.split(".")[0] for name in listed} | {name.split(".")[0] for name in mapping} == {"archfamily"}
    folders = {folder: package for package, folder in mapping.items()}
    on_disk = set()
    for folder, package in folders.items():
        on_disk |= {".".join([package, *init.parent.relative_to(ROOT / folder).parts])
                    for init in (ROOT / folder).rglob("__init__.py")}
    assert listed == on_disk
    assert config["options.entry_points"]["console_scripts"].strip() == "archfamily = archfamily.cli.main:main"
