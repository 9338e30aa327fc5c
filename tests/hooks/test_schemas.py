"""Tests for the CDS Hooks JSON Schemas and cds_service.hooks.validation.

The positive examples were written for this project. Together they give every field of the
specification's tables (request and fhirAuthorization, prefetch, the patient-view / order-select
/ order-sign contexts, discovery, Card, Source, Suggestion, Action, Link, Coding, systemActions,
feedback and extensions) at least one value, in the setting of this service: systemic
sclerosis, calcinosis and renal function. Each negative case breaks one of them in exactly one
place.
"""

import copy
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from cds_service.hooks.validation import Violation, first_violation, schema_names, violations
from tests.conftest import ROOT

SCHEMA_DIR = ROOT / "cds_service" / "hooks" / "schemas"
BASE_URI = "https://calcinosis-cds.invalid/schemas/"
SCHEMA_FILES = sorted(SCHEMA_DIR.glob("*.json"))
EXPECTED_SCHEMAS = {
    "request",
    "context-patient-view",
    "context-order-select",
    "context-order-sign",
    "card",
    "response",
    "discovery",
    "feedback",
}

FHIR = "https://ehr.example.org/fhir"
CDS = "https://cds.example.org"
OVERRIDE_SYSTEM = f"{CDS}/fhir/CodeSystem/override-reason"
LOINC = "http://loinc.org"

# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------

DROP = object()  # as the new value in patched(): remove the key instead


def patched(base: Any, path: str, value: Any = DROP) -> Any:
    """A deep copy of ``base`` with the value at ``path`` (``a.b[0].c``) set, or removed."""
    instance = copy.deepcopy(base)
    *parents, last = [int(key) if key.isdigit() else key for key in re.findall(r"[^.\[\]]+", path)]
    target = instance
    for key in parents:
        target = target[key]
    if value is DROP:
        del target[last]
    else:
        target[last] = value
    return instance


def medication_request(rid: str, status: str, text: str, patient: str) -> dict[str, Any]:
    """A MedicationRequest for ``patient``, with the medication given as text."""
    return {
        "resourceType": "MedicationRequest",
        "id": rid,
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": {"text": text},
        "subject": {"reference": f"Patient/{patient}"},
    }


def service_request(rid: str, text: str) -> dict[str, Any]:
    """An active ServiceRequest order for ``text``."""
    return {
        "resourceType": "ServiceRequest",
        "id": rid,
        "status": "active",
        "intent": "order",
        "code": {"text": text},
    }


def medication_reference(medication: str, display: str) -> dict[str, Any]:
    """A draft MedicationRequest pointing at a Medication, the way some EHRs send them."""
    return {
        "resourceType": "MedicationRequest",
        "status": "draft",
        "intent": "order",
        "medicationReference": {"reference": f"Medication/{medication}", "display": display},
        "subject": {"reference": "Patient/Pq7.ssc.4471", "display": "Durand, Claire"},
    }


