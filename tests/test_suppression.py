"""Repeat suppression (order-select -> order-sign), snooze after override, feedback summary.

Each scenario runs on SQLite and PostgreSQL, with two app instances sharing one store, the way
two workers or two instances would.
"""

from __future__ import annotations

import collections.abc
import copy
import dataclasses
import json
import os
import subprocess
import sys
import types
import typing
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Column, MetaData, Table, create_engine, text

from cds_service import store as store_module
from cds_service import suppression
from cds_service import terminology as terminology_module
from cds_service.app import create_app
from cds_service.fhir import record as record_module
from cds_service.fhir.record import MedicationFact, PatientRecord
from cds_service.knowledge import renal as renal_module
from cds_service.rules.base import Finding
from cds_service.store import Store
from cds_service.suppression import evidence_fingerprint
from tests.conftest import (
    FIXTURE_ROOT,
    NOW,
    ROOT,
    SERVICE_URL,
    SERVICES,
    app_with,
    by_rule,
    expected_indicators,
    load_request,
    make_settings,
)

SELECT_URL = "/cds-services/calcinosis-order-select"
SIGN_URL = "/cds-services/calcinosis-order-sign"


class Clock:
    """A settable clock shared by the app instances of a test."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def workers(tmp_path: Path, database_url: str, clock: Clock) -> Iterator[tuple[Flask, Flask]]:
    """Two app instances on one store (SQLite file or PostgreSQL schema)."""
    apps = tuple(
        create_app(make_settings(tmp_path, database_url=database_url, clock=clock))
        for _ in range(2)
    )
    yield apps  # type: ignore[misc]
    for app in apps:
        app.extensions["cds_engine"].close()


def order_request(
    hook: str, patient: str = "02-aluminium-egfr-22", **draft_changes: Any
) -> dict[str, Any]:
    """Fixture `patient` at an order hook, with one draft aluminium hydroxide order."""
    body = load_request(patient)
    active = body["prefetch"]["medications"]["entry"][0]["resource"]
    draft = {**copy.deepcopy(active), "id": "draft-alu", "status": "draft", **draft_changes}
    body["prefetch"]["medications"] = {"resourceType": "Bundle", "type": "searchset", "total": 0}
    body["hook"] = hook
    body["context"]["userId"] = "Practitioner/example-clinician"
    body["context"]["encounterId"] = "enc-1"
    body["context"]["draftOrders"] = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": draft}],
    }
    if hook == "order-select":
        body["context"]["selections"] = ["MedicationRequest/draft-alu"]
    return body


def cards(app: Flask, url: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    response = app.test_client().post(url, json=body)
    assert response.status_code == 200, response.json
    return response.json["cards"]


# --------------------------------------------------------------------------- repeat suppression


def test_caution_shown_at_select_is_not_repeated_at_sign(workers: tuple[Flask, Flask]) -> None:
    first, second = workers
    assert [c["indicator"] for c in cards(first, SELECT_URL, order_request("order-select"))] == [
        "critical"
    ]
    # Signed a minute later, on another worker: not repeated.
    assert cards(second, SIGN_URL, order_request("order-sign")) == []


def test_sign_without_select_shows_the_caution(workers: tuple[Flask, Flask]) -> None:
    assert len(cards(workers[0], SIGN_URL, order_request("order-sign"))) == 1


def test_changed_order_is_shown_again(workers: tuple[Flask, Flask]) -> None:
    first, second = workers
    cards(first, SELECT_URL, order_request("order-select"))
    changed = order_request("order-sign", dosageInstruction=[{"text": "30 mL twice a day"}])
    assert len(cards(second, SIGN_URL, changed)) == 1


def test_other_encounter_or_patient_is_shown_again(workers: tuple[Flask, Flask]) -> None:
    first, second = workers
    cards(first, SELECT_URL, order_request("order-select"))
    other_encounter = order_request("order-sign")
    other_encounter["context"]["encounterId"] = "enc-2"
    assert len(cards(second, SIGN_URL, other_encounter)) == 1
    other_patient = order_request("order-sign", patient="13-aluminium-dialysis")
    assert len(cards(second, SIGN_URL, other_patient)) == 1


def test_caution_is_repeated_after_the_window(workers: tuple[Flask, Flask], clock: Clock) -> None:
    first, second = workers
    cards(first, SELECT_URL, order_request("order-select"))
    clock.now = NOW + timedelta(minutes=59)
    assert cards(second, SIGN_URL, order_request("order-sign")) == []
    clock.now = NOW + timedelta(minutes=61)
    assert len(cards(second, SIGN_URL, order_request("order-sign"))) == 1


def test_store_keeps_no_patient_id(workers: tuple[Flask, Flask], database_url: str) -> None:
    cards(workers[0], SELECT_URL, order_request("order-select"))
    engine = create_engine(database_url)
    with engine.connect() as conn:
        rows = [
            str(row)
            for table in ("shown_cautions", "issued_cards")
            for row in conn.execute(text(f"SELECT * FROM {table}"))  # noqa: S608 - fixed names
        ]
    engine.dispose()
    assert rows
    assert not any("fix-02" in row for row in rows)


# --------------------------------------------------------------------------- snooze


def override(app: Flask, card: dict[str, Any], url: str = SERVICE_URL) -> None:
    body = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "overridden",
                "overrideReason": {"reason": card["overrideReasons"][0]},
                "outcomeTimestamp": NOW.isoformat(),
            }
        ]
    }
    response = app.test_client().post(f"{url}/feedback", json=body)
    assert response.status_code == 200, response.json


def test_overridden_card_is_snoozed_for_that_patient(
    workers: tuple[Flask, Flask], clock: Clock
) -> None:
    first, second = workers
    shown = cards(first, SERVICE_URL, load_request("02-aluminium-egfr-22"))
    critical = by_rule(shown, "aluminium-hydroxide-renal")
    override(first, critical)
    # Same patient and evidence, another worker: the overridden card stays hidden.
    again = cards(second, SERVICE_URL, load_request("02-aluminium-egfr-22"))
    assert [c["source"]["topic"]["code"] for c in again] == [
        c["source"]["topic"]["code"] for c in shown if c is not critical
    ]
    # Another patient with the same rule is not affected.
    other = cards(second, SERVICE_URL, load_request("13-aluminium-dialysis"))
    assert len(other) == len(expected_indicators("13-aluminium-dialysis"))
    # After the snooze period the card comes back.
    clock.now = NOW + timedelta(days=31)
    assert len(cards(second, SERVICE_URL, load_request("02-aluminium-egfr-22"))) == len(shown)


def test_snoozed_card_comes_back_when_the_evidence_changes(workers: tuple[Flask, Flask]) -> None:
    first, second = workers
    shown = cards(first, SERVICE_URL, load_request("02-aluminium-egfr-22"))
    override(first, by_rule(shown, "aluminium-hydroxide-renal"))
    body = load_request("02-aluminium-egfr-22")
    for entry in body["prefetch"]["observations"]["entry"]:
        resource = entry["resource"]
        if resource["code"]["coding"][0]["code"] == "98979-8":
            resource["valueQuantity"]["value"] = 18  # a new, lower result
    again = cards(second, SERVICE_URL, body)
    assert [c["indicator"] for c in again] == [c["indicator"] for c in shown]


def test_accepted_cards_and_order_hook_overrides_do_not_snooze(
    workers: tuple[Flask, Flask],
) -> None:
    first, _ = workers
    shown = cards(first, SERVICE_URL, load_request("02-aluminium-egfr-22"))
    critical = by_rule(shown, "aluminium-hydroxide-renal")
    accept = {
        "feedback": [
            {
                "card": critical["uuid"],
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": critical["suggestions"][0]["uuid"]}],
                "outcomeTimestamp": NOW.isoformat(),
            }
        ]
    }
    assert first.test_client().post(f"{SERVICE_URL}/feedback", json=accept).status_code == 200
    assert len(cards(first, SERVICE_URL, load_request("02-aluminium-egfr-22"))) == len(shown)
    signed = cards(first, SIGN_URL, order_request("order-sign"))[0]
    override(first, signed, SIGN_URL)
    assert len(cards(first, SIGN_URL, order_request("order-sign"))) == 1


# --------------------------------------------------------------------------- snooze by severity


def in_encounter(name: str, encounter: str | None) -> dict[str, Any]:
    """Fixture `name` at patient-view, in `encounter` (None: the call names no encounter)."""
    body = load_request(name)
    if encounter is None:
        body["context"].pop("encounterId", None)
    else:
        body["context"]["encounterId"] = encounter
    return body


def rules_shown(app: Flask, body: dict[str, Any]) -> list[str]:
    return [c["source"]["topic"]["code"] for c in cards(app, SERVICE_URL, body)]


def feedback(app: Flask, card: dict[str, Any], override_reason: dict[str, Any] | None) -> None:
    """Overridden, with this `overrideReason` (None: a plain "Dismiss", as the Sandbox sends)."""
    item: dict[str, Any] = {
        "card": card["uuid"],
        "outcome": "overridden",
        "outcomeTimestamp": NOW.isoformat(),
    }
    if override_reason is not None:
        item["overrideReason"] = override_reason
    response = app.test_client().post(f"{SERVICE_URL}/feedback", json={"feedback": [item]})
    assert response.status_code == 200, response.json


def first_of(shown: list[dict[str, Any]], indicator: str) -> dict[str, Any]:
    return next(c for c in shown if c["indicator"] == indicator)


# The defaults: (indicator, reason given) -> how long the card stays hidden.
DEFAULT_SNOOZES = [
    ("critical", True, timedelta(hours=24)),
    ("critical", False, timedelta(hours=1)),
    ("warning", True, timedelta(days=7)),
    ("warning", False, timedelta(days=1)),
    ("info", True, timedelta(days=30)),
    ("info", False, timedelta(days=7)),
]


@pytest.mark.parametrize(("indicator", "reason", "duration"), DEFAULT_SNOOZES)
def test_snooze_lasts_by_indicator_and_reason(
    workers: tuple[Flask, Flask], clock: Clock, indicator: str, reason: bool, duration: timedelta
) -> None:
    """Fixture 02 has a critical, a warning and info cards; each is overridden in one encounter
    and looked for again in that encounter just before and just after its snooze ends."""
    first, second = workers
    body = in_encounter("02-aluminium-egfr-22", "enc-1")
    card = first_of(cards(first, SERVICE_URL, body), indicator)
    rule = card["source"]["topic"]["code"]
    feedback(first, card, {"reason": card["overrideReasons"][0]} if reason else None)
    clock.now = NOW + duration - timedelta(minutes=1)
    assert rule not in rules_shown(second, body)
    clock.now = NOW + duration + timedelta(minutes=1)
    assert rule in rules_shown(second, body)


def test_plain_dismiss_does_not_hide_a_critical_card_for_30_days(
    workers: tuple[Flask, Flask], clock: Clock
) -> None:
    """The Sandbox's "Dismiss" sends `overridden` with no reason: an hour, this encounter only."""
    first, second = workers
    body = in_encounter("02-aluminium-egfr-22", "enc-1")
    feedback(first, by_rule(cards(first, SERVICE_URL, body), "aluminium-hydroxide-renal"), None)
    assert "aluminium-hydroxide-renal" not in rules_shown(second, body)
    other_encounter = in_encounter("02-aluminium-egfr-22", "enc-2")
    assert "aluminium-hydroxide-renal" in rules_shown(second, other_encounter)
    clock.now = NOW + timedelta(hours=2)
    assert "aluminium-hydroxide-renal" in rules_shown(second, body)


