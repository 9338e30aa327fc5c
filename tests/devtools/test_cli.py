"""The `calcinosis-cds` command: invoke (offline, folders, live FHIR server), check-knowledge,
fixtures, export-fixtures, and its errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from fhir.resources.R4B.bundle import Bundle
from werkzeug.serving import make_server

from cds_service.devtools.cli import main
from cds_service.devtools.fixture_set import list_fixtures
from cds_service.migrate import head_revision
from cds_service.settings import DEFAULT_CARDS_DIR, DEFAULT_FIXTURES_DIR
from tests.conftest import (
    NOW,
    SEKMET_TOKEN,
    app_with,
    collection,
    fixture_names,
    fixture_resources,
    free_port,
    load_expected,
    load_request,
    representatives,
    start_server,
    wait_until_up,
)

AS_OF = NOW.date().isoformat()  # the date the fixtures are anchored at
ALL_FIXTURES = [(f.hook, f.name) for f in list_fixtures(DEFAULT_FIXTURES_DIR)]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the command in-process: (exit status, stdout, stderr)."""
    try:
        status = main(list(argv))
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return status, out, err


def cards_of(out: str) -> list[tuple[str, str]]:
    return [(c["source"]["topic"]["code"], c["indicator"]) for c in json.loads(out)["cards"]]


def expected_cards(name: str, hook: str = "patient-view") -> list[tuple[str, str]]:
    return [(c["rule"], c["indicator"]) for c in load_expected(name, hook)["cards"]]


# ----------------------------------------------------------------------------- invoke offline


def test_every_fixture_is_listed() -> None:
    assert len(ALL_FIXTURES) == sum(len(fixture_names(h)) for h in {h for h, _ in ALL_FIXTURES})
    assert {h for h, _ in ALL_FIXTURES} == {"patient-view", "order-select", "order-sign"}


# The command line on the fixtures that give every card kind (tests/test_fixtures.py and the
# golden cards run every fixture through the same engine).
CLI_FIXTURES = [
    (h, n) for h in ("patient-view", "order-select", "order-sign") for n in representatives(h)
]


@pytest.mark.parametrize(("hook", "name"), CLI_FIXTURES, ids=[n for _, n in CLI_FIXTURES])
def test_invoke_gives_every_card_kind_its_expected_cards(
    capsys: pytest.CaptureFixture[str], hook: str, name: str
) -> None:
    status, out, _ = run(capsys, "invoke", name, "--json")
    assert status == 0
    assert sorted(cards_of(out)) == sorted(expected_cards(name, hook))


def test_invoke_prints_a_readable_table(capsys: pytest.CaptureFixture[str]) -> None:
    name = "21-select-aluminium-egfr-22"
    status, out, _ = run(capsys, "invoke", name, "--lang", "fr")
    assert status == 0
    assert out.startswith("1 card - calcinosis-order-select (order-select), fr")
    _, as_json, _ = run(capsys, "invoke", name, "--lang", "fr", "--json")
    (card,) = json.loads(as_json)["cards"]
    assert card["summary"].startswith("Éviter ce sel d'aluminium (hydroxyde d'aluminium) : ")
    assert f"\n 1. CRITICAL  {card['summary']}\n" in out  # the French summary, whole
    for row in ("rule ", "evidence ", "source ", "suggestion ", "link ", "override "):
        assert f"    {row}" in out, row
    assert "grade 1C" in out  # the evidence level of the card, in French
    assert "[delete MedicationRequest/fix-21-draft-1]" in out
    assert "\033[" not in out  # no colour codes when not writing to a terminal


def test_invoke_detail_prints_the_markdown(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "invoke", "21-select-aluminium-egfr-22", "--detail")
    assert "**Evidence from the record**" in out


def test_invoke_with_no_card_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    name = next(
        n for n in fixture_names("order-select") if not load_expected(n, "order-select")["cards"]
    )
    status, out, _ = run(capsys, "invoke", name)
    assert status == 0
    assert out.startswith("0 cards - ")


