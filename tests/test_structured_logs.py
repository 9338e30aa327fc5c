"""Structured logs (cds_service/observability.py): one JSON object per line (LOG_FORMAT=json,
the default) or a readable line (LOG_FORMAT=text), with the fields of each hook and feedback
call, never the submitted values. tests/test_log_hygiene.py checks every fixture for patient
data in these lines; tests/test_metrics.py checks the lines gunicorn writes."""

from __future__ import annotations

import copy
import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from cds_service.observability import (
    HOOK_INSTANCE_CHARS,
    JsonFormatter,
    LogHandler,
    TextFormatter,
    configure_logging,
    gunicorn_logconfig,
    make_formatter,
)
from cds_service.settings import Settings, SettingsError
from tests.conftest import SERVICES, app_with, load_request

PATIENT_VIEW = SERVICES["patient-view"]
URL = f"/cds-services/{PATIENT_VIEW}"
REQUEST = load_request("02-aluminium-egfr-22")
PATIENT_ID = REQUEST["context"]["patientId"]
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="cds_service")
    return caplog


def call_lines(caplog: pytest.LogCaptureFixture, message: str = "hook call") -> list[str]:
    """The JSON lines of the captured records with `message`."""
    return [JsonFormatter().format(r) for r in caplog.records if r.getMessage() == message]


def one_line(caplog: pytest.LogCaptureFixture, message: str = "hook call") -> dict[str, Any]:
    lines = call_lines(caplog, message)
    assert len(lines) == 1, lines
    assert "\n" not in lines[0]
    return json.loads(lines[0])


def record(message: str = "x", **fields: Any) -> logging.LogRecord:
    made = logging.LogRecord("cds_service.test", logging.INFO, __file__, 1, message, (), None)
    for key, value in fields.items():
        setattr(made, key, value)
    return made


# ----------------------------------------------------------------------------- hook calls


def test_a_hook_call_is_one_json_line_with_its_fields(
    client: FlaskClient, logs: pytest.LogCaptureFixture
) -> None:
    response = client.post(URL, json=REQUEST, headers={"Accept-Language": "fr"})
    assert response.status_code == 200
    line = one_line(logs)
    cards = response.get_json()["cards"]
    assert list(line)[:5] == ["time", "level", "logger", "message", "pid"]
    assert TIME.match(line["time"])
    assert (line["level"], line["logger"]) == ("INFO", "cds_service.http")
    assert line["service"] == PATIENT_VIEW
    assert line["hook"] == "patient-view"
    assert line["hookInstance"] == REQUEST["hookInstance"]
    assert line["status"] == 200
    assert line["lang"] == "fr"
    assert line["cards"] == [f"{c['source']['topic']['code']}:{c['indicator']}" for c in cards]
    assert len(line["cards"]) >= 2
    assert isinstance(line["duration_ms"], float)
    assert line["duration_ms"] >= 0


def test_a_call_without_cards_logs_an_empty_list(
    client: FlaskClient, logs: pytest.LogCaptureFixture
) -> None:
    body = copy.deepcopy(REQUEST)
    body["prefetch"].update(conditions=None, observations=None, medications=None)
    response = client.post(URL, json=body)
    assert response.get_json()["cards"] == []
    assert one_line(logs)["cards"] == []


def test_a_refused_call_logs_its_status_and_error_path_not_the_value(
    shared_client: FlaskClient, logs: pytest.LogCaptureFixture
) -> None:
    body = copy.deepcopy(REQUEST)
    body["hook"] = "order-sign-leak-7731"
    assert shared_client.post(URL, json=body).status_code == 400
    line = one_line(logs)
    assert line["level"] == "WARNING"
    assert (line["status"], line["error"], line["error_path"]) == (400, "invalid", "hook")
    assert line["hookInstance"] == REQUEST["hookInstance"]
    assert "leak-7731" not in json.dumps(line)
    assert "cards" not in line


