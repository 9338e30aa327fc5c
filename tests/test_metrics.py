"""Prometheus metrics at GET /metrics (cds_service/observability.py).

In one process every app owns its registry, so each test reads exactly what its own calls
produced. The last tests run the service under gunicorn with two workers and check that
/metrics adds up what both of them counted (prometheus_client multiprocess mode, set up by
cds_service/gunicorn_conf.py).
"""

from __future__ import annotations

import copy
import gc
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from flask.testing import FlaskClient
from gunicorn import version_info as gunicorn_version
from prometheus_client.parser import text_string_to_metric_families

from cds_service import gunicorn_conf
from cds_service.observability import FETCH_BUCKETS, MULTIPROC_ENV, REQUEST_BUCKETS
from tests.conftest import (
    ROOT,
    SERVICES,
    app_with,
    fhir_authorization,
    fixture_names,
    free_port,
    load_request,
)
from tests.fhir_stub import StubFhirServer, bundle, fhir

PATIENT_VIEW = SERVICES["patient-view"]
SERVICE_ROUTE = "/cds-services/<service_id>"
REQUEST = load_request("02-aluminium-egfr-22")
PATIENT_ID = REQUEST["context"]["patientId"]
TOKEN = "metrics-access-token-31f0"
KEYS = ("patient", "conditions", "observations", "medications", "procedures")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: FlaskClient) -> tuple[str, Samples]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    return response.get_data(as_text=True), parse(response.get_data(as_text=True))


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def calls(samples: Samples, service: str, hook: str, status: str) -> float:
    return value(
        samples,
        "cds_request_duration_seconds_count",
        route=SERVICE_ROUTE,
        service=service,
        hook=hook,
        status=status,
    )


