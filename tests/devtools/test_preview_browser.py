"""The card preview page end to end, in headless Chromium driven by Playwright.

The app runs on loopback (werkzeug, port 0, SQLite in tmp_path, authentication off unless a
test says otherwise); the page is loaded from it like a developer would. The browser is the
system Chromium (`CDS_TEST_CHROMIUM`, else /usr/bin/chromium; `scripts/ensure-browser` finds or
installs one): when there is none, or it cannot start, these tests are skipped with the reason.

What is proved: fixture cards render with the expected count, order and indicators (French
too) and a screenshot is kept in test-artifacts/; suggestions reveal their FHIR actions;
accepting and overriding send CDS Hooks feedback that the store holds; a pasted FHIR Bundle or
request gives cards; errors (401, OperationOutcome) are explained; EHR text and a hostile
service answer never become HTML, scripts or non-http(s) links; and the page contacts nothing
but the service.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask
from playwright.sync_api import Browser, Page
from werkzeug.serving import WSGIRequestHandler, make_server

from cds_service.hooks.validation import violations
from tests.conftest import (
    FIXTURE_ROOT,
    ROOT,
    SERVICES,
    app_with,
    collection,
    expected_indicators,
    fixture_resources,
    launched_chromium,
    load_expected,
    load_request,
)

ARTIFACTS = ROOT / "test-artifacts"
SCREENSHOT = ARTIFACTS / "preview-cards.png"
WAIT_MS = 20_000  # how long a wait for the page may last before the test fails (not timed)

PV = "calcinosis-patient-view"
XSS_IMG = '<img src=x onerror="window.__pwned=1">'
XSS_SCRIPT = "<script>window.__pwned=1</script>"
XSS_LINK = "[x](javascript:window.__pwned=1)"


# ----------------------------------------------------------------------------- browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launched_chromium() as launched:
        yield launched


@dataclass
class Tab:
    """A page and what it did: every request URL, CSP violations, uncaught errors."""

    page: Page
    requests: list[str] = field(default_factory=list)
    csp_violations: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def origins(self) -> set[str]:
        return {"{0.scheme}://{0.netloc}".format(urlsplit(url)) for url in self.requests}


@pytest.fixture
def tab(browser: Browser) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    watched = Tab(page)
    page.on("request", lambda request: watched.requests.append(request.url))
    page.on(
        "console",
        lambda message: (
            watched.csp_violations.append(message.text)
            if "Content Security Policy" in message.text
            else None
        ),
    )
    page.on("pageerror", lambda error: watched.errors.append(str(error)))
    yield watched
    context.close()


# ----------------------------------------------------------------------------- the service


class QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        """No access log in the test output."""


@dataclass
class Live:
    url: str
    app: Flask


@contextmanager
def serve(tmp_path: Path, **overrides: Any) -> Iterator[Live]:
    """The app on 127.0.0.1, a free port, in a background thread."""
    with app_with(tmp_path, **overrides) as app:
        server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield Live(f"http://127.0.0.1:{server.server_port}", app)
        finally:
            server.shutdown()
            thread.join()
            server.server_close()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    with serve(tmp_path) as running:
        yield running


# ----------------------------------------------------------------------------- helpers


def open_page(tab: Tab, live: Live) -> Page:
    page = tab.page
    page.goto(live.url + "/")
    page.wait_for_selector("body[data-ready='true']")
    return page


def wait_for_cards(page: Page) -> str:
    """Wait until the page has finished a send; return the state it ended in."""
    page.wait_for_function(
        "() => ['done', 'error'].includes(document.getElementById('cards').dataset.state)"
    )
    return page.eval_on_selector("#cards", "node => node.dataset.state")


def send(page: Page, service_id: str, language: str = "en") -> dict[str, Any]:
    """Click Send; return the service's answer as the page received it."""
    page.select_option("#service", service_id)
    page.select_option("#language", language)
    with page.expect_response(
        lambda r: r.request.method == "POST" and r.url.endswith(f"/cds-services/{service_id}")
    ) as answer:
        page.click("#send")
    state = wait_for_cards(page)
    assert state == "done", page.inner_text("#cards-problem")
    return answer.value.json()