def test_a_412_names_the_prefetch_keys(
    shared_client: FlaskClient, logs: pytest.LogCaptureFixture
) -> None:
    body = copy.deepcopy(REQUEST)
    del body["prefetch"]["observations"]
    assert shared_client.post(URL, json=body).status_code == 412
    line = one_line(logs)
    assert (line["status"], line["error_path"]) == (412, "prefetch.observations")
    assert PATIENT_ID not in json.dumps(line)


def test_an_unknown_service_is_logged_as_unknown(
    shared_client: FlaskClient, logs: pytest.LogCaptureFixture
) -> None:
    assert shared_client.post(f"/cds-services/{PATIENT_ID}", json=REQUEST).status_code == 404
    line = one_line(logs)
    assert (line["service"], line["hook"], line["status"]) == ("unknown", "unknown", 404)
    assert PATIENT_ID not in json.dumps(line)


def test_hook_instance_is_cut_to_a_sane_length(
    client: FlaskClient, logs: pytest.LogCaptureFixture
) -> None:
    body = {**copy.deepcopy(REQUEST), "hookInstance": "h" * 5000}
    client.post(URL, json=body)
    assert one_line(logs)["hookInstance"] == "h" * HOOK_INSTANCE_CHARS


def test_feedback_is_logged_with_its_outcomes(
    client: FlaskClient, logs: pytest.LogCaptureFixture
) -> None:
    cards = client.post(URL, json=REQUEST).get_json()["cards"]
    feedback = [
        {"card": c["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-23T12:00:00Z"}
        for c in cards[:2]
    ]
    assert client.post(f"{URL}/feedback", json={"feedback": feedback}).status_code == 200
    line = one_line(logs, "feedback")
    assert line["service"] == PATIENT_VIEW
    assert (line["status"], line["entries"], line["outcomes"]) == (200, 2, {"overridden": 2})


def test_an_unhandled_error_is_logged_by_type_and_stack_only(
    client: FlaskClient, logs: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = client.application.extensions["cds_engine"]

    def explode(*_args: Any, **_kwargs: Any) -> None:
        raise ValueError(f"patient {PATIENT_ID} broke it")

    monkeypatch.setattr(engine, "evaluate", explode)
    assert client.post(URL, json=REQUEST).status_code == 500
    errors = [JsonFormatter().format(r) for r in logs.records if r.levelno == logging.ERROR]
    unhandled = [json.loads(e) for e in errors if "unhandled" in e]
    assert len(unhandled) == 1
    assert unhandled[0]["exc_type"] == "ValueError"
    assert "explode" in unhandled[0]["stack"]
    assert one_line(logs)["status"] == 500
    assert all(PATIENT_ID not in e for e in errors)


# ----------------------------------------------------------------------------- formatters


def test_json_lines_stay_one_line_of_ascii() -> None:
    line = JsonFormatter().format(record("a\nb", note="Zoë\u2028\ud800", n=3, items=("x", 1)))
    assert "\n" not in line
    assert line.isascii()
    decoded = json.loads(line)
    assert (decoded["message"], decoded["n"], decoded["items"]) == ("a\nb", 3, ["x", 1])


def test_fields_cannot_replace_the_line_header() -> None:
    line = json.loads(JsonFormatter().format(record("real", level="FAKE", time="then")))
    assert (line["level"], line["message"]) == ("INFO", "real")
    assert line["time"] != "then"


def test_long_fields_are_cut() -> None:
    line = json.loads(JsonFormatter().format(record(detail="d" * 10_000)))
    assert len(line["detail"]) == 200


def test_exceptions_are_written_by_type_and_stack_only() -> None:
    try:
        raise KeyError(f"birthDate of {PATIENT_ID}")
    except KeyError:
        failed = logging.LogRecord(
            "cds_service.x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    for formatter in (JsonFormatter(), TextFormatter()):
        text = formatter.format(failed)
        assert "KeyError" in text
        assert "test_exceptions_are_written_by_type_and_stack_only" in text
        assert PATIENT_ID not in text


def test_text_lines_are_for_humans() -> None:
    line = TextFormatter().format(
        record(
            "hook call",
            service=PATIENT_VIEW,
            status=200,
            cards=["a:info", "b:warning"],
            reason="HTTP 401\nforged line",
            empty=[],
        )
    )
    assert "\n" not in line
    assert " INFO cds_service.test hook call service=calcinosis-patient-view status=200" in line
    assert "cards=a:info,b:warning" in line
    assert 'reason="HTTP 401\\nforged line"' in line
    assert "empty=none" in line


def test_gunicorn_access_lines_leave_the_query_string_out() -> None:
    atoms = {
        "m": "GET",
        "U": "/healthz",
        "q": f"patient={PATIENT_ID}",
        "r": f"GET /healthz?patient={PATIENT_ID} HTTP/1.1",
        "s": "200",
        "B": 42,
        "D": 1534,
    }
    access = logging.LogRecord("gunicorn.access", logging.INFO, __file__, 1, "%(r)s", (), None)
    access.args = atoms  # as gunicorn passes them
    line = json.loads(JsonFormatter().format(access))
    assert line["message"] == "request"
    expected = {"method": "GET", "path": "/healthz", "status": 200, "bytes": 42}
    assert expected.items() <= line.items()
    assert line["duration_ms"] == 1.5
    assert PATIENT_ID not in json.dumps(line)
    assert PATIENT_ID not in TextFormatter().format(access)


# ----------------------------------------------------------------------------- configuration


@contextmanager
def bare_root() -> Iterator[logging.Logger]:
    """The root logger with no handler (as in a fresh process), restored afterwards (pytest
    adds its handlers in each test phase: this runs inside the test)."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    root.handlers = []
    try:
        yield root
    finally:
        root.handlers = saved
        root.setLevel(level)


def test_configure_logging_writes_json_then_text_to_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    log = logging.getLogger("cds_service.test")
    with bare_root() as root:
        configure_logging("DEBUG", "json")
        configure_logging("DEBUG", "json")  # a second app: still one handler
        assert [type(h) for h in root.handlers] == [LogHandler]
        assert root.level == logging.DEBUG
        log.info("first", extra={"service": PATIENT_VIEW})
        configure_logging("INFO", "text")
        assert [type(h) for h in root.handlers] == [LogHandler]
        log.info("second", extra={"status": 412})
        log.debug("below the level")
    first, second = capsys.readouterr().err.splitlines()
    assert json.loads(first)["service"] == PATIENT_VIEW
    assert second.endswith("INFO cds_service.test second status=412")
    assert logging.getLogger("httpx").level == logging.WARNING


def test_configure_logging_leaves_someone_elses_setup_alone() -> None:
    theirs = logging.NullHandler()
    with bare_root() as root:
        root.addHandler(theirs)
        root.setLevel(logging.ERROR)
        configure_logging("DEBUG", "json")
        assert root.handlers == [theirs]
        assert root.level == logging.ERROR


def test_create_app_uses_the_log_format_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with bare_root(), app_with(tmp_path, log_format="text", log_level="INFO") as app:
        app.test_client().post(URL, json=REQUEST)
    text = [line for line in capsys.readouterr().err.splitlines() if " hook call " in line]
    assert len(text) == 1
    assert f"service={PATIENT_VIEW}" in text[0]
    assert f"hookInstance={REQUEST['hookInstance']}" in text[0]


def test_log_settings() -> None:
    assert Settings.from_env({}).log_format == "json"
    assert Settings.from_env({}).metrics is True
    settings = Settings.from_env({"LOG_FORMAT": " Text ", "CDS_METRICS": "off"})
    assert (settings.log_format, settings.metrics) == ("text", False)
    with pytest.raises(SettingsError, match="LOG_FORMAT"):
        Settings.from_env({"LOG_FORMAT": "xml"})
    with pytest.raises(SettingsError, match="CDS_METRICS"):
        Settings.from_env({"CDS_METRICS": "maybe"})
    with pytest.raises(ValueError, match="LOG_FORMAT"):
        make_formatter("xml")
    with pytest.raises(ValueError, match="LOG_FORMAT"):
        gunicorn_logconfig("xml")