def bundle(kind: str | None, *resources: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A Bundle of ``resources`` (its ``type`` left out when ``kind`` is None)."""
    head: dict[str, Any] = {"resourceType": "Bundle"}
    if kind is not None:
        head["type"] = kind
    return {**head, **fields, "entry": [{"resource": resource} for resource in resources]}


# --------------------------------------------------------------------------------------------
# Examples
# --------------------------------------------------------------------------------------------

# A patient-view call with every fhirAuthorization field and a prefetched Patient.
REQUEST_FULL = {
    "hook": "patient-view",
    "hookInstance": "e501abad-a29b-4c39-b2bd-1d984c8432e5",
    "fhirServer": FHIR,
    "fhirAuthorization": {
        "access_token": "tok-ssc-view-7f3a",
        "token_type": "Bearer",
        "expires_in": 600,
        "scope": "patient/Patient.read patient/Observation.read patient/MedicationRequest.read",
        "subject": "calcinosis-cds",
        "patient": "pat-ssc-01",
    },
    "context": {
        "userId": "Practitioner/rheum-07",
        "patientId": "pat-ssc-01",
        "encounterId": "enc-rheum-0412",
    },
    "prefetch": {
        "patient": {
            "resourceType": "Patient",
            "id": "pat-ssc-01",
            "active": True,
            "gender": "female",
            "birthDate": "1961-03-14",
        }
    },
}

# An order-sign call whose prefetched searchset Bundle is the first page of two.
ORDERS_QUERY = f"{FHIR}/MedicationRequest?patient=pat-ssc-02&status=active&_count=1"
REQUEST_PAGINATION = {
    "hook": "order-sign",
    "hookInstance": "9f388ff8-28c6-4de6-bfcc-825bc3207bfb",
    "fhirServer": FHIR,
    "context": {
        "userId": "PractitionerRole/rheum-07",
        "patientId": "pat-ssc-02",
        "encounterId": "enc-rheum-0519",
        "draftOrders": bundle(
            "collection",
            medication_request(
                "draft-rx-alu-1", "draft", "Aluminium hydroxide 600 mg tablet", "pat-ssc-02"
            ),
        ),
    },
    "prefetch": {
        "medications": bundle(
            "searchset",
            medication_request("rx-dil-01", "active", "Diltiazem 60 mg tablet", "pat-ssc-02"),
            total=2,
            link=[
                {"relation": "self", "url": f"{ORDERS_QUERY}&_offset=0"},
                {"relation": "next", "url": f"{ORDERS_QUERY}&_offset=1"},
            ],
        )
    },
}

# Extensions on a request (over plain http, with a port); the context is only a fragment.
REQUEST_EXTENSION = {
    "hook": "patient-view",
    "hookInstance": "3445cf1a-12e2-4513-a473-c6155ffc5971",
    "fhirServer": "http://ehr.example.org:8080/fhir",
    "context": {"userId": "PractitionerRole/rheum-07"},
    "extension": {
        "org.example.ehr.requested-at": "2024-05-06T08:42:10Z",
        "org.example.ehr.user-department": "rheumatology",
    },
}

# Prefetch with a Patient, a searchset of eGFR results and the user as a collection Bundle.
REQUEST_PREFETCH = {
    "hook": "patient-view",
    "hookInstance": "2d4f1ba4-79e4-42aa-b121-f24344d9fa38",
    "context": {"userId": "PractitionerRole/neph-03", "patientId": "pat-ssc-03"},
    "prefetch": {
        "patient": {
            "resourceType": "Patient",
            "id": "pat-ssc-03",
            "gender": "male",
            "birthDate": "1958-09-02",
        },
        "egfr": bundle(
            "searchset",
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {
                    "coding": [{"system": LOINC, "code": "98979-8", "display": "eGFR CKD-EPI 2021"}]
                },
                "valueQuantity": {"value": 22, "unit": "mL/min/{1.73_m2}"},
            },
        ),
        "user": bundle("collection", {"resourceType": "Practitioner", "id": "neph-03"}),
    },
}


# An order-sign context with ids as some EHRs issue them: mixed case, with dots.
ORDER_SIGN_CONTEXT_REFERENCES = {
    "patientId": "Pq7.ssc.4471",
    "encounterId": "E.2024.05.rheum.Xk31vQ",
    "userId": "PractitionerRole/R.rheum.Zt08",
    "draftOrders": bundle(
        "collection",
        medication_reference("M.sthio.250", "Sodium thiosulfate 250 mg/mL injection"),
        medication_reference("M.alhyd.600", "Aluminium hydroxide 600 mg tablet"),
    ),
}

PATIENT_VIEW_CONTEXTS = [
    {"userId": "PractitionerRole/rheum-07", "patientId": "pat-ssc-01"},
    {"userId": "Practitioner/rheum-07", "patientId": "pat-ssc-01", "encounterId": "enc-0412"},
    {"userId": "RelatedPerson/carer-ssc-01", "patientId": "pat-ssc-01"},
]

# order-select with two selections; its draftOrders Bundle has no type.
ORDER_SELECT_CONTEXT = {
    "userId": "PractitionerRole/rheum-07",
    "patientId": "pat-ssc-02",
    "encounterId": "enc-rheum-0519",
    "selections": ["NutritionOrder/diet-low-phosphate", "MedicationRequest/draft-rx-dil-2"],
    "draftOrders": bundle(
        None,
        {
            "resourceType": "NutritionOrder",
            "id": "diet-low-phosphate",
            "status": "draft",
            "patient": {"reference": "Patient/pat-ssc-02"},
        },
        medication_request("draft-rx-dil-2", "draft", "Diltiazem 120 mg capsule", "pat-ssc-02"),
    ),
}

ORDER_SIGN_CONTEXT = {
    key: value for key, value in ORDER_SELECT_CONTEXT.items() if key != "selections"
}

DISCOVERY_SAMPLE = {
    "services": [
        {
            "hook": "patient-view",
            "title": "Calcinosis overview",
            "description": "Summarises calcinosis management for a patient with systemic sclerosis",
            "id": "calcinosis-overview",
            "prefetch": {"patient": "Patient/{{context.patientId}}"},
        },
        {
            "hook": "order-select",
            "title": "Renal check of selected orders",
            "description": "Checks newly selected medication orders against the latest eGFR",
            "id": "renal-order-check",
            "prefetch": {
                "patient": "Patient/{{context.patientId}}",
                "egfr": "Observation?patient={{context.patientId}}&code=http://loinc.org|98979-8",
            },
        },
        {
            "hook": "order-sign",
            "title": "Thiosulfate review",
            "description": "Reviews intravenous sodium thiosulfate orders before they are signed",
            "id": "thiosulfate-order-sign",
            "usageRequirements": "Reads dialysis status from the FHIR server; without access to "
            "it only the draft orders are reviewed.",
        },
    ]
}

DISCOVERY_EXTENSION = {
    "services": [
        {
            "hook": "patient-view",
            "title": "Calcinosis overview with knowledge version",
            "description": "Calcinosis overview that also names the knowledge release it used",
            "id": "calcinosis-overview-kv",
            "prefetch": {"conditions": "Condition?patient={{context.patientId}}"},
            "extension": {"org.example.calcinosis.knowledge": f"{CDS}/knowledge/2024-05"},
        }
    ]
}

DISCOVERY_EMPTY: dict[str, Any] = {"services": []}

# Two cards: one with detail, source url and icon and three links (two absolute, one smart with
# appContext); one with overrideReasons.
RESPONSE_SAMPLE = {
    "cards": [
        {
            "uuid": "811c94db-e525-4c1f-810c-73ad2fa17b21",
            "summary": "Calcinosis in systemic sclerosis: management summary",
            "indicator": "info",
            "detail": "Subcutaneous calcinosis of the fingers, lesions under 2 cm. "
            "See the treatment table by lesion type and size.",
            "source": {
                "label": "Calcinosis CDS",
                "url": f"{CDS}/about",
                "icon": f"{CDS}/img/calcinosis-100.png",
            },
            "links": [
                {
                    "label": "Treatment table",
                    "url": f"{CDS}/knowledge/treatment",
                    "type": "absolute",
                },
                {
                    "label": "Evidence levels",
                    "url": f"{CDS}/knowledge/evidence",
                    "type": "absolute",
                },
                {
                    "label": "Lesion tracker",
                    "url": "https://apps.example.org/lesion-tracker/launch",
                    "type": "smart",
                    "appContext": '{"view":"hands","lesionSet":17}',
                },
            ],
        },
        {
            "summary": "Aluminium hydroxide with eGFR 22: avoid",
            "indicator": "warning",
            "source": {"label": "Calcinosis CDS"},
            "overrideReasons": [
                {
                    "code": "renal-team-agreed",
                    "system": OVERRIDE_SYSTEM,
                    "display": "Agreed with the renal team",
                },
                {
                    "code": "short-course",
                    "system": OVERRIDE_SYSTEM,
                    "display": "Short course with renal monitoring",
                },
            ],
        },
    ]
}

RESPONSE_EMPTY: dict[str, Any] = {"cards": []}

# A systemAction without description (optional there, unlike in a suggestion).
RESPONSE_SYSTEM_ACTIONS = {
    "cards": [],
    "systemActions": [
        {
            "type": "update",
            "resource": service_request("sr-egfr-recheck-01", "Repeat eGFR within 7 days"),
        }
    ],
}

# A card with an autolaunchable link and no 'indicator' (see
# test_autolaunchable_card_without_indicator_is_rejected).
CARD_WITHOUT_INDICATOR = {
    "uuid": "42225ec9-8ec1-4a0c-89d4-68ca7f248e3b",
    "summary": "Calcinosis lesion tracker: record today's lesions",
    "detail": "Three new lesions since the last visit. The tracker charts their size over time.",
    "source": {
        "label": "Calcinosis lesion tracker",
        "url": "https://apps.example.org/lesion-tracker",
        "icon": "https://apps.example.org/lesion-tracker/icon-100.png",
    },
    "links": [
        {
            "label": "Open the lesion tracker",
            "url": "https://apps.example.org/lesion-tracker/launch",
            "type": "smart",
            "autolaunchable": True,
        }
    ],
}

SOURCE_WITH_TOPIC = {
    "label": "Calcinosis CDS",
    "url": f"{CDS}/about",
    "icon": f"{CDS}/img/calcinosis-100.png",
    "topic": {
        "system": f"{CDS}/fhir/CodeSystem/card-topic",
        "code": "renal-dosing",
        "display": "Medication and renal function",
    },
}

LINK_CARD = RESPONSE_SAMPLE["cards"][0]
OVERRIDE_CARD = RESPONSE_SAMPLE["cards"][1]
OVERRIDE_REASONS = OVERRIDE_CARD["overrideReasons"]

ACTIONS = [
    {
        "type": "create",
        "description": "Prescribe sevelamer carbonate 800 mg instead",
        "resource": medication_request(
            "draft-rx-sev-1", "draft", "Sevelamer carbonate 800 mg tablet", "pat-ssc-02"
        ),
    },
    {
        "type": "update",
        "description": "Add a repeat eGFR to the pending renal panel",
        "resource": service_request("sr-renal-panel-01", "Renal panel with eGFR"),
    },
    {
        "type": "delete",
        "description": "Cancel the aluminium hydroxide order",
        "resourceId": "MedicationRequest/draft-rx-alu-1",
    },
]

SUGGESTION_UUID = "d48ecc59-fe29-417b-9f37-c2356789edd0"


def card_with(**fields: Any) -> dict[str, Any]:
    """A minimal valid card plus ``fields``."""
    return {
        "summary": "Aluminium hydroxide with eGFR 22: avoid",
        "indicator": "warning",
        "source": {"label": "Calcinosis CDS"},
        **copy.deepcopy(fields),
    }


# A valid card exercising suggestions and actions: the base for most negative cases.
SUGGESTION_CARD = card_with(
    uuid="64636283-4a14-45c9-9fbf-80dc30b90159",
    selectionBehavior="at-most-one",
    suggestions=[
        {
            "label": "Switch to sevelamer",
            "uuid": SUGGESTION_UUID,
            "isRecommended": True,
            "actions": ACTIONS,
        }
    ],
    extension={"org.example.calcinosis.ruleId": "aluminium-hydroxide-renal"},
)
TOPIC_CARD = card_with(source=SOURCE_WITH_TOPIC)
RESPONSE_ACTIONS = {"cards": [SUGGESTION_CARD], "systemActions": ACTIONS}

FEEDBACK_ACCEPTED = {
    "feedback": [
        {
            "card": SUGGESTION_CARD["uuid"],
            "outcome": "accepted",
            "acceptedSuggestions": [{"id": SUGGESTION_UUID}],
            "outcomeTimestamp": "2024-05-06T08:44:57Z",
        }
    ]
}

FEEDBACK_OVERRIDDEN = {
    "feedback": [
        {
            "card": "f3623ee5-8860-4094-be3c-efebc6b246c5",
            "outcome": "overridden",
            "outcomeTimestamp": "2024-05-06T09:02:00Z",
        }
    ]
}

FEEDBACK_OVERRIDE_REASON = {
    "feedback": [
        {
            "card": "3dbfff99-3ffb-4264-8bb6-c297fcd2ecfd",
            "outcome": "overridden",
            "overrideReason": {
                "reason": {"code": "renal-team-agreed", "system": OVERRIDE_SYSTEM},
                "userComment": "Discussed with nephrology: binder for two weeks only.",
            },
            "outcomeTimestamp": "2024-05-06T09:15:30Z",
        }
    ]
}


def good(case_id: str, schema: str, instance: Any) -> Any:
    return pytest.param(schema, instance, id=case_id)


POSITIVE_CASES = [
    good("request", "request", REQUEST_FULL),
    good("request-pagination", "request", REQUEST_PAGINATION),
    good("request-extension", "request", REQUEST_EXTENSION),
    good("request-prefetch-data", "request", REQUEST_PREFETCH),
    good("patient-view-request", "context-patient-view", REQUEST_FULL["context"]),
    *[
        good(f"patient-view-hook-{number}", "context-patient-view", context)
        for number, context in enumerate(PATIENT_VIEW_CONTEXTS, 1)
    ],
    good("order-select-hook", "context-order-select", ORDER_SELECT_CONTEXT),
    good("order-sign-hook", "context-order-sign", ORDER_SIGN_CONTEXT),
    good("order-sign-pagination", "context-order-sign", REQUEST_PAGINATION["context"]),
    good("order-sign-references", "context-order-sign", ORDER_SIGN_CONTEXT_REFERENCES),
    good("discovery", "discovery", DISCOVERY_SAMPLE),
    good("discovery-extension", "discovery", DISCOVERY_EXTENSION),
    good("discovery-empty", "discovery", DISCOVERY_EMPTY),
    good("response", "response", RESPONSE_SAMPLE),
    good("response-no-cards", "response", RESPONSE_EMPTY),
    good("response-systemActions", "response", RESPONSE_SYSTEM_ACTIONS),
    *[
        good(f"card-{number}", "card", card)
        for number, card in enumerate(RESPONSE_SAMPLE["cards"], 1)
    ],
    good("card-source-topic", "card", TOPIC_CARD),
    good("card-overrides", "card", card_with(overrideReasons=OVERRIDE_REASONS)),
    good("card-suggestion-actions", "card", SUGGESTION_CARD),
    good("response-actions-as-systemActions", "response", RESPONSE_ACTIONS),
    good("feedback-accepted", "feedback", FEEDBACK_ACCEPTED),
    good("feedback-overridden", "feedback", FEEDBACK_OVERRIDDEN),
    good("feedback-override-reason", "feedback", FEEDBACK_OVERRIDE_REASON),
]


# --------------------------------------------------------------------------------------------
# The schema files themselves
# --------------------------------------------------------------------------------------------


def load(file: Path) -> dict[str, Any]:
    return json.loads(file.read_text(encoding="utf-8"))


def iter_refs(node: Any) -> Iterator[str]:
    """Yield every ``$ref`` value anywhere in a schema document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from iter_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from iter_refs(item)


def test_all_expected_schemas_are_present() -> None:
    assert {file.stem for file in SCHEMA_FILES} == EXPECTED_SCHEMAS
    assert schema_names() == sorted(EXPECTED_SCHEMAS)


@pytest.mark.parametrize("file", SCHEMA_FILES, ids=lambda file: file.name)
def test_schema_is_valid_draft_2020_12(file: Path) -> None:
    schema = load(file)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == BASE_URI + file.name
    assert schema["title"]
    assert schema["description"]


@pytest.mark.parametrize("file", SCHEMA_FILES, ids=lambda file: file.name)
def test_every_ref_resolves_locally(file: Path) -> None:
    # A registry without a retrieve function: an unknown URI raises instead of being fetched.
    registry = Registry().with_resources(
        (BASE_URI + other.name, Resource.from_contents(load(other), DRAFT202012))
        for other in SCHEMA_FILES
    )
    resolver = registry.resolver(base_uri=BASE_URI + file.name)
    refs = list(iter_refs(load(file)))
    assert refs, f"{file.name} has no $ref; the test would prove nothing"
    for ref in refs:
        resolved = resolver.lookup(ref)
        assert isinstance(resolved.contents, dict), ref
        assert resolved.contents, ref


# --------------------------------------------------------------------------------------------
# Positive cases
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("schema", "instance"), POSITIVE_CASES)
def test_example_is_valid(schema: str, instance: Any) -> None:
    assert violations(schema, instance) == []
    assert first_violation(schema, instance) is None


