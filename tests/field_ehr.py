"""The field fixtures (fixtures/field/, README there) and the loopback FHIR server that plays
each patient's EHR: shared by tests/test_field_fixtures.py (their expected outcomes),
tests/test_golden_cards.py (their rendered cards) and tests/cards/test_card_text.py (their
wording)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.conftest import ROOT, SERVICES
from tests.fhir_stub import StubFhirServer, fhir

FIELD = ROOT / "fixtures" / "field"
# Settings under which a card repeated on the same store still shows: the risk-screening card's
# once-a-year interval (tests/rules/test_info_card.py) and the quiet standing interaction
# (tests/rules/test_card_set.py) would otherwise hide a card the second time a patient is run.
REPEATS_SHOWN: dict[str, Any] = {
    "risk_screening_interval_days": 0,
    "quiet_standing_interactions": False,
}


def field_names(hook: str) -> list[str]:
    return sorted(
        p.name.removesuffix(".request.json") for p in (FIELD / hook).glob("*.request.json")
    )


def load(hook: str, name: str, kind: str) -> dict[str, Any]:
    return json.loads((FIELD / hook / f"{name}.{kind}.json").read_text(encoding="utf-8"))


CASES = [(hook, name) for hook in SERVICES for name in field_names(hook)]


# --------------------------------------------------------------------------- loopback FHIR server


def _rebase(value: Any, old: str | None, new: str) -> Any:
    """`value` with every occurrence of the EHR's base URL `old` replaced by `new`."""
    if not old:
        return copy.deepcopy(value)
    return json.loads(json.dumps(value).replace(old.rstrip("/"), new))


def _resources(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, dict):
        return []
    if value.get("resourceType") == "Bundle":
        return [
            e["resource"] for e in value.get("entry") or () if isinstance(e.get("resource"), dict)
        ]
    return [value]


def _next(bundle: dict[str, Any]) -> str | None:
    return next(
        (lk["url"] for lk in bundle.get("link") or () if lk.get("relation") == "next"), None
    )


def _refers_to(resource: dict[str, Any], patient: str) -> bool:
    if resource.get("resourceType") == "Patient":
        return resource.get("id") == patient
    for key in ("subject", "patient"):
        ref = resource.get(key)
        if isinstance(ref, dict) and str(ref.get("reference", "")).endswith(f"Patient/{patient}"):
            return True
    return False


def _has_code(resource: dict[str, Any], tokens: list[str]) -> bool:
    codings = (resource.get("code") or {}).get("coding") or ()
    for token in tokens:
        system, _, code = token.rpartition("|")
        for c in codings:
            if c.get("code") == code and (not system or c.get("system") == system):
                return True
    return False