def test_critical_snooze_ends_with_the_encounter(
    workers: tuple[Flask, Flask], clock: Clock
) -> None:
    first, second = workers
    body = in_encounter("02-aluminium-egfr-22", "enc-1")
    critical = by_rule(cards(first, SERVICE_URL, body), "aluminium-hydroxide-renal")
    feedback(first, critical, {"reason": critical["overrideReasons"][0]})
    clock.now = NOW + timedelta(hours=23)
    assert "aluminium-hydroxide-renal" not in rules_shown(second, body)
    # The next encounter: the critical card is back at once.
    assert "aluminium-hydroxide-renal" in rules_shown(
        second, in_encounter("02-aluminium-egfr-22", "enc-2")
    )
    # A call that names no encounter is not known to be another one: the time limit holds.
    assert "aluminium-hydroxide-renal" not in rules_shown(
        second, in_encounter("02-aluminium-egfr-22", None)
    )


def test_warning_and_info_snoozes_hold_across_encounters(workers: tuple[Flask, Flask]) -> None:
    first, second = workers
    shown = cards(first, SERVICE_URL, in_encounter("02-aluminium-egfr-22", "enc-1"))
    overridden = [first_of(shown, "warning"), first_of(shown, "info")]
    for card in overridden:
        feedback(first, card, {"reason": card["overrideReasons"][0]})
    again = rules_shown(second, in_encounter("02-aluminium-egfr-22", "enc-2"))
    assert not {c["source"]["topic"]["code"] for c in overridden} & set(again)
    assert "aluminium-hydroxide-renal" in again