def send_fixture(page: Page, hook: str, name: str, language: str = "en") -> dict[str, Any]:
    page.select_option("#fixture", f"{hook}/{name}")
    assert page.input_value("#service") == SERVICES[hook]  # chosen from the fixture's hook
    return send(page, SERVICES[hook], language)


def rendered_indicators(page: Page) -> list[str]:
    return page.eval_on_selector_all(
        "#cards article.card", "els => els.map(e => e.dataset.indicator)"
    )


def assert_harmless(page: Page) -> None:
    """Nothing ran, no active element was created, every link is http(s)."""
    assert page.evaluate("() => typeof window.__pwned") == "undefined"
    active = ["img", "script", "iframe", "frame", "object", "embed", "svg", "math", "style"]
    active += ["link", "form", "base"]
    inside = ", ".join(f"#cards {tag}" for tag in active)
    assert page.eval_on_selector_all(inside, "els => els.length") == 0
    assert page.eval_on_selector_all("body script, body img, body iframe", "els => els.length") == 0
    hrefs = page.eval_on_selector_all("[href]", "els => els.map(e => e.getAttribute('href'))")
    bad = [h for h in hrefs if not h.startswith(("http://", "https://", "/preview/static/"))]
    assert bad == []
    card_links = page.eval_on_selector_all("#cards [href]", "els => els.map(e => e.href)")
    assert all(h.startswith(("http://", "https://")) for h in card_links), card_links
    handlers = page.evaluate(
        """() => [...document.querySelectorAll('#cards *')].flatMap(
               e => [...e.attributes].map(a => a.name)).filter(n => n.startsWith('on'))"""
    )
    assert handlers == []


def assert_only_the_service(tab: Tab, live: Live) -> None:
    assert tab.requests, "the page made no request at all"
    assert tab.origins() == {live.url}, sorted(set(tab.requests))
    assert tab.errors == []
    assert tab.csp_violations == []


# ----------------------------------------------------------------------------- (a) fixtures


@pytest.mark.parametrize(
    ("hook", "name"),
    [("order-select", "21-select-aluminium-egfr-22"), ("patient-view", "02-aluminium-egfr-22")],
)
def test_fixture_cards_render_as_expected_in_french(
    tab: Tab, live: Live, hook: str, name: str
) -> None:
    page = open_page(tab, live)
    description = load_expected(name, hook)["description"]
    page.select_option("#fixture", f"{hook}/{name}")
    assert page.inner_text("#fixture-description") == description
    answer = send_fixture(page, hook, name, "fr")
    cards = answer["cards"]

    # Count, order and indicator of every card, as the fixture's expected outcome says.
    assert rendered_indicators(page) == expected_indicators(name, hook)
    classes = page.eval_on_selector_all("#cards article.card", "els => els.map(e => e.className)")
    assert classes == [f"card card--{c['indicator']}" for c in cards]
    assert "langue" not in page.inner_text("#cards-status")  # the page's own text is English
    assert "language fr" in page.inner_text("#cards-status")

    summaries = page.eval_on_selector_all(".card__summary", "els => els.map(e => e.textContent)")
    assert summaries == [c["summary"] for c in cards]
    articles = page.locator("#cards article.card")
    for index, card in enumerate(cards):
        article = articles.nth(index)
        detail = article.locator(".card__detail")
        # The Markdown is rendered, not shown: bold and lists become elements.
        text = detail.inner_text()
        assert "**" not in text
        if "**" in card["detail"]:
            assert detail.locator("strong").count() >= 1
        if "\n- " in card["detail"]:
            assert detail.locator("ul > li").count() >= 1
        source = article.locator(".card__source a")
        assert source.get_attribute("href") == card["source"]["url"]
        assert source.get_attribute("target") == "_blank"
        assert source.get_attribute("rel") == "noopener noreferrer"
        assert source.inner_text() == card["source"]["label"]
        assert card["source"]["topic"]["code"] in article.locator(".card__topic").inner_text()
        assert article.locator(".card__links li").count() == len(card.get("links", []))
        assert article.locator(".suggestion__button").count() == len(card.get("suggestions", []))
        options = article.locator(".override__reason option")
        assert options.count() == len(card.get("overrideReasons", [])) + 1
    assert_harmless(page)
    assert_only_the_service(tab, live)

    if hook == "patient-view":
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        assert SCREENSHOT.stat().st_size > 10_000