class FieldEhr:
    """What the EHR's FHIR server holds for one field fixture, and how it answers."""

    def __init__(self, hook: str, name: str) -> None:
        self.request = load(hook, name, "request")
        self.expected = load(hook, name, "expected")
        self.origin = self.request.get("fhirServer")  # the EHR base the fixture was written with
        self.pages: dict[str, dict[str, Any]] = self.expected.get("pages", {})
        on_pages = {
            (r["resourceType"], r["id"]) for page in self.pages.values() for r in _resources(page)
        }
        self.paged: dict[str, dict[str, Any]] = {}  # resource type -> page 1 of a paged search
        pool: dict[tuple[str, str], dict[str, Any]] = {}
        for value in (self.request.get("prefetch") or {}).values():
            link = (
                _next(value)
                if isinstance(value, dict) and value.get("resourceType") == "Bundle"
                else None
            )
            found = _resources(value)
            if link and self._relative(link) in self.pages and found:
                self.paged[found[0]["resourceType"]] = value
            for r in found:
                pool.setdefault((r["resourceType"], r["id"]), r)
        for r in self.expected.get("server", ()):
            pool.setdefault((r["resourceType"], r["id"]), r)
        self.pool = {k: v for k, v in pool.items() if k not in on_pages}
        self.everything = {
            **self.pool,
            **{
                (r["resourceType"], r["id"]): r
                for page in self.pages.values()
                for r in _resources(page)
            },
        }

    def _relative(self, url: str) -> str:
        base = (self.origin or "").rstrip("/") + "/"
        return url[len(base) :] if self.origin and url.startswith(base) else url

    def answer(self, rest: str, base: str) -> tuple[int, str, bytes]:
        """Answer `rest` (path and query below this fixture's base URL)."""
        for candidate in (rest, unquote(rest)):
            if candidate in self.pages:
                return fhir(_rebase(self.pages[candidate], self.origin, base))
        parts = urlsplit(rest)
        path = [p for p in parts.path.split("/") if p]
        if len(path) == 2:
            found = self.everything.get((path[0], path[1]))
            return fhir(found) if found else fhir({"resourceType": "OperationOutcome"}, 404)
        if len(path) != 1:
            return fhir({"resourceType": "OperationOutcome"}, 400)
        kind = path[0]
        if kind in self.paged:
            return fhir(_rebase(self.paged[kind], self.origin, base))
        query = {k: ",".join(v) for k, v in parse_qs(parts.query).items()}
        patient = query.get("patient") or query.get("subject", "").removeprefix("Patient/")
        found = [
            r
            for (rtype, _), r in self.pool.items()
            if rtype == kind
            and (not patient or _refers_to(r, patient))
            and ("code" not in query or _has_code(r, query["code"].split(",")))
            and ("status" not in query or r.get("status") in query["status"].split(","))
        ]
        included: list[dict[str, Any]] = []
        if "MedicationRequest:medication" in query.get("_include", ""):
            for r in found:
                ref = str((r.get("medicationReference") or {}).get("reference", ""))
                if ref.startswith("Medication/"):
                    med = self.everything.get(("Medication", ref.removeprefix("Medication/")))
                    if med is not None and med not in included:
                        included.append(med)
        entries = [
            {
                "fullUrl": f"{base}/{r['resourceType']}/{r['id']}",
                "resource": r,
                "search": {"mode": mode},
            }
            for group, mode in ((found, "match"), (included, "include"))
            for r in group
        ]
        return fhir(
            {"resourceType": "Bundle", "type": "searchset", "total": len(found), "entry": entries}
        )


EHRS = {(hook, name): FieldEhr(hook, name) for hook, name in CASES}


@contextmanager
def field_stub() -> Iterator[StubFhirServer]:
    """The loopback FHIR server of every field fixture: `fixture_base(server, hook, name)` is the
    base URL of one patient's EHR."""

    def route(path: str) -> tuple[int, str, bytes]:
        # /fhir/<hook>/<name>/<rest>
        _, _fhir, hook, name, *rest = path.split("/", 4)
        ehr = EHRS.get((hook, name))
        if ehr is None or not rest:
            return fhir({"resourceType": "OperationOutcome"}, 404)
        return ehr.answer(rest[0], fixture_base(server, hook, name))

    with StubFhirServer({"/fhir/": route}) as server:
        yield server


def fixture_base(server: StubFhirServer, hook: str, name: str) -> str:
    return f"{server.base_url}/{hook}/{name}"


def prepare(ehr: FieldEhr, mode: str, base: str) -> dict[str, Any]:
    """The request of `ehr` with its EHR at `base`: as written (mode "prefetch"), or without its
    prefetch and with `fhirServer` = `base` (mode "fetch")."""
    request = _rebase(ehr.request, ehr.origin, base)
    if mode == "fetch":
        request.pop("prefetch", None)
        request["fhirServer"] = base
    return request


def anchor(ehr: FieldEhr) -> datetime:
    """ "Now" for a field fixture: noon UTC on its `asOf`."""
    return datetime.combine(date.fromisoformat(ehr.expected["asOf"]), time(12, 0), tzinfo=UTC)