def test_a_comment_is_a_reason(workers: tuple[Flask, Flask], clock: Clock) -> None:
    """A clinician who explains in words (userComment, not kept) gets the full snooze."""
    first, second = workers
    body = in_encounter("02-aluminium-egfr-22", "enc-1")
    critical = by_rule(cards(first, SERVICE_URL, body), "aluminium-hydroxide-renal")
    feedback(first, critical, {"userComment": "Reviewed with nephrology"})
    clock.now = NOW + timedelta(hours=3)
    assert "aluminium-hydroxide-renal" not in rules_shown(second, body)
    store = first.extensions["cds_engine"].store
    assert [
        (e.override_code, e.override_display) for e in store.feedback_for(critical["uuid"])
    ] == [(None, None)]


def test_a_zero_duration_turns_the_snooze_off(tmp_path: Path) -> None:
    zero = timedelta(0)
    with app_with(tmp_path, snooze_critical=zero, snooze_no_reason_critical=zero) as app:
        body = in_encounter("02-aluminium-egfr-22", "enc-1")
        critical = by_rule(cards(app, SERVICE_URL, body), "aluminium-hydroxide-renal")
        feedback(app, critical, {"reason": critical["overrideReasons"][0]})
        assert "aluminium-hydroxide-renal" in rules_shown(app, body)