def test_markdown_subset_is_rendered_with_dom_nodes(tab: Tab, live: Live) -> None:
    page = open_page(tab, live)
    cases = {
        "a **b** *c* _d_ `e*f`": (
            "<p>a <strong>b</strong> <em>c</em> <em>d</em> <code>e*f</code></p>"
        ),
        "one\ntwo  \nthree\\\nfour": "<p>one two<br>three<br>four</p>",
        "Intro\n- one\n- two\n  more\n\n1. x\n2. y": (
            "<p>Intro</p><ul><li>one</li><li>two more</li></ul><ol><li>x</li><li>y</li></ol>"
        ),
        "\\*no\\* \\[x\\]\\(y\\) snake_case_name 5 * 3 C:\\dir": (
            "<p>*no* [x](y) snake_case_name 5 * 3 C:\\dir</p>"
        ),
        "[KDIGO](https://kdigo.org/x) [bad](javascript:alert(1))": (
            '<p><a href="https://kdigo.org/x" target="_blank" rel="noopener noreferrer">KDIGO</a>'
            ' <span class="blocked-link" title="not a link: only http(s) URLs are shown as links">'
            "bad</span></p>"
        ),
        "<b>x</b> &amp; <img src=x>": "<p>&lt;b&gt;x&lt;/b&gt; &amp;amp; &lt;img src=x&gt;</p>",
        "**Bold `code`** and _italic 2026.11.1_": (
            "<p><strong>Bold <code>code</code></strong> and <em>italic 2026.11.1</em></p>"
        ),
    }
    rendered = page.evaluate(
        """async (inputs) => {
               const module = await import('/preview/static/preview.js');
               return inputs.map(text => module.renderMarkdown(text).innerHTML);
           }""",
        list(cases),
    )
    assert dict(zip(cases, rendered, strict=True)) == cases
    assert page.evaluate("() => typeof window.__pwned") == "undefined"


# ----------------------------------------------------------------------------- (b) feedback


def test_suggestion_actions_and_feedback_reach_the_store(tab: Tab, live: Live) -> None:
    page = open_page(tab, live)
    cards = send_fixture(page, "patient-view", "02-aluminium-egfr-22")["cards"]
    articles = page.locator("#cards article.card")
    accepted = next(i for i, c in enumerate(cards) if c.get("suggestions"))
    overridden = next(i for i, c in enumerate(cards) if i != accepted and c.get("overrideReasons"))
    card = cards[accepted]
    suggestion = card["suggestions"][0]

    article = articles.nth(accepted)
    panel = article.locator(".suggestion__panel").first
    assert not panel.is_visible()
    article.locator(".suggestion__button").first.click()
    assert panel.is_visible()
    shown = [json.loads(t) for t in panel.locator(".action__json").all_inner_texts()]
    assert shown == suggestion["actions"]
    assert shown
    assert all(a.get("resource") or a.get("resourceId") for a in shown)

    feedback_url = f"{live.url}/cds-services/{PV}/feedback"
    with page.expect_request(lambda r: r.url == feedback_url) as sent:
        panel.locator(".suggestion__accept").click()
    page.wait_for_selector(f"#cards article.card:nth-child({accepted + 1})[data-feedback]")
    assert article.get_attribute("data-feedback") == "accepted"
    assert "stored 1 entry" in article.locator(".card__feedback").inner_text()
    body = sent.value.post_data_json
    assert violations("feedback", body) == []
    assert body["feedback"][0]["card"] == card["uuid"]
    assert body["feedback"][0]["outcome"] == "accepted"
    assert body["feedback"][0]["acceptedSuggestions"] == [{"id": suggestion["uuid"]}]

    other = cards[overridden]
    reason = other["overrideReasons"][-1]
    target = articles.nth(overridden)
    target.locator(".override__reason").select_option(str(len(other["overrideReasons"]) - 1))
    with page.expect_request(lambda r: r.url == feedback_url) as sent:
        target.locator(".override__dismiss").click()
    page.wait_for_selector(f"#cards article.card:nth-child({overridden + 1})[data-feedback]")
    assert target.get_attribute("data-feedback") == "overridden"
    assert "stored 1 entry" in target.locator(".card__feedback").inner_text()
    body = sent.value.post_data_json
    assert violations("feedback", body) == []
    assert body["feedback"][0]["overrideReason"] == {"reason": reason}

    # The service's store holds both.
    summary = live.app.test_client().get(f"/cds-services/{PV}/feedback/summary").get_json()
    rules = {r["rule"]: r for r in summary["rules"]}
    assert rules[card["source"]["topic"]["code"]]["accepted"] == 1
    held = rules[other["source"]["topic"]["code"]]
    assert held["overridden"] == 1
    assert [(r["code"], r["count"]) for r in held["overrideReasons"]] == [(reason["code"], 1)]
    assert_only_the_service(tab, live)


