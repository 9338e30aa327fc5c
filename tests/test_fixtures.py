"""Every fixture patient through the HTTP API, in both languages, against its expected outcome."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cds_service.knowledge.safety import load_table, walk
from cds_service.rules import RULES
from fixtures.build import main as build_fixtures
from tests.conftest import (
    SERVICES,
    assert_valid_response,
    fixture_names,
    load_expected,
    load_request,
    representatives,
)

NAMES = fixture_names()
CASES = [(hook, name) for hook in SERVICES for name in fixture_names(hook)]
# In French: the fixtures that give every card kind (the golden cards hold every fixture's
# whole French response).
CASES_FR = [(hook, name) for hook in SERVICES for name in representatives(hook)]


def test_there_are_fixtures_for_every_service() -> None:
    assert len(NAMES) >= 10
    for hook in ("order-select", "order-sign"):
        assert len(fixture_names(hook)) >= 4, hook


@pytest.mark.parametrize(
    ("hook", "name", "lang"),
    [(h, n, "en") for h, n in CASES] + [(h, n, "fr") for h, n in CASES_FR],
)
def test_fixture_gives_expected_cards(
    app: Flask, client: FlaskClient, hook: str, name: str, lang: str
) -> None:
    expected = load_expected(name, hook)
    assert expected.get("service", SERVICES[hook]) == SERVICES[hook]
    response = client.post(
        f"/cds-services/{SERVICES[hook]}",
        json=load_request(name, hook),
        headers={"Accept-Language": lang},
    )
    assert response.status_code == 200, response.json
    assert response.headers["Content-Language"] == lang
    body = response.json
    assert_valid_response(body)

    got = [(c["source"]["topic"]["code"], c["indicator"]) for c in body["cards"]]
    want = [(c["rule"], c["indicator"]) for c in expected["cards"]]
    assert got == want

    fired = {rule for rule, _ in got}
    assert fired.isdisjoint(expected["silent"]), "a rule that must stay silent fired"

    store = app.extensions["cds_engine"].store
    variants = [store.issued(c["uuid"]).variant for c in body["cards"]]
    assert variants == [c["variant"] for c in expected["cards"]]
    # One card per order (rules/card_set.py): the merged rules are stored and named on the card.
    merged = [store.issued(c["uuid"]).also_rules for c in body["cards"]]
    assert merged == [",".join(c["also"]) if "also" in c else None for c in expected["cards"]]
    for card, want_card in zip(body["cards"], expected["cards"], strict=True):
        assert all(f"`{rule}`" in card["detail"] for rule in want_card.get("also", ()))

    if hook != "patient-view":  # a card about a draft names it and acts on it
        request = load_request(name, hook)
        drafts = {
            f"MedicationRequest/{e['resource']['id']}"
            for e in request["context"]["draftOrders"]["entry"]
        }
        for card in body["cards"]:
            assert any(draft in card["detail"] for draft in drafts), "the card names the draft"
            actions = [a for s in card.get("suggestions", ()) for a in s["actions"]]
            assert not [a for a in actions if a["type"] == "update"], "drafts are not updated"
            for delete in (a for a in actions if a["type"] == "delete"):
                assert delete["resourceId"] in drafts


def _order_time_only() -> set[str]:
    """Table rules every row of which needs `at_order` (issue 14): they never fire at
    patient-view, so their firing fixtures are order fixtures."""
    return {
        rule_id
        for rule_id, rule in load_table().items()
        if all(any(name == "at_order" for name, _ in walk(row.when)) for row in rule.rows)
    }


def test_every_rule_has_firing_and_silent_fixtures() -> None:
    fires = {
        r for n in NAMES for c in load_expected(n)["cards"] for r in (c["rule"], *c.get("also", ()))
    }
    silent = {r for n in NAMES for r in load_expected(n)["silent"]}
    order_only = _order_time_only()
    assert "minocycline-autoimmune" in order_only
    assert not order_only & fires  # never at patient-view
    order_fires = {
        r
        for hook in SERVICES
        if hook != "patient-view"
        for n in fixture_names(hook)
        for c in load_expected(n, hook)["cards"]
        for r in (c["rule"], *c.get("also", ()))
    }
    assert order_only <= order_fires
    assert set(RULES) - order_only <= fires
    assert set(RULES) <= silent


def test_expected_files_name_only_known_rules() -> None:
    for name in NAMES:
        expected = load_expected(name)
        named = {r for c in expected["cards"] for r in (c["rule"], *c.get("also", ()))}
        named |= set(expected["silent"])
        assert named <= set(RULES), name


def test_committed_fixtures_match_the_generator() -> None:
    # `python -m fixtures.build --check` exits 1 when a committed file drifts from its spec.
    assert build_fixtures(["--check"]) == 0
