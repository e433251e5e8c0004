"""The package's architecture, checked on its source: data flows one way, and no package reaches
into another's private names.

Stages (DESIGN.md): spec/network → bounds → milp → verify → repair → bench/htmlreport → api/cli.
Each sub-package may import the shared foundation modules and the stages before it, never one
after it. The certificate checker imports the foundation only: it must not share the verifier's
importer, parser or bound engine, or a bug there would be invisible to it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "verirepair"
FOUNDATION = {"errors", "files", "extras", "devices", "progress", "callable_package", ""}
ALLOWED: dict[str, set[str]] = {
    "spec": set(),
    "network": set(),
    "checker": set(),
    "bounds": {"network"},
    "milp": {"spec", "bounds"},
    "verify": {"spec", "network", "bounds", "milp"},
    "repair": {"spec", "network", "bounds", "milp", "verify"},
    "bench": {"spec", "network", "verify"},
    "htmlreport": {"spec", "network", "verify", "repair", "bench"},
    "api": {"spec", "network", "bounds", "milp", "verify", "repair", "bench", "checker", "htmlreport"},
    "cli": {"spec", "network", "bounds", "milp", "verify", "repair", "bench", "checker", "htmlreport", "api"},
}


def _package_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(absolute module imported, names imported) for every import of ``verirepair`` in ``path``."""
    module = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if module[-1] == "__init__":
        module = module[:-1]
    else:
        module = module[:-1] + ["."]  # a relative import resolves against the module's package
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = [p for p in module if p != "."]
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((target, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
    return [(target, names) for target, names in found if target == "verirepair" or target.startswith("verirepair.")]


def _violations() -> tuple[list[str], list[str]]:
    layering, private = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        package = _package_of(path)
        allowed = ALLOWED.get(package)
        for target, names in _imports(path):
            parts = target.split(".")
            imported = parts[1] if len(parts) > 1 else ""
            if imported == package:
                continue
            if imported == "" and names and all(name in FOUNDATION | {"__version__"} for name in names):
                continue
            if allowed is not None and imported not in FOUNDATION and imported not in allowed:
                layering.append(f"{path.relative_to(PACKAGE.parent)}: {package} imports {target}")
            hidden = [n for n in names if n.startswith("_") and not n.startswith("__")]
            hidden += [p for p in parts[2:] if p.startswith("_") and not p.startswith("__")]
            if hidden:
                private.append(f"{path.relative_to(PACKAGE.parent)}: {target} {', '.join(hidden)}")
    return layering, private


def test_every_subpackage_has_a_place_in_the_stages() -> None:
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages <= set(ALLOWED), f"sub-packages without a stage: {sorted(packages - set(ALLOWED))}"


def test_data_flows_one_way() -> None:
    layering, _ = _violations()
    assert not layering, "imports against the data flow:\n" + "\n".join(layering)


def test_no_package_imports_another_ones_private_names() -> None:
    _, private = _violations()
    assert not private, "private names imported across packages:\n" + "\n".join(private)


def test_the_checks_see_imports() -> None:
    """The parser finds the imports it is meant to police (a check that finds nothing proves nothing)."""
    found = dict(_imports(PACKAGE / "verify" / "pipeline.py"))
    assert "verirepair.bounds" in found and "verirepair.milp.settings" not in found
    assert any(t.startswith("verirepair.network") for t in found)
