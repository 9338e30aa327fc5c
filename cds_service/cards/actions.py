"""A card's suggestions as CDS Hooks actions on FHIR resources.

A card file's `suggestions` name an action kind (`ACTION_KINDS`); this module builds the
resources they carry (a stopped or deleted MedicationRequest, a proposed one, a ServiceRequest
for a test or a referral), says what an action does whoever offers it (so a card that merges
several findings offers it once) and which drugs the cards of some rules may propose.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from cds_service.fhir.record import MedicationFact
from cds_service.rules.base import Finding
from cds_service.rules.coherence import Withheld
from cds_service.terminology import ATC, LOINC, RXNORM, Terminology

if TYPE_CHECKING:
    from cds_service.cards.library import CardContent, CardLibrary

ACTION_KINDS = (
    "stop-medication",
    "order-lab",
    "order-missing-labs",
    "order-service",
    "propose-medication",
)
# The placeholders a suggestion's label may use, by action kind (others take none): an
# order-missing-labs suggestion is one per missing test, labelled with its name.
LABEL_FILLS: Mapping[str, frozenset[str]] = {"order-missing-labs": frozenset({"test"})}


def applies(spec: Mapping[str, Any], finding: Finding) -> bool:
    """A suggestion tied to a lesion feature applies only when the patient has it."""
    return "feature" not in spec or spec["feature"] in finding.facts.get("features", ())


def action_identity(spec: Mapping[str, Any], finding: Finding) -> tuple[Any, ...]:
    """What a suggestion does, whoever offers it: two cards merged into one (rules/card_set.py)
    offer "stop this order" or "order creatinine" once."""
    drug = finding.facts.get("drug")
    target = drug.ref if isinstance(drug, MedicationFact) else None
    code = spec.get("code_text") or {}
    return (
        spec["action"],
        spec.get("valueset"),
        code.get("en") if isinstance(code, Mapping) else None,
        target if spec["action"] == "stop-medication" else None,
    )


def proposed_valuesets(library: CardLibrary, rule_ids: Iterable[str]) -> frozenset[str]:
    """The drugs (value sets) the cards of these rules may propose in one click."""
    return frozenset(
        spec["valueset"]
        for rule in rule_ids
        if (content := library.cards.get(rule)) is not None
        for spec in (content.data.get("suggestions") or {}).values()
        if spec.get("action") == "propose-medication"
    )


def held(
    content: CardContent,
    keys: Iterable[str],
    finding: Finding,
    withheld: Mapping[str, Withheld],
) -> dict[str, Withheld]:
    """The card's suggestions that would propose a withheld drug: suggestion key -> why."""
    found = {}
    for key in keys:
        spec = content.data["suggestions"][key]
        proposes = spec["action"] == "propose-medication" and applies(spec, finding)
        if proposes and (why := withheld.get(spec["valueset"])) is not None:
            found[key] = why
    return found


def suggestions(
    terminology: Terminology,
    content: CardContent,
    key: str,
    variant: Mapping[str, Any],
    finding: Finding,
    lang: str,
    patient_id: str,
) -> list[dict[str, Any]]:
    """The CDS Hooks suggestions of the card file's suggestion `key` for this finding (none,
    one, or one per missing test)."""
    spec = content.data["suggestions"][key]
    if not applies(spec, finding):
        return []  # a suggestion for a lesion feature this patient does not have
    if spec["action"] == "order-missing-labs":  # one suggestion per missing test
        made = (
            _suggestion(
                terminology,
                {**spec, "action": "order-lab", "valueset": missing},
                key,
                variant,
                finding,
                lang,
                patient_id,
                label=spec["label"][lang].format(test=terminology[missing].title[lang]),
            )
            for missing in finding.facts.get("missing", ())
        )
        return [one for one in made if one is not None]
    one = _suggestion(terminology, spec, key, variant, finding, lang, patient_id)
    return [one] if one is not None else []


def _suggestion(
    terminology: Terminology,
    spec: Mapping[str, Any],
    key: str,
    variant: Mapping[str, Any],
    finding: Finding,
    lang: str,
    patient_id: str,
    label: str | None = None,
) -> dict[str, Any] | None:
    label = label or spec["label"][lang]
    if spec["action"] == "stop-medication":
        drug = finding.facts.get("drug")
        if not isinstance(drug, MedicationFact) or drug.id is None:
            return None  # nothing to act on without a resource id
        if drug.draft:  # remove the draft from the order being signed
            label = spec.get("label_draft", spec["label"])[lang]
            action = {
                "type": "delete",
                "description": label,
                "resourceId": f"MedicationRequest/{drug.id}",
            }
        else:  # stop the active order
            # Only top-level fields change: a shallow copy leaves the order read from the
            # request as it was, and the card is serialised before anything else reads it.
            resource = dict(drug.resource)
            resource["status"] = "stopped"
            resource["statusReason"] = {"text": spec["reason"][lang]}
            action = {"type": "update", "description": label, "resource": resource}
    elif spec["action"] == "propose-medication":
        valueset = terminology[spec["valueset"]]
        coding = valueset.first(RXNORM) or valueset.first(ATC)
        medication: dict[str, Any] = {"text": valueset.title[lang]}
        if coding is not None:
            medication["coding"] = [
                {"system": coding.system, "code": coding.code, "display": coding.display}
            ]
        resource = {
            "resourceType": "MedicationRequest",
            "status": "draft",
            "intent": "proposal",
            "subject": {"reference": f"Patient/{patient_id}"},
            "medicationCodeableConcept": medication,
            "dosageInstruction": [{"text": spec["dose"][lang]}],
        }
        action = {"type": "create", "description": label, "resource": resource}
    elif spec["action"] == "order-service":  # coded by text: no verified code exists
        resource = _service_request(patient_id, {"text": spec["code_text"][lang]})
        action = {"type": "create", "description": label, "resource": resource}
    else:  # order-lab
        valueset = terminology[spec["valueset"]]
        concept = valueset.first(LOINC)
        assert concept is not None, f"{valueset.id} has no LOINC code"
        coding = {"system": concept.system, "code": concept.code, "display": concept.display}
        code = {"coding": [coding], "text": valueset.title[lang]}
        action = {
            "type": "create",
            "description": label,
            "resource": _service_request(patient_id, code),
        }
    suggestion: dict[str, Any] = {
        "label": label,
        "uuid": str(uuid.uuid4()),
        "actions": [action],
    }
    if variant.get("recommended") == key:
        suggestion["isRecommended"] = True
    return suggestion


def _service_request(patient_id: str, code: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": f"Patient/{patient_id}"},
        "code": dict(code),
    }
