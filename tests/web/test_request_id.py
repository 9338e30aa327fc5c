"""Every response carries X-Request-ID, and the call's log lines carry the same id: the
client's own when it is plain, else a new one (never an id that could forge a log line)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from gunicorn.glogging import SafeAtoms

from cds_service.observability import JsonFormatter, TextFormatter
from tests.conftest import SERVICE_URL, app_with, load_request
from tests.fhir_stub import StubFhirServer

REQUEST = load_request("02-aluminium-egfr-22")
GENERATED = re.compile(r"[0-9a-f]{32}")
SANDBOX = "https://sandbox.cds-hooks.org"


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="cds_service")
    return caplog


def lines(caplog: pytest.LogCaptureFixture, message: str) -> list[dict[str, Any]]:
    """The captured records whose message contains `message`, as their JSON log lines."""
    formatter = JsonFormatter()
    found = [json.loads(formatter.format(r)) for r in caplog.records]
    return [line for line in found if message in line["message"]]


def test_an_id_is_made_when_the_client_sends_none(shared_client: FlaskClient) -> None:
    first = shared_client.get("/livez").headers["X-Request-ID"]
    second = shared_client.get("/livez").headers["X-Request-ID"]
    assert GENERATED.fullmatch(first)
    assert GENERATED.fullmatch(second)
    assert first != second


@pytest.mark.parametrize(
    "sent",
    [
        "abc",
        "0f8fad5b-d9cb-469f-a165-70867728950e",
        "sandbox:order-sign/7+1=8_x.y",
        "x" * 128,
    ],
)
def test_a_plain_client_id_is_echoed(shared_client: FlaskClient, sent: str) -> None:
    response = shared_client.get("/cds-services", headers={"X-Request-ID": sent})
    assert response.headers["X-Request-ID"] == sent


@pytest.mark.parametrize(
    "sent",
    [
        "x" * 129,
        "a\r\nb",
        'abc\n{"level": "ERROR", "message": "forged"}',
        "two words",
        'quoted"id',
        "tab\tid",
        "semi;colon",
        "caf\u00e9",
        "",
    ],
    ids=["long", "crlf", "forged-line", "space", "quote", "tab", "semicolon", "non-ascii", "empty"],
)
def test_any_other_client_id_is_replaced_not_echoed(shared_client: FlaskClient, sent: str) -> None:
    # Through the environ: the test client refuses to send a header with a line break.
    response = shared_client.get("/livez", environ_overrides={"HTTP_X_REQUEST_ID": sent})
    assert GENERATED.fullmatch(response.headers["X-Request-ID"])


def test_the_hook_call_line_carries_the_id_of_the_response(
    client: FlaskClient, logs: pytest.LogCaptureFixture
) -> None:
    sent = client.post(SERVICE_URL, json=REQUEST, headers={"X-Request-ID": "ehr-call-0042"})
    made = client.post(SERVICE_URL, json=REQUEST)
    assert (sent.status_code, made.status_code) == (200, 200)
    assert sent.headers["X-Request-ID"] == "ehr-call-0042"
    ids = [line["request_id"] for line in lines(logs, "hook call")]
    assert ids == ["ehr-call-0042", made.headers["X-Request-ID"]]


def test_every_line_written_during_a_call_carries_its_id(
    tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    """Not only the call's own line: the FHIR fetch's warning too; and a line written after
    the call, on the same thread, carries no stale id."""
    body = {k: v for k, v in REQUEST.items() if k != "prefetch"}
    with StubFhirServer({}) as stub:  # answers 404 to everything
        body["fhirServer"] = stub.base_url
        with app_with(tmp_path, fhir_servers=(stub.base_url,)) as app:
            answer = app.test_client().post(
                SERVICE_URL, json=body, headers={"X-Request-ID": "ehr-fetch-7"}
            )
    assert answer.status_code == 412
    fetch = lines(logs, "FHIR fetch failed")
    assert fetch
    assert {line["request_id"] for line in fetch} == {"ehr-fetch-7"}
    logging.getLogger("cds_service").warning("after the call")
    assert "request_id" not in lines(logs, "after the call")[0]


def test_a_refused_call_and_an_unexpected_error_carry_the_id(
    client: FlaskClient, logs: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused = client.post(SERVICE_URL, json={"hook": "patient-view"})
    assert refused.status_code == 400
    assert lines(logs, "hook call")[-1]["request_id"] == refused.headers["X-Request-ID"]

    def explode(*_args: Any, **_kwargs: Any) -> None:
        raise ValueError("boom")

    monkeypatch.setattr(client.application.extensions["cds_engine"], "evaluate", explode)
    failed = client.post(SERVICE_URL, json=REQUEST, headers={"X-Request-ID": "oops-1"})
    assert failed.status_code == 500
    assert failed.headers["X-Request-ID"] == "oops-1"
    assert [line["request_id"] for line in lines(logs, "unhandled ValueError")] == ["oops-1"]
    assert lines(logs, "hook call")[-1]["request_id"] == "oops-1"


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/nowhere"), ("DELETE", "/cds-services"), ("HEAD", "/livez"), ("OPTIONS", "/livez")],
)
def test_every_answer_carries_an_id(shared_client: FlaskClient, method: str, path: str) -> None:
    response = shared_client.open(path, method=method)
    assert GENERATED.fullmatch(response.headers["X-Request-ID"])


def test_browser_clients_may_read_and_send_the_id(shared_client: FlaskClient) -> None:
    answer = shared_client.get("/cds-services", headers={"Origin": SANDBOX})
    exposed = answer.headers["Access-Control-Expose-Headers"].lower().split(", ")
    assert "x-request-id" in exposed
    preflight = shared_client.options(
        SERVICE_URL,
        headers={
            "Origin": SANDBOX,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, x-request-id",
        },
    )
    assert preflight.status_code == 204
    allowed = preflight.headers["Access-Control-Allow-Headers"].lower().split(", ")
    assert "x-request-id" in allowed


def test_gunicorn_access_lines_carry_the_response_id() -> None:
    """gunicorn passes its atoms (response headers as "{name}o", lower case) as the args."""
    access = logging.LogRecord("gunicorn.access", logging.INFO, __file__, 1, "%(r)s", (), None)
    access.args = SafeAtoms({"m": "GET", "U": "/livez", "s": "200", "{x-request-id}o": "ab12"})
    assert json.loads(JsonFormatter().format(access))["request_id"] == "ab12"
    assert "request_id=ab12" in TextFormatter().format(access)
    access.args = SafeAtoms({"m": "GET", "U": "/livez", "s": "408"})  # answered before Flask
    assert "request_id" not in json.loads(JsonFormatter().format(access))