def test_autolaunchable_card_without_indicator_is_rejected() -> None:
    """A card without the REQUIRED indicator is rejected, autolaunchable link or not.

    The specification's own autolaunchable example card has this defect: it omits indicator,
    which the spec's Card table marks REQUIRED. We follow the table, not that example.
    """
    response = {"cards": [CARD_WITHOUT_INDICATOR]}
    assert first_violation("response", response) == Violation(
        "cards[0].indicator", "'indicator' is a required property"
    )
    assert violations("response", patched(response, "cards[0].indicator", "info")) == []


def test_extension_request_context_is_only_a_fragment() -> None:
    violation = first_violation("context-patient-view", REQUEST_EXTENSION["context"], at="context")
    assert violation == Violation("context.patientId", "'patientId' is a required property")


# --------------------------------------------------------------------------------------------
# Negative cases
# --------------------------------------------------------------------------------------------


def bad(case_id: str, schema: str, instance: Any, path: str, at: str = "") -> Any:
    return pytest.param(schema, instance, at, path, id=case_id)


def breaking(schema: str, base: Any, at: str = "") -> Callable[..., Any]:
    """Make negative cases of ``schema``: ``base`` broken at one path, reported at that path.

    The returned ``case(case_id, path, value=DROP, base=..., at=...)`` sets the value at
    ``path`` (or removes it) and expects the violation at ``path`` under the prefix ``at``.
    """

    def case(case_id: str, path: str, value: Any = DROP, base: Any = base, at: str = at) -> Any:
        expected = f"{at}.{path}" if at else path
        return bad(case_id, schema, patched(base, path, value), expected, at)

    return case


