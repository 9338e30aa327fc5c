"""cds_service/hooks/call.py: a CDS Hooks call checked and read into a HookCall, without Flask."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from cds_service.errors import InputError
from cds_service.hooks.call import parse_call
from tests.conftest import load_request


def _order_select() -> dict[str, Any]:
    return copy.deepcopy(load_request("23-select-aluminium-not-selected", "order-select"))


def test_a_patient_view_call_is_read_with_no_drafts() -> None:
    body = load_request("01-ssc-calcinosis", "patient-view")
    call = parse_call(body, "calcinosis-patient-view", "patient-view")
    assert call.hook == "patient-view"
    assert call.patient_id == body["context"]["patientId"]
    assert call.hook_instance == body["hookInstance"]
    assert call.drafts is None


def test_order_select_keeps_only_the_selected_drafts_with_their_paths() -> None:
    body = _order_select()
    entries = body["context"]["draftOrders"]["entry"]
    selected = set(body["context"]["selections"])
    call = parse_call(body, "calcinosis-order-select", "order-select")
    assert call.drafts is not None
    kept = {f"{d.resource['resourceType']}/{d.resource['id']}" for d in call.drafts}
    assert kept == selected
    assert len(entries) > len(call.drafts)  # the fixture has a draft that is not selected
    for draft in call.drafts:
        i = int(draft.path.split("[")[1].split("]")[0])
        assert entries[i]["resource"] is draft.resource


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda b: b.update(hook="order-sign"), "hook"),
        (lambda b: b["context"].pop("patientId"), "context.patientId"),
        (lambda b: b.pop("hookInstance"), "hookInstance"),
        (lambda b: b["context"]["draftOrders"]["entry"][0].update(resource=[]), None),
    ],
)
def test_a_call_that_breaks_the_protocol_names_its_path(change: Any, path: str | None) -> None:
    body = _order_select()
    change(body)
    with pytest.raises(InputError) as caught:
        parse_call(body, "calcinosis-order-select", "order-select")
    assert caught.value.path is not None
    if path is not None:
        assert caught.value.path == path
    else:
        assert caught.value.path.startswith("context.draftOrders.entry[0]")