def add_observation(body: dict[str, Any], resource: dict[str, Any]) -> None:
    body["prefetch"]["observations"]["entry"].append({"resource": resource})


def test_a_new_coded_result_ends_the_snooze(workers: tuple[Flask, Flask], clock: Clock) -> None:
    """Fixture 46 rests on a smoking status (a coded result). Every card is overridden; the same
    record shows nothing; a newer smoking status, the same answer, brings back the card it
    supports."""
    first, second = workers
    body = load_request("46-ssc-calcinosis-current-smoker")
    shown = cards(first, SERVICE_URL, body)
    assert shown
    for card in shown:
        feedback(first, card, {"reason": card["overrideReasons"][0]})
    clock.now = NOW + timedelta(hours=1)
    assert cards(second, SERVICE_URL, body) == []
    smoking = next(
        e["resource"]
        for e in body["prefetch"]["observations"]["entry"]
        if e["resource"]["code"]["coding"][0]["code"] == "72166-2"
    )
    newer = {
        **copy.deepcopy(smoking),
        "id": "fix-pv-46-obs-smoking-newer",
        "effectiveDateTime": (NOW - timedelta(days=1)).isoformat(),
    }
    add_observation(body, newer)
    assert cards(second, SERVICE_URL, body) != []


# --------------------------------------------------------------------------- evidence fingerprint
#
# Any new evidence ends a snooze. The fact types are enumerated, not listed: every dataclass
# reachable from PatientRecord's fields (the record's facts, the renal status and what it
# rests on), and every dataclass found in the evidence and facts of the findings of every
# fixture. For each type, a change in each of its fields must change the fingerprint; a type
# added later is enumerated too, and fails here if the fingerprint cannot tell its changes.