card_case = breaking("card", SUGGESTION_CARD)
response_case = breaking("response", RESPONSE_ACTIONS)
request_case = breaking("request", REQUEST_FULL)
patient_view_case = breaking("context-patient-view", REQUEST_FULL["context"], at="context")
order_select_case = breaking("context-order-select", ORDER_SELECT_CONTEXT, at="context")
order_sign_case = breaking("context-order-sign", ORDER_SIGN_CONTEXT, at="context")
discovery_case = breaking("discovery", DISCOVERY_SAMPLE)
feedback_case = breaking("feedback", FEEDBACK_ACCEPTED)

FIRST_ACTION = "suggestions[0].actions[0]"
DELETE_ACTION = "suggestions[0].actions[2]"

NEGATIVE_CASES = [
    card_case("summary-140-chars", "summary", "x" * 140),
    card_case("indicator-urgent", "indicator", "urgent"),
    card_case("source-without-label", "source.label"),
    card_case("suggestions-without-selectionBehavior", "selectionBehavior"),
    card_case("selectionBehavior-all", "selectionBehavior", "all"),
    card_case("action-type-patch", f"{FIRST_ACTION}.type", "patch"),
    card_case("suggestion-action-without-description", f"{FIRST_ACTION}.description"),
    card_case("create-action-without-resource", f"{FIRST_ACTION}.resource"),
    card_case("delete-action-without-resourceId", f"{DELETE_ACTION}.resourceId"),
    card_case("resourceId-array", f"{DELETE_ACTION}.resourceId", ["MedicationRequest/rx-1"]),
    card_case("empty-optional-array-links", "links", []),
    card_case("empty-optional-array-actions", "suggestions[0].actions", []),
    card_case("null-optional-field-detail", "detail", None),
    card_case("empty-optional-string-uuid", "uuid", ""),
    card_case("empty-extension", "extension", {}),
    card_case("undeclared-card-property", "color", "red"),
    card_case("override-reason-without-display", "overrideReasons[0].display", base=OVERRIDE_CARD),
    card_case("coding-has-no-version", "source.topic.version", "1", base=TOPIC_CARD),
    card_case("appContext-on-absolute-link", "links[0].appContext", "{}", base=LINK_CARD),
    card_case("path-prefix-with-index", "summary", "x" * 140, at="cards[3]"),
    response_case("response-card-summary", "cards[0].summary", "x" * 140),
    response_case("response-empty-systemActions", "systemActions", []),
    response_case("response-null-cards", "cards", None),
    request_case("fhirAuthorization-without-fhirServer", "fhirServer"),
    request_case("request-without-context", "context"),
    request_case("token-type-not-bearer", "fhirAuthorization.token_type", "MAC"),
    request_case("empty-hookInstance", "hookInstance", ""),
    request_case("prefetch-value-string", "prefetch.patient", "Patient/pat-ssc-01"),
    request_case("fhirServer-not-http", "fhirServer", "ftp://ehr.example.org/fhir"),
    patient_view_case("patient-view-missing-patientId", "patientId"),
    patient_view_case("patient-view-bad-patientId", "patientId", "pat/ssc/01"),
    patient_view_case("patient-view-userId-device", "userId", "Device/infusion-pump-3"),
    order_select_case("order-select-missing-selections", "selections"),
    order_select_case("order-select-selection-not-a-reference", "selections[0]", "draft-rx-dil-2"),
    order_sign_case("order-sign-draftOrders-not-bundle", "draftOrders.resourceType", "List"),
    order_sign_case("order-sign-userId-patient", "userId", "Patient/pat-ssc-02"),
    discovery_case("discovery-service-without-id", "services[1].id"),
    discovery_case("discovery-empty-prefetch", "services[0].prefetch", {}),
    feedback_case(
        "feedback-accepted-without-acceptedSuggestions", "feedback[0].acceptedSuggestions"
    ),
    feedback_case(
        "feedback-outcome-ignored", "feedback[0].outcome", "ignored", base=FEEDBACK_OVERRIDDEN
    ),
    feedback_case(
        "feedback-timestamp-not-rfc3339",
        "feedback[0].outcomeTimestamp",
        "2024-05-06 09:02",
        base=FEEDBACK_OVERRIDDEN,
    ),
    feedback_case("feedback-empty-array", "feedback", []),
    feedback_case(
        "feedback-reason-without-system",
        "feedback[0].overrideReason.reason.system",
        base=FEEDBACK_OVERRIDE_REASON,
    ),
]