# ----------------------------------------------------------------------------- (c) hostile text


def _malicious_fixture(folder: Path) -> str:
    """A fixture whose EHR texts carry HTML, script and a javascript: Markdown link."""
    request = load_request("02-aluminium-egfr-22")
    payload = f"{XSS_IMG} {XSS_SCRIPT} {XSS_LINK}"
    medication = request["prefetch"]["medications"]["entry"][0]["resource"]
    concept = medication["medicationCodeableConcept"]
    concept["text"] = payload
    concept["coding"][0]["display"] = payload
    for entry in request["prefetch"]["conditions"]["entry"]:
        entry["resource"]["code"]["text"] = payload
        entry["resource"]["code"]["coding"][0]["display"] = payload
    expected = copy.deepcopy(load_expected("02-aluminium-egfr-22"))
    expected["description"] = f"Hostile texts {payload}"
    name = "99-hostile-texts"
    (folder / "patient-view").mkdir(parents=True)
    (folder / "patient-view" / f"{name}.request.json").write_text(json.dumps(request))
    (folder / "patient-view" / f"{name}.expected.json").write_text(json.dumps(expected))
    return name


def test_ehr_text_with_html_and_script_stays_text(tab: Tab, tmp_path: Path) -> None:
    fixtures = tmp_path / "fixtures"
    name = _malicious_fixture(fixtures)
    with serve(tmp_path, fixtures_dir=fixtures) as live:
        page = open_page(tab, live)
        assert page.eval_on_selector_all("#fixture option", "els => els.length") == 1
        cards = send_fixture(page, "patient-view", name)["cards"]
        assert rendered_indicators(page) == expected_indicators("02-aluminium-egfr-22")
        # The texts reached the cards (escaped by the service) and are shown as typed.
        assert any(XSS_IMG in c["detail"].replace("\\", "") for c in cards)
        shown = page.inner_text("#cards")
        for payload in (XSS_IMG, XSS_SCRIPT, XSS_LINK):
            assert payload in shown
        assert XSS_IMG in page.inner_text("#fixture-description")
        for button in page.locator(".suggestion__button").all():
            button.click()
        assert_harmless(page)
        assert_only_the_service(tab, live)