HINT_NAMES = {**vars(record_module), **vars(renal_module), **vars(terminology_module)}
# The fact types issue 12 names: the enumeration must at least find these.
NAMED_FACT_TYPES = {
    "ConditionFact",
    "LabResult",
    "CodedResult",
    "MedicationFact",
    "ProcedureFact",
    "RenalStatus",
    "DataNote",
}
# What in an order's resource makes it another order (meta, identifiers, notes do not).
ORDER_SAMPLE = {
    "resourceType": "MedicationRequest",
    "id": "sample",
    "meta": {"lastUpdated": "2026-01-01T00:00:00Z"},
    "medicationCodeableConcept": {"text": "sample"},
    "dosageInstruction": [{"text": "once a day"}],
    "dispenseRequest": {"numberOfRepeatsAllowed": 1},
    "intent": "order",
}


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, localns=HINT_NAMES)


def _dataclasses_in(hint: Any) -> Iterator[type]:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        yield hint
    for arg in typing.get_args(hint):
        yield from _dataclasses_in(arg)


def record_fact_types() -> set[type]:
    """Every dataclass reachable from the fields of PatientRecord."""
    seen: set[type] = set()
    todo: list[type] = [PatientRecord]
    while todo:
        for hint in _hints(todo.pop()).values():
            for found in _dataclasses_in(hint):
                if found not in seen:
                    seen.add(found)
                    todo.append(found)
    seen.discard(PatientRecord)
    return seen


def _instances(value: Any) -> Iterator[Any]:
    """The dataclass instances in `value`, at any depth."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        yield value
        for f in dataclasses.fields(value):
            if not (isinstance(value, MedicationFact) and f.name == "resource"):
                yield from _instances(getattr(value, f.name))
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _instances(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _instances(item)


@dataclasses.dataclass
class Seen:
    """What the fingerprint met while every fixture was evaluated."""

    findings: list[Finding] = dataclasses.field(default_factory=list)
    unsupported: list[str] = dataclasses.field(default_factory=list)
    runs: list[list[str]] = dataclasses.field(default_factory=list)  # fingerprints, per run


def _all_requests() -> Iterator[tuple[str, datetime, dict[str, Any]]]:
    """(service, as-of, body) of every generated and field fixture request."""
    for folder in (FIXTURE_ROOT, FIXTURE_ROOT / "field"):
        for hook, service in SERVICES.items():
            for path in sorted((folder / hook).glob("*.request.json")):
                expected = json.loads(
                    path.with_name(path.name.replace(".request.", ".expected.")).read_text(
                        encoding="utf-8"
                    )
                )
                as_of = datetime.combine(
                    date.fromisoformat(expected.get("asOf", NOW.date().isoformat())),
                    time(12, 0),
                    tzinfo=UTC,
                )
                body = json.loads(path.read_text(encoding="utf-8"))
                yield service, as_of, body


@pytest.fixture(scope="module")
def fixture_findings(tmp_path_factory: pytest.TempPathFactory) -> Seen:
    """Every fixture evaluated twice (a minute apart), each fingerprint computed strictly."""
    seen = Seen()
    original = suppression.evidence_fingerprint
    current: list[str] = []

    def strict(finding: Finding, *, strict: bool = False) -> str:
        seen.findings.append(finding)
        try:
            digest = original(finding, strict=True)
        except TypeError as exc:
            seen.unsupported.append(f"{finding.rule}: {exc}")
            digest = original(finding)
        current.append(digest)
        return digest

    clock = Clock()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(suppression, "evidence_fingerprint", strict)
        tmp = tmp_path_factory.mktemp("fingerprints")
        for run, shift in enumerate((timedelta(0), timedelta(minutes=1))):
            url = f"sqlite:///{tmp / f'run-{run}.sqlite3'}"
            with app_with(tmp, database_url=url, clock=clock) as app:
                client = app.test_client()
                current.clear()
                for service, as_of, body in _all_requests():
                    clock.now = as_of + shift
                    client.post(f"/cds-services/{service}", json=body)  # findings are the point
                seen.runs.append(list(current))
    return seen


def test_every_fixture_finding_is_fingerprinted_field_by_field(fixture_findings: Seen) -> None:
    assert len(fixture_findings.findings) > 100
    assert fixture_findings.unsupported == []


def test_the_same_evidence_gives_the_same_fingerprint_a_minute_later(
    fixture_findings: Seen,
) -> None:
    """Nothing of the moment of the call (a clock, a uuid) enters the fingerprint: a snoozed
    card with unchanged evidence stays snoozed."""
    first, second = fixture_findings.runs
    assert first
    assert first == second


def test_the_fingerprint_is_the_same_in_every_process() -> None:
    """Workers are separate processes with their own string hashing: the fingerprint must not
    depend on set or dict order within one."""
    script = (
        "import json, sys\n"
        "from cds_service.rules.base import Finding\n"
        "from cds_service.suppression import evidence_fingerprint\n"
        "from cds_service.fhir.record import DataNote\n"
        "f = Finding('r', 'v', facts={'s': frozenset({'egfr', 'calcium', 'pth', 'phosphate'}),"
        " 'd': {'b': 1, 'a': 2}}, evidence=(DataNote('incomplete', 'egfr', 'x', 'k'),))\n"
        "print(evidence_fingerprint(f, strict=True))\n"
    )
    digests = {
        subprocess.run(  # noqa: S603 - our own interpreter and script
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": seed},
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in ("1", "2", "3")
    }
    assert len(digests) == 1


def test_the_fact_types_are_enumerated(fixture_findings: Seen) -> None:
    observed = {type(i) for f in fixture_findings.findings for i in _instances(f.evidence)}
    observed |= {type(i) for f in fixture_findings.findings for i in _instances(f.facts)}
    names = {t.__name__ for t in record_fact_types() | observed}
    assert names >= NAMED_FACT_TYPES


def _sample(hint: Any, pool: Mapping[type, Any]) -> Any:
    """Some value of type `hint` (an instance met in the fixtures, for a dataclass)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return "sample"
    if origin in (types.UnionType, typing.Union):
        return _sample(next(a for a in args if a is not type(None)), pool)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if hint in pool:
            return pool[hint]
        values = {f.name: _sample(h, pool) for f, h in _fields(hint)}
        if hint is MedicationFact:
            values["resource"] = dict(ORDER_SAMPLE)
        return hint(**values)
    if origin in (frozenset, set):
        return frozenset({_sample(args[0], pool)})
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return (_sample(args[0], pool),)
        return tuple(_sample(a, pool) for a in args)
    if origin in (dict, Mapping, collections.abc.Mapping):
        return {"sample": _sample(args[1], pool) if args else "sample"}
    samples = {
        bool: True,
        int: 1,
        float: 1.5,
        str: "sample",
        datetime: datetime(2020, 1, 2, 3, 4, tzinfo=UTC),
        date: date(2020, 1, 2),
    }
    return samples[hint]


