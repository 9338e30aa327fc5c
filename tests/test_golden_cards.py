"""Golden cards (issue 12, point 6): the whole response body of every fixture, in English and
French, kept in a file, so that any change of wording or structure of a card shows in review.

- generated fixtures (fixtures/<hook>/, "now" at their anchor):
  fixtures/golden/<hook>/<name>.<lang>.json
- field fixtures (fixtures/field/<hook>/, prefetch mode, their EHR on the loopback server of
  tests/field_ehr.py, "now" at their `asOf`): fixtures/field/golden/<hook>/<name>.<lang>.json

A golden file is the response body as JSON (indent 2, card order kept, UTF-8 text, trailing
newline) with every `uuid` (card, suggestion) replaced by `<uuid-N>` in order of appearance and
every loopback URL (scheme, host, port) by `<loopback>`. Each response comes from a fresh store,
under the settings that show repeated cards, so no run depends on another.

`make golden` runs this file with CDS_UPDATE_GOLDEN=1: it writes the files instead of comparing
them (and deletes those of fixtures that no longer exist); review the diff, then commit it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from datetime import datetime
from difflib import unified_diff
from pathlib import Path
from typing import Any

import pytest

import tests.field_ehr as field
from tests.conftest import (
    FIXTURE_ROOT,
    NOW,
    ROOT,
    SERVICES,
    app_with,
    fixture_names,
    load_request,
)
from tests.fhir_stub import StubFhirServer

UPDATE = os.environ.get("CDS_UPDATE_GOLDEN") == "1"
# `make golden` = CDS_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden_cards.py
REGENERATE = "make golden"
GOLDEN = FIXTURE_ROOT / "golden"
FIELD_GOLDEN = field.FIELD / "golden"
LANGS = ("en", "fr")
DIFF_LINES = 40  # of the first differing card, in a failure message

GENERATED = [
    pytest.param(hook, name, lang, id=f"{hook}/{name}-{lang}")
    for hook in SERVICES
    for name in fixture_names(hook)
    for lang in LANGS
]
FIELD_RUNS = [
    pytest.param(hook, name, lang, id=f"field/{hook}/{name}-{lang}")
    for hook, name in field.CASES
    for lang in LANGS
]
LOOPBACK = re.compile(r"https?://(?:127\.0\.0\.1|localhost|\[::1\])(?::\d+)?")


def golden_path(root: Path, hook: str, name: str, lang: str) -> Path:
    return root / hook / f"{name}.{lang}.json"


def normalised(body: dict[str, Any]) -> str:
    """The text of a golden file for a response body."""
    placeholders: dict[str, str] = {}

    def collect(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key == "uuid" and isinstance(item, str):
                    placeholders.setdefault(item, f"<uuid-{len(placeholders) + 1}>")
                else:
                    collect(item)
        elif isinstance(value, list):
            for item in value:
                collect(item)

    collect(body)
    text = json.dumps(body, indent=2, ensure_ascii=False) + "\n"
    for value, placeholder in placeholders.items():
        text = text.replace(value, placeholder)
    return LOOPBACK.sub("<loopback>", text)


def _lines(value: Any) -> list[str]:
    """`value` as JSON lines for a diff, each line of a text (a card's detail) on its own."""
    if value is None:
        return []
    out: list[str] = []
    for line in json.dumps(value, indent=2, ensure_ascii=False).splitlines():
        first, *rest = line.split("\\n")
        indent = " " * (len(line) - len(line.lstrip()) + 2)
        out += [first, *(f"{indent}\\n{piece}" for piece in rest)]
    return out


def first_difference(want: dict[str, Any], got: dict[str, Any], rel: Path) -> str:
    """A short unified diff of the first card that differs (else of the rest of the body)."""
    want_cards, got_cards = want.get("cards", []), got.get("cards", [])
    what, old, new = "the body without its cards", None, None
    for i in range(max(len(want_cards), len(got_cards))):
        old = want_cards[i] if i < len(want_cards) else None
        new = got_cards[i] if i < len(got_cards) else None
        if old != new:
            what = f"card {i + 1} (golden: {len(want_cards)} cards, now: {len(got_cards)})"
            break
    else:
        old = {k: v for k, v in want.items() if k != "cards"}
        new = {k: v for k, v in got.items() if k != "cards"}
    diff = list(
        unified_diff(_lines(old), _lines(new), f"{rel} (golden)", "response now", n=2, lineterm="")
    )
    if not diff:
        return "same content, other formatting"
    more = len(diff) - DIFF_LINES
    return f"first difference, {what}:\n" + "\n".join(
        diff[:DIFF_LINES] + ([f"... ({more} more lines)"] if more > 0 else [])
    )


def check_golden(path: Path, body: dict[str, Any]) -> None:
    text = normalised(body)
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        return
    rel = path.relative_to(ROOT)
    if not path.exists():
        pytest.fail(
            f"no golden file {rel}: run `{REGENERATE}` and review the new file", pytrace=False
        )
    want = path.read_text(encoding="utf-8")
    if want != text:
        difference = first_difference(json.loads(want), json.loads(text), rel)
        pytest.fail(
            f"the response differs from {rel}; if the change is intended, run `{REGENERATE}` "
            f"and commit the reviewed files.\n{difference}",
            pytrace=False,
        )


def render(
    tmp_path: Path, hook: str, request: dict[str, Any], lang: str, now: datetime, **settings: Any
) -> dict[str, Any]:
    """The response body to `request`, from an app with a fresh store and "now" at `now`."""
    with app_with(tmp_path, clock=lambda: now, **field.REPEATS_SHOWN, **settings) as app:
        response = app.test_client().post(
            f"/cds-services/{SERVICES[hook]}", json=request, headers={"Accept-Language": lang}
        )
    assert response.status_code == 200, response.json
    return response.json


@pytest.fixture(scope="module")
def stub() -> Iterator[StubFhirServer]:
    with field.field_stub() as server:
        yield server


@pytest.mark.parametrize(("hook", "name", "lang"), GENERATED)
def test_generated_fixture_matches_its_golden_cards(
    tmp_path: Path, hook: str, name: str, lang: str
) -> None:
    body = render(tmp_path, hook, load_request(name, hook), lang, NOW)
    check_golden(golden_path(GOLDEN, hook, name, lang), body)


@pytest.mark.parametrize(("hook", "name", "lang"), FIELD_RUNS)
def test_field_fixture_matches_its_golden_cards(
    tmp_path: Path, stub: StubFhirServer, hook: str, name: str, lang: str
) -> None:
    ehr = field.EHRS[(hook, name)]
    request = field.prepare(ehr, "prefetch", field.fixture_base(stub, hook, name))
    body = render(tmp_path, hook, request, lang, field.anchor(ehr), fhir_servers=(stub.base_url,))
    check_golden(golden_path(FIELD_GOLDEN, hook, name, lang), body)


def test_every_golden_file_belongs_to_a_fixture() -> None:
    generated = [(hook, name) for hook in SERVICES for name in fixture_names(hook)]
    wanted = {
        golden_path(root, hook, name, lang)
        for root, cases in ((GOLDEN, generated), (FIELD_GOLDEN, field.CASES))
        for hook, name in cases
        for lang in LANGS
    }
    stray = sorted((set(GOLDEN.rglob("*.json")) | set(FIELD_GOLDEN.rglob("*.json"))) - wanted)
    if UPDATE:
        for path in stray:
            path.unlink()
        return
    rel = [str(p.relative_to(ROOT)) for p in stray]
    assert not stray, f"golden files of no fixture: {rel}; run `{REGENERATE}`"
