"""Framing answers in JSON where the service can give them (issue 15, point 5): 405 names the
allowed methods, a path the router would redirect is a 404, and a refused token gets an empty
`application/json` 401, never an HTML page."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import SERVICE_URL, app_with


def test_405_names_the_allowed_methods(tmp_path: Path) -> None:
    with app_with(tmp_path) as app:
        response = app.test_client().delete("/cds-services")
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD, OPTIONS"
    assert response.json["issue"][0]["code"] == "not-supported"


def test_a_path_the_router_would_redirect_is_not_found(tmp_path: Path) -> None:
    with app_with(tmp_path) as app:
        client = app.test_client()
        for path in ("//cds-services", "/cds-services//", f"/{SERVICE_URL}"):
            response = client.get(path)
            assert response.status_code == 404, path
            assert "Location" not in response.headers
            assert response.json["issue"][0]["code"] == "not-found"


def test_a_refused_token_is_an_empty_json_401(tmp_path: Path) -> None:
    issuers = tmp_path / "issuers.json"
    issuers.write_text('{"issuers": [{"iss": "https://ehr.example.org", "jwks": {"keys": []}}]}')
    with app_with(tmp_path, auth="jwt", trusted_issuers_file=issuers) as app:
        response = app.test_client().get("/cds-services")
    assert response.status_code == 401
    assert response.mimetype == "application/json"
    assert response.get_data() == b""


# ----------------------------------------------------------------------------- feedback limits

FEEDBACK_URL = f"{SERVICE_URL}/feedback"


def entry(card: str = "c", **extra: object) -> dict[str, object]:
    return {
        "card": card,
        "outcome": "overridden",
        "outcomeTimestamp": "2026-11-23T12:00:00Z",
    } | extra


def test_too_many_feedback_entries_are_refused_before_they_are_read(tmp_path: Path) -> None:
    with app_with(tmp_path) as app:
        response = app.test_client().post(FEEDBACK_URL, json={"feedback": [entry()] * 101})
    assert response.status_code == 400
    assert response.json["issue"][0]["expression"] == ["feedback"]


def test_a_large_feedback_body_is_413(tmp_path: Path) -> None:
    with app_with(tmp_path) as app:
        big = {"feedback": [entry(extension={"x": "y" * 300_000})]}
        response = app.test_client().post(FEEDBACK_URL, json=big)
    assert response.status_code == 413
    assert response.json["issue"][0]["code"] == "too-long"


def test_the_store_column_limits_are_the_schemas(tmp_path: Path) -> None:
    with app_with(tmp_path) as app:
        client = app.test_client()
        reason = {"reason": {"code": "x" * 129, "system": "urn:s"}}
        response = client.post(FEEDBACK_URL, json={"feedback": [entry(overrideReason=reason)]})
        assert response.status_code == 400
        assert response.json["issue"][0]["expression"] == ["feedback[0].overrideReason.reason.code"]
        call = {"hook": "patient-view", "hookInstance": "h" * 129, "context": {"patientId": "p"}}
        response = client.post(SERVICE_URL, json=call)
        assert response.status_code == 400
        assert response.json["issue"][0]["expression"] == ["hookInstance"]