@pytest.mark.parametrize(("schema", "instance", "at", "expected_path"), NEGATIVE_CASES)
def test_invalid_instance_is_reported_at_path(
    schema: str, instance: Any, at: str, expected_path: str
) -> None:
    violation = first_violation(schema, instance, at=at)
    assert violation is not None
    assert violation.path == expected_path
    assert violation.message
    # Each case breaks exactly one rule, so it must be the only violation reported.
    assert violations(schema, instance, at=at) == [violation]


# --------------------------------------------------------------------------------------------
# validation module behaviour
# --------------------------------------------------------------------------------------------


def test_root_violation_path_is_dollar() -> None:
    assert first_violation("response", []) == Violation("$", "expected object, got array")
    assert first_violation("response", [], at="body") == Violation(
        "body", "expected object, got array"
    )


def test_violations_lists_every_problem_sorted() -> None:
    card = patched(SUGGESTION_CARD, "indicator", "urgent")
    card = patched(card, "summary", "x" * 140)
    card = patched(card, "source.label")
    found = violations("card", card, at="cards[0]")
    assert [violation.path for violation in found] == [
        "cards[0].indicator",
        "cards[0].source.label",
        "cards[0].summary",
    ]
    assert found == violations("card", card, at="cards[0]")


def test_messages_do_not_echo_instance_values() -> None:
    secret = "Patient Jane Doe, MRN 0000001 " * 5
    violation = first_violation("card", card_with(summary=secret))
    assert violation == Violation(
        "summary", f"must be at most 139 characters long (got {len(secret)})"
    )
    request = patched(REQUEST_FULL, "prefetch.patient", [secret])
    violation = first_violation("request", request)
    assert violation == Violation("prefetch.patient", "expected object or null, got array")


def test_hookinstance_uuid_format_is_not_enforced() -> None:
    request = patched(REQUEST_FULL, "hookInstance", "ehr-call-0042")
    assert violations("request", request) == []


def test_prefetch_value_may_be_null() -> None:
    request = patched(REQUEST_FULL, "prefetch.patient", None)
    assert violations("request", request) == []


def test_system_action_description_is_optional_but_suggestion_action_is_not() -> None:
    action = {"type": "delete", "resourceId": "MedicationRequest/draft-rx-alu-1"}
    assert violations("response", {"cards": [], "systemActions": [action]}) == []
    card = card_with(
        selectionBehavior="any", suggestions=[{"label": "Cancel the order", "actions": [action]}]
    )
    assert first_violation("card", card) == Violation(
        "suggestions[0].actions[0].description", "'description' is a required property"
    )


def test_prefetch_key_with_special_characters_is_bracketed() -> None:
    request = patched(REQUEST_FULL, "prefetch", {"patient": None, "a.b c": 1})
    assert first_violation("request", request) == Violation(
        'prefetch["a.b c"]', "expected object or null, got integer"
    )


def test_unknown_schema_name_raises() -> None:
    with pytest.raises(KeyError, match="unknown schema 'nope'"):
        first_violation("nope", {})
