"""The layers stay apart: only the HTTP layer knows Flask; rules do no I/O and hold no text."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cds_service"
FLASK_ALLOWED = {"app.py", "hooks/http.py", "preview/routes.py"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0] if node.level == 0 else node.module)
    return names


def test_only_the_http_layer_imports_flask() -> None:
    offenders = [
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if str(p.relative_to(PACKAGE)) not in FLASK_ALLOWED
        and {"flask", "werkzeug"} & imported_modules(p)
    ]
    assert offenders == []


def test_rules_import_no_io_or_card_modules() -> None:
    forbidden = {"flask", "sqlalchemy", "requests", "httpx", "yaml", "json", "cds_service.cards"}
    for path in (PACKAGE / "rules").glob("*.py"):
        modules = imported_modules(path)
        assert not forbidden & modules, (path.name, forbidden & modules)
