"""Answers remembered by content (cds_service/memo.py, issue 17): the R4B validity of a resource
and the drug value sets of an order are computed once per content, and only then."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from cds_service import suppression
from cds_service.fhir import coerce
from cds_service.memo import ContentMemo, content_key
from cds_service.terminology import Terminology
from tests.conftest import SERVICE_URL, app_with, load_request

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def test_content_key_is_the_content_not_the_object() -> None:
    resource = {"resourceType": "Patient", "id": "p", "gender": "female"}
    assert content_key(resource) == content_key(copy.deepcopy(resource))
    assert content_key(resource) != content_key({**resource, "gender": "male"})
    assert content_key({"a": 1}) != content_key({"a": 1.0}) != content_key({"a": True})


@pytest.mark.parametrize(
    "content",
    [{"a": 2**64}, {"a": float("nan")}, {"a": float("inf")}, {"a": None}, {"a": "\ud800"}, {1: 2}],
)
def test_what_json_text_cannot_tell_apart_is_never_remembered(content: Any) -> None:
    assert content_key(content) is None
    calls: list[Any] = []
    memo: ContentMemo[int] = ContentMemo(10, lambda c: calls.append(c) or len(calls))
    assert (memo(content), memo(content)) == (1, 2)


def test_the_memo_keeps_its_last_answers() -> None:
    calls: list[int] = []
    memo: ContentMemo[int] = ContentMemo(2, lambda c: calls.append(c["n"]) or c["n"] * 10)
    assert [memo({"n": n}) for n in (1, 2, 1, 3, 1, 2)] == [10, 20, 10, 30, 10, 20]
    assert calls == [1, 2, 3, 2]  # 2 was the oldest when 3 came


def test_a_resource_is_validated_once_per_content(monkeypatch: pytest.MonkeyPatch) -> None:
    coerce._VALIDATED.clear()
    validated: list[Any] = []
    model = coerce.MODELS["Patient"]
    original = model.model_validate
    monkeypatch.setattr(
        model, "model_validate", lambda data: validated.append(data) or original(data)
    )
    good = {"resourceType": "Patient", "id": "p", "birthDate": "1962-03-04"}
    bad = {**good, "birthDate": "1962-13-45"}
    assert coerce.validation_problem(good) is None
    assert coerce.validation_problem(copy.deepcopy(good)) is None
    problem = coerce.validation_problem(bad)
    assert problem is not None
    assert problem[0] == "birthDate"
    assert coerce.validation_problem(copy.deepcopy(bad)) == problem
    assert len(validated) == 2  # once each


def test_an_order_is_matched_once_per_content(monkeypatch: pytest.MonkeyPatch) -> None:
    from cds_service.terminology import medicines

    terminology = Terminology(Terminology.load().valuesets.values())  # its own memo
    matched: list[Any] = []
    original = medicines.match_medication
    monkeypatch.setattr(
        medicines, "match_medication", lambda *args: matched.append(args) or original(*args)
    )
    concept = {"coding": [{"system": RXNORM, "code": "612", "display": "aluminum hydroxide"}]}
    order = {"resourceType": "MedicationRequest", "dosageInstruction": [{"text": "by mouth"}]}
    first = terminology.match_medication(concept, None, order)
    assert [m.valueset for m in first] == ["aluminium-hydroxide"]
    first.clear()  # a caller's list is its own
    again = terminology.match_medication(copy.deepcopy(concept), None, copy.deepcopy(order))
    assert [m.valueset for m in again] == ["aluminium-hydroxide"]
    assert len(matched) == 1
    # Another dosage instruction (its route may make the product local) is matched again.
    topical = {**order, "dosageInstruction": [{"text": "apply to the skin"}]}
    terminology.match_medication(concept, None, topical)
    assert len(matched) == 2


def test_each_findings_evidence_is_fingerprinted_once_per_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """For the snooze look-up and the issued-card log alike (it was computed twice)."""
    fingerprinted: list[Any] = []
    original = suppression.evidence_fingerprint
    monkeypatch.setattr(
        suppression,
        "evidence_fingerprint",
        lambda finding: fingerprinted.append(finding) or original(finding),
    )
    with app_with(tmp_path) as app:
        response = app.test_client().post(SERVICE_URL, json=load_request("02-aluminium-egfr-22"))
    assert response.status_code == 200
    cards = response.get_json()["cards"]
    assert len(cards) >= 2
    assert len(fingerprinted) == len(cards)
    assert len({id(f) for f in fingerprinted}) == len(cards)