HOSTILE_ANSWER = {
    "cards": [
        {
            "uuid": "hostile-card-1",
            "summary": f"{XSS_IMG} summary",
            "indicator": "critical",
            "detail": "\n".join(
                [
                    f"Raw <b>HTML</b>: {XSS_IMG} {XSS_SCRIPT}",
                    "",
                    '<iframe src="javascript:window.__pwned=1"></iframe>',
                    "",
                    f"- {XSS_LINK}",
                    "- [data](data:text/html,<script>window.__pwned=1</script>)",
                    "- **[mixed case](JaVaScRiPt:window.__pwned=1)**",
                    "- [entity](jav&#x61;script:window.__pwned=1)",
                    "- <javascript:window.__pwned=1>",
                    "- [good](https://example.org/good)",
                ]
            ),
            "source": {
                "label": XSS_IMG,
                "url": "javascript:window.__pwned=1",
                "icon": "https://tracker.example.org/pixel.png",
                "topic": {"code": XSS_SCRIPT, "display": XSS_IMG},
            },
            "suggestions": [
                {
                    "label": XSS_IMG,
                    "uuid": "hostile-suggestion-1",
                    "actions": [
                        {
                            "type": "create",
                            "description": XSS_SCRIPT,
                            "resource": {"resourceType": "ServiceRequest", "note": [XSS_IMG]},
                        }
                    ],
                }
            ],
            "overrideReasons": [{"code": "x", "system": "urn:x", "display": XSS_IMG}],
            "links": [
                {"label": "js", "url": "javascript:window.__pwned=1", "type": "absolute"},
                {"label": "data", "url": f"data:text/html,{XSS_SCRIPT}", "type": "absolute"},
                {"label": "smart js", "url": "javascript:window.__pwned=1", "type": "smart"},
                {"label": "guideline", "url": "https://example.org/guideline", "type": "absolute"},
            ],
        },
        {
            "uuid": "hostile-card-2",
            "summary": "second",
            "indicator": f"{XSS_IMG}",
            "detail": '<svg onload="window.__pwned=1"></svg>',
            "source": {"label": "plain", "url": " javascript:window.__pwned=1"},
        },
    ]
}


def test_a_hostile_service_answer_cannot_inject(tab: Tab, live: Live) -> None:
    page = open_page(tab, live)

    def hostile(route: Any) -> None:
        if route.request.method == "POST":
            route.fulfill(
                status=200, content_type="application/json", body=json.dumps(HOSTILE_ANSWER)
            )
        else:
            route.continue_()

    page.route(f"{live.url}/cds-services/{PV}", hostile)
    page.select_option("#fixture", "patient-view/02-aluminium-egfr-22")
    answer = send(page, PV)
    assert answer == HOSTILE_ANSWER
    assert rendered_indicators(page) == ["critical", XSS_IMG]
    assert page.inner_text("#cards .card__summary >> nth=0") == f"{XSS_IMG} summary"
    for button in page.locator(".suggestion__button").all():
        button.click()
    assert XSS_SCRIPT in page.inner_text(".suggestion__panel")
    assert_harmless(page)
    # The http(s) links are there (the check above is not vacuous), opening a new tab safely.
    links = page.eval_on_selector_all(
        "#cards a", "els => els.map(e => [e.getAttribute('href'), e.target, e.rel])"
    )
    assert links == [
        ["https://example.org/good", "_blank", "noopener noreferrer"],
        ["https://example.org/guideline", "_blank", "noopener noreferrer"],
    ]
    assert page.locator(".card__source a").count() == 0  # javascript: source: label only
    assert "SMART app" in page.text_content(".link--smart")
    assert_only_the_service(tab, live)  # the source icon was never fetched


# ----------------------------------------------------------------------------- (d) origins


def test_the_page_contacts_only_the_service(tab: Tab, live: Live) -> None:
    page = open_page(tab, live)
    send_fixture(page, "patient-view", "38-ssc-calcinosis-colchicine-diltiazem-low-bp")
    for button in page.locator(".suggestion__button").all():
        button.click()
    paths = {urlsplit(url).path for url in tab.requests}
    assert {
        "/",
        "/preview/static/preview.js",
        "/preview/static/preview.css",
        "/cds-services",
        "/preview/fixtures",
        f"/cds-services/{PV}",
    } <= paths
    assert_only_the_service(tab, live)
    # The policy holds in the browser: a connection elsewhere is refused before it is made.
    outcome = page.evaluate(
        "() => fetch('https://example.org/').then(() => 'sent', () => 'refused')"
    )
    assert outcome == "refused"
    assert any("connect-src" in text for text in tab.csp_violations), tab.csp_violations
    assert tab.origins() == {live.url}


