"""The official CDS Hooks Sandbox against this service, end to end, in headless Chromium.

The Sandbox is the production build in ../shared/sandbox/build (beside this repository; see its
README), served by python's http.server on loopback; the service runs in a thread on a free
loopback port; the Sandbox reads the fixture patients from sekmet-fhir on loopback (open, as the
Sandbox sends the FHIR server no token; sekmet answers CORS for any origin). The page may reach
loopback only: its other requests (the Sandbox's default services on the web) are aborted.
Without the Sandbox build or a Chromium (`CDS_TEST_CHROMIUM`, `scripts/ensure-browser`), the
tests are skipped with the reason.

The browser's clock starts at the fixtures' anchor date, where the service's clock is pinned, so
the Sandbox's JWTs and draft orders are dated as the fixture data expects.

Tests run with `jwt` (CDS_AUTH=jwt trusting docs/trusted-issuers.sandbox.json,
CDS_PUBLIC_BASE_URL spelled as the browser calls the service; any attempt to download a JWK Set
fails the test: the Sandbox's tokens must verify offline); the patient view also runs `open`
(CDS_AUTH off).

What is proved: Patient View on fix-02 shows the critical aluminium card; Rx View (order-select)
and Rx Sign (order-sign), with aluminium hydroxide chosen in the Sandbox's own medication form,
show the aluminium card; accepting a suggestion stores feedback. The requests the Sandbox sent
are kept in test-artifacts/ for whoever debugs the next failure.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from flask import Flask
from playwright.sync_api import Browser, Page, Request, Response, Route
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from werkzeug.serving import WSGIRequestHandler, make_server

import cds_service.trust
from tests.conftest import NOW, ROOT, app_with, launched_chromium, running_sekmet

SANDBOX_BUILD = ROOT.parent / "shared" / "sandbox" / "build"
SANDBOX_ISSUERS = ROOT / "docs" / "trusted-issuers.sandbox.json"
ARTIFACTS = ROOT / "test-artifacts"
WAIT_MS = 20_000  # how long a wait for the page may last before the test fails (not timed)

PATIENT = "fix-02"  # aluminium hydroxide, eGFR 22 (fixtures/patient-view/02-aluminium-egfr-22)
RULE = "aluminium-hydroxide-renal"
# A product of the Sandbox's own medication list (RxNorm 243449), typed into its form: the
# Sandbox clears its `prescribedMedication` URL parameter when the patient loads.
PRODUCT_SEARCH = "Aluminum Hydroxide"
PRODUCT = "Aluminum Hydroxide 500 MG Oral Tablet"
PRODUCT_RXNORM = "243449"

# Sandbox view (`screen`) -> the hook it calls (`hook`, which must go with it: without it the
# Sandbox sends "hook": "patient-view" from every view).
HOOK_OF = {"patient-view": "patient-view", "rx-view": "order-select", "rx-sign": "order-sign"}
PV, SELECT, SIGN = "calcinosis-patient-view", "calcinosis-order-select", "calcinosis-order-sign"
# How the Sandbox marks a card of each indicator (class names of its CSS modules).
CARD = '[class*="card-list__decision-card"]'
INDICATOR_CLASS = {
    "critical": "card-list__alert-critical",
    "warning": "card-list__alert-warning",
    "info": "card-list__alert-info",
}


# ----------------------------------------------------------------------------- servers


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        """No access log in the test output."""


class _QuietWsgi(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        """No access log in the test output."""


@pytest.fixture(scope="module")
def sandbox() -> Iterator[str]:
    """The Sandbox's build, served on loopback; its URL."""
    if not (SANDBOX_BUILD / "index.html").is_file():
        pytest.skip(
            f"the CDS Hooks Sandbox build is absent ({SANDBOX_BUILD}): the official Sandbox "
            "test needs ../shared/sandbox beside this repository"
        )
    handler = functools.partial(_QuietFiles, directory=str(SANDBOX_BUILD))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def fhir(sandbox: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """sekmet-fhir on loopback with the fixture patients, open (no token), answering CORS."""
    with running_sekmet(tmp_path_factory.mktemp("sekmet-open"), token=None) as base:
        yield base


@pytest.fixture(scope="module")
def browser(sandbox: str) -> Iterator[Browser]:
    with launched_chromium() as launched:
        yield launched


@dataclass
class Service:
    url: str
    app: Flask
    jwks_downloads: list[str]

    def summary(self, service_id: str) -> dict[str, Any]:
        """The feedback summary, read from the service's store."""
        return self.app.extensions["cds_engine"].feedback_summary(service_id)


@contextmanager
def running_service(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    jwt: bool,
    public_base: Callable[[str], str] = lambda url: url,
) -> Iterator[Service]:
    """The app on 127.0.0.1, a free port, in a thread. With `jwt`: CDS_AUTH=jwt trusting the
    Sandbox (docs/trusted-issuers.sandbox.json) and CDS_PUBLIC_BASE_URL = `public_base(URL the
    browser calls)`. Downloading a JWK Set is recorded and fails."""
    downloads: list[str] = []

    def no_download(url: str) -> dict[str, Any]:
        downloads.append(url)
        raise OSError("this test runs offline: no JWK Set may be downloaded")

    monkeypatch.setattr(cds_service.trust, "fetch_jwks_https", no_download)
    holder: dict[str, Flask] = {}
    server = make_server(
        "127.0.0.1",
        0,
        lambda environ, start_response: holder["app"](environ, start_response),
        threaded=True,
        request_handler=_QuietWsgi,
    )
    url = f"http://127.0.0.1:{server.server_port}"
    overrides: dict[str, Any] = {}
    if jwt:
        overrides = {
            "auth": "jwt",
            "trusted_issuers_file": SANDBOX_ISSUERS,
            "public_base_url": public_base(url),
        }
    with app_with(tmp_path, **overrides) as app:
        holder["app"] = app
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield Service(url, app, downloads)
        finally:
            server.shutdown()
            thread.join(timeout=5)
            server.server_close()


# Every test runs with JWT authentication on, as production requires; the patient-view test
# also without it (development). A browser test costs seconds: the other combinations add
# nothing the service tests do not already cover.
JWT_ONLY = pytest.mark.parametrize("service", ["jwt"], indirect=True)


@pytest.fixture(params=["open", "jwt"])
def service(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Service]:
    """A fresh service (its own store: no repeat suppression or snooze from another test)."""
    jwt = request.param == "jwt"
    with running_service(tmp_path, monkeypatch, jwt) as running:
        yield running
        if jwt:
            assert running.jwks_downloads == [], "the Sandbox's key set must come from the file"


# ----------------------------------------------------------------------------- the Sandbox


@dataclass
class Visit:
    """A Sandbox tab, and every call it made to the service: (method, path, status)."""

    page: Page
    service: Service
    calls: list[tuple[str, str, int]] = field(default_factory=list)

    def response_to(self, action: Callable[[], Any], service_id: str, match: str = "") -> Any:
        """Do `action`; return the service's JSON answer to the hook call it caused (whose
        body contains `match`), failing with the calls made when it was not a 200."""
        url = f"{self.service.url}/cds-services/{service_id}"

        def wanted(response: Response) -> bool:
            sent = response.request
            return sent.method == "POST" and sent.url == url and match in (sent.post_data or "")

        try:
            with self.page.expect_response(wanted) as answer:
                action()
        except PlaywrightTimeoutError:
            pytest.fail(f"the Sandbox made no {service_id} call; its calls: {self.calls}")
        response = answer.value
        assert response.status == 200, (response.status, response.text()[:500], self.calls)
        keep(service_id, response.request)
        return response.json()


def keep(service_id: str, request: Request) -> None:
    """The last request body the Sandbox sent to each service, for debugging."""
    ARTIFACTS.mkdir(exist_ok=True)
    body = request.post_data_json
    (ARTIFACTS / f"sandbox-{service_id}.request.json").write_text(
        json.dumps(body, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )


def sandbox_url(sandbox: str, service: Service, fhir: str, screen: str) -> str:
    query = {
        "serviceDiscoveryURL": f"{service.url}/cds-services",
        "fhirServiceUrl": fhir,
        "patientId": PATIENT,
        "screen": screen,
        "hook": HOOK_OF[screen],
    }
    return f"{sandbox}/?{urlencode(query)}"


def _loopback_only(route: Route) -> None:
    if urlsplit(route.request.url).hostname == "127.0.0.1":
        route.continue_()
    else:
        route.abort()


@contextmanager
def visit(browser: Browser, service: Service) -> Iterator[Visit]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="en-GB")
    context.route("**/*", _loopback_only)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.clock.install(time=NOW)  # then runs at normal speed from there
    seen = Visit(page, service)

    def record(response: Response) -> None:
        if response.url.startswith(service.url):
            path = urlsplit(response.url).path
            seen.calls.append((response.request.method, path, response.status))

    page.on("response", record)
    try:
        yield seen
    finally:
        context.close()


def card_of(answer: dict[str, Any], rule: str = RULE) -> dict[str, Any]:
    found = [c for c in answer["cards"] if c["source"]["topic"]["code"] == rule]
    assert len(found) == 1, [c["source"]["topic"]["code"] for c in answer["cards"]]
    return found[0]


def shown(page: Page, card: dict[str, Any]) -> Any:
    """The Sandbox's rendering of `card` (found by its summary), once visible, checked to
    carry the mark of the card's indicator."""
    rendered = page.locator(CARD, has_text=card["summary"])
    rendered.first.wait_for()
    assert rendered.count() == 1
    assert INDICATOR_CLASS[card["indicator"]] in (rendered.get_attribute("class") or "")
    return rendered


def choose_product(page: Page) -> None:
    """Type in the Sandbox's medication field and pick the aluminium hydroxide tablet."""
    page.locator("input[name=medication-input]").fill(PRODUCT_SEARCH)
    page.get_by_role("button", name=PRODUCT, exact=True).click()


# ----------------------------------------------------------------------------- tests


def test_patient_view_shows_the_critical_aluminium_card(
    browser: Browser, sandbox: str, fhir: str, service: Service
) -> None:
    with visit(browser, service) as tab:
        url = sandbox_url(sandbox, service, fhir, "patient-view")
        answer = tab.response_to(lambda: tab.page.goto(url), PV)
        card = card_of(answer)
        assert card["indicator"] == "critical"
        shown(tab.page, card)


@JWT_ONLY
def test_rx_view_with_aluminium_hydroxide_shows_the_aluminium_card(
    browser: Browser, sandbox: str, fhir: str, service: Service
) -> None:
    with visit(browser, service) as tab:
        tab.page.goto(sandbox_url(sandbox, service, fhir, "rx-view"))
        answer = tab.response_to(lambda: choose_product(tab.page), SELECT, PRODUCT_RXNORM)
        card = card_of(answer)
        assert card["indicator"] == "critical"
        shown(tab.page, card)


@JWT_ONLY
def test_rx_sign_with_aluminium_hydroxide_shows_the_aluminium_card(
    browser: Browser, sandbox: str, fhir: str, service: Service
) -> None:
    with visit(browser, service) as tab:
        tab.page.goto(sandbox_url(sandbox, service, fhir, "rx-sign"))
        choose_product(tab.page)
        answer = tab.response_to(
            lambda: tab.page.get_by_role("button", name="Sign Order").click(),
            SIGN,
            PRODUCT_RXNORM,
        )
        card = card_of(answer)
        assert card["indicator"] == "critical"
        shown(tab.page, card)


@JWT_ONLY
def test_accepting_a_suggestion_stores_feedback(
    browser: Browser, sandbox: str, fhir: str, service: Service
) -> None:
    with visit(browser, service) as tab:
        url = sandbox_url(sandbox, service, fhir, "patient-view")
        card = card_of(tab.response_to(lambda: tab.page.goto(url), PV))
        suggestion = card["suggestions"][0]
        rendered = shown(tab.page, card)
        feedback_url = f"{service.url}/cds-services/{PV}/feedback"
        with tab.page.expect_response(
            lambda r: r.url == feedback_url and r.request.method == "POST"
        ) as answer:
            rendered.get_by_role("button", name=suggestion["label"], exact=True).click()
        assert answer.value.status == 200, (answer.value.text()[:500], tab.calls)
        sent = answer.value.request.post_data_json["feedback"]
        assert [(f["card"], f["outcome"]) for f in sent] == [(card["uuid"], "accepted")]
        assert sent[0]["acceptedSuggestions"] == [{"id": suggestion["uuid"]}]
    rules = {r["rule"]: r for r in service.summary(PV)["rules"]}
    assert (rules[RULE]["accepted"], rules[RULE]["overridden"]) == (1, 0)


def test_jwt_aud_must_be_spelled_as_the_browser_calls_it(
    browser: Browser,
    sandbox: str,
    fhir: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The browser calls 127.0.0.1; a service that expects `localhost` in the `aud` refuses
    every Sandbox token (the Sandbox then just shows no cards)."""

    def localhost(url: str) -> str:
        return url.replace("127.0.0.1", "localhost")

    with (
        running_service(tmp_path, monkeypatch, jwt=True, public_base=localhost) as svc,
        visit(browser, svc) as tab,
    ):
        with tab.page.expect_response(lambda r: r.url == f"{svc.url}/cds-services") as answer:
            tab.page.goto(sandbox_url(sandbox, svc, fhir, "patient-view"))
        assert answer.value.status == 401
        tab.page.get_by_text("No recommendations", exact=False).first.wait_for()
        assert tab.page.locator(CARD).count() == 0
        assert svc.jwks_downloads == []