def card_tally(cards: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    return Counter((c["source"]["topic"]["code"], c["indicator"]) for c in cards)


# ----------------------------------------------------------------------------- requests


def test_hook_calls_are_timed_by_service_hook_and_status(client: FlaskClient) -> None:
    url = f"/cds-services/{PATIENT_VIEW}"
    for _ in range(2):
        assert client.post(url, json=REQUEST).status_code == 200
    wrong_hook = {**copy.deepcopy(REQUEST), "hook": "order-sign"}
    assert client.post(url, json=wrong_hook).status_code == 400
    sign = load_request(fixture_names("order-sign")[0], "order-sign")
    assert client.post("/cds-services/calcinosis-order-sign", json=sign).status_code == 200
    unknown_id = "no-such-service-5e0c"
    assert client.post(f"/cds-services/{unknown_id}", json=REQUEST).status_code == 404
    assert client.get("/healthz").status_code == 200

    text, samples = scrape(client)
    assert calls(samples, PATIENT_VIEW, "patient-view", "200") == 2
    assert calls(samples, PATIENT_VIEW, "patient-view", "400") == 1
    assert calls(samples, "calcinosis-order-sign", "order-sign", "200") == 1
    assert calls(samples, "unknown", "unknown", "404") == 1  # the caller's id is no label
    assert unknown_id not in text
    health = {"route": "/healthz", "service": "none", "hook": "none", "status": "200"}
    assert value(samples, "cds_request_duration_seconds_count", **health) == 1
    # The buckets suit answers of 2-150 ms.
    buckets = {
        dict(labels)["le"]
        for labels in series(samples, "cds_request_duration_seconds_bucket")
        if dict(labels)["route"] == SERVICE_ROUTE
    }
    assert buckets == {*(repr(float(b)) for b in REQUEST_BUCKETS), "+Inf"}
    # Every latency observed lies below the top bucket with a finite bound: no call took 2.5 s.
    ok = {"route": SERVICE_ROUTE, "service": PATIENT_VIEW, "hook": "patient-view"}
    assert value(samples, "cds_request_duration_seconds_bucket", **ok, status="200", le="+Inf") == 2


def test_unmatched_routes_share_one_label(client: FlaskClient) -> None:
    for path in ("/nowhere", "/cds-services/a/b/c/d", "/x-patient-fix-02"):
        assert client.get(path).status_code == 404
    text, samples = scrape(client)
    unmatched = {"route": "unmatched", "service": "none", "hook": "none", "status": "404"}
    assert value(samples, "cds_request_duration_seconds_count", **unmatched) == 3
    assert "fix-02" not in text
    assert "/nowhere" not in text


def test_build_info_says_what_is_running(client: FlaskClient) -> None:
    _text, samples = scrape(client)
    knowledge = client.application.extensions["cds_engine"].knowledge_version
    version = metadata.version("calcinosis-cds")
    assert series(samples, "cds_build_info") == {
        frozenset({("version", version), ("knowledge_version", knowledge)}): 1.0
    }


# ----------------------------------------------------------------------------- cards, feedback


def test_cards_are_counted_per_service_rule_and_indicator(client: FlaskClient) -> None:
    expected: Counter[tuple[str, str, str]] = Counter()
    for hook, sid in SERVICES.items():
        for name in fixture_names(hook)[:6]:
            response = client.post(f"/cds-services/{sid}", json=load_request(name, hook))
            assert response.status_code == 200
            for (rule, indicator), n in card_tally(response.get_json()["cards"]).items():
                expected[(sid, rule, indicator)] += n
    assert len({rule for _sid, rule, _ind in expected}) >= 3  # the sample fires several rules

    _text, samples = scrape(client)
    counted = {
        (d["service"], d["rule"], d["indicator"]): v
        for d, v in ((dict(k), v) for k, v in series(samples, "cds_cards_total").items())
    }
    assert counted == dict(expected)


def test_feedback_is_counted_by_service_and_outcome(client: FlaskClient) -> None:
    url = f"/cds-services/{PATIENT_VIEW}"
    cards = client.post(url, json=REQUEST).get_json()["cards"]
    suggested = [c for c in cards if any("uuid" in s for s in c.get("suggestions", ()))]
    others = [c for c in cards if c is not suggested[0]] if suggested else []
    assert len(others) >= 2

    def item(card: dict[str, Any], outcome: str) -> dict[str, Any]:
        entry = {
            "card": card["uuid"],
            "outcome": outcome,
            "outcomeTimestamp": "2026-11-23T12:00:00Z",
        }
        if outcome == "accepted":
            entry["acceptedSuggestions"] = [{"id": card["suggestions"][0]["uuid"]}]
        return entry

    feedback = [item(suggested[0], "accepted"), item(others[0], "overridden")]
    assert client.post(f"{url}/feedback", json={"feedback": feedback}).status_code == 200
    more = {"feedback": [item(others[1], "overridden")]}
    assert client.post(f"{url}/feedback", json=more).status_code == 200
    unknown = {"feedback": [{**item(cards[0], "overridden"), "card": "not-a-card"}]}
    assert client.post(f"{url}/feedback", json=unknown).status_code == 400  # not counted

    _text, samples = scrape(client)
    assert series(samples, "cds_feedback_total") == {
        frozenset({("service", PATIENT_VIEW), ("outcome", "accepted")}): 1,
        frozenset({("service", PATIENT_VIEW), ("outcome", "overridden")}): 2,
    }
    route = f"{SERVICE_ROUTE}/feedback"
    labels = {"route": route, "service": PATIENT_VIEW, "hook": "patient-view"}
    assert value(samples, "cds_request_duration_seconds_count", **labels, status="200") == 2
    assert value(samples, "cds_request_duration_seconds_count", **labels, status="400") == 1


# ----------------------------------------------------------------------------- fetching


def patient_resource(_path: str) -> tuple[int, str, bytes]:
    return fhir(copy.deepcopy(REQUEST["prefetch"]["patient"]))


def resources_of(key: str) -> list[dict[str, Any]]:
    value = copy.deepcopy(REQUEST["prefetch"][key])
    return [e["resource"] for e in value.get("entry", [])]


EHR = {
    f"/fhir/Patient/{PATIENT_ID}": patient_resource,
    "/fhir/Condition?": lambda _p: fhir(bundle(resources_of("conditions"))),
    "/fhir/Observation?": lambda _p: fhir(bundle(resources_of("observations"))),
    "/fhir/MedicationRequest?": lambda _p: fhir(bundle(resources_of("medications"))),
    "/fhir/Procedure?": lambda _p: fhir(bundle(resources_of("procedures"))),
}
UNAUTHORIZED = {"/fhir": lambda _p: fhir({"resourceType": "OperationOutcome"}, 401)}
NOT_JSON = {"/fhir": lambda _p: (200, "text/plain", b"hello")}


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/fhir"


# (routes, stub delay in s, settings, keys dropped, where fhirServer points, expected outcome)
FETCH_CASES = {
    "ok": (EHR, 0, {}, KEYS, "stub", "ok"),
    "http_error": (UNAUTHORIZED, 0, {}, ("patient",), "stub", "http_error"),
    "invalid_response": (NOT_JSON, 0, {}, ("patient",), "stub", "invalid_response"),
    "timeout": (
        EHR,
        0.5,
        {"fhir_timeout_ms": 100, "fhir_deadline_ms": 5000},
        ("patient",),
        "stub",
        "timeout",
    ),
    "deadline": (
        EHR,
        0.5,
        {"fhir_timeout_ms": 5000, "fhir_deadline_ms": 100},
        ("patient", "conditions"),
        "stub",
        "deadline",
    ),
    "connection_error": (EHR, 0, {}, ("patient",), "closed", "connection_error"),
    "refused_server": (EHR, 0, {}, ("patient", "medications"), "unlisted", "refused_server"),
    "no_server": (EHR, 0, {}, ("observations",), "none", "no_server"),
}


@pytest.mark.parametrize("case", list(FETCH_CASES))
def test_prefetch_fetches_are_counted_by_key_and_outcome(tmp_path: Path, case: str) -> None:
    routes, delay, settings, dropped, target, outcome = FETCH_CASES[case]
    closed = closed_port_url()
    with StubFhirServer(routes, delay_s=delay) as stub:
        body = copy.deepcopy(REQUEST)
        for key in dropped:
            body["prefetch"].pop(key)
        server = {"stub": stub.base_url, "closed": closed, "unlisted": stub.base_url}.get(target)
        if server is not None:
            body["fhirServer"] = server
            body["fhirAuthorization"] = fhir_authorization(TOKEN)
        allowed = () if target == "unlisted" else (stub.base_url, closed)
        with app_with(tmp_path, fhir_servers=allowed, **settings) as app:
            client = app.test_client()
            response = client.post(f"/cds-services/{PATIENT_VIEW}", json=body)
            text, samples = scrape(client)
    assert response.status_code == (200 if outcome == "ok" else 412), response.get_json()
    counted = {
        dict(k)["key"]: (dict(k)["outcome"], v)
        for k, v in series(samples, "cds_fhir_fetch_total").items()
    }
    assert counted == dict.fromkeys(dropped, (outcome, 1.0))
    sent = target in ("stub", "closed")
    timed = value(samples, "cds_fhir_fetch_duration_seconds_count", outcome=outcome)
    assert timed == (len(dropped) if sent else 0)
    if not sent:
        assert stub.seen == []
    buckets = {
        dict(labels)["le"] for labels in series(samples, "cds_fhir_fetch_duration_seconds_bucket")
    }
    assert buckets == ({*(repr(float(b)) for b in FETCH_BUCKETS), "+Inf"} if sent else set())
    assert PATIENT_ID not in text
    assert TOKEN not in text


# ----------------------------------------------------------------------------- apps, switch


def test_each_app_counts_its_own_calls(tmp_path: Path) -> None:
    """Many apps in one process: no "Duplicated timeseries" error, and no shared counts."""
    with app_with(tmp_path) as first, app_with(tmp_path) as second:
        first.test_client().post(f"/cds-services/{PATIENT_VIEW}", json=REQUEST)
        _t, one = scrape(first.test_client())
        _t, two = scrape(second.test_client())
    assert calls(one, PATIENT_VIEW, "patient-view", "200") == 1
    assert calls(two, PATIENT_VIEW, "patient-view", "200") == 0
    assert series(two, "cds_cards_total") == {}


def test_a_metric_that_fails_to_record_costs_no_card(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with app_with(tmp_path) as app:
        metrics = app.extensions["cds_engine"].metrics

        def broken(*_labels: str) -> Any:
            raise RuntimeError("registry unavailable")

        metrics.cards.labels = broken
        metrics.requests.labels = broken
        response = app.test_client().post(f"/cds-services/{PATIENT_VIEW}", json=REQUEST)
    assert response.status_code == 200
    assert response.get_json()["cards"]
    assert caplog.text.count("could not record a metric: RuntimeError") == 2


def test_metrics_can_be_turned_off(tmp_path: Path) -> None:
    with app_with(tmp_path, metrics=False) as app:
        client = app.test_client()
        assert client.post(f"/cds-services/{PATIENT_VIEW}", json=REQUEST).status_code == 200
        response = client.get("/metrics")
    assert response.status_code == 404
    assert response.get_json()["resourceType"] == "OperationOutcome"
    assert app.extensions["cds_engine"].metrics is None


def test_metrics_need_no_token_like_healthz(tmp_path: Path) -> None:
    """Public (restrict it at the load balancer): a scraper has no CDS Hooks JWT."""
    issuers = tmp_path / "issuers.json"
    issuers.write_text(
        json.dumps({"issuers": [{"iss": "https://ehr.example", "jwks_url": "https://x/jwks"}]})
    )
    with app_with(tmp_path, auth="jwt", trusted_issuers_file=issuers) as app:
        client = app.test_client()
        assert client.get("/cds-services").status_code == 401
        assert client.get("/metrics").status_code == 200


# ----------------------------------------------------------------------------- gunicorn


class FakeServer:
    """What gunicorn's hooks use of the arbiter: its config and its log."""

    def __init__(self, preload: bool = False) -> None:
        self.cfg = SimpleNamespace(preload_app=preload)
        self.logged: list[str] = []
        self.log = SimpleNamespace(
            info=lambda msg, *a: self.logged.append(msg % a),
            warning=lambda msg, *a: self.logged.append(msg % a),
        )


def test_on_starting_makes_a_fresh_directory_and_on_exit_removes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Recorded as set, then removed: undoing both removes what on_starting sets (a bare
    # delenv of an absent variable records nothing, and the variable leaked into later tests).
    monkeypatch.setenv(MULTIPROC_ENV, "")
    monkeypatch.delenv(MULTIPROC_ENV)
    monkeypatch.setattr(gunicorn_conf, "_created", [])
    server = FakeServer()
    gunicorn_conf.on_starting(server)
    shared = Path(os.environ[MULTIPROC_ENV])
    assert shared.is_dir()
    assert list(shared.iterdir()) == []
    assert str(shared) in server.logged[-1]
    gunicorn_conf.child_exit(server, SimpleNamespace(pid=999_999))  # nothing to clean: fine
    gunicorn_conf.on_exit(server)
    assert not shared.exists()


def test_on_starting_empties_a_named_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "metrics"
    shared.mkdir()
    (shared / "counter_123.db").write_bytes(b"old run")
    (shared / "README").write_text("kept")
    monkeypatch.setenv(MULTIPROC_ENV, str(shared))
    monkeypatch.setattr(gunicorn_conf, "_created", [])
    server = FakeServer(preload=True)
    gunicorn_conf.on_starting(server)
    assert sorted(p.name for p in shared.iterdir()) == ["README"]
    assert any("--preload" in line for line in server.logged)
    gunicorn_conf.on_exit(server)
    assert shared.is_dir()  # not ours to remove


def test_the_config_module_does_not_import_prometheus_client() -> None:
    """prometheus_client picks multiprocess mode when first imported: the gunicorn master must
    not import it before on_starting has set PROMETHEUS_MULTIPROC_DIR."""
    code = (
        "import logging.config, sys\n"
        "import cds_service.gunicorn_conf as conf\n"
        "logging.config.dictConfig(conf.logconfig_dict)\n"
        "logging.getLogger('gunicorn.error').info('configured')\n"
        "assert 'prometheus_client' not in sys.modules, 'imported'\n"
    )
    env = {k: v for k, v in os.environ.items() if k != MULTIPROC_ENV}
    result = subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stderr.strip())
    assert (line["logger"], line["message"]) == ("gunicorn.error", "configured")


def json_lines(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def wait_until(predicate: Any, what: str, timeout_s: float = 60) -> None:
    limit = time.monotonic() + timeout_s
    while time.monotonic() < limit:
        if predicate():
            return
        time.sleep(0.1)
    pytest.fail(f"gave up waiting: {what}")


def test_gunicorn_workers_add_up(tmp_path: Path) -> None:
    """Two gunicorn workers of one thread and one connection each; pairs of calls that each
    wait at the FHIR server until the other one arrives, so both workers serve calls.
    Whichever worker answers /metrics reports the calls of both."""
    barrier = threading.Barrier(2)

    def patient_after_the_other_call(path: str) -> tuple[int, str, bytes]:
        try:
            barrier.wait(timeout=60)
        except threading.BrokenBarrierError:
            return fhir({"resourceType": "OperationOutcome"}, 503)
        return patient_resource(path)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_file = tmp_path / "gunicorn.log"
    with StubFhirServer({f"/fhir/Patient/{PATIENT_ID}": patient_after_the_other_call}) as ehr:
        env = {k: v for k, v in os.environ.items() if k != MULTIPROC_ENV}
        env.update(
            DATABASE_URL=f"sqlite:///{tmp_path / 'cds.sqlite3'}",
            CDS_FHIR_SERVERS=ehr.base_url,
            CDS_FHIR_TIMEOUT_MS="90000",
            CDS_FHIR_DEADLINE_MS="90000",
            LOG_FORMAT="json",
            LOG_LEVEL="INFO",
        )
        gunicorn = Path(sys.executable).parent / "gunicorn"
        command = [
            str(gunicorn),
            "-c",
            "python:cds_service.gunicorn_conf",
            "--workers",
            "2",
            "--threads",
            "1",
            # A worker with a connection open accepts no other: the pair goes to both.
            "--worker-connections",
            "1",
            "--bind",
            f"127.0.0.1:{port}",
            "--timeout",
            "120",
            "cds_service.app:create_app()",
        ]
        if gunicorn_version >= (27,):  # no control socket shared with other gunicorns
            command.insert(1, "--no-control-socket")
        with log_file.open("wb") as output:
            process = subprocess.Popen(  # noqa: S603 - our own server, fixed arguments
                command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
            )
        try:
            # Both workers have built their app (each logs the auth-off warning once).
            wait_until(
                lambda: (
                    len(
                        {
                            line["pid"]
                            for line in json_lines(log_file)
                            if "AUTHENTICATION IS OFF" in line["message"]
                        }
                    )
                    == 2
                ),
                "two workers",
            )
            fetching = copy.deepcopy(REQUEST)
            fetching["prefetch"].pop("patient")
            fetching["fhirServer"] = ehr.base_url
            fetching["fhirAuthorization"] = fhir_authorization(TOKEN)
            url = f"{base}/cds-services/{PATIENT_VIEW}"
            responses = []
            with httpx.Client(timeout=120) as http, ThreadPoolExecutor(2) as pool:
                for _round in range(3):
                    responses += pool.map(lambda _i: http.post(url, json=fetching), range(2))
                responses += [http.post(url, json=REQUEST) for _ in range(4)]
                assert [r.status_code for r in responses] == [200] * 10
                scrapes = [http.get(f"{base}/metrics") for _ in range(4)]
        finally:
            process.terminate()
            returncode = process.wait(timeout=60)

    assert returncode == 0
    lines = json_lines(log_file)  # every line, gunicorn's included, is a JSON object
    served_by = Counter(line["pid"] for line in lines if line["message"] == "hook call")
    assert sum(served_by.values()) == 10
    assert len(served_by) == 2, served_by  # both workers served calls...
    cards: Counter[tuple[str, str]] = Counter()
    for response in responses:
        cards += card_tally(response.json()["cards"])
    for scrape_response in scrapes:  # ...and every scrape adds up both
        assert scrape_response.status_code == 200
        samples = parse(scrape_response.text)
        assert calls(samples, PATIENT_VIEW, "patient-view", "200") == 10
        assert value(samples, "cds_fhir_fetch_total", key="patient", outcome="ok") == 6
        counted = {
            (dict(k)["rule"], dict(k)["indicator"]): v
            for k, v in series(samples, "cds_cards_total").items()
        }
        assert counted == dict(cards)
        assert PATIENT_ID not in scrape_response.text
        # One series whichever worker answers (each worker set it: "livemax").
        assert len(series(samples, "cds_build_info")) == 1
        assert set(series(samples, "cds_build_info").values()) == {1.0}

    text = log_file.read_text(encoding="utf-8")
    assert TOKEN not in text
    assert f"/{PATIENT_ID}" not in text
    access = [line for line in lines if line["logger"] == "gunicorn.access"]
    assert {line["path"] for line in access} >= {f"/cds-services/{PATIENT_VIEW}", "/metrics"}
    # Each call's id is on its response, its hook call line and its access line.
    answered = {r.headers["X-Request-ID"] for r in responses}
    assert len(answered) == 10
    assert {line["request_id"] for line in lines if line["message"] == "hook call"} == answered
    assert answered <= {line.get("request_id") for line in access}
    # The temporary directory the workers shared is gone.
    shared = next(
        line["message"].rsplit(" ", 1)[1] for line in lines if "added up in" in line["message"]
    )
    assert not Path(shared).exists()


def test_workers_freeze_start_up_objects_out_of_the_collector() -> None:
    """A full garbage collection during a request must not walk the knowledge loaded at
    start-up (it cost up to 65 ms at p99 before): the workers freeze it once loaded."""
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    try:
        gunicorn_conf.post_worker_init(None)
        assert gc.get_freeze_count() > 1000
    finally:
        gc.unfreeze()
