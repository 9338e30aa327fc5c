"""The layers import one way (../shared/GUIDE.md, "The way data flows").

Every module of the package belongs to a unit: a subpackage (`cds_service.rules`) or a top-level
module (`cds_service.engine`). `ALLOWED` lists, by full dotted name, the units each unit may
import; anything else is a forbidden arrow, and the graph has no cycle. Inside a unit, imports
are free. Only the web layer, the preview page and the app factory know Flask; rules do no I/O
and hold no text.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cds_service"
P = "cds_service."

# Bottom to top. A unit may import only the units listed here (besides itself).
ALLOWED: dict[str, set[str]] = {
    P + "errors": set(),
    P + "settings": set(),
    P + "observability": set(),
    P + "migrate": set(),
    P + "store": {P + "migrate"},
    P + "migrations": {P + "store"},
    P + "store_guard": {P + "errors", P + "store"},
    P + "urls": set(),
    P + "trust": {P + "urls"},
    # Answers remembered by content (issue 17): no knowledge of FHIR or of the request.
    P + "memo": set(),
    P + "terminology": {P + "memo"},
    P + "hooks": {P + "errors", P + "terminology"},
    P + "fhir": {P + "errors", P + "memo", P + "terminology", P + "urls"},
    P + "knowledge": {P + "fhir", P + "terminology"},
    P + "rules": {P + "fhir", P + "knowledge", P + "terminology"},
    P + "cards": {P + "rules", P + "knowledge", P + "fhir", P + "terminology", P + "settings"},
    P + "suppression": {P + "fhir", P + "rules", P + "settings", P + "store"},
    P + "retention": {P + "rules", P + "settings", P + "store"},
    P + "engine": {
        *(P + u for u in ("errors", "settings", "observability", "store", "terminology")),
        *(P + u for u in ("hooks", "fhir", "knowledge", "rules", "cards", "suppression")),
        P + "store_guard",
        P + "retention",
    },
    P + "web": {
        *(P + u for u in ("engine", "errors", "hooks", "observability", "settings")),
        *(P + u for u in ("terminology", "trust", "serving")),
    },
    P + "devtools": {
        *(P + u for u in ("web", "engine", "cards", "rules", "knowledge", "fhir", "hooks")),
        *(P + u for u in ("terminology", "settings", "store", "errors", "observability")),
        *(P + u for u in ("migrate", "retention")),
        P + "trust",  # serve loads the trusted issuers once before the workers do
    },
    P + "app": {
        *(P + u for u in ("web", "devtools", "engine", "observability", "settings", "store")),
        *(P + u for u in ("trust", "errors", "store_guard")),
    },
    P + "gunicorn_conf": {P + "observability", P + "settings"},
    # The gunicorn worker (slow clients); the web layer asks it whether a request was cut.
    P + "serving": {P + "settings"},
    P + "__main__": {P + "devtools"},
    "cds_service": set(),  # the package's __init__: its docstring only
}
FLASK_ALLOWED = {P + "web", P + "devtools.preview", P + "app"}
RULES_FORBIDDEN = {"flask", "werkzeug", "sqlalchemy", "requests", "httpx", "yaml", "json"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool) -> set[str]:
    """The full dotted names `source` imports, relative imports resolved; for
    `from a import b`, both `a` and `a.b` (b may be a module)."""
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names.add(target)
            names |= {f"{target}.{alias.name}" for alias in node.names}
    return names


def unit_of(name: str) -> str | None:
    """The unit a dotted name belongs to; None outside the package or for a name that is not
    a module of it (`cds_service.rules.Finding` is in `cds_service.rules`)."""
    if name != "cds_service" and not name.startswith(P):
        return None
    parts = name.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else "cds_service"


def arrows(modules: Iterable[tuple[str, str, bool]]) -> set[tuple[str, str, str]]:
    """(importing module, imported name, imported unit) for every import across units."""
    found = set()
    for module, source, is_package in modules:
        own = unit_of(module)
        for name in imports_of(source, module, is_package):
            unit = unit_of(name)
            # `from cds_service import web` names the package only on the way to `web`.
            if unit is not None and unit != own and name != "cds_service":
                found.add((module, name, unit))
    return found


def forbidden(modules: Iterable[tuple[str, str, bool]]) -> list[str]:
    return sorted(
        f"{module} imports {name} ({unit_of(module)} -> {unit})"
        for module, name, unit in arrows(modules)
        if unit not in ALLOWED.get(unit_of(module) or "", set())
    )


def package_modules() -> list[tuple[str, str, bool]]:
    return [
        (module_name(p), p.read_text(encoding="utf-8"), p.name == "__init__.py")
        for p in sorted(PACKAGE.rglob("*.py"))
    ]


MODULES = package_modules()


def test_every_unit_of_the_package_has_its_allowed_arrows() -> None:
    units = {unit_of(module) for module, _, _ in MODULES}
    assert units == set(ALLOWED)


def test_imports_follow_the_allowed_arrows() -> None:
    assert forbidden(MODULES) == []


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("cds_service.rules.calcinosis_type", "from cds_service.cards import Renderer\n"),
        ("cds_service.rules.calcinosis_type", "from cds_service import cards\n"),
        ("cds_service.fhir.record", "from cds_service.knowledge import renal\n"),
        ("cds_service.fhir.record", "from ..knowledge.renal import assess\n"),
        ("cds_service.hooks.services", "from cds_service.rules import RULES\n"),
        ("cds_service.engine", "from cds_service.web import engine\n"),
        ("cds_service.knowledge.renal", "import cds_service.devtools.check\n"),
    ],
)
def test_a_forbidden_arrow_is_reported(module: str, source: str) -> None:
    """The check itself can fail: each of these imports, added to the package, is refused."""
    assert forbidden([*MODULES, (module + "_probe", source, False)]) != []


def test_the_allowed_arrows_have_no_cycle() -> None:
    seen: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(unit: str, path: list[str]) -> None:
        if seen.get(unit) == 1:
            pytest.fail("cycle: " + " -> ".join([*path, unit]))
        if seen.get(unit) == 2:
            return
        seen[unit] = 1
        for target in sorted(ALLOWED[unit]):
            visit(target, [*path, unit])
        seen[unit] = 2

    for unit in sorted(ALLOWED):
        visit(unit, [])


def test_only_the_web_layer_the_preview_page_and_the_app_import_flask() -> None:
    offenders = [
        module
        for module, source, is_package in MODULES
        if not any(module == a or module.startswith(a + ".") for a in FLASK_ALLOWED)
        and {n.split(".")[0] for n in imports_of(source, module, is_package)}
        & {"flask", "werkzeug"}
    ]
    assert offenders == []


def test_rules_do_no_io_and_hold_no_card_text() -> None:
    for module, source, is_package in MODULES:
        if unit_of(module) != P + "rules":
            continue
        names = imports_of(source, module, is_package)
        assert not RULES_FORBIDDEN & {n.split(".")[0] for n in names}, module
        assert not any(unit_of(n) == P + "cards" for n in names), module