def _changed(value: Any, hint: Any, pool: Mapping[type, Any]) -> Any:
    """A value of type `hint` other than `value`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return ["changed", value]
    if origin in (types.UnionType, typing.Union):
        inner = next(a for a in args if a is not type(None))
        return _sample(inner, pool) if value is None else _changed(value, inner, pool)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        field, field_hint = _fields(hint)[0]
        name = field.name
        return dataclasses.replace(
            value, **{name: _changed(getattr(value, name), field_hint, pool)}
        )
    if origin in (frozenset, set):
        return frozenset(value) | {_changed(_sample(args[0], pool), args[0], pool)}
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return (*value, _sample(args[0], pool))
        return (_changed(value[0], args[0], pool), *value[1:])
    if hint is bool:
        return not value
    if hint in (int, float):
        return value + 1
    if hint is str:
        return f"{value}-changed"
    if hint in (datetime, date):
        return value + timedelta(days=1)
    raise AssertionError(f"no change known for {hint!r}: extend _changed")


def _fields(cls: type) -> list[tuple[dataclasses.Field[Any], Any]]:
    hints = _hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]


def _fingerprints(fact: Any) -> tuple[str, str]:
    """As evidence, and as a fact the card text names."""
    return (
        evidence_fingerprint(Finding("rule", "variant", evidence=(fact,)), strict=True),
        evidence_fingerprint(Finding("rule", "variant", facts={"fact": fact}), strict=True),
    )


def test_a_change_in_any_field_of_any_fact_type_ends_the_snooze(fixture_findings: Seen) -> None:
    pool: dict[type, Any] = {}
    for finding in fixture_findings.findings:
        for instance in (*_instances(finding.evidence), *_instances(finding.facts)):
            pool.setdefault(type(instance), instance)
    fact_types = record_fact_types() | set(pool)
    unchanged = []
    for fact_type in sorted(fact_types, key=lambda t: t.__name__):
        base = _sample(fact_type, pool)
        before = _fingerprints(base)
        for field, hint in _fields(fact_type):
            if fact_type is MedicationFact and field.name == "resource":
                continue  # below: the parts that make another order
            changed = dataclasses.replace(
                base, **{field.name: _changed(getattr(base, field.name), hint, pool)}
            )
            after = _fingerprints(changed)
            if after[0] == before[0] or after[1] == before[1]:
                unchanged.append(f"{fact_type.__name__}.{field.name}")
    assert unchanged == []
    # An order: another medication, dose, dispense or intent is another order; its meta is not.
    order = dataclasses.replace(pool.get(MedicationFact) or _sample(MedicationFact, {}))
    before = _fingerprints(order)
    for part in suppression.ORDER_PARTS:
        resource = {**order.resource, part: ["changed"]}
        assert _fingerprints(dataclasses.replace(order, resource=resource)) != before, part
    touched = {**order.resource, "meta": {"lastUpdated": "2030-01-01T00:00:00Z"}}
    assert _fingerprints(dataclasses.replace(order, resource=touched)) == before


def test_a_fact_of_an_unknown_kind_is_refused_in_strict_mode() -> None:
    class Opaque:
        pass

    finding = Finding("rule", "variant", evidence=(Opaque(),))
    with pytest.raises(TypeError, match="Opaque"):
        evidence_fingerprint(finding, strict=True)
    assert evidence_fingerprint(finding)  # in service: counted by its repr, never an error


# --------------------------------------------------------------------------- summary


def test_feedback_summary_per_rule(workers: tuple[Flask, Flask]) -> None:
    first, second = workers
    shown = cards(first, SERVICE_URL, load_request("02-aluminium-egfr-22"))
    override(first, by_rule(shown, "aluminium-hydroxide-renal"))
    override(second, by_rule(shown, "calcinosis-synthesis"))
    cards(first, SERVICE_URL, load_request("13-aluminium-dialysis"))
    summary = second.test_client().get(f"{SERVICE_URL}/feedback/summary").json
    assert summary["service"] == "calcinosis-patient-view"
    per_rule = {r["rule"]: r for r in summary["rules"]}
    aluminium = per_rule["aluminium-hydroxide-renal"]
    assert (aluminium["issued"], aluminium["accepted"], aluminium["overridden"]) == (2, 0, 1)
    assert aluminium["overrideReasons"] == [
        {
            "system": "urn:calcinosis-cds:override-reason",
            "code": "benefit-outweighs-risk",
            "display": "Benefit outweighs risk; renal function reviewed",
            "count": 1,
        }
    ]
    assert per_rule["calcinosis-synthesis"]["overridden"] == 1
    assert aluminium["knowledgeVersion"] == first.extensions["cds_engine"].knowledge_version


def test_feedback_summary_of_unknown_service_is_404(client: Any) -> None:
    assert client.get("/cds-services/nope/feedback/summary").status_code == 404


# --------------------------------------------------------------------------- upgrade


def test_older_database_gains_the_new_columns_without_losing_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    engine = create_engine(url)
    with engine.begin() as conn:  # the issued_cards table as version 0.1.0 created it
        conn.execute(
            text(
                "CREATE TABLE issued_cards (uuid VARCHAR(36) PRIMARY KEY, service_id VARCHAR(128) "
                "NOT NULL, rule_id VARCHAR(128) NOT NULL, variant VARCHAR(64) NOT NULL, indicator "
                "VARCHAR(16) NOT NULL, knowledge_version VARCHAR(32) NOT NULL, hook_instance "
                "VARCHAR(128) NOT NULL, issued_at DATETIME NOT NULL)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO issued_cards VALUES ('old-card', 's', 'r', 'v', 'info', '1', 'h', "
                "'2026-11-01 10:00:00')"
            )
        )
    engine.dispose()
    store = Store.from_url(url)
    store.create_schema()
    old = store.issued("old-card")
    assert old is not None
    assert old.subject_key is None
    store.dispose()


def test_a_store_from_before_encounter_bound_snoozes_is_brought_up_to_date(
    database_url: str,
) -> None:
    """issued_cards and snoozes as 0.6.0 created them (no encounter_key), with rows: the
    columns are added, nothing is lost, an old snooze still holds (for its time, in any
    encounter) and a new one is bound to its encounter. On SQLite and PostgreSQL."""
    old = MetaData()
    Table(
        "issued_cards",
        old,
        *(
            Column(c.name, c.type, primary_key=c.primary_key)
            for c in store_module.issued_cards.c
            if c.name != "encounter_key"
        ),
    )
    Table(
        "snoozes",
        old,
        *(
            Column(c.name, c.type, primary_key=c.primary_key)
            for c in store_module.snoozes.c
            if c.name != "encounter_key"
        ),
    )
    engine = create_engine(database_url)
    old.create_all(engine)
    until = NOW + timedelta(days=30)
    with engine.begin() as conn:
        conn.execute(
            old.tables["issued_cards"]
            .insert()
            .values(
                uuid="old-card",
                service_id="s",
                rule_id="r",
                variant="v",
                indicator="critical",
                knowledge_version="1",
                hook_instance="h",
                issued_at=NOW,
                subject_key="k",
                evidence_hash="e",
            )
        )
        conn.execute(
            old.tables["snoozes"]
            .insert()
            .values(subject_key="k", evidence_hash="e", until=until, card_uuid="old-card")
        )
    engine.dispose()
    store = Store.from_url(database_url)
    store.create_schema()
    store.create_schema()  # a second worker starting: nothing to add
    issued = store.issued("old-card")
    assert issued is not None
    assert (issued.subject_key, issued.encounter_key) == ("k", None)
    assert store.snoozed([("k", "e")], NOW, "any-encounter") == {("k", "e")}
    store.add_snooze("k2", "e2", until, "new-card", encounter_key="enc-a")
    assert store.snoozed([("k2", "e2")], NOW, "enc-a") == {("k2", "e2")}
    assert store.snoozed([("k2", "e2")], NOW, "enc-b") == set()
    assert store.snoozed([("k2", "e2")], NOW, None) == {("k2", "e2")}
    assert store.snoozed([("k2", "e2")], until, "enc-a") == set()
    store.dispose()


def test_malformed_feedback_loses_nothing_already_stored(workers: tuple[Flask, Flask]) -> None:
    first, second = workers
    shown = cards(first, SERVICE_URL, load_request("02-aluminium-egfr-22"))
    context = by_rule(shown, "calcinosis-synthesis")
    aluminium = by_rule(shown, "aluminium-hydroxide-renal")
    override(first, context)
    store = first.extensions["cds_engine"].store
    before = store.feedback_for(context["uuid"])
    client = second.test_client()
    bad_bodies = [
        {"feedback": [{"card": context["uuid"], "outcome": "accepted", "outcomeTimestamp": "x"}]},
        {
            "feedback": [
                {
                    "card": aluminium["uuid"],
                    "outcome": "overridden",
                    "outcomeTimestamp": NOW.isoformat(),
                },
                {"card": "unknown", "outcome": "overridden", "outcomeTimestamp": NOW.isoformat()},
            ]
        },
        {"feedback": []},
    ]
    for bad in bad_bodies:
        assert client.post(f"{SERVICE_URL}/feedback", json=bad).status_code == 400
    assert (
        client.post(
            f"{SERVICE_URL}/feedback", data="{", content_type="application/json"
        ).status_code
        == 400
    )
    assert store.feedback_for(context["uuid"]) == before
    assert store.feedback_for(aluminium["uuid"]) == []  # the valid half of a bad body was not kept
    summary = client.get(f"{SERVICE_URL}/feedback/summary").json
    assert sum(r["overridden"] for r in summary["rules"]) == 1
