"""Knowledge is read once, at start-up: handling a request reads no knowledge file.

Value sets, card content, thresholds, the safety table, service definitions and schemas are
loaded when the app is built. While requests are handled, every way the service reads a file
(``open``, ``Path.open`` / ``read_text`` / ``read_bytes``) of the project, and every YAML or
JSON file loader, is made to fail and noted: every fixture request of every service must still
get its expected cards, and nothing may have been read. So the cost of a request cannot grow
with the knowledge base (issue 7), and a loader called per request fails this test (the last
test shows the guard catching one).
"""

from __future__ import annotations

import builtins
import json
import pathlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import yaml
from flask.testing import FlaskClient

from cds_service import rules
from cds_service.knowledge import loader
from tests.conftest import (
    ROOT,
    SERVICES,
    app_with,
    fixture_names,
    load_expected,
    load_request,
)


class KnowledgeRead(RuntimeError):
    """A file of the project was read, or a YAML / JSON file parsed, during a request."""


@contextmanager
def no_file_reads() -> Iterator[list[str]]:
    """Within the block, reading a project file or parsing a YAML / JSON file raises
    KnowledgeRead; every attempt is listed (even one a caller would swallow)."""
    attempts: list[str] = []
    saved: list[tuple[Any, str, Any]] = []

    def refuse(what: str) -> None:
        attempts.append(what)
        raise KnowledgeRead(what)

    def in_project(path: Any) -> bool:
        try:
            return pathlib.Path(path).resolve().is_relative_to(ROOT)
        except (TypeError, ValueError, OSError):
            return False

    def patch(owner: Any, name: str, replacement: Any) -> None:
        saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, replacement)

    real_open = builtins.open

    def guarded_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if "r" in mode and "+" not in mode and in_project(file):
            refuse(f"open({file})")
        return real_open(file, mode, *args, **kwargs)

    def path_method(name: str) -> Any:
        real = getattr(pathlib.Path, name)

        def guarded(self: pathlib.Path, *args: Any, **kwargs: Any) -> Any:
            mode = args[0] if args and isinstance(args[0], str) else kwargs.get("mode", "r")
            reading = name != "open" or ("r" in mode and "+" not in mode)
            if reading and in_project(self):
                refuse(f"Path.{name}({self})")
            return real(self, *args, **kwargs)

        return guarded

    def loader_call(name: str) -> Any:
        def guarded(*_args: Any, **_kwargs: Any) -> Any:
            refuse(name)

        return guarded

    patch(builtins, "open", guarded_open)
    for name in ("open", "read_text", "read_bytes"):
        patch(pathlib.Path, name, path_method(name))
    for name in ("load", "safe_load", "full_load", "unsafe_load", "load_all", "safe_load_all"):
        patch(yaml, name, loader_call(f"yaml.{name}"))
    patch(json, "load", loader_call("json.load"))
    try:
        yield attempts
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)


CASES = [(hook, name) for hook in SERVICES for name in fixture_names(hook)]


def test_the_guard_refuses_a_knowledge_file() -> None:
    with no_file_reads() as attempts, pytest.raises(KnowledgeRead):
        loader.thresholds.__wrapped__()  # the loader itself, not its cached result
    assert len(attempts) == 1
    assert "thresholds.yaml" in attempts[0]
    with no_file_reads() as attempts, pytest.raises(KnowledgeRead):
        yaml.safe_load("a: 1")
    assert attempts == ["yaml.safe_load"]


def test_requests_read_no_knowledge_file(tmp_path: pathlib.Path) -> None:
    # Every fixture twice (en, fr) on one store: cards shown once and then only on a change
    # (standing interactions, yearly risk screening) are shown every time here.
    quiet = {"quiet_standing_interactions": False, "risk_screening_interval_days": 0}
    with app_with(tmp_path, **quiet) as app:
        _every_fixture_reads_no_knowledge_file(app.test_client())


def _every_fixture_reads_no_knowledge_file(client: FlaskClient) -> None:
    cases = [
        (hook, name, load_request(name, hook), load_expected(name, hook)) for hook, name in CASES
    ]
    with no_file_reads() as attempts:
        assert client.get("/cds-services").status_code == 200
        issued = []
        for lang in ("en", "fr"):
            for hook, name, request, expected in cases:
                response = client.post(
                    f"/cds-services/{SERVICES[hook]}",
                    json=request,
                    headers={"Accept-Language": lang},
                )
                assert response.status_code == 200, (hook, name, response.json)
                cards = response.json["cards"]
                got = [(c["source"]["topic"]["code"], c["indicator"]) for c in cards]
                want = [(c["rule"], c["indicator"]) for c in expected["cards"]]
                assert got == want, (hook, name, lang)
                if hook == "patient-view":
                    issued += [c["uuid"] for c in cards]
        assert issued
        service = SERVICES["patient-view"]
        feedback = {
            "feedback": [
                {
                    "card": issued[0],
                    "outcome": "overridden",
                    "outcomeTimestamp": "2026-11-23T10:00:00Z",
                }
            ]
        }
        answer = client.post(f"/cds-services/{service}/feedback", json=feedback)
        assert answer.status_code == 200, answer.json
        assert client.get(f"/cds-services/{service}/feedback/summary").status_code == 200
    assert attempts == [], f"files read while handling requests: {attempts}"


def test_a_loader_called_per_request_is_caught(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guard is not blind: a request that re-reads a knowledge file is caught."""
    run = rules.run

    def reloading_run(*args: Any, **kwargs: Any) -> Any:
        loader.thresholds.__wrapped__()  # what a per-request loader would do
        return run(*args, **kwargs)

    monkeypatch.setattr(rules, "run", reloading_run)
    request = load_request(fixture_names()[0])
    with no_file_reads() as attempts:
        response = client.post(f"/cds-services/{SERVICES['patient-view']}", json=request)
    assert response.status_code == 500
    assert len(attempts) == 1
    assert "thresholds.yaml" in attempts[0]
