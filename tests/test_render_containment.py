"""A card that cannot be rendered is contained like a rule that raises (cds_service/engine.py):
a check-failed card for its rules, the other cards kept, a log line without patient data."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from cds_service.cards import Renderer
from cds_service.rules import CHECK_FAILED, Finding
from tests.conftest import SERVICE_URL, SERVICES, assert_valid_response, load_request


def break_rendering(monkeypatch: pytest.MonkeyPatch, rule: str) -> None:
    """The renderer raises for the cards led by `rule` (with a message that must not be logged)."""
    real = Renderer.render

    def render(self: Renderer, finding: Finding, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if finding.rule == rule:
            raise KeyError("fix-02 secret detail")
        return real(self, finding, *args, **kwargs)

    monkeypatch.setattr(Renderer, "render", render)


def codes(body: dict[str, Any]) -> list[str]:
    return [c["source"]["topic"]["code"] for c in body["cards"]]


def test_a_card_that_cannot_be_rendered_becomes_a_check_failed_card(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    before = client.post(SERVICE_URL, json=load_request("02-aluminium-egfr-22"))
    assert {"aluminium-hydroxide-renal", "calcinosis-type"} <= set(codes(before.json))

    break_rendering(monkeypatch, "calcinosis-type")
    response = client.post(SERVICE_URL, json=load_request("02-aluminium-egfr-22"))
    assert response.status_code == 200
    assert_valid_response(response.json)
    shown = codes(response.json)
    assert "aluminium-hydroxide-renal" in shown  # the other cards are kept
    assert "calcinosis-type" not in shown
    assert shown.count(CHECK_FAILED) == 1
    failed = next(c for c in response.json["cards"] if c["source"]["topic"]["code"] == CHECK_FAILED)
    assert failed["indicator"] == "info"
    assert "“Calcinosis: dystrophic or metastatic?”" in failed["summary"]
    assert "card of rule calcinosis-type could not be rendered: KeyError" in caplog.text
    assert "secret detail" not in caplog.text
    assert "fix-02" not in caplog.text


def test_a_merged_card_that_cannot_be_rendered_reports_each_of_its_rules(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One card for colchicine-renal, also carrying colchicine-interaction: both are reported."""
    hook = "order-select"
    request = load_request("26-select-colchicine-egfr-24-clarithromycin", hook)
    break_rendering(monkeypatch, "colchicine-renal")
    response = client.post(f"/cds-services/{SERVICES[hook]}", json=request)
    assert response.status_code == 200
    assert_valid_response(response.json)
    cards = response.json["cards"]
    assert codes(response.json) == [CHECK_FAILED, CHECK_FAILED]
    summaries = sorted(c["summary"] for c in cards)
    assert "“Colchicine and CYP3A4 or P-gp inhibitors”" in summaries[0]
    assert "“Colchicine and renal function”" in summaries[1]