def test_invoke_a_request_file(capsys: pytest.CaptureFixture[str]) -> None:
    path = DEFAULT_FIXTURES_DIR / "order-sign" / "31-sign-aluminium-ckd4-coded.request.json"
    status, out, _ = run(capsys, "invoke", str(path), "--json")
    assert status == 0
    assert cards_of(out) == expected_cards("31-sign-aluminium-ckd4-coded", "order-sign")


def test_invoke_a_folder_of_fhir_files(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    name = "01-ssc-calcinosis"
    for index, resource in enumerate(fixture_resources(name)):
        (tmp_path / f"{index:03}.json").write_text(json.dumps(resource))
    status, out, _ = run(capsys, "invoke", str(tmp_path), "--json", "--as-of", AS_OF)
    assert status == 0
    assert sorted(cards_of(out)) == sorted(expected_cards(name))


def test_invoke_a_bundle_with_a_draft_order_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    name = "21-select-aluminium-egfr-22"
    request = load_request(name, "order-select")
    bundle = collection(fixture_resources(name, "order-select", drafts=False))
    (tmp_path / "patient.json").write_text(json.dumps(bundle))
    (tmp_path / "order.json").write_text(json.dumps(request["context"]["draftOrders"]))
    argv = ["invoke", str(tmp_path / "patient.json"), "--hook", "order-sign", "--json"]
    status, out, _ = run(capsys, *argv, "--draft", str(tmp_path / "order.json"))
    assert status == 0
    assert cards_of(out) == [("aluminium-hydroxide-renal", "critical")]
    # Without the draft order, the command says what is missing.
    status, _, err = run(capsys, *argv)
    assert status == 2
    assert "status 'draft'" in err
    assert "--draft FILE" in err


def test_show_request_prints_the_built_request(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    request = load_request("01-ssc-calcinosis")
    (tmp_path / "p.json").write_text(json.dumps(fixture_resources("01-ssc-calcinosis")[0]))
    status, out, _ = run(capsys, "invoke", str(tmp_path / "p.json"), "--show-request")
    assert status == 0
    built = json.loads(out)
    assert built["hook"] == "patient-view"
    assert built["context"]["patientId"] == request["context"]["patientId"]
    assert set(built["prefetch"]) == {
        "patient",
        "conditions",
        "observations",
        "medications",
        "procedures",
    }


# ----------------------------------------------------------------------------- invoke errors


def test_unknown_source_says_how_to_find_fixtures(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "invoke", "no-such-patient")
    assert status == 2
    assert "calcinosis-cds fixtures" in err


def test_nothing_to_invoke_says_what_to_give(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "invoke")
    assert status == 2
    assert "--fhir-server URL --patient ID" in err


def test_invalid_json_file_is_named(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text('{"resourceType": ')
    status, _, err = run(capsys, "invoke", str(tmp_path / "broken.json"))
    assert status == 2
    assert "broken.json: not valid JSON" in err


def test_a_request_the_service_refuses_exits_non_zero(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    request = load_request("01-ssc-calcinosis")
    del request["context"]["userId"]
    (tmp_path / "bad.json").write_text(json.dumps(request))
    status, out, err = run(capsys, "invoke", str(tmp_path / "bad.json"))
    assert status == 1
    assert out == ""
    assert "the service answered 400" in err
    assert "userId" in err


def test_unknown_service_lists_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "invoke", "01-ssc-calcinosis", "--service", "nope")
    assert status == 2
    assert "calcinosis-order-sign (order-sign)" in err


def test_fhir_server_without_patient_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "invoke", "--fhir-server", "http://127.0.0.1:9/fhir")
    assert status == 2
    assert "--patient ID" in err


def test_invoke_a_running_service_with_url(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with app_with(tmp_path) as app:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        base = f"http://127.0.0.1:{server.server_port}"
        try:
            name = "21-select-aluminium-egfr-22"
            status, out, _ = run(capsys, "invoke", name, "--url", base, "--json")
            assert status == 0
            assert cards_of(out) == expected_cards(name, "order-select")
            argv = ["invoke", "01-ssc-calcinosis", "--service", "calcinosis-order-sign"]
            status, _, err = run(capsys, *argv, "--url", base)
            assert status == 1
            assert "the service answered 400" in err
            assert "(at hook)" in err
        finally:
            server.shutdown()
    status, _, err = run(capsys, "invoke", "01-ssc-calcinosis", "--url", base)
    assert status == 2
    assert "is the service up?" in err


# ----------------------------------------------------------------------------- live FHIR server


def test_invoke_against_a_fhir_server_on_loopback(
    capsys: pytest.CaptureFixture[str], sekmet: str
) -> None:
    """Patient-view fixture patients, loaded into a real FHIR server from the exported
    transaction Bundle, get their expected cards when the service fetches the data itself: the
    patients that give every card kind (tests/fhir/test_fhir_fetch.py likewise)."""
    chosen = representatives()
    assert len(chosen) >= 20
    for name in chosen:
        patient = load_request(name)["context"]["patientId"]
        argv = ["invoke", "--fhir-server", sekmet, "--patient", patient, "--json"]
        status, out, err = run(capsys, *argv, "--token", SEKMET_TOKEN, "--as-of", AS_OF)
        assert status == 0, err
        assert sorted(cards_of(out)) == sorted(expected_cards(name)), name


def test_a_refused_fhir_token_is_a_412(capsys: pytest.CaptureFixture[str], sekmet: str) -> None:
    argv = ["invoke", "--fhir-server", sekmet, "--patient", "fix-01", "--token", "wrong"]
    status, out, err = run(capsys, *argv)
    assert status == 1
    assert out == ""
    assert "the service answered 412" in err


# ----------------------------------------------------------------------------- check-knowledge


def test_check_knowledge_passes_on_this_knowledge(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "check-knowledge")
    assert status == 0
    assert "All 5 checks passed." in out
    for name in ("value sets", "card files", "citations", "services", "fixtures"):
        assert f"ok    {name}" in out
    assert f"{len(ALL_FIXTURES)} fixtures" in out


def test_check_knowledge_names_an_incomplete_card(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cards = tmp_path / "cards"
    shutil.copytree(DEFAULT_CARDS_DIR, cards)
    path = cards / "colchicine-renal.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("evidence_level:", "evidence:", 1))
    status, out, _ = run(capsys, "check-knowledge", "--cards-dir", str(cards))
    assert status == 1
    assert "FAIL  card files" in out
    assert "colchicine-renal.yaml: evidence_level: needs text in both 'en' and 'fr'" in out
    assert "FAIL  fixtures    not run: needs the card files (see above)" in out
    assert "checks failed: fix what is listed above" in out


def test_check_knowledge_names_a_fixture_that_drifted(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    fixtures = tmp_path / "fixtures"
    shutil.copytree(DEFAULT_FIXTURES_DIR, fixtures, ignore=shutil.ignore_patterns("*.py"))
    path = fixtures / "order-select" / "21-select-aluminium-egfr-22.expected.json"
    expected = json.loads(path.read_text())
    expected["cards"][0]["indicator"] = "warning"
    path.write_text(json.dumps(expected))
    status, out, _ = run(capsys, "check-knowledge", "--fixtures-dir", str(fixtures))
    assert status == 1
    assert "FAIL  fixtures" in out
    assert "order-select/21-select-aluminium-egfr-22: expected" in out
    assert "ok    value sets" in out  # the other checks still run


# ----------------------------------------------------------------------------- fixtures, export


def test_fixtures_lists_names_and_hooks(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "fixtures")
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["hook", "name", "patient"]
    assert len(lines) == len(ALL_FIXTURES) + 1
    assert lines[1].split()[:4] == ["patient-view", "01-ssc-calcinosis", "fix-01", "58-year-old"]


def test_export_fixtures_writes_a_valid_transaction_bundle(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out_file = tmp_path / "fixtures.json"
    status, _, err = run(capsys, "export-fixtures", "-o", str(out_file))
    assert status == 0
    bundle = json.loads(out_file.read_text())
    Bundle.model_validate(bundle)  # a valid FHIR R4 Bundle
    assert bundle["type"] == "transaction"
    urls = [e["request"]["url"] for e in bundle["entry"]]
    assert len(urls) == len(set(urls))  # each resource once
    assert all(e["request"]["method"] == "PUT" for e in bundle["entry"])
    patients = {u.split("/")[1] for u in urls if u.startswith("Patient/")}
    wanted = {load_request(n, h)["context"]["patientId"] for h, n in ALL_FIXTURES}
    assert patients == wanted
    assert not any("draft" in u for u in urls)  # draft orders are not server data
    assert f"{len(urls)} resources of {len(patients)} patients" in err


def test_export_named_fixtures_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "export-fixtures", "01-ssc-calcinosis")
    assert status == 0
    bundle = json.loads(out)
    assert {e["resource"]["subject"]["reference"] for e in bundle["entry"][1:]} == {
        "Patient/fix-01"
    }
    status, _, err = run(capsys, "export-fixtures", "nope")
    assert status == 2
    assert "nope: no such fixture" in err


# ----------------------------------------------------------------------------- as a program


def test_python_dash_m_and_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cds_service", "invoke", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert "--fhir-server" in result.stdout
    assert "examples:" in result.stdout


def test_serve_runs_gunicorn_with_the_service(tmp_path: Path) -> None:
    """`serve` is what `make run` uses: two workers answer discovery, hooks and /healthz, and
    the server stops cleanly on SIGTERM."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CDS_", "DATABASE_URL"))},
        "DATABASE_URL": f"sqlite:///{tmp_path / 'served' / 'store.sqlite3'}",
        "LOG_FORMAT": "json",
    }
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "cds_service", "serve", "--port", str(port), "--workers", "2"]
    process = start_server(command, env, log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{base}/healthz", process, log)
        services = httpx.get(f"{base}/cds-services").json()["services"]
        assert len(services) == 3
        name = "21-select-aluminium-egfr-22"
        answer = httpx.post(
            f"{base}/cds-services/calcinosis-order-select",
            json=load_request(name, "order-select"),
            headers={"Accept-Language": "fr"},
        )
        assert answer.status_code == 200
        assert [c["indicator"] for c in answer.json()["cards"]] == ["critical"]
        assert answer.headers["Content-Language"] == "fr"
    finally:
        process.send_signal(signal.SIGTERM)
        status = process.wait(timeout=30)
    assert status == 0
    assert (tmp_path / "served" / "store.sqlite3").is_file()
    lines = log.read_text().splitlines()
    # Migrated once, before gunicorn started.
    assert lines[0] == f"calcinosis-cds: schema at {head_revision()} (migrated from none)"
    # "serving on" once, after gunicorn bound the port, before it forked the workers.
    serving = [i for i, line in enumerate(lines) if line.startswith("calcinosis-cds: serving")]
    assert len(serving) == 1
    assert lines[serving[0]].startswith(
        f"calcinosis-cds: serving on http://127.0.0.1:{port} with 2 workers of 32 threads"
    )
    # The rest is gunicorn's and the service's log, in JSON.
    messages = {
        i: json.loads(line)["message"] for i, line in enumerate(lines) if i not in (0, serving[0])
    }
    listening = next(i for i, m in messages.items() if m.startswith("Listening at"))
    booting = min(i for i, m in messages.items() if m.startswith("Booting worker"))
    assert listening < serving[0] < booting


def test_serve_refuses_a_bad_setting_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "serve", "--auth", "jwt")
    assert status == 2
    assert err.strip() == (
        "calcinosis-cds: setting: CDS_AUTH=jwt needs CDS_TRUSTED_ISSUERS (a JSON file of issuers)"
    )


def test_serve_refuses_a_bad_port(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "serve", "--port", "99999")
    assert status == 2
    assert "is not a TCP port" in err


@pytest.fixture
def no_exec(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refusal that failed to refuse must not turn the test process into gunicorn."""

    def refuse(*_args: object) -> None:
        raise AssertionError("serve went on to exec gunicorn")

    monkeypatch.setattr(os, "execve", refuse)
    for var in ("DATABASE_URL", "CDS_AUTH", "CDS_TRUSTED_ISSUERS", "LOG_LEVEL", "PORT"):
        monkeypatch.delenv(var, raising=False)


def one_line_refusal(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run the command, expect exit status 2 and exactly one line on stderr; that line."""
    status, out, err = run(capsys, *argv)
    assert (status, out) == (2, "")
    assert len(err.splitlines()) == 1, err
    return err.strip()


@pytest.mark.usefixtures("no_exec")
def test_serve_refuses_a_postgres_scheme_with_the_spelling_to_use(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """SQLAlchemy would say "Can't load plugin: sqlalchemy.dialects:postgres" in every worker."""
    line = one_line_refusal(capsys, "serve", "--database-url", "postgres://u:secret@db/x")
    assert "postgres://" in line
    assert "write postgresql+psycopg://" in line
    assert "secret" not in line  # a URL's password is never printed
    line = one_line_refusal(capsys, "migrate", "--database-url", "postgres://u:secret@db/x")
    assert "write postgresql+psycopg://" in line  # the store commands say the same


@pytest.mark.usefixtures("no_exec")
@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "cannot read the trusted issuers file (No such file or directory)"),
        ('{"issuers": [', "not valid JSON"),
        ('{"issuers": []}', "expected an object with a non-empty 'issuers' array"),
        ('{"issuers": [{"iss": "https://ehr.example.org"}]}', "needs a jwks_url or a static"),
    ],
)
def test_serve_refuses_trusted_issuers_it_cannot_load_in_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str | None, problem: str
) -> None:
    """Checked with the loader the workers use (trust.load_issuers), before they start."""
    issuers = tmp_path / "issuers.json"
    if content is not None:
        issuers.write_text(content, encoding="utf-8")
    argv = ("serve", "--auth", "jwt", "--trusted-issuers", str(issuers))
    line = one_line_refusal(capsys, *argv)
    assert line.startswith(f"calcinosis-cds: setting: CDS_TRUSTED_ISSUERS: {issuers}: ")
    assert problem in line


@pytest.mark.usefixtures("no_exec")
def test_serve_refuses_a_port_in_use_in_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Rather than gunicorn's five seconds of retries."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        store = f"sqlite:///{tmp_path / 'store.sqlite3'}"
        line = one_line_refusal(capsys, "serve", "--port", str(port), "--database-url", store)
    assert line.startswith(f"calcinosis-cds: cannot listen on 127.0.0.1:{port}: the port is in use")
    assert not (tmp_path / "store.sqlite3").exists()  # not migrated: nothing was started


@pytest.mark.usefixtures("no_exec")
@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("LOG_LEVEL", "verbose", "LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ("PORT", "http", "PORT: 'http' is not a TCP port"),
        ("WEB_CONCURRENCY", "0", "WEB_CONCURRENCY: '0' is not a positive integer"),
    ],
)
def test_serve_refuses_a_bad_variable_in_one_line_naming_it(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    var: str,
    value: str,
    message: str,
) -> None:
    monkeypatch.setenv(var, value)
    assert one_line_refusal(capsys, "serve").startswith(f"calcinosis-cds: setting: {message}")
