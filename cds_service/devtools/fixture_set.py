"""The synthetic fixture patients, for developers: listing, lookup, and export to a FHIR server.

Each fixture is a CDS Hooks request (`<hook>/<name>.request.json`) with its expected cards
(`<name>.expected.json`, which also says what the patient is and the date it is anchored at).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from cds_service.devtools.hookrequest import resources_of

HOOKS = ("patient-view", "order-select", "order-sign")
REQUEST_SUFFIX = ".request.json"


@dataclass(frozen=True)
class Fixture:
    hook: str
    name: str
    request_path: Path
    description: str
    as_of: date | None
    # The cards the fixture must give: (rule, variant, indicator); None without an expected file.
    expected: tuple[tuple[str, str, str], ...] | None = None

    def request(self) -> dict[str, Any]:
        return json.loads(self.request_path.read_text(encoding="utf-8"))


def _fixture(hook: str, request_path: Path) -> Fixture:
    name = request_path.name.removesuffix(REQUEST_SUFFIX)
    expected_path = request_path.with_name(f"{name}.expected.json")
    try:
        expected = json.loads(expected_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        expected = None
    if not isinstance(expected, dict):  # no expected file, or not one this version reads
        return Fixture(hook, name, request_path, "", None)
    description = expected.get("description")
    try:
        as_of = date.fromisoformat(expected["asOf"])
    except (KeyError, TypeError, ValueError):
        as_of = None
    try:
        cards = tuple(sorted((c["rule"], c["variant"], c["indicator"]) for c in expected["cards"]))
    except (KeyError, TypeError):
        cards = None
    return Fixture(
        hook, name, request_path, description if isinstance(description, str) else "", as_of, cards
    )


def list_fixtures(root: Path) -> list[Fixture]:
    """Every fixture under `root`, by hook then name (none when `root` does not exist)."""
    return [
        _fixture(hook, path)
        for hook in HOOKS
        for path in sorted((root / hook).glob(f"*{REQUEST_SUFFIX}"))
        if path.is_file()
    ]


def find_fixture(root: Path, name: str) -> Fixture | None:
    """The fixture called `name` ("01-ssc-calcinosis", or "patient-view/01-ssc-calcinosis")."""
    hook, _, short = name.rpartition("/")
    for fixture in list_fixtures(root):
        if fixture.name == short and hook in ("", fixture.hook):
            return fixture
    return None


def _prefetched(request: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
    for value in (request.get("prefetch") or {}).values():
        if isinstance(value, Mapping) and value.get("resourceType") != "OperationOutcome":
            yield from resources_of(value)


def transaction_bundle(requests: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """A FHIR R4 transaction Bundle that PUTs (creates or updates, keeping their ids) every
    prefetched resource of these requests, each once. Draft orders are not included: they are
    the orders being written, not data on the server."""
    entries: dict[str, dict[str, Any]] = {}
    for request in requests:
        for resource in _prefetched(request):
            url = f"{resource['resourceType']}/{resource['id']}"
            entries.setdefault(
                url,
                {"resource": resource, "request": {"method": "PUT", "url": url}},
            )
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries.values())}