# ----------------------------------------------------------------------------- (e) pasted JSON


def paste(page: Page, document: Any, patient_id: str = "") -> None:
    page.check("#source-paste")
    page.fill("#json-input", json.dumps(document, indent=2))
    page.fill("#patient-id", patient_id)


@pytest.mark.parametrize(
    ("hook", "name"),
    [("patient-view", "02-aluminium-egfr-22"), ("order-select", "21-select-aluminium-egfr-22")],
)
def test_a_pasted_bundle_gives_cards(tab: Tab, live: Live, hook: str, name: str) -> None:
    page = open_page(tab, live)
    paste(page, collection(fixture_resources(name, hook)))
    send(page, SERVICES[hook])
    assert rendered_indicators(page) == expected_indicators(name, hook)
    built = json.loads(page.text_content("#request-json"))
    assert built["hook"] == hook
    assert built["context"]["patientId"] == load_request(name, hook)["context"]["patientId"]
    assert_only_the_service(tab, live)


def test_a_pasted_request_is_sent_as_is(tab: Tab, live: Live) -> None:
    page = open_page(tab, live)
    request = load_request("01-ssc-calcinosis")
    paste(page, request)
    send(page, PV, "fr")
    assert rendered_indicators(page) == expected_indicators("01-ssc-calcinosis")
    assert json.loads(page.text_content("#request-json")) == request


def test_errors_are_explained(tab: Tab, live: Live) -> None:
    page = open_page(tab, live)
    # Resources the builder cannot use: its message, naming the field.
    patient_less = [
        r for r in fixture_resources("02-aluminium-egfr-22") if r["resourceType"] != "Patient"
    ]
    paste(page, collection(patient_less))
    page.select_option("#service", PV)
    page.click("#send")
    assert wait_for_cards(page) == "error"
    problem = page.inner_text("#cards-problem")
    assert "HTTP 400" in problem
    assert "no Patient resource" in problem
    assert "bundle" in problem
    # Text that is not JSON.
    page.fill("#json-input", "{not json")
    page.click("#send")
    assert wait_for_cards(page) == "error"
    assert "not JSON" in page.inner_text("#cards-problem")
    # A request the service refuses: its OperationOutcome, readably.
    paste(page, load_request("01-ssc-calcinosis"))
    page.select_option("#service", SERVICES["order-sign"])
    page.click("#send")
    assert wait_for_cards(page) == "error"
    problem = page.inner_text("#cards-problem")
    assert "HTTP 400" in problem
    assert "OperationOutcome" in problem
    assert page.locator("#cards-problem .problem__issues li").count() >= 1
    assert page.locator("#cards article.card").count() == 0
    assert_only_the_service(tab, live)


def test_a_jwt_protected_service_explains_the_preview_needs_auth_off(
    tab: Tab, tmp_path: Path
) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    issuers = tmp_path / "issuers.json"
    issuers.write_text(
        json.dumps(
            {
                "issuers": [
                    {
                        "iss": "https://ehr.example.org",
                        "jwks": {"keys": [{**public, "kid": "k1", "alg": "ES384"}]},
                    }
                ]
            }
        )
    )
    with serve(tmp_path, auth="jwt", trusted_issuers_file=issuers) as live:
        page = open_page(tab, live)
        problem = page.inner_text("#page-problem")
        assert "401" in problem
        assert "CDS_AUTH=off" in problem
        assert "make run" in problem
        assert page.is_disabled("#send")
        # The preview routes stay public: the fixture patients are listed all the same.
        count = page.eval_on_selector_all("#fixture option", "els => els.length")
        assert count == len(list(FIXTURE_ROOT.glob("*/*.request.json")))
        assert_only_the_service(tab, live)
