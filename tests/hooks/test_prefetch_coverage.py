"""Every concept a rule reads is in its service's prefetch (issue 13, point 2).

A rule declares what it reads (`READS` in its module; a treatment-safety rule's is derived from
its table row: its drugs, the value sets and laboratory concepts of its criteria, the renal
status's own when a criterion reads it; cds_service/rules/__init__.py `READS`). For each service
of cds_service/hooks/services.yaml, every value set its rules read must be asked for by a
prefetch template of the right resource type: a template with no `code` filter covers every
value set of its type; an Observation template with one must list every LOINC code of the set.
A rule reading a laboratory result the prefetch does not ask for would otherwise be silent on
every EHR that sends exactly the prefetch.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from cds_service.hooks.services import SERVICES_FILE, ServiceDefinition, load_services
from cds_service.rules import READS, RULES
from cds_service.rules.base import Reads
from cds_service.terminology import LOINC, Terminology

TERMINOLOGY = Terminology.load()
SERVICES = load_services(TERMINOLOGY, known_rules=RULES)


def _templates(service: ServiceDefinition, resource: str) -> list[set[str] | None]:
    """The `code` filter of each template of a resource type (None: no filter)."""
    found: list[set[str] | None] = []
    for template in service.prefetch.values():
        path, _, query = template.partition("?")
        if path != resource:
            continue
        codes = parse_qs(urlsplit("?" + query).query).get("code")
        found.append({c for value in codes for c in value.split(",")} if codes else None)
    return found


def not_prefetched(service: ServiceDefinition, reads: Reads) -> list[str]:
    """What `reads` names that the service's prefetch does not ask for."""
    missing = []
    if reads.patient and not any(t.startswith("Patient/") for t in service.prefetch.values()):
        missing.append("Patient")
    for resource, valuesets in (
        ("Observation", reads.observations),
        ("Condition", reads.conditions),
        ("MedicationRequest", reads.medications),
        ("Procedure", reads.procedures),
    ):
        templates = _templates(service, resource)
        for vs in valuesets:
            if None in templates:
                continue  # an unfiltered search of this type
            codes = {f"{LOINC}|{c}" for c in TERMINOLOGY.codes(vs, LOINC)}
            if not codes or not any(codes <= listed for listed in templates if listed):
                missing.append(f"{resource} {vs}")
    return missing


def test_every_rule_declares_what_it_reads() -> None:
    assert set(READS) == set(RULES)
    for rule, reads in READS.items():
        named = (*reads.observations, *reads.conditions, *reads.medications, *reads.procedures)
        assert named, rule
        assert set(named) <= set(TERMINOLOGY.valuesets), rule


@pytest.mark.parametrize("service_id", sorted(SERVICES))
def test_every_concept_a_rule_reads_is_prefetched(service_id: str) -> None:
    service = SERVICES[service_id]
    missing = {rule: not_prefetched(service, READS[rule]) for rule in service.rules}
    assert {rule: found for rule, found in missing.items() if found} == {}


def _without(tmp_path: Path, service_id: str, key: str, valueset: str | None) -> ServiceDefinition:
    """The service as services.yaml defines it, less one prefetch value set (or key)."""
    raw = yaml.safe_load(SERVICES_FILE.read_text(encoding="utf-8"))
    for spec in raw:
        if spec["id"] == service_id:
            if valueset is None:
                del spec["prefetch"][key]
            else:
                spec["prefetch"][key]["valuesets"].remove(valueset)
    path = tmp_path / "services.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return load_services(TERMINOLOGY, path)[service_id]


@pytest.mark.parametrize(
    ("service_id", "key", "valueset", "rule", "reported"),
    [
        ("calcinosis-patient-view", "observations", "pth", "calcinosis-type", "Observation pth"),
        (
            "calcinosis-order-sign",
            "observations",
            "systolic-bp",
            "ccb-hypotension",
            "Observation systolic-bp",
        ),
        ("calcinosis-order-select", "observations", "egfr", "colchicine-renal", "Observation egfr"),
        (
            "calcinosis-patient-view",
            "conditions",
            None,
            "calcinosis-synthesis",
            "Condition calcinosis",
        ),
        (
            "calcinosis-order-sign",
            "procedures",
            None,
            "bisphosphonate-renal",
            "Procedure dialysis-procedure",
        ),
    ],
)
def test_a_concept_missing_from_the_prefetch_is_reported(
    tmp_path: Path, service_id: str, key: str, valueset: str | None, rule: str, reported: str
) -> None:
    """The check can fail: each of these prefetch changes leaves a rule reading a concept the
    service no longer asks for."""
    assert not_prefetched(SERVICES[service_id], READS[rule]) == []
    assert reported in not_prefetched(_without(tmp_path, service_id, key, valueset), READS[rule])
